package controllers

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/stripe"
)

// createAttempt is one session create the reconciler sent.
type createAttempt struct {
	key       string
	expiresAt time.Time
	at        time.Time // the operator's clock when it was sent
}

// createRecorder records session creates and answers them with a retryable
// error while failing is set (Stripe down), passing them on otherwise.
type createRecorder struct {
	PurchaseStripe
	now func() time.Time

	mu       sync.Mutex
	failing  bool
	attempts []createAttempt
}

func (c *createRecorder) CreateCheckoutSession(ctx context.Context, p stripe.CreateSessionParams) (stripe.Session, error) {
	c.mu.Lock()
	c.attempts = append(c.attempts, createAttempt{key: p.OwnerUID, expiresAt: p.ExpiresAt, at: c.now()})
	failing := c.failing
	c.mu.Unlock()
	if failing {
		return stripe.Session{}, &stripe.Error{Op: stripe.OpCreateCheckoutSession, Kind: stripe.ErrorRetryable, HTTPStatus: 503,
			Type: "api_error", Message: "Stripe is down (test)", RetryAfter: 50 * time.Millisecond}
	}
	return c.PurchaseStripe.CreateCheckoutSession(ctx, p)
}

func (c *createRecorder) setFailing(v bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failing = v
}

// lastAt returns the last attempt for purchase uid sent at the operator's
// time at (or later).
func (c *createRecorder) lastAt(uid string, at time.Time) (createAttempt, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.attempts) - 1; i >= 0; i-- {
		if a := c.attempts[i]; strings.HasPrefix(a.key, uid+"@") && !a.at.Before(at) {
			return a, true
		}
	}
	return createAttempt{}, false
}

func TestPurchase_SessionCreateRetryKeepsClearOfStripesMinimumExpiry(t *testing.T) {
	// Stripe's clock is 45 s ahead of the operator's: an expires_at 30:30
	// ahead here is 29:45 ahead at Stripe, which it refuses.
	rec := &createRecorder{failing: true}
	h := startPurchaseHarness(t, harnessOptions{stripeClockAhead: 45 * time.Second, wrap: func(next PurchaseStripe) PurchaseStripe {
		rec.PurchaseStripe = next
		return rec
	}})
	rec.now = h.clock.Now
	attempt := func(p *v1alpha1.Purchase, at time.Time) createAttempt {
		t.Helper()
		var a createAttempt
		eventually(t, waitTimeout, func() bool { var ok bool; a, ok = rec.lastAt(string(p.UID), at); return ok }, "a session create at %v", at)
		return a
	}
	openNeverFailed := func(p *v1alpha1.Purchase) *v1alpha1.Purchase {
		t.Helper()
		return h.waitFor(p, "session open (never Failed)", func(p *v1alpha1.Purchase) bool {
			if p.Status.Phase == v1alpha1.PurchaseFailed {
				t.Fatalf("purchase failed: %s", describeStatus(&p))
			}
			return p.Status.CheckoutSessionID != ""
		})
	}

	// Stripe is down when the purchase is created.
	start := h.clock.Now()
	p := h.newPurchase("user-1", "video-1")
	first := attempt(p, start)
	// The first create's expires_at is the creation time (the apiserver's,
	// within a minute of this clock) plus the TTL and the create window.
	if d := first.expiresAt.Sub(start); d < DefaultSessionTTL+sessionCreateWindow-firstExpiryWindow-time.Second || d > DefaultSessionTTL+sessionCreateWindow+firstExpiryWindow {
		t.Fatalf("first create asks for expires_at %s ahead, want about %s", d, DefaultSessionTTL+sessionCreateWindow)
	}
	// reuseEnds is the last moment a stored expiry is reused.
	reuseEnds := func(a createAttempt) time.Time {
		return a.expiresAt.Add(-DefaultSessionTTL - sessionReuseMargin)
	}
	// It is back at the last moment the stored expiry is reused: the
	// retry is byte-identical (same key, same expiry) and Stripe, 45 s
	// ahead, still accepts it.
	h.advance(reuseEnds(first).Sub(h.clock.Now()))
	edge := h.clock.Now()
	rec.setFailing(false)
	h.poke(p)
	p = openNeverFailed(p)
	if retry := attempt(p, edge); retry.key != first.key || !retry.expiresAt.Equal(first.expiresAt) {
		t.Fatalf("retry within the reuse window changed the request: key %s→%s, expires %v→%v", first.key, retry.key, first.expiresAt, retry.expiresAt)
	}
	if sessions := h.sessionsOf(p); len(sessions) != 1 || !sessions[0].ExpiresAt.Equal(p.Status.CheckoutSessionExpiresAt.Time) {
		t.Fatalf("sessions in Stripe %+v, status expiry %v", sessions, p.Status.CheckoutSessionExpiresAt)
	}

	// Past the reuse window a retry asks for a new expiry, and so a new key.
	rec.setFailing(true)
	start = h.clock.Now()
	q := h.newPurchase("user-2", "video-1")
	first = attempt(q, start)
	h.advance(reuseEnds(first).Sub(h.clock.Now()) + time.Second)
	late := h.clock.Now()
	h.poke(q)
	retry := attempt(q, late)
	if retry.key == first.key {
		t.Fatalf("retry after the reuse window reused key %s", retry.key)
	}
	if d := retry.expiresAt.Sub(late); d < DefaultSessionTTL+sessionCreateWindow-time.Second {
		t.Fatalf("retry asks for expires_at %s ahead, want %s", d, DefaultSessionTTL+sessionCreateWindow)
	}
	rec.setFailing(false)
	openNeverFailed(q)
}

func TestPurchase_SessionExpiryRefusedByStripeIsRetriedWithANewExpiry(t *testing.T) {
	var (
		mu       sync.Mutex
		attempts []stripe.CreateSessionParams
	)
	h := startPurchaseHarness(t, harnessOptions{wrap: func(next PurchaseStripe) PurchaseStripe {
		return &fakePurchaseStripe{PurchaseStripe: next, createSession: func(ctx context.Context, p stripe.CreateSessionParams) (stripe.Session, error) {
			mu.Lock()
			attempts = append(attempts, p)
			n := len(attempts)
			mu.Unlock()
			if n == 1 {
				// What Stripe answers when its clock is ahead of ours.
				return stripe.Session{}, &stripe.Error{Op: stripe.OpCreateCheckoutSession, Kind: stripe.ErrorTerminal, HTTPStatus: 400,
					Type: "invalid_request_error", Param: "expires_at",
					Message: "The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation."}
			}
			return next.CreateCheckoutSession(ctx, p)
		}}
	}})
	p := h.waitFor(h.newPurchase("user-1", "video-1"), "session open (never Failed)", func(p *v1alpha1.Purchase) bool {
		if p.Status.Phase == v1alpha1.PurchaseFailed {
			t.Fatalf("purchase failed on a refused expiry: %s", describeStatus(&p))
		}
		return p.Status.CheckoutSessionID != ""
	})
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) < 2 {
		t.Fatalf("%d create attempts, want a retry", len(attempts))
	}
	for _, a := range attempts[2:] {
		// Later attempts replay the create (the Secret not cached yet).
		if a.OwnerUID != attempts[1].OwnerUID {
			t.Fatalf("a replay used key %s, not %s", a.OwnerUID, attempts[1].OwnerUID)
		}
	}
	if attempts[1].OwnerUID == attempts[0].OwnerUID || !attempts[1].ExpiresAt.After(attempts[0].ExpiresAt) {
		t.Fatalf("retry after the refusal: key %s→%s, expires %v→%v; want a new key and a later expiry",
			attempts[0].OwnerUID, attempts[1].OwnerUID, attempts[0].ExpiresAt, attempts[1].ExpiresAt)
	}
	if !p.Status.CheckoutSessionExpiresAt.Time.Equal(attempts[1].ExpiresAt) {
		t.Fatalf("status expiry %v, created with %v", p.Status.CheckoutSessionExpiresAt, attempts[1].ExpiresAt)
	}
}

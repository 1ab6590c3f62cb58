package controllers

import (
	"context"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/lifecycle"
	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

// fakePurchaseStripe answers with its function fields where they are set
// and passes the call on to next otherwise.
type fakePurchaseStripe struct {
	PurchaseStripe // next

	createSession func(context.Context, stripe.CreateSessionParams) (stripe.Session, error)
	createRefund  func(context.Context, stripe.CreateRefundParams) (stripe.Refund, error)
}

func (f *fakePurchaseStripe) CreateCheckoutSession(ctx context.Context, p stripe.CreateSessionParams) (stripe.Session, error) {
	if f.createSession != nil {
		return f.createSession(ctx, p)
	}
	return f.PurchaseStripe.CreateCheckoutSession(ctx, p)
}

func (f *fakePurchaseStripe) CreateRefund(ctx context.Context, p stripe.CreateRefundParams) (stripe.Refund, error) {
	if f.createRefund != nil {
		return f.createRefund(ctx, p)
	}
	return f.PurchaseStripe.CreateRefund(ctx, p)
}

func TestPurchase_IdempotencyMismatchStartsANewSessionRequest(t *testing.T) {
	var (
		mu   sync.Mutex
		keys []string
	)
	h := startPurchaseHarness(t, harnessOptions{wrap: func(next PurchaseStripe) PurchaseStripe {
		return &fakePurchaseStripe{PurchaseStripe: next, createSession: func(ctx context.Context, p stripe.CreateSessionParams) (stripe.Session, error) {
			// Stripe remembers the key's first parameters: every request
			// with that key is refused, as Stripe would.
			mu.Lock()
			keys = append(keys, p.OwnerUID)
			spoiled := p.OwnerUID == keys[0]
			mu.Unlock()
			if spoiled {
				return stripe.Session{}, &stripe.Error{Op: stripe.OpCreateCheckoutSession, Kind: stripe.ErrorIdempotencyMismatch,
					HTTPStatus: 400, Type: "idempotency_error", Message: "Keys for idempotent requests can only be used with the same parameters they were first used with."}
			}
			return next.CreateCheckoutSession(ctx, p)
		}}
	}})
	p := h.waitOpen(h.newPurchase("user-1", "video-1"))
	mu.Lock()
	defer mu.Unlock()
	last := keys[len(keys)-1]
	if last == keys[0] || !strings.HasPrefix(keys[0], string(p.UID)) || !strings.HasPrefix(last, string(p.UID)) {
		t.Fatalf("idempotency owners %v: want a new key of purchase %s after the mismatch", keys, p.UID)
	}
	if n := len(h.sessionsOf(p)); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
}

func TestPurchase_RefundRejectedByStripeKeepsAccess(t *testing.T) {
	var (
		mu    sync.Mutex
		calls int
	)
	h := startPurchaseHarness(t, harnessOptions{wrap: func(next PurchaseStripe) PurchaseStripe {
		return &fakePurchaseStripe{PurchaseStripe: next, createRefund: func(context.Context, stripe.CreateRefundParams) (stripe.Refund, error) {
			mu.Lock()
			calls++
			mu.Unlock()
			return stripe.Refund{}, &stripe.Error{Op: stripe.OpCreateRefund, Kind: stripe.ErrorTerminal, HTTPStatus: 400,
				Type: "invalid_request_error", Code: "charge_disputed", Message: "Charge ch_1 has been charged back; cannot issue a refund."}
		}}
	}})
	p := h.waitOpen(h.newPurchase("user-1", "video-1"))
	h.pay(p, emulator.WebhookDeliver)
	h.waitPhase(p, v1alpha1.PurchaseCompleted)
	h.requestRefund(p, "", "admin-7")
	p = h.waitFor(p, "Refunded=False RefundRejected", func(p *v1alpha1.Purchase) bool {
		return hasCondition(p, v1alpha1.ConditionRefunded, metav1.ConditionFalse, lifecycle.ReasonRefundRejected)
	})
	if msg := condition(p, v1alpha1.ConditionRefunded).Message; !strings.Contains(msg, "charged back") {
		t.Fatalf("Refunded message %q lacks Stripe's reason", msg)
	}
	if p.Status.Phase != v1alpha1.PurchaseCompleted || p.Status.StripeRefundID != "" ||
		!hasCondition(p, v1alpha1.ConditionAccess, metav1.ConditionTrue, lifecycle.ReasonPaid) {
		t.Fatalf("after a rejected refund: %s", describeStatus(&p))
	}
	h.waitEvent(p, "Warning", lifecycle.ReasonRefundRejected)
	// Not asked again: a restart reconciles it without a second call.
	h.restart()
	h.poke(p)
	h.barrier()
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 || h.countEvents(p, lifecycle.ReasonRefundRejected) != 1 {
		t.Fatalf("%d refund calls, %d RefundRejected events; want 1 each", calls, h.countEvents(p, lifecycle.ReasonRefundRejected))
	}
}

package controllers

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/lifecycle"
	"github.com/md-platform/paytoview-operator/internal/naming"
	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

// barrier waits until the controller has worked through everything queued
// before it: it creates a purchase and waits for its session. The
// controller has one worker and a FIFO queue fed by one Purchase watch, so a
// reconcile asked for earlier has finished by then.
func (h *purchaseHarness) barrier() {
	h.t.Helper()
	h.waitOpen(h.newPurchase("barrier-user", "barrier-"+naming.NewPurchaseName()))
}

func TestPurchase_HealsDroppedWebhookOnSchedule(t *testing.T) {
	// The wall clock and a schedule of seconds: nothing pokes the
	// purchase; only the controller's own requeue can heal it.
	h := startPurchaseHarness(t, harnessOptions{realClock: true, tweak: func(r *PurchaseReconciler) {
		r.HealingSchedule = []time.Duration{time.Second, 2 * time.Second}
		r.HealingInterval = time.Second
	}})
	p := h.waitOpen(h.newPurchase("user-1", "video-1"))
	paid := h.pay(p, emulator.WebhookDrop)
	p = h.waitPhase(p, v1alpha1.PurchaseCompleted)
	if p.Status.ExternalTransactionID != paid.PaymentIntentID || p.Status.LastSessionCheckAt == nil {
		t.Fatalf("healed purchase: %s", describeStatus(&p))
	}
	if !hasCondition(p, v1alpha1.ConditionAccess, metav1.ConditionTrue, lifecycle.ReasonPaid) {
		t.Fatalf("healed purchase has no access: %s", describeStatus(&p))
	}
	for _, d := range h.em.Deliveries() {
		if d.EventType == stripe.EventCheckoutSessionCompleted && d.Status != emulator.DeliveryDropped {
			t.Fatalf("checkout.session.completed was delivered (%s); the test needs it lost", d.Status)
		}
	}
}

func TestPurchase_HealsDroppedWebhookOnRecheckRequest(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	p := h.waitOpen(h.newPurchase("user-1", "video-1"))
	paid := h.pay(p, emulator.WebhookDrop)
	// The return page polls; the API asks for a recheck.
	h.poke(p)
	p = h.waitPhase(p, v1alpha1.PurchaseCompleted)
	if p.Status.ExternalTransactionID != paid.PaymentIntentID {
		t.Fatalf("healed purchase: %s", describeStatus(&p))
	}
	h.waitEvent(p, "Normal", lifecycle.EventCompleted)
}

func TestPurchase_RecheckRequestsAreRateLimited(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	p := h.waitOpen(h.newPurchase("user-1", "video-1"))
	_, reads0, _ := h.faulty.counts()

	h.poke(p)
	h.waitFor(p, "session read on request", func(p *v1alpha1.Purchase) bool { return p.Status.LastSessionCheckAt != nil })
	_, reads1, _ := h.faulty.counts()
	if reads1 != reads0+1 {
		t.Fatalf("session reads after one recheck request: %d, want %d", reads1, reads0+1)
	}

	// Within the rate limit another request does not reach Stripe.
	h.advance(2 * time.Second)
	h.poke(p)
	h.barrier()
	if _, reads2, _ := h.faulty.counts(); reads2 != reads1 {
		t.Fatalf("a recheck within the rate limit read the session again (%d reads, want %d)", reads2, reads1)
	}
	// Once the limit has passed, the pending request is served.
	h.advance(4 * time.Second)
	h.poke(p)
	eventually(t, waitTimeout, func() bool { _, r, _ := h.faulty.counts(); return r == reads1+1 }, "the recheck after the rate limit reads the session")
	if got := h.get(p); got.Status.Phase != v1alpha1.PurchasePending {
		t.Fatalf("an open session read must change nothing: %s", describeStatus(&got))
	}
}

func TestPurchase_OverdueOpenSessionIsExpiredByTheOperator(t *testing.T) {
	// Stripe's clock stays put, so Stripe never expires the session on its
	// own; only the operator's clock passes its expiry plus margin.
	h := startPurchaseHarness(t, harnessOptions{separateStripeClock: true})
	p := h.waitOpen(h.newPurchase("user-1", "video-1"))
	h.advance(DefaultSessionTTL + sessionCreateWindow + 5*time.Minute)
	h.poke(p)
	p = h.waitPhase(p, v1alpha1.PurchaseCanceled)
	if !hasCondition(p, v1alpha1.ConditionReady, metav1.ConditionFalse, lifecycle.ReasonSessionExpired) {
		t.Fatalf("overdue purchase: %s", describeStatus(&p))
	}
	if s, err := h.em.GetSession(p.Status.CheckoutSessionID); err != nil || s.Status != "expired" {
		t.Fatalf("session %+v (%v), want expired by the operator", s, err)
	}
	if _, _, expires := h.faulty.counts(); expires != 1 {
		t.Fatalf("%d expire calls, want 1", expires)
	}
}

func TestPurchase_SupersededByAPaidSibling(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	a := h.waitOpen(h.newPurchase("user-1", "video-1"))
	b := h.waitOpen(h.newPurchase("user-1", "video-1"))
	other := h.waitOpen(h.newPurchase("user-1", "video-2"))

	h.pay(a, emulator.WebhookDeliver)
	h.waitPhase(a, v1alpha1.PurchaseCompleted)
	b = h.waitPhase(b, v1alpha1.PurchaseCanceled)
	// The controller expires B's session and then records Superseded; the
	// checkout.session.expired webhook that expiry triggers may be applied
	// first, and then B reads SessionExpired. Both say truly that B was
	// canceled unpaid; only the controller's own label names the winner.
	switch {
	case hasCondition(b, v1alpha1.ConditionReady, metav1.ConditionFalse, lifecycle.ReasonSuperseded):
		if !strings.Contains(condition(b, v1alpha1.ConditionReady).Message, a.Name) {
			t.Fatalf("superseded purchase does not name the paid one: %s", describeStatus(&b))
		}
	case hasCondition(b, v1alpha1.ConditionReady, metav1.ConditionFalse, lifecycle.ReasonSessionExpired):
	default:
		t.Fatalf("superseded purchase: %s", describeStatus(&b))
	}
	if s, err := h.em.GetSession(b.Status.CheckoutSessionID); err != nil || s.Status != "expired" {
		t.Fatalf("the superseded purchase's session is %+v (%v), want expired", s, err)
	}
	if _, ok := h.secret(b); ok {
		eventually(t, waitTimeout, func() bool { _, ok := h.secret(b); return !ok }, "the superseded purchase's Secret is deleted")
	}
	// Another entity of the same user is not affected.
	h.barrier()
	if got := h.get(other); got.Status.Phase != v1alpha1.PurchasePending {
		t.Fatalf("a purchase of another entity was touched: %s", describeStatus(&got))
	}
}

func TestPurchase_SupersedingAPaidSessionCompletesIt(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	a := h.waitOpen(h.newPurchase("user-1", "video-1"))
	b := h.waitOpen(h.newPurchase("user-1", "video-1"))
	// The user paid in two tabs; B's webhook is lost.
	h.pay(b, emulator.WebhookDrop)
	h.pay(a, emulator.WebhookDeliver)
	h.waitPhase(a, v1alpha1.PurchaseCompleted)
	b = h.waitPhase(b, v1alpha1.PurchaseCompleted)
	if !hasCondition(b, v1alpha1.ConditionAccess, metav1.ConditionTrue, lifecycle.ReasonPaid) {
		t.Fatalf("paid sibling: %s", describeStatus(&b))
	}
	e := h.waitEvent(b, "Warning", eventReasonDuplicatePayment)
	if !strings.Contains(e.Note, a.Name) {
		t.Fatalf("duplicate payment warning does not name the other purchase: %q", e.Note)
	}
}

func TestPurchase_DuplicateWebhooksAreNoOps(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	if _, err := h.em.AddWebhookFault(emulator.WebhookFault{Mode: emulator.WebhookDuplicate}); err != nil {
		t.Fatal(err)
	}
	p := h.waitOpen(h.newPurchase("user-1", "video-1"))
	h.pay(p, "") // the installed fault decides: every event twice
	h.waitPhase(p, v1alpha1.PurchaseCompleted)
	h.waitWebhooks()
	dups := 0
	for _, d := range h.em.Deliveries() {
		if d.EventType == stripe.EventCheckoutSessionCompleted && d.Status == emulator.DeliverySucceeded {
			dups++
		}
	}
	if dups < 2 {
		t.Fatalf("checkout.session.completed delivered %d times; the test needs a duplicate", dups)
	}
	if n := h.countEvents(p, lifecycle.EventCompleted); n != 1 {
		t.Fatalf("%d Completed events, want 1", n)
	}
}

func TestPurchase_ReorderedWebhooks(t *testing.T) {
	t.Run("completed after the full refund leaves it refunded", func(t *testing.T) {
		h := startPurchaseHarness(t, harnessOptions{})
		p := h.waitOpen(h.newPurchase("user-1", "video-1"))
		h.em.HoldWebhooks()
		paid := h.pay(p, emulator.WebhookDeliver)
		h.stripeForm("/v1/refunds", map[string][]string{"payment_intent": {paid.PaymentIntentID}})
		if _, err := h.em.ReleaseWebhooks(emulator.ReleaseReverse); err != nil {
			t.Fatal(err)
		}
		h.waitWebhooks()
		p = h.waitPhase(p, v1alpha1.PurchaseRefunded)
		p = h.waitFor(p, "completion filled in", func(p *v1alpha1.Purchase) bool { return p.Status.CompletedAt != nil })
		if p.Status.ExternalTransactionID != paid.PaymentIntentID || p.Status.AmountRefunded != 500 ||
			!hasCondition(p, v1alpha1.ConditionAccess, metav1.ConditionFalse, lifecycle.ReasonRefunded) {
			t.Fatalf("after reordered events: %s", describeStatus(&p))
		}
	})
	t.Run("dispute created after it was closed won does not suspend access", func(t *testing.T) {
		h := startPurchaseHarness(t, harnessOptions{})
		p := h.waitOpen(h.newPurchase("user-1", "video-1"))
		paid := h.pay(p, emulator.WebhookDeliver)
		h.waitPhase(p, v1alpha1.PurchaseCompleted)
		h.em.HoldWebhooks()
		if _, err := h.em.Dispute(paid.PaymentIntentID, "won"); err != nil {
			t.Fatal(err)
		}
		if _, err := h.em.ReleaseWebhooks(emulator.ReleaseReverse); err != nil {
			t.Fatal(err)
		}
		h.waitWebhooks()
		p = h.waitFor(p, "dispute recorded as won", func(p *v1alpha1.Purchase) bool {
			return p.Status.Dispute != nil && p.Status.Dispute.Status == "won"
		})
		if !hasCondition(p, v1alpha1.ConditionAccess, metav1.ConditionTrue, lifecycle.ReasonPaid) {
			t.Fatalf("access after a late dispute.created: %s", describeStatus(&p))
		}
	})
}

func TestPurchase_CustomerRejectedByStripeFailsThePurchase(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	if _, err := h.em.AddFault(emulator.Fault{Operation: stripe.OpCreateCustomer, Status: 400, Message: "Invalid email address: nope"}); err != nil {
		t.Fatal(err)
	}
	p := h.waitPhase(h.newPurchase("user-1", "video-1"), v1alpha1.PurchaseFailed)
	ready := condition(p, v1alpha1.ConditionReady)
	if ready.Reason != lifecycle.ReasonStripeRejected || !strings.Contains(ready.Message, "Invalid email address") {
		t.Fatalf("Ready = %+v", ready)
	}
}

func TestPurchase_PhaseGaugeCountsTheCache(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	paid := h.waitOpen(h.newPurchase("user-1", "video-1"))
	h.waitOpen(h.newPurchase("user-2", "video-1"))
	h.pay(paid, emulator.WebhookDeliver)
	h.waitPhase(paid, v1alpha1.PurchaseCompleted)
	c := &PurchasePhaseCollector{Reader: h.manager().GetCache()}
	want := `
# HELP paytoview_purchases Purchases in the operator's cache, by phase.
# TYPE paytoview_purchases gauge
paytoview_purchases{phase="Canceled"} 0
paytoview_purchases{phase="Completed"} 1
paytoview_purchases{phase="Failed"} 0
paytoview_purchases{phase="Pending"} 1
paytoview_purchases{phase="Refunded"} 0
`
	eventually(t, waitTimeout, func() bool {
		return testutil.CollectAndCompare(c, strings.NewReader(want)) == nil
	}, "gauge: %v", testutil.CollectAndCompare(c, strings.NewReader(want)))
}

// expireHook runs before with each session expire, then passes the call on.
type expireHook struct {
	PurchaseStripe
	before func(id string)
}

func (e *expireHook) ExpireCheckoutSession(ctx context.Context, id string) (stripe.Session, error) {
	if e.before != nil {
		e.before(id)
	}
	return e.PurchaseStripe.ExpireCheckoutSession(ctx, id)
}

func TestPurchase_HealingGoesOnAfterAFailedExpireOfAnOverdueSession(t *testing.T) {
	t.Run("paid at the moment the operator expires it, webhook lost: completed", func(t *testing.T) {
		var (
			em   *emulator.Emulator
			once sync.Once
			paid emulator.Session
			perr error
		)
		// Stripe's clock stays put, so only the operator expires the session.
		h := startPurchaseHarness(t, harnessOptions{separateStripeClock: true, wrap: func(next PurchaseStripe) PurchaseStripe {
			return &expireHook{PurchaseStripe: next, before: func(id string) {
				// The buyer pays just before the operator's expire
				// reaches Stripe, which then refuses it (not open).
				once.Do(func() { paid, perr = em.Pay(id, emulator.PayOptions{Webhook: emulator.WebhookDrop}) })
			}}
		}})
		em = h.em
		p := h.waitOpen(h.newPurchase("user-1", "video-1"))
		h.advance(DefaultSessionTTL + sessionCreateWindow + 5*time.Minute)
		h.restart() // wakes the controller without a recheck request
		p = h.waitFor(p, "read at the overdue moment", func(p *v1alpha1.Purchase) bool { return p.Status.LastSessionCheckAt != nil })
		eventually(t, waitTimeout, func() bool { _, _, e := h.faulty.counts(); return e >= 1 }, "the overdue session's expire was attempted")
		if perr != nil {
			t.Fatalf("paying in the emulator: %v", perr)
		}
		if got := h.get(p); got.Status.Phase != v1alpha1.PurchasePending {
			t.Fatalf("phase after the refused expire: %s", describeStatus(&got))
		}
		// No webhook, no recheck request: only the schedule can find it.
		h.advance(time.Minute)
		p = h.waitPhase(p, v1alpha1.PurchaseCompleted)
		if p.Status.ExternalTransactionID != paid.PaymentIntentID {
			t.Fatalf("healed purchase: %s", describeStatus(&p))
		}
		for _, d := range h.em.Deliveries() {
			if d.EventType == stripe.EventCheckoutSessionCompleted && d.Status != emulator.DeliveryDropped {
				t.Fatalf("checkout.session.completed was delivered (%s); the test needs it lost", d.Status)
			}
		}
	})
	t.Run("Stripe down at the overdue moment, session left open: canceled", func(t *testing.T) {
		h := startPurchaseHarness(t, harnessOptions{separateStripeClock: true})
		p := h.waitOpen(h.newPurchase("user-1", "video-1"))
		if _, err := h.em.AddFault(emulator.Fault{Operation: stripe.OpExpireCheckoutSession, Status: 503}); err != nil {
			t.Fatal(err)
		}
		h.advance(DefaultSessionTTL + sessionCreateWindow + 5*time.Minute)
		h.restart()
		eventually(t, waitTimeout, func() bool { _, _, e := h.faulty.counts(); return e >= 1 }, "the overdue session's expire was attempted")
		p = h.waitFor(p, "read at the overdue moment", func(p *v1alpha1.Purchase) bool { return p.Status.LastSessionCheckAt != nil })
		h.em.ClearFaults()
		h.advance(time.Minute)
		p = h.waitPhase(p, v1alpha1.PurchaseCanceled)
		if !hasCondition(p, v1alpha1.ConditionReady, metav1.ConditionFalse, lifecycle.ReasonSessionExpired) {
			t.Fatalf("overdue purchase: %s", describeStatus(&p))
		}
		if s, err := h.em.GetSession(p.Status.CheckoutSessionID); err != nil || s.Status != "expired" {
			t.Fatalf("session %+v (%v), want expired by the operator", s, err)
		}
	})
}

package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/lifecycle"
	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

func TestPurchase_UnsettledRefundIsReadBackEvenWhenTheChargeSaidRefunded(t *testing.T) {
	var h *purchaseHarness
	h = startPurchaseHarness(t, harnessOptions{
		tweak: func(r *PurchaseReconciler) { r.RefundPollInterval = 200 * time.Millisecond },
		wrap: func(next PurchaseStripe) PurchaseStripe {
			return &fakePurchaseStripe{PurchaseStripe: next, createRefund: func(ctx context.Context, p stripe.CreateRefundParams) (stripe.Refund, error) {
				re, err := next.CreateRefund(ctx, p)
				if err == nil {
					// charge.refunded (counting the pending refund) is
					// applied before the operator records its refund.
					cur := &v1alpha1.Purchase{}
					cur.Namespace, cur.Name = h.ns, p.Metadata[stripe.MetaPurchaseID]
					eventually(t, waitTimeout, func() bool { return h.get(cur).Status.Phase == v1alpha1.PurchaseRefunded }, "charge.refunded applied first")
				}
				return re, err
			}}
		},
	})
	p := h.waitOpen(h.newPurchase("user-1", "video-1"))
	h.pay(p, emulator.WebhookDeliver)
	h.waitPhase(p, v1alpha1.PurchaseCompleted)
	if err := h.em.FailNextRefund(emulator.RefundStaysPending); err != nil {
		t.Fatal(err)
	}
	h.requestRefund(p, "", "admin-7")
	p = h.waitFor(p, "the operator's refund recorded as pending", func(p *v1alpha1.Purchase) bool {
		return p.Status.StripeRefundID != "" && p.Status.StripeRefundStatus == string(stripe.RefundPending)
	})
	// The refund fails and its webhook is lost: only reading it back tells.
	if _, err := h.em.AddWebhookFault(emulator.WebhookFault{EventType: "charge.refund.updated", Mode: emulator.WebhookDrop}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.em.FailRefund(p.Status.StripeRefundID); err != nil {
		t.Fatal(err)
	}
	p = h.waitFor(p, "Completed again with RefundFailed", func(p *v1alpha1.Purchase) bool {
		return p.Status.Phase == v1alpha1.PurchaseCompleted && p.Status.StripeRefundStatus == string(stripe.RefundFailed)
	})
	if !hasCondition(p, v1alpha1.ConditionRefunded, metav1.ConditionFalse, lifecycle.ReasonRefundFailed) ||
		!hasCondition(p, v1alpha1.ConditionAccess, metav1.ConditionTrue, lifecycle.ReasonPaid) || p.Status.AmountRefunded != 0 {
		t.Fatalf("after the refund failed: %s", describeStatus(&p))
	}
}

func TestPurchase_OperatorRefundAfterADashboardPartialRefundCountsBoth(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	p := h.waitOpen(h.newPurchase("user-1", "video-1"))
	paid := h.pay(p, emulator.WebhookDeliver)
	h.waitPhase(p, v1alpha1.PurchaseCompleted)
	h.stripeForm("/v1/refunds", map[string][]string{"payment_intent": {paid.PaymentIntentID}, "amount": {"200"}})
	h.waitFor(p, "amountRefunded 200", func(p *v1alpha1.Purchase) bool { return p.Status.AmountRefunded == 200 })
	h.requestRefund(p, "", "admin-7")
	p = h.waitFor(p, "refunded, our refund settled", func(p *v1alpha1.Purchase) bool {
		return p.Status.Phase == v1alpha1.PurchaseRefunded && p.Status.StripeRefundStatus == string(stripe.RefundSucceeded)
	})
	h.waitWebhooks()
	p = h.get(p)
	if p.Status.AmountRefunded != 500 {
		t.Fatalf("amountRefunded %d, want 500 (200 + the remaining 300): %s", p.Status.AmountRefunded, describeStatus(&p))
	}
}

func TestPurchase_DelayedPaymentSettlingAfterACardPaymentIsFlaggedAsDuplicate(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	before := testutil.ToFloat64(purchaseDuplicatePayments)
	delayed := h.waitOpen(h.newPurchase("user-1", "video-1"))
	if _, err := h.em.PayAsync(delayed.Status.CheckoutSessionID, emulator.AsyncPending, emulator.PayOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitFor(delayed, "payment processing", func(p *v1alpha1.Purchase) bool {
		return hasCondition(p, v1alpha1.ConditionReady, metav1.ConditionTrue, lifecycle.ReasonPaymentProcessing)
	})
	// Meanwhile the buyer pays again by card, in another tab.
	card := h.waitOpen(h.newPurchase("user-1", "video-1"))
	h.pay(card, emulator.WebhookDeliver)
	card = h.waitPhase(card, v1alpha1.PurchaseCompleted)
	h.advance(time.Minute)
	if _, err := h.em.SettleAsync(delayed.Status.CheckoutSessionID, emulator.AsyncSucceeded, emulator.PayOptions{}); err != nil {
		t.Fatal(err)
	}
	delayed = h.waitFor(delayed, "DuplicatePayment condition", func(p *v1alpha1.Purchase) bool {
		return p.Status.Phase == v1alpha1.PurchaseCompleted && hasCondition(p, conditionDuplicatePayment, metav1.ConditionTrue, eventReasonDuplicatePayment)
	})
	e := h.waitEvent(delayed, "Warning", eventReasonDuplicatePayment)
	if !strings.Contains(e.Note, card.Name) {
		t.Fatalf("the warning does not name the other purchase %s: %q", card.Name, e.Note)
	}
	eventually(t, waitTimeout, func() bool { return testutil.ToFloat64(purchaseDuplicatePayments) == before+1 },
		"duplicate payments counter +1 (is %v, was %v)", testutil.ToFloat64(purchaseDuplicatePayments), before)
	// The older purchase is not flagged, nothing is refunded, and the
	// warning is given once.
	h.poke(delayed)
	h.poke(card)
	h.barrier()
	if got := h.get(card); meta.FindStatusCondition(got.Status.Conditions, conditionDuplicatePayment) != nil || h.countEvents(card, eventReasonDuplicatePayment) != 0 {
		t.Fatalf("the first payment was flagged: %s", describeStatus(&got))
	}
	if n := h.countEvents(delayed, eventReasonDuplicatePayment); n != 1 {
		t.Fatalf("%d DuplicatePayment events, want 1", n)
	}
	if got := testutil.ToFloat64(purchaseDuplicatePayments); got != before+1 {
		t.Fatalf("duplicate payments counter %v, want %v", got, before+1)
	}
	if n := len(h.em.State().Refunds); n != 0 {
		t.Fatalf("%d refunds; duplicates are not refunded automatically", n)
	}
}

package controllers

import (
	"context"
	"testing"
	"time"

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

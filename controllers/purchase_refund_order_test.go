package controllers

import (
	"net/url"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/lifecycle"
	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

// A card refund that fails is created pending and counted in the charge's
// amount_refunded at once, so Stripe sends a charge.refunded reporting the
// charge refunded in full, then charge.refund.updated (failed). In whatever
// order the two arrive, the purchase must stay Completed: the charge is not
// refunded. A later refund of the whole charge (in the Stripe dashboard),
// whose charge.refunded looks just like the stale one, must refund it.
func TestPurchase_FailedRefundThenFullChargeRefundedInEitherOrder(t *testing.T) {
	for _, order := range []emulator.ReleaseOrder{emulator.ReleaseInOrder, emulator.ReleaseReverse} {
		t.Run(string(order), func(t *testing.T) {
			h := startPurchaseHarness(t, harnessOptions{
				tweak: func(r *PurchaseReconciler) { r.RefundPollInterval = 200 * time.Millisecond },
			})
			p := h.waitOpen(h.newPurchase("user-1", "video-1"))
			paid := h.pay(p, emulator.WebhookDeliver)
			h.waitPhase(p, v1alpha1.PurchaseCompleted)
			h.waitWebhooks()

			h.em.HoldWebhooks()
			if err := h.em.FailNextRefund(emulator.RefundFails); err != nil {
				t.Fatal(err)
			}
			h.requestRefund(p, "", "admin-7")
			h.waitFor(p, "the operator's refund read back as failed", func(p *v1alpha1.Purchase) bool {
				return p.Status.StripeRefundStatus == string(stripe.RefundFailed)
			})
			if _, err := h.em.ReleaseWebhooks(order); err != nil {
				t.Fatal(err)
			}
			h.waitWebhooks()
			p = h.waitFor(p, "no charge check pending", func(p *v1alpha1.Purchase) bool { return !lifecycle.ChargeCheckRequested(p) })
			if p.Status.Phase != v1alpha1.PurchaseCompleted || p.Status.AmountRefunded != 0 ||
				!hasCondition(p, v1alpha1.ConditionAccess, metav1.ConditionTrue, lifecycle.ReasonPaid) ||
				!hasCondition(p, v1alpha1.ConditionRefunded, metav1.ConditionFalse, lifecycle.ReasonRefundFailed) {
				t.Fatalf("after the failed refund's events: %s; want Completed with access and RefundFailed", describeStatus(&p))
			}

			// Support refunds the whole charge in the Stripe dashboard.
			h.stripeForm("/v1/refunds", url.Values{"payment_intent": {paid.PaymentIntentID}})
			p = h.waitPhase(p, v1alpha1.PurchaseRefunded)
			h.waitWebhooks()
			p = h.waitFor(p, "no charge check pending", func(p *v1alpha1.Purchase) bool { return !lifecycle.ChargeCheckRequested(p) })
			if p.Status.Phase != v1alpha1.PurchaseRefunded || p.Status.AmountRefunded != 500 ||
				!hasCondition(p, v1alpha1.ConditionAccess, metav1.ConditionFalse, lifecycle.ReasonRefunded) {
				t.Fatalf("after the dashboard refund: %s", describeStatus(&p))
			}
		})
	}
}

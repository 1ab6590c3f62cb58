package lifecycle

import (
	"testing"
	"time"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/stripe"
)

// ourRefund is the operator's refund re_1 (status.stripeRefundId).
func ourRefund(status stripe.RefundStatus, amount int64) stripe.Refund { return refund(status, amount) }

func requestedRefund(p *v1alpha1.Purchase) { p.Status.StripeRefundID = "re_1" }

func seeCurrentCharge(c stripe.Charge) step {
	return func(p *v1alpha1.Purchase, at time.Time) error { _, err := ApplyCurrentCharge(p, c, at); return err }
}

func chargeOf(refunded int64, full bool) stripe.Charge {
	c := charge(refunded)
	c.Refunded = full
	return c
}

func TestRefundTracking(t *testing.T) {
	cases := []struct {
		name   string
		mods   []func(*v1alpha1.Purchase)
		steps  []step
		phase  v1alpha1.PurchasePhase
		amount int64
		status string // status.stripeRefundStatus
		cond   string // Refunded condition reason
		settle bool   // RefundSettled
		check  string // ChargeCheckRequested reason, "" when absent
	}{{
		name:  "our refund pending: status recorded, not settled",
		mods:  []func(*v1alpha1.Purchase){completed, requestedRefund},
		steps: []step{seeRefund(ourRefund(stripe.RefundPending, 500))},
		phase: v1alpha1.PurchaseCompleted, status: "pending", cond: ReasonRefundPending,
	}, {
		name:  "our refund requires action: status recorded, not settled",
		mods:  []func(*v1alpha1.Purchase){completed, requestedRefund},
		steps: []step{seeRefund(ourRefund(stripe.RefundRequiresAction, 500))},
		phase: v1alpha1.PurchaseCompleted, status: "requires_action", cond: ReasonRefundPending,
	}, {
		name:  "our refund pending then succeeded: refunded, settled",
		mods:  []func(*v1alpha1.Purchase){completed, requestedRefund},
		steps: []step{seeRefund(ourRefund(stripe.RefundPending, 500)), seeRefund(ourRefund(stripe.RefundSucceeded, 500))},
		phase: v1alpha1.PurchaseRefunded, amount: 500, status: "succeeded", cond: ReasonRefunded, settle: true,
	}, {
		name:  "a stale pending after succeeded changes nothing",
		mods:  []func(*v1alpha1.Purchase){completed, requestedRefund},
		steps: []step{seeRefund(ourRefund(stripe.RefundSucceeded, 500)), seeRefund(ourRefund(stripe.RefundPending, 500))},
		phase: v1alpha1.PurchaseRefunded, amount: 500, status: "succeeded", cond: ReasonRefunded, settle: true,
	}, {
		name:  "our refund failed is final: a later pending or succeeded is stale",
		mods:  []func(*v1alpha1.Purchase){completed, requestedRefund},
		steps: []step{seeRefund(ourRefund(stripe.RefundFailed, 500)), seeRefund(ourRefund(stripe.RefundPending, 500)), seeRefund(ourRefund(stripe.RefundSucceeded, 500))},
		phase: v1alpha1.PurchaseCompleted, status: "failed", cond: ReasonRefundFailed, settle: true,
	}, {
		name: "200 refunded in the dashboard, then our refund of the remaining 300: 500 and refunded",
		mods: []func(*v1alpha1.Purchase){completed},
		steps: []step{
			seeCharge(charge(200)),
			func(p *v1alpha1.Purchase, _ time.Time) error { requestedRefund(p); return nil },
			seeRefund(ourRefund(stripe.RefundSucceeded, 300)),
		},
		phase: v1alpha1.PurchaseRefunded, amount: 500, status: "succeeded", cond: ReasonRefunded, settle: true,
	}, {
		name: "the same, with charge.refunded (500, counting our pending refund) before it succeeds: not counted twice",
		mods: []func(*v1alpha1.Purchase){completed},
		steps: []step{
			seeCharge(charge(200)),
			func(p *v1alpha1.Purchase, _ time.Time) error { requestedRefund(p); return nil },
			seeRefund(ourRefund(stripe.RefundPending, 300)),
			seeCharge(charge(500)),
			seeRefund(ourRefund(stripe.RefundSucceeded, 300)),
			seeRefund(ourRefund(stripe.RefundSucceeded, 300)),
		},
		phase: v1alpha1.PurchaseRefunded, amount: 500, status: "succeeded", cond: ReasonRefunded, settle: true,
	}, {
		name: "then the dashboard 200 fails: 300 refunded, not in full, completed again by the charge's total",
		mods: []func(*v1alpha1.Purchase){completed},
		steps: []step{
			seeCharge(charge(200)),
			func(p *v1alpha1.Purchase, _ time.Time) error { requestedRefund(p); return nil },
			seeRefund(ourRefund(stripe.RefundSucceeded, 300)),
			seeRefund(dashboardRefund("re_dash", stripe.RefundFailed, 200)),
		},
		phase: v1alpha1.PurchaseCompleted, amount: 300, status: "succeeded", cond: ReasonRefundFailed, settle: true,
		check: ReasonRefundFailureCounted,
	}, {
		name: "our refund of the remaining 300 fails before any charge counted it: the dashboard 200 still counts",
		mods: []func(*v1alpha1.Purchase){completed},
		steps: []step{
			seeCharge(charge(200)),
			func(p *v1alpha1.Purchase, _ time.Time) error { requestedRefund(p); return nil },
			seeRefund(ourRefund(stripe.RefundFailed, 300)),
		},
		phase: v1alpha1.PurchaseCompleted, amount: 200, status: "failed", cond: ReasonRefundFailed, settle: true,
	}, {
		name: "our refund counted by the charge, then failed: back to the dashboard's 200",
		mods: []func(*v1alpha1.Purchase){completed},
		steps: []step{
			seeCharge(charge(200)),
			func(p *v1alpha1.Purchase, _ time.Time) error { requestedRefund(p); return nil },
			seeCharge(charge(500)),
			seeRefund(ourRefund(stripe.RefundFailed, 300)),
		},
		phase: v1alpha1.PurchaseCompleted, amount: 200, status: "failed", cond: ReasonRefundFailed, settle: true,
		check: ReasonRefundFailureCounted,
	}, {
		name: "our refund known failed: a charge.refunded reporting no more than known does not refund",
		mods: []func(*v1alpha1.Purchase){completed, requestedRefund},
		steps: []step{
			seeCharge(charge(200)),
			seeRefund(ourRefund(stripe.RefundFailed, 300)),
			seeCharge(chargeOf(200, true)),
		},
		phase: v1alpha1.PurchaseCompleted, amount: 200, status: "failed", cond: ReasonRefundFailed, settle: true,
	}, {
		name: "ours failed, then a charge.refunded in full: not believed, the charge is read first",
		mods: []func(*v1alpha1.Purchase){completed, requestedRefund},
		steps: []step{
			seeRefund(ourRefund(stripe.RefundFailed, 500)),
			seeCharge(charge(500)),
		},
		phase: v1alpha1.PurchaseCompleted, status: "failed", cond: ReasonRefundFailed, settle: true,
		check: ReasonRefundEventAmbiguous,
	}, {
		name: "ours failed, then its own late charge.refunded: the charge read says nothing is refunded",
		mods: []func(*v1alpha1.Purchase){completed, requestedRefund},
		steps: []step{
			seeRefund(ourRefund(stripe.RefundFailed, 500)),
			seeCharge(charge(500)),
			seeCurrentCharge(charge(0)),
			// The same echo again, or a duplicate delivery: asks again,
			// and the charge says the same.
			seeCharge(charge(500)),
			seeCurrentCharge(charge(0)),
		},
		phase: v1alpha1.PurchaseCompleted, status: "failed", cond: ReasonRefundFailed, settle: true,
	}, {
		name: "ours failed, then a dashboard refund of everything: the charge read refunds",
		mods: []func(*v1alpha1.Purchase){completed, requestedRefund},
		steps: []step{
			seeRefund(ourRefund(stripe.RefundFailed, 500)),
			seeCharge(charge(500)),
			seeCurrentCharge(charge(500)),
		},
		phase: v1alpha1.PurchaseRefunded, amount: 500, status: "failed", cond: ReasonRefunded, settle: true,
	}, {
		name: "reverse order: ours pending, its charge.refunded, then it fails: not refunded, confirmed by the charge",
		mods: []func(*v1alpha1.Purchase){completed, requestedRefund},
		steps: []step{
			seeRefund(ourRefund(stripe.RefundPending, 500)),
			seeCharge(charge(500)),
			seeRefund(ourRefund(stripe.RefundFailed, 500)),
			seeCurrentCharge(charge(0)),
		},
		phase: v1alpha1.PurchaseCompleted, status: "failed", cond: ReasonRefundFailed, settle: true,
	}, {
		name: "reverse order with a dashboard refund: its charge.refunded before our failure, the charge read refunds",
		mods: []func(*v1alpha1.Purchase){completed, requestedRefund},
		steps: []step{
			seeRefund(ourRefund(stripe.RefundPending, 500)),
			// Ours failed at Stripe; a dashboard refund of everything
			// followed, and its event overtook our failure's.
			seeCharge(charge(500)),
			seeRefund(ourRefund(stripe.RefundFailed, 500)),
			seeCurrentCharge(charge(500)),
		},
		phase: v1alpha1.PurchaseRefunded, amount: 500, status: "failed", cond: ReasonRefunded, settle: true,
	}, {
		name: "two partial dashboard refunds: the charge's total, not the larger refund",
		mods: []func(*v1alpha1.Purchase){completed},
		steps: []step{
			seeRefund(dashboardRefund("re_a", stripe.RefundSucceeded, 200)),
			seeCharge(charge(200)),
			seeRefund(dashboardRefund("re_b", stripe.RefundSucceeded, 250)),
			seeCharge(charge(450)),
		},
		phase: v1alpha1.PurchaseCompleted, amount: 450, cond: ReasonPartiallyRefunded,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := purchase(tc.mods...)
			at := t0.Add(-10 * time.Minute)
			for i, s := range tc.steps {
				if err := s(p, at); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				at = at.Add(time.Minute)
			}
			if p.Status.Phase != tc.phase || p.Status.AmountRefunded != tc.amount || p.Status.StripeRefundStatus != tc.status {
				t.Errorf("phase %s amountRefunded %d stripeRefundStatus %q; want %s %d %q",
					p.Status.Phase, p.Status.AmountRefunded, p.Status.StripeRefundStatus, tc.phase, tc.amount, tc.status)
			}
			if c := condition(p, v1alpha1.ConditionRefunded); c.Reason != tc.cond {
				t.Errorf("Refunded condition %+v, want %s", c, tc.cond)
			}
			if got := condition(p, ConditionChargeCheck).Reason; got != tc.check {
				t.Errorf("ChargeCheckRequested reason %q, want %q", got, tc.check)
			}
			if got := ChargeCheckRequested(p); got != (tc.check != "") {
				t.Errorf("ChargeCheckRequested = %v, want %v", got, tc.check != "")
			}
			if got := RefundSettled(p); got != tc.settle {
				t.Errorf("RefundSettled = %v, want %v", got, tc.settle)
			}
			wantAccess := tc.phase == v1alpha1.PurchaseCompleted
			if granted, _ := Access(p, at); granted != wantAccess {
				t.Errorf("access %v, want %v", granted, wantAccess)
			}
		})
	}
}

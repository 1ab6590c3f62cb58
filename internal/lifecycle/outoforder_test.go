package lifecycle

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/stripe"
)

// step is one observation applied to a purchase at a time.
type step func(p *v1alpha1.Purchase, at time.Time) error

func seeCharge(c stripe.Charge) step {
	return func(p *v1alpha1.Purchase, at time.Time) error { _, err := ApplyCharge(p, c, at); return err }
}

func seeRefund(r stripe.Refund) step {
	return func(p *v1alpha1.Purchase, at time.Time) error { _, err := ApplyRefund(p, r, at); return err }
}

func seeSession(ev SessionEvent, s stripe.Session) step {
	return func(p *v1alpha1.Purchase, at time.Time) error { _, err := ApplySession(p, ev, s, at); return err }
}

// dashboardRefund is a refund made in the Stripe dashboard (not the
// operator's, no purchase metadata).
func dashboardRefund(id string, status stripe.RefundStatus, amount int64) stripe.Refund {
	r := refund(status, amount)
	r.ID, r.Metadata = id, nil
	return r
}

func TestFailedRefundSeenBeforeCompletion(t *testing.T) {
	// The observations are applied one minute apart; the completion is
	// always the second one, at t0-2m.
	completedAt := t0.Add(-2 * time.Minute)
	cases := []struct {
		name   string
		mods   []func(*v1alpha1.Purchase)
		steps  []step
		phase  v1alpha1.PurchasePhase
		access string
		// expires is the wanted expiresAt; zero means nil (lifetime).
		expires   time.Time
		completed bool
	}{{
		name: "refund, completion, refund fails: completed with the access period, not lifetime",
		steps: []step{
			seeCharge(charge(500)),
			seeSession(SessionCompleted, paidSession()),
			seeRefund(dashboardRefund("re_dash", stripe.RefundFailed, 500)),
		},
		phase: v1alpha1.PurchaseCompleted, access: ReasonPaid, expires: completedAt.Add(30 * 24 * time.Hour), completed: true,
	}, {
		name: "the same for a lifetime product: lifetime access",
		mods: []func(*v1alpha1.Purchase){lifetime},
		steps: []step{
			seeCharge(charge(500)),
			seeSession(SessionCompleted, paidSession()),
			seeRefund(dashboardRefund("re_dash", stripe.RefundFailed, 500)),
		},
		phase: v1alpha1.PurchaseCompleted, access: ReasonPaid, completed: true,
	}, {
		name: "the same, with the completion read back by healing",
		steps: []step{
			seeCharge(charge(500)),
			seeSession(SessionRetrieved, paidSession()),
			seeRefund(dashboardRefund("re_dash", stripe.RefundFailed, 500)),
		},
		phase: v1alpha1.PurchaseCompleted, access: ReasonPaid, expires: completedAt.Add(30 * 24 * time.Hour), completed: true,
	}, {
		name: "refund fails before the completion is seen: pending, not completed without a payment",
		steps: []step{
			seeCharge(charge(500)),
			seeRefund(dashboardRefund("re_dash", stripe.RefundFailed, 500)),
		},
		phase: v1alpha1.PurchasePending, access: ReasonNotPaid,
	}, {
		name: "refund fails, then the completion: completed with the access period",
		steps: []step{
			seeCharge(charge(500)),
			seeRefund(dashboardRefund("re_dash", stripe.RefundFailed, 500)),
			seeSession(SessionCompleted, paidSession()),
		},
		phase: v1alpha1.PurchaseCompleted, access: ReasonPaid, expires: t0.Add(-time.Minute).Add(30 * 24 * time.Hour), completed: true,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := purchase(tc.mods...)
			at := t0.Add(-3 * time.Minute)
			for i, s := range tc.steps {
				if err := s(p, at); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				at = at.Add(time.Minute)
			}
			if p.Status.Phase != tc.phase {
				t.Fatalf("phase = %s, want %s", p.Status.Phase, tc.phase)
			}
			if got := condition(p, v1alpha1.ConditionAccess); got.Reason != tc.access {
				t.Errorf("Access = %+v, want %s", got, tc.access)
			}
			switch {
			case tc.expires.IsZero() && p.Status.ExpiresAt != nil:
				t.Errorf("expiresAt = %v, want none", p.Status.ExpiresAt)
			case !tc.expires.IsZero() && (p.Status.ExpiresAt == nil || !p.Status.ExpiresAt.Time.Equal(tc.expires)):
				t.Errorf("expiresAt = %v, want %v", p.Status.ExpiresAt, tc.expires)
			}
			if (p.Status.CompletedAt != nil) != tc.completed {
				t.Errorf("completedAt = %v, want set=%v", p.Status.CompletedAt, tc.completed)
			}
			if p.Status.RefundedAt != nil || p.Status.AmountRefunded != 0 {
				t.Errorf("refundedAt %v amountRefunded %d after the refund failed", p.Status.RefundedAt, p.Status.AmountRefunded)
			}
			if tc.completed {
				if r := condition(p, v1alpha1.ConditionReady); r.Status != metav1.ConditionTrue || r.Reason != ReasonPaid {
					t.Errorf("Ready = %+v, want True Paid", r)
				}
			}
			// A month and a day later, access of a time-limited purchase has ended.
			if !tc.expires.IsZero() {
				if granted, reason := Access(p, t0.Add(31*24*time.Hour)); granted || reason != ReasonExpired {
					t.Errorf("access 31 days later: %v %s, want Expired", granted, reason)
				}
			}
		})
	}
}

func condition(p *v1alpha1.Purchase, typ string) metav1.Condition {
	for _, c := range p.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return metav1.Condition{}
}

package lifecycle

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/stripe"
)

func TestSchedule_SessionChecks(t *testing.T) {
	s := DefaultSchedule()
	checkedAt := func(d time.Duration) func(*v1alpha1.Purchase) {
		return func(p *v1alpha1.Purchase) { p.Status.LastSessionCheckAt = ptr.To(metav1.NewTime(created.Add(d))) }
	}
	recheck := func(v string) func(*v1alpha1.Purchase) {
		return func(p *v1alpha1.Purchase) {
			p.Annotations = map[string]string{v1alpha1.AnnotationRecheckRequested: v}
		}
	}
	sessionFor := func(d time.Duration) func(*v1alpha1.Purchase) {
		return func(p *v1alpha1.Purchase) {
			p.Status.CheckoutSessionExpiresAt = ptr.To(metav1.NewTime(created.Add(d)))
		}
	}
	processingNow := func(p *v1alpha1.Purchase) {
		_, _ = ApplySession(p, SessionCompleted, session(stripe.SessionComplete, stripe.PaymentUnpaid), created)
	}
	rfc := func(d time.Duration) string { return created.Add(d).Format(time.RFC3339) }
	cases := []struct {
		name string
		p    *v1alpha1.Purchase
		now  time.Duration // after creation
		due  bool
		next time.Duration // after creation; -1 = none
	}{
		{"not due before the first healing time", purchase(), 30 * time.Second, false, time.Minute},
		{"due at the first healing time", purchase(), time.Minute, true, time.Minute},
		{"due late when the controller was down", purchase(), 7 * time.Minute, true, time.Minute},
		{"after a check, the next healing time", purchase(checkedAt(time.Minute)), 90 * time.Second, false, 2 * time.Minute},
		{"a check off schedule moves to the following time", purchase(checkedAt(3 * time.Minute)), 4 * time.Minute, false, 5 * time.Minute},
		{"after the last offset, the session's expiry plus margin", purchase(checkedAt(30 * time.Minute)), 31 * time.Minute, false, 35 * time.Minute},
		{"still pending after the read at expiry plus margin: read again soon", purchase(checkedAt(35 * time.Minute)), 35 * time.Minute, false, 35*time.Minute + 5*time.Second},
		{"still pending, overdue reads back off", purchase(checkedAt(35*time.Minute + 10*time.Second)), 35*time.Minute + 12*time.Second, false, 35*time.Minute + 20*time.Second},
		{"still pending, overdue read due", purchase(checkedAt(35*time.Minute + 10*time.Second)), 36 * time.Minute, true, 35*time.Minute + 20*time.Second},
		{"still pending long after expiry: read every healing interval", purchase(checkedAt(3 * time.Hour)), 3 * time.Hour, false, 3*time.Hour + 10*time.Minute},
		{"a long session is read every interval", purchase(sessionFor(2*time.Hour), checkedAt(30*time.Minute)), 31 * time.Minute, false, 40 * time.Minute},
		{"a long session, mid-way", purchase(sessionFor(2*time.Hour), checkedAt(41*time.Minute)), 45 * time.Minute, false, 50 * time.Minute},
		{"a long session, last read at expiry plus margin", purchase(sessionFor(2*time.Hour), checkedAt(2*time.Hour)), 2 * time.Hour, false, 125 * time.Minute},
		{"a processing payment is read hourly after expiry", purchase(processingNow, checkedAt(35*time.Minute)), 40 * time.Minute, false, 95 * time.Minute},
		{"recheck requested, never checked: due now", purchase(recheck(rfc(10 * time.Second))), 10 * time.Second, true, 10 * time.Second},
		{"recheck requested after the last check: rate limited", purchase(checkedAt(8*time.Second), recheck(rfc(10*time.Second))), 10 * time.Second, false, 13 * time.Second},
		{"recheck requested after the last check, limit passed", purchase(checkedAt(8*time.Second), recheck(rfc(10*time.Second))), 13 * time.Second, true, 13 * time.Second},
		{"recheck older than the last check is done", purchase(checkedAt(20*time.Second), recheck(rfc(10*time.Second))), 25 * time.Second, false, time.Minute},
		{"malformed recheck annotation is ignored", purchase(checkedAt(20*time.Second), recheck("yesterday")), 25 * time.Second, false, time.Minute},
		{"no session yet: nothing to read", purchase(func(p *v1alpha1.Purchase) { p.Status.CheckoutSessionID = "" }), 5 * time.Minute, false, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := created.Add(tc.now)
			if due := s.SessionCheckDue(tc.p, now); due != tc.due {
				t.Errorf("SessionCheckDue = %v, want %v", due, tc.due)
			}
			next := s.NextCheck(tc.p, now)
			switch {
			case tc.next < 0 && !next.IsZero():
				t.Errorf("NextCheck = %v (+%v), want none", next, next.Sub(created))
			case tc.next >= 0 && !next.Equal(created.Add(tc.next)):
				t.Errorf("NextCheck = +%v, want +%v", next.Sub(created), tc.next)
			}
		})
	}
}

func TestSchedule_SessionOverdue(t *testing.T) {
	s := DefaultSchedule()
	p := purchase() // session expires 30 minutes after creation
	if s.SessionOverdue(p, created.Add(34*time.Minute)) {
		t.Error("overdue before expiry plus margin")
	}
	if !s.SessionOverdue(p, created.Add(35*time.Minute)) {
		t.Error("not overdue at expiry plus margin")
	}
	p.Status.CheckoutSessionExpiresAt = nil
	if s.SessionOverdue(p, created.Add(time.Hour)) {
		t.Error("overdue without a session")
	}
}

func TestSchedule_NextCheckAfterThePendingPhase(t *testing.T) {
	s := DefaultSchedule()
	p := purchase(completed)
	exp := p.Status.ExpiresAt.Time
	if got := s.NextCheck(p, t0); !got.Equal(exp) {
		t.Errorf("completed: NextCheck = %v, want expiresAt %v", got, exp)
	}
	// Not refreshed yet past expiry: still due (at expiresAt, i.e. now).
	if got := s.NextCheck(p, exp.Add(time.Minute)); !got.Equal(exp) {
		t.Errorf("completed, unrefreshed past expiry: NextCheck = %v", got)
	}
	Refresh(p, exp)
	if got := s.NextCheck(p, exp.Add(time.Minute)); !got.IsZero() {
		t.Errorf("expired: NextCheck = %v, want none", got)
	}
	if got := s.NextCheck(purchase(lifetime, completed), t0); !got.IsZero() {
		t.Errorf("lifetime: NextCheck = %v, want none", got)
	}
	canceled := purchase(func(p *v1alpha1.Purchase) { Cancel(p, ReasonSessionExpired, "expired", t0) })
	if got := s.NextCheck(canceled, t0.Add(time.Hour)); !got.Equal(t0.Add(7 * 24 * time.Hour)) {
		t.Errorf("canceled: NextCheck = %v, want retention end", got)
	}
	failed := purchase(func(p *v1alpha1.Purchase) { Fail(p, ReasonStripeRejected, "no", t0) })
	if got := s.NextCheck(failed, t0); !got.Equal(t0.Add(7 * 24 * time.Hour)) {
		t.Errorf("failed: NextCheck = %v, want retention end", got)
	}
	s.Retention = 0
	if got := s.NextCheck(failed, t0); !got.IsZero() {
		t.Errorf("failed, retention off: NextCheck = %v, want none", got)
	}
	refunded := purchase(completed, func(p *v1alpha1.Purchase) { _, _ = ApplyCharge(p, charge(500), t0) })
	if got := s.NextCheck(refunded, t0); !got.IsZero() {
		t.Errorf("refunded: NextCheck = %v, want none", got)
	}
}

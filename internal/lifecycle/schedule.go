package lifecycle

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
)

// Schedule is when the controller looks at a purchase again on its own: to
// re-read a Pending purchase's checkout session in case a webhook was lost,
// to end access at expiresAt, and to delete ended purchases.
type Schedule struct {
	// Healing are the times after a purchase's creation at which the
	// checkout session of a Pending purchase is read from Stripe.
	Healing []time.Duration
	// HealingInterval is how often the session is read after the last
	// Healing time, until the session's expiry plus ExpiryMargin. It is
	// also the longest wait between reads of a session that is overdue
	// (SessionOverdue) while the purchase is still Pending.
	HealingInterval time.Duration
	// ExpiryMargin is how long after the session's expiresAt the
	// controller reads it a last time, and expires it itself if Stripe has
	// not (SessionOverdue).
	ExpiryMargin time.Duration
	// ProcessingInterval is how often a session whose delayed payment is
	// processing is read after its expiry (such payments take days).
	ProcessingInterval time.Duration
	// RecheckMinInterval is the least time between two reads of the same
	// session on request (the recheck annotation).
	RecheckMinInterval time.Duration
	// Retention is how long a Canceled or Failed purchase is kept after it
	// ended; 0 keeps it forever.
	Retention time.Duration
}

// DefaultSchedule reads a session 1, 2, 5, 10, 15, 20 and 30 minutes after
// the purchase was created, then every 10 minutes until 5 minutes past the
// session's expiry, then, while the purchase is still Pending, again after
// 5 seconds, backing off to every 10 minutes; answers a recheck request at most every 5 seconds; and
// keeps ended purchases for 7 days.
func DefaultSchedule() Schedule {
	return Schedule{
		Healing: []time.Duration{
			1 * time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute,
			15 * time.Minute, 20 * time.Minute, 30 * time.Minute,
		},
		HealingInterval:    10 * time.Minute,
		ExpiryMargin:       5 * time.Minute,
		ProcessingInterval: time.Hour,
		RecheckMinInterval: 5 * time.Second,
		Retention:          7 * 24 * time.Hour,
	}
}

// SessionCheckDue reports whether the checkout session of p should be read
// from Stripe at now: p is Pending with a session, and either a scheduled
// time has passed since the last read, or a recheck was requested after the
// last read and the rate limit allows it.
func (s Schedule) SessionCheckDue(p *v1alpha1.Purchase, now time.Time) bool {
	next, ok := s.nextSessionCheck(p, now)
	return ok && !next.After(now)
}

// SessionOverdue reports whether p's session should have expired by now,
// with margin: if Stripe still says it is open, the controller expires it.
func (s Schedule) SessionOverdue(p *v1alpha1.Purchase, now time.Time) bool {
	exp := p.Status.CheckoutSessionExpiresAt
	return exp != nil && !now.Before(exp.Add(s.ExpiryMargin))
}

// NextCheck is when the controller must look at p again on its own; zero
// means never (until p changes). A time not after now means now.
func (s Schedule) NextCheck(p *v1alpha1.Purchase, now time.Time) time.Time {
	switch p.Status.Phase {
	case v1alpha1.PurchasePending, "":
		next, _ := s.nextSessionCheck(p, now)
		return next
	case v1alpha1.PurchaseCompleted:
		// Until the Access condition says Expired (or access ended for
		// good), expiresAt is when it must flip.
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionAccess)
		if exp := p.Status.ExpiresAt; exp != nil && (c == nil || (c.Reason != ReasonExpired && c.Reason != ReasonDisputeLost)) {
			return exp.Time
		}
	case v1alpha1.PurchaseCanceled, v1alpha1.PurchaseFailed:
		if ended, ok := EndedAt(p); ok && s.Retention > 0 {
			return ended.Add(s.Retention)
		}
	}
	return time.Time{}
}

// RecheckRequestedAt parses the recheck annotation; ok is false when it is
// absent or malformed (a malformed value is ignored, not retried).
func RecheckRequestedAt(p *v1alpha1.Purchase) (at time.Time, ok bool) {
	v, found := p.Annotations[v1alpha1.AnnotationRecheckRequested]
	if !found {
		return time.Time{}, false
	}
	at, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, false
	}
	return at, true
}

// nextSessionCheck is the first time a session read is due; ok is false when
// p needs none (not Pending, or no session yet).
func (s Schedule) nextSessionCheck(p *v1alpha1.Purchase, now time.Time) (time.Time, bool) {
	if (p.Status.Phase != v1alpha1.PurchasePending && p.Status.Phase != "") || p.Status.CheckoutSessionID == "" {
		return time.Time{}, false
	}
	var last time.Time
	if p.Status.LastSessionCheckAt != nil {
		last = p.Status.LastSessionCheckAt.Time
	}
	next, ok := s.nextScheduled(p, last)
	if req, found := RecheckRequestedAt(p); found && req.After(last) {
		at := now
		if !last.IsZero() {
			at = last.Add(s.RecheckMinInterval)
		}
		if !ok || at.Before(next) {
			next, ok = at, true
		}
	}
	return next, ok
}

// nextScheduled is the first scheduled read strictly after `after`.
func (s Schedule) nextScheduled(p *v1alpha1.Purchase, after time.Time) (time.Time, bool) {
	created := p.CreationTimestamp.Time
	for _, d := range s.Healing {
		if t := created.Add(d); t.After(after) {
			return t, true
		}
	}
	exp := p.Status.CheckoutSessionExpiresAt
	if exp == nil {
		return time.Time{}, false
	}
	start := created
	if n := len(s.Healing); n > 0 {
		start = created.Add(s.Healing[n-1])
	}
	end := exp.Add(s.ExpiryMargin)
	if s.HealingInterval > 0 {
		if t := stepAfter(start, s.HealingInterval, after); t.Before(end) {
			return t, true
		}
	}
	if end.After(after) {
		return end, true
	}
	if processing(p) && s.ProcessingInterval > 0 {
		return stepAfter(end, s.ProcessingInterval, after), true
	}
	// Still Pending after the read at expiry plus margin: that read, or
	// the expire that followed it, did not end the purchase (Stripe was
	// down, or the buyer paid at that moment and the webhook was lost).
	// Reading never stops while the purchase is Pending: the wait grows
	// with how overdue the last read was, from RecheckMinInterval up to
	// HealingInterval.
	return after.Add(s.overdueStep(after.Sub(end))), true
}

// overdueStep is the wait after a read that was `overdue` past the
// session's expiry plus margin.
func (s Schedule) overdueStep(overdue time.Duration) time.Duration {
	least := max(s.RecheckMinInterval, time.Second)
	return max(min(overdue, s.HealingInterval), least)
}

// stepAfter is the first start + k*step (k >= 1) strictly after `after`.
func stepAfter(start time.Time, step time.Duration, after time.Time) time.Time {
	if after.Before(start) {
		return start.Add(step)
	}
	k := after.Sub(start)/step + 1
	return start.Add(k * step)
}

func processing(p *v1alpha1.Purchase) bool {
	c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady)
	return c != nil && c.Reason == ReasonPaymentProcessing
}

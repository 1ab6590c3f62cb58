package lifecycle

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/stripe"
)

// SessionEvent says how a Checkout Session was observed: through which
// webhook event, or read from the API. The event matters because a session
// that is complete but unpaid looks the same in checkout.session.completed
// (a delayed payment is still processing) and in
// checkout.session.async_payment_failed (it failed).
type SessionEvent string

// Session observations.
const (
	// SessionRetrieved is a session read from the Stripe API (healing).
	SessionRetrieved SessionEvent = "retrieved"
	// SessionCompleted is checkout.session.completed.
	SessionCompleted SessionEvent = "checkout.session.completed"
	// SessionAsyncPaymentSucceeded is checkout.session.async_payment_succeeded.
	SessionAsyncPaymentSucceeded SessionEvent = "checkout.session.async_payment_succeeded"
	// SessionAsyncPaymentFailed is checkout.session.async_payment_failed.
	SessionAsyncPaymentFailed SessionEvent = "checkout.session.async_payment_failed"
	// SessionExpiredEvent is checkout.session.expired.
	SessionExpiredEvent SessionEvent = "checkout.session.expired"
)

// PaymentIntent statuses the healing path acts on.
const (
	piSucceeded             = "succeeded"
	piRequiresPaymentMethod = "requires_payment_method"
	piCanceled              = "canceled"
)

// ApplySession applies a Checkout Session observed through ev at now.
//
//   - complete and paid (or no_payment_required), or async payment
//     succeeded: Pending, Canceled or Failed becomes Completed, with
//     externalTransactionId (the PaymentIntent), completedAt, expiresAt and
//     Access=True; Completed and Refunded stay as they are.
//   - complete and unpaid: a delayed payment is processing; the purchase
//     stays Pending with Ready=True PaymentProcessing.
//   - async payment failed: Pending becomes Failed.
//   - expired: Pending becomes Canceled.
//
// A session other than the one in status.checkoutSessionId changes nothing
// unless it is paid (a payment for this purchase is never dropped). A
// session whose metadata names another purchase or user is rejected with
// ErrNotThisPurchase; a paid session other than the one that paid an already
// paid purchase is rejected with ErrConflictingPayment.
func ApplySession(p *v1alpha1.Purchase, ev SessionEvent, s stripe.Session, now time.Time) (Result, error) {
	if err := checkSession(p, s); err != nil {
		return Result{}, err
	}
	t := begin(p, now)
	ours := p.Status.CheckoutSessionID == "" || p.Status.CheckoutSessionID == s.ID
	switch {
	case ev == SessionAsyncPaymentSucceeded || (ev != SessionAsyncPaymentFailed && ev != SessionExpiredEvent && sessionPaid(s)):
		if err := t.complete(s.ID, s.PaymentIntentID); err != nil {
			return Result{}, err
		}
	case !ours:
		// An unpaid session we do not track (one whose creation we could
		// not record) is of no consequence: nobody holds its client secret.
	case ev == SessionAsyncPaymentFailed:
		t.fail(ReasonPaymentFailed, fmt.Sprintf("the delayed payment for checkout session %s failed", s.ID))
	case ev == SessionExpiredEvent || s.Status == stripe.SessionExpired:
		t.cancel(ReasonSessionExpired, fmt.Sprintf("checkout session %s expired unpaid", s.ID))
	case s.Status == stripe.SessionComplete:
		t.processing(s.ID)
	}
	return t.finish(), nil
}

// ApplyRetrieved applies a session the controller read from Stripe to heal
// missed webhooks, with its PaymentIntent when the caller read it (pi may be
// nil). It decides what a complete but unpaid session means from the
// PaymentIntent (processing, failed, or succeeded after all) and then
// applies exactly what ApplySession would for the matching webhook, plus the
// latest charge's refunds (ApplyCharge) when pi carries one.
func ApplyRetrieved(p *v1alpha1.Purchase, s stripe.Session, pi *stripe.PaymentIntent, now time.Time) (Result, error) {
	ev := SessionRetrieved
	if s.Status == stripe.SessionComplete && !sessionPaid(s) && pi != nil {
		switch pi.Status {
		case piSucceeded:
			ev = SessionAsyncPaymentSucceeded
			if s.PaymentIntentID == "" {
				s.PaymentIntentID = pi.ID
			}
		case piRequiresPaymentMethod, piCanceled:
			ev = SessionAsyncPaymentFailed
		}
	}
	if s.Status == stripe.SessionComplete && sessionPaid(s) && s.PaymentIntentID == "" && pi != nil {
		s.PaymentIntentID = pi.ID
	}
	res, err := ApplySession(p, ev, s, now)
	if err != nil {
		return res, err
	}
	if pi != nil && pi.LatestCharge != nil && pi.LatestCharge.AmountRefunded > 0 {
		ch := *pi.LatestCharge
		if ch.PaymentIntentID == "" {
			ch.PaymentIntentID = pi.ID
		}
		more, err := ApplyCharge(p, ch, now)
		if err != nil {
			return res, err
		}
		res.Changed = res.Changed || more.Changed
		res.To = more.To
		res.Events = append(res.Events, more.Events...)
	}
	return res, nil
}

func sessionPaid(s stripe.Session) bool {
	return s.Status == stripe.SessionComplete &&
		(s.PaymentStatus == stripe.PaymentPaid || s.PaymentStatus == stripe.PaymentNoPaymentRequired)
}

// checkSession rejects a session whose metadata names another purchase or
// user. A session without our metadata is accepted only if it is the one in
// status.
func checkSession(p *v1alpha1.Purchase, s stripe.Session) error {
	if s.ID == "" {
		return fmt.Errorf("%w: session has no id", ErrNotThisPurchase)
	}
	if err := checkMetadata(p, s.Metadata); err != nil {
		return fmt.Errorf("checkout session %s: %w", s.ID, err)
	}
	if s.Metadata[stripe.MetaPurchaseID] == "" && s.ClientReferenceID != p.Name && s.ID != p.Status.CheckoutSessionID {
		return fmt.Errorf("%w: checkout session %s carries no purchase id and is not purchase %s's session", ErrNotThisPurchase, s.ID, p.Name)
	}
	return nil
}

// checkMetadata compares the purchase and user ids our metadata carries, if
// present, with the purchase.
func checkMetadata(p *v1alpha1.Purchase, md map[string]string) error {
	if id := md[stripe.MetaPurchaseID]; id != "" && id != p.Name {
		return fmt.Errorf("%w: metadata %s is %q, not %q", ErrNotThisPurchase, stripe.MetaPurchaseID, id, p.Name)
	}
	if u, ok := md[stripe.MetaUserID]; ok && u != p.Spec.UserID {
		return fmt.Errorf("%w: metadata %s does not match the purchase's user", ErrNotThisPurchase, stripe.MetaUserID)
	}
	return nil
}

// complete records a payment. It is the only way into Completed.
func (t *tx) complete(sessionID, paymentIntentID string) error {
	st := &t.p.Status
	switch t.phase() {
	case v1alpha1.PurchaseCompleted, v1alpha1.PurchaseRefunded:
		if (st.CheckoutSessionID != "" && sessionID != "" && sessionID != st.CheckoutSessionID) ||
			(st.ExternalTransactionID != "" && paymentIntentID != "" && paymentIntentID != st.ExternalTransactionID) {
			return fmt.Errorf("%w: purchase %s was paid by session %s (PaymentIntent %s), now also by session %s (PaymentIntent %s)",
				ErrConflictingPayment, t.p.Name, st.CheckoutSessionID, st.ExternalTransactionID, sessionID, paymentIntentID)
		}
		// A late duplicate; fill in what an earlier, partial observation
		// (e.g. charge.refunded before checkout.session.completed) left out.
		if st.CheckoutSessionID == "" {
			st.CheckoutSessionID = sessionID
		}
		if st.ExternalTransactionID == "" {
			st.ExternalTransactionID = paymentIntentID
		}
		if st.CompletedAt == nil {
			// The payment itself is seen for the first time: record it
			// as a normal completion would, so that a refund that fails
			// later returns the purchase to Completed with its access
			// period, not lifetime access.
			st.CompletedAt = t.nowTime()
			t.setAccessExpiry()
			t.setCondition(v1alpha1.ConditionReady, metav1.ConditionTrue, ReasonPaid, "checkout session "+sessionID+" paid")
		}
		return nil
	}
	wasCanceled := t.phase() == v1alpha1.PurchaseCanceled || t.phase() == v1alpha1.PurchaseFailed
	from := t.phase()
	st.Phase = v1alpha1.PurchaseCompleted
	st.CheckoutSessionID = sessionID
	if paymentIntentID != "" {
		st.ExternalTransactionID = paymentIntentID
	}
	st.CompletedAt = t.nowTime()
	t.setAccessExpiry()
	t.setCondition(v1alpha1.ConditionReady, metav1.ConditionTrue, ReasonPaid, "checkout session "+sessionID+" paid")
	until := "lifetime access"
	if st.ExpiresAt != nil {
		until = "access until " + st.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if wasCanceled {
		t.event(corev1.EventTypeWarning, EventCompleted, "checkout session %s was paid although the purchase was %s; completed with %s", sessionID, from, until)
	} else {
		t.event(corev1.EventTypeNormal, EventCompleted, "payment confirmed (PaymentIntent %s); %s", st.ExternalTransactionID, until)
	}
	// A full refund seen before the completion (events out of order) wins.
	if st.AmountRefunded > 0 && st.AmountRefunded >= t.p.Spec.Price.Amount {
		t.refunded(st.AmountRefunded)
	}
	return nil
}

// setAccessExpiry sets expiresAt to completedAt plus spec.accessDurationDays
// (nil for lifetime access).
func (t *tx) setAccessExpiry() {
	st := &t.p.Status
	st.ExpiresAt = nil
	if d := t.p.Spec.AccessDurationDays; d != nil && st.CompletedAt != nil {
		exp := metav1.NewTime(st.CompletedAt.Add(time.Duration(*d) * 24 * time.Hour))
		st.ExpiresAt = &exp
	}
}

// processing notes that the buyer finished checkout with a delayed payment.
func (t *tx) processing(sessionID string) {
	if t.phase() != v1alpha1.PurchasePending {
		return
	}
	if c := meta.FindStatusCondition(t.p.Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Reason == ReasonPaymentProcessing {
		return
	}
	if t.p.Status.CheckoutSessionID == "" {
		t.p.Status.CheckoutSessionID = sessionID
	}
	t.setCondition(v1alpha1.ConditionReady, metav1.ConditionTrue, ReasonPaymentProcessing,
		"checkout session "+sessionID+" is complete; waiting for the delayed payment to succeed")
	t.event(corev1.EventTypeNormal, ReasonPaymentProcessing, "checkout session %s is complete; the delayed payment is processing", sessionID)
}

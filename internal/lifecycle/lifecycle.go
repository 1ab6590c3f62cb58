// Package lifecycle holds the Purchase state machine: pure functions that
// apply what was observed in Stripe (a Checkout Session, a Charge, a Refund, a
// Dispute) to a Purchase's status. The Purchase controller (healing) and the
// Stripe webhook receiver both call them, so a purchase moves the same way
// whichever of the two sees Stripe first, and a duplicate or late observation
// changes nothing.
//
// Rules every function keeps:
//   - Refunded, Canceled and Failed are terminal, except that a paid session
//     or payment makes a Canceled or Failed purchase Completed: money was
//     taken, so the buyer gets what they paid for.
//   - An older observation never moves a purchase backwards (a completed
//     session after a full refund leaves it Refunded; a dispute opening after
//     it closed does not suspend access again).
//   - An observation that names another purchase or another user is rejected
//     with an error wrapping ErrNotThisPurchase, and nothing changes.
//
// The functions never call Stripe or the apiserver: callers persist the
// status when Result.Changed and record Result.Events as Kubernetes Events.
package lifecycle

import (
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
)

// Reasons of the Ready condition: the state of the checkout session.
const (
	// ReasonWaitingForCustomer: the buyer's Stripe customer does not exist yet.
	ReasonWaitingForCustomer = "WaitingForCustomer"
	// ReasonCreatingCheckoutSession: the session is being created.
	ReasonCreatingCheckoutSession = "CreatingCheckoutSession"
	// ReasonCheckoutSessionOpen: the session is open and its client secret is
	// in the Secret named like the Purchase (Ready=True).
	ReasonCheckoutSessionOpen = "CheckoutSessionOpen"
	// ReasonStripeUnavailable: Stripe did not answer or answered with a
	// retryable error; the operator retries with backoff.
	ReasonStripeUnavailable = "StripeUnavailable"
	// ReasonStripeRejected: Stripe refused to create the session; the
	// message is Stripe's and the purchase is Failed.
	ReasonStripeRejected = "StripeRejected"
	// ReasonPaymentProcessing: the buyer finished checkout with a delayed
	// payment method; the payment is not confirmed yet (Ready=True).
	ReasonPaymentProcessing = "PaymentProcessing"
	// ReasonPaymentFailed: the delayed payment failed.
	ReasonPaymentFailed = "PaymentFailed"
	// ReasonSessionExpired: the session expired unpaid.
	ReasonSessionExpired = "SessionExpired"
	// ReasonSuperseded: another purchase of the same entity by the same user
	// was paid, so this one was canceled and its session expired.
	ReasonSuperseded = "Superseded"
)

// Reasons of the Access condition. ReasonPaid is also Ready's reason once the
// purchase is paid.
const (
	// ReasonPaid: paid and not expired, refunded or disputed (Access=True).
	ReasonPaid = "Paid"
	// ReasonNotPaid: the purchase was never paid.
	ReasonNotPaid = "NotPaid"
	// ReasonExpired: the access duration is over.
	ReasonExpired = "Expired"
	// ReasonRefunded: refunded in full (also the Refunded condition's reason
	// when True).
	ReasonRefunded = "Refunded"
	// ReasonDisputed: a chargeback is open; access is suspended until it closes.
	ReasonDisputed = "Disputed"
	// ReasonDisputeLost: the chargeback was lost; access ends for good.
	ReasonDisputeLost = "DisputeLost"
)

// Reasons of the Refunded condition when it is False.
const (
	// ReasonRefundPending: the refund was created and Stripe has not
	// confirmed it yet.
	ReasonRefundPending = "RefundPending"
	// ReasonRefundFailed: Stripe could not refund; access is kept and the
	// refund must be handled in the Stripe dashboard.
	ReasonRefundFailed = "RefundFailed"
	// ReasonRefundRejected: Stripe refused to create the refund the
	// operator asked for (for example, the charge was disputed); it is not
	// asked again, the refund must be handled in the Stripe dashboard.
	ReasonRefundRejected = "RefundRejected"
	// ReasonPartiallyRefunded: part of the price was refunded (from the
	// Stripe dashboard); access is kept.
	ReasonPartiallyRefunded = "PartiallyRefunded"
	// ReasonNotRefundable: a refund was requested on a purchase that was
	// never paid.
	ReasonNotRefundable = "NotRefundable"
)

// Event reasons that are not condition reasons.
const (
	// EventCompleted is recorded when a purchase becomes Completed.
	EventCompleted = "Completed"
	// EventCanceled is recorded when a purchase becomes Canceled.
	EventCanceled = "Canceled"
	// EventFailed is recorded when a purchase becomes Failed.
	EventFailed = "Failed"
	// EventAccessExpired is recorded when access runs out.
	EventAccessExpired = "AccessExpired"
	// EventDisputeWon is recorded when a chargeback closes in our favour.
	EventDisputeWon = "DisputeWon"
)

// ErrNotThisPurchase means an observation belongs to another purchase or
// another user (its metadata or ids do not match). Callers log it and change
// nothing; it is not worth retrying.
var ErrNotThisPurchase = errors.New("stripe object does not belong to this purchase")

// ErrConflictingPayment means a second, different payment was seen for a
// purchase that is already paid. The status keeps the first payment; the
// second needs a refund by a human. Callers log it and record a Warning Event.
var ErrConflictingPayment = errors.New("a second payment was made for an already paid purchase")

// Event is a change a human wants to see in `kubectl describe`: the caller
// records it as a Kubernetes Event on the Purchase.
type Event struct {
	// Type is corev1.EventTypeNormal or corev1.EventTypeWarning.
	Type string
	// Reason is a CamelCase reason, e.g. Completed or RefundFailed.
	Reason string
	// Message says what happened, without secrets.
	Message string
}

// Result says what applying an observation did.
type Result struct {
	// Changed is true when the status was modified and must be persisted. A
	// duplicate observation leaves it false.
	Changed bool
	// From and To are the phase before and after ("" is a purchase the
	// controller has not seen yet).
	From, To v1alpha1.PurchasePhase
	// Events are the human-visible changes, in order.
	Events []Event
}

// PhaseChanged reports whether the phase moved.
func (r Result) PhaseChanged() bool { return r.From != r.To }

// tx is one application of an observation to a purchase.
type tx struct {
	p      *v1alpha1.Purchase
	now    time.Time
	before *v1alpha1.PurchaseStatus
	events []Event
}

func begin(p *v1alpha1.Purchase, now time.Time) *tx {
	// Kubernetes stores times with second precision; truncating here makes a
	// status computed in memory equal to the same status read back, so a
	// repeated observation is recognised as a no-op.
	return &tx{p: p, now: now.UTC().Truncate(time.Second), before: p.Status.DeepCopy()}
}

func (t *tx) phase() v1alpha1.PurchasePhase {
	if t.p.Status.Phase == "" {
		return v1alpha1.PurchasePending
	}
	return t.p.Status.Phase
}

func (t *tx) event(typ, reason, format string, args ...any) {
	t.events = append(t.events, Event{Type: typ, Reason: reason, Message: fmt.Sprintf(format, args...)})
}

func (t *tx) nowTime() *metav1.Time {
	n := metav1.NewTime(t.now)
	return &n
}

// setCondition sets a condition; its lastTransitionTime moves only when its
// status changes.
func (t *tx) setCondition(typ string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&t.p.Status.Conditions, metav1.Condition{
		Type:               typ,
		Status:             status,
		Reason:             reason,
		Message:            message,
		ObservedGeneration: t.p.Generation,
		LastTransitionTime: metav1.NewTime(t.now),
	})
}

// end moves a Pending purchase to a terminal phase that was never paid.
// Ready's lastTransitionTime becomes the time the purchase ended, which
// retention counts from.
func (t *tx) end(phase v1alpha1.PurchasePhase, reason, message string) {
	t.p.Status.Phase = phase
	meta.RemoveStatusCondition(&t.p.Status.Conditions, v1alpha1.ConditionReady)
	t.setCondition(v1alpha1.ConditionReady, metav1.ConditionFalse, reason, message)
}

// finish brings the Access condition in line with the phase and reports.
func (t *tx) finish() Result {
	from := t.before.Phase
	granted, reason := Access(t.p, t.now)
	wasGranted := conditionIs(t.p, v1alpha1.ConditionAccess, metav1.ConditionTrue, ReasonPaid, "")
	status := metav1.ConditionFalse
	if granted {
		status = metav1.ConditionTrue
	}
	t.setCondition(v1alpha1.ConditionAccess, status, reason, accessMessage(t.p, reason))
	if reason == ReasonExpired && wasGranted {
		t.event(corev1.EventTypeNormal, EventAccessExpired, "access expired at %s", t.p.Status.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return Result{
		Changed: !equality.Semantic.DeepEqual(t.before, &t.p.Status),
		From:    from,
		To:      t.p.Status.Phase,
		Events:  t.events,
	}
}

// Access reports whether the purchase grants access at now, and the reason
// the Access condition carries.
func Access(p *v1alpha1.Purchase, now time.Time) (granted bool, reason string) {
	switch p.Status.Phase {
	case v1alpha1.PurchaseCompleted:
	case v1alpha1.PurchaseRefunded:
		return false, ReasonRefunded
	default:
		return false, ReasonNotPaid
	}
	d := p.Status.Dispute
	switch {
	case d != nil && d.Status == disputeLost:
		return false, ReasonDisputeLost
	case p.Status.ExpiresAt != nil && !now.Before(p.Status.ExpiresAt.Time):
		return false, ReasonExpired
	case d != nil && disputeOpen(d.Status):
		return false, ReasonDisputed
	}
	return true, ReasonPaid
}

func accessMessage(p *v1alpha1.Purchase, reason string) string {
	switch reason {
	case ReasonPaid:
		if p.Status.ExpiresAt == nil {
			return "paid; lifetime access"
		}
		return "paid; access until " + p.Status.ExpiresAt.UTC().Format(time.RFC3339)
	case ReasonExpired:
		return "access expired at " + p.Status.ExpiresAt.UTC().Format(time.RFC3339)
	case ReasonRefunded:
		return "refunded; access revoked"
	case ReasonDisputed:
		return fmt.Sprintf("payment disputed (%s); access suspended until the dispute closes", p.Status.Dispute.ID)
	case ReasonDisputeLost:
		return fmt.Sprintf("dispute %s lost; access revoked", p.Status.Dispute.ID)
	}
	return "not paid"
}

// Refresh recomputes the Access condition at now without any observation:
// the controller calls it to end access when expiresAt has passed.
func Refresh(p *v1alpha1.Purchase, now time.Time) Result {
	return begin(p, now).finish()
}

// Cancel ends a Pending purchase that was never paid (reason
// ReasonSuperseded or ReasonSessionExpired). Any other phase is left alone.
func Cancel(p *v1alpha1.Purchase, reason, message string, now time.Time) Result {
	t := begin(p, now)
	t.cancel(reason, message)
	return t.finish()
}

// Fail ends a Pending purchase as Failed (reason ReasonStripeRejected or
// ReasonPaymentFailed) with a message a human can act on. Any other phase is
// left alone.
func Fail(p *v1alpha1.Purchase, reason, message string, now time.Time) Result {
	t := begin(p, now)
	t.fail(reason, message)
	return t.finish()
}

func (t *tx) cancel(reason, message string) {
	if t.phase() != v1alpha1.PurchasePending {
		return
	}
	t.end(v1alpha1.PurchaseCanceled, reason, message)
	t.event(corev1.EventTypeNormal, EventCanceled, "%s", message)
}

func (t *tx) fail(reason, message string) {
	if t.phase() != v1alpha1.PurchasePending {
		return
	}
	t.end(v1alpha1.PurchaseFailed, reason, message)
	t.event(corev1.EventTypeWarning, EventFailed, "%s", message)
}

// EndedAt is when a Canceled or Failed purchase ended (the time its Ready
// condition last changed); ok is false for other phases.
func EndedAt(p *v1alpha1.Purchase) (at time.Time, ok bool) {
	if p.Status.Phase != v1alpha1.PurchaseCanceled && p.Status.Phase != v1alpha1.PurchaseFailed {
		return time.Time{}, false
	}
	if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); c != nil {
		return c.LastTransitionTime.Time, true
	}
	return p.CreationTimestamp.Time, true
}

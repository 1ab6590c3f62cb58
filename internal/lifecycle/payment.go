package lifecycle

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/stripe"
)

// Stripe dispute statuses with a meaning for access.
const (
	disputeWon           = "won"
	disputeLost          = "lost"
	disputeWarningClosed = "warning_closed"
)

// disputeOpen reports whether a dispute in this status is still undecided.
func disputeOpen(status string) bool {
	return !disputeClosed(status)
}

func disputeClosed(status string) bool {
	return status == disputeWon || status == disputeLost || status == disputeWarningClosed
}

// ConditionChargeCheck is present (True) while the purchase waits for the
// Purchase controller to read its payment's charge from Stripe, because the
// refund events it got cannot say how much is refunded now. The controller
// applies what it reads with ApplyCurrentCharge, which removes it.
const ConditionChargeCheck = "ChargeCheckRequested"

// Reasons of the ChargeCheckRequested condition.
const (
	// ReasonRefundEventAmbiguous: after a refund failed, a charge.refunded
	// reported the charge refunded in full. It is either a newer refund (in
	// the Stripe dashboard) or the failed refund's own event, delivered late:
	// Stripe counts a refund in amount_refunded when it is created, and the
	// event carries the charge as it was then.
	ReasonRefundEventAmbiguous = "RefundEventAmbiguous"
	// ReasonRefundFailureCounted: a refund failed whose amount was counted
	// in the charge's total as last reported, which may have included other
	// refunds since.
	ReasonRefundFailureCounted = "RefundFailureCounted"
)

// ApplyCharge applies a Charge from an event (charge.refunded). Its
// amount_refunded is the charge's total refunded amount when the event was
// created: amountRefunded becomes it, up or down (a refund that failed gives
// its amount back to the charge). Refunded in full (refunded=true or
// amount_refunded >= amount): the purchase becomes Refunded, whatever phase
// it was in, because money was taken and returned. Partly refunded: the
// amount is recorded, the Refunded condition says PartiallyRefunded, and
// access is kept. A charge never moves a purchase out of Refunded: only a
// failed refund does (ApplyRefund).
//
// Stripe counts a refund in amount_refunded as soon as it is created, before
// it succeeds, and a card refund can still fail. So when the operator has
// created its own refund (status.stripeRefundId), the charge only updates
// amountRefunded; the refund's own status (ApplyRefund) decides. Once a
// refund is known to have failed, a charge reporting no more than what is
// known refunded is the failed refund's echo and changes nothing, and one
// reporting the charge refunded in full is not believed either: events
// arrive in any order, and the failed refund's own charge.refunded, delivered
// after the failure, looks exactly like a newer refund of the whole charge.
// The purchase keeps its phase and access, and the ChargeCheckRequested
// condition asks the controller to read the charge as it is now
// (ApplyCurrentCharge), which decides.
//
// The charge must carry the purchase's PaymentIntent, or our metadata (which
// Stripe copies from the PaymentIntent), otherwise ErrNotThisPurchase.
func ApplyCharge(p *v1alpha1.Purchase, c stripe.Charge, now time.Time) (Result, error) {
	return applyCharge(p, c, now, false)
}

// ApplyCurrentCharge applies a Charge the controller has just read from
// Stripe (the PaymentIntent's latest charge). Its amount_refunded is the
// charge as it is now, whatever events are still on their way, so it is
// believed even after a refund failed: refunded in full makes the purchase
// Refunded; otherwise it is applied as ApplyCharge would. The
// ChargeCheckRequested condition is removed.
func ApplyCurrentCharge(p *v1alpha1.Purchase, c stripe.Charge, now time.Time) (Result, error) {
	return applyCharge(p, c, now, true)
}

func applyCharge(p *v1alpha1.Purchase, c stripe.Charge, now time.Time, current bool) (Result, error) {
	if err := checkPayment(p, "charge "+c.ID, c.PaymentIntentID, c.Metadata); err != nil {
		return Result{}, err
	}
	t := begin(p, now)
	st := &p.Status
	if st.ExternalTransactionID == "" && c.PaymentIntentID != "" {
		st.ExternalTransactionID = c.PaymentIntentID
	}
	amount := c.AmountRefunded
	full := c.Refunded || (c.Amount > 0 && c.AmountRefunded >= c.Amount)
	ownRefundOpen := st.StripeRefundID != "" && !refundStatusFailed(st.StripeRefundStatus) && st.StripeRefundStatus != string(stripe.RefundSucceeded)
	refundFailed := (st.StripeRefundID != "" && refundStatusFailed(st.StripeRefundStatus)) ||
		conditionIs(p, v1alpha1.ConditionRefunded, metav1.ConditionFalse, ReasonRefundFailed, "")
	switch {
	case st.Phase == v1alpha1.PurchaseRefunded:
		st.AmountRefunded = amount
	case full && ownRefundOpen:
		st.AmountRefunded = amount
	case full && !current && refundFailed && amount <= st.AmountRefunded:
		// Nothing new: the failed refund's own charge.refunded.
	case full && !current && refundFailed:
		t.requestChargeCheck(ReasonRefundEventAmbiguous, fmt.Sprintf(
			"charge %s was reported refunded %d of %d %s after a refund failed; reading the charge from Stripe before deciding",
			c.ID, amount, c.Amount, c.Currency))
	case full:
		t.refunded(amount)
	case amount == 0:
		st.AmountRefunded = 0
	case amount != st.AmountRefunded:
		t.partiallyRefunded(amount, c.Currency)
	}
	if current {
		meta.RemoveStatusCondition(&st.Conditions, ConditionChargeCheck)
	}
	return t.finish(), nil
}

// requestChargeCheck sets ChargeCheckRequested, when the payment is known
// (there is a charge to read).
func (t *tx) requestChargeCheck(reason, message string) {
	if t.p.Status.ExternalTransactionID == "" {
		return
	}
	t.setCondition(ConditionChargeCheck, metav1.ConditionTrue, reason, message)
}

// ChargeCheckRequested reports whether the purchase waits for its charge to
// be read from Stripe and applied with ApplyCurrentCharge.
func ChargeCheckRequested(p *v1alpha1.Purchase) bool {
	return meta.FindStatusCondition(p.Status.Conditions, ConditionChargeCheck) != nil
}

// ApplyRefund applies a Refund (charge.refund.updated, or the refund the
// controller created and then reads back).
//
// The operator's own refund (status.stripeRefundId) refunds what was left of
// the charge. Its Stripe status is recorded in status.stripeRefundStatus;
// failed and canceled are final, and a stale pending never replaces
// succeeded. When it turns succeeded, its amount is added once to what was
// refunded before it (capped at the price) and the purchase is Refunded.
// Pending sets Refunded=False RefundPending.
//
// A refund made in the Stripe dashboard does not say how much was refunded
// before it: one of the whole price refunds the purchase; a smaller one is
// recorded only when nothing was known refunded (charge.refunded, which
// Stripe sends for every refund, carries the total).
//
// A failed or canceled refund returned no money: Refunded=False
// RefundFailed with a Warning Event, and its amount no longer counts in
// amountRefunded (the operator's refund counts only once the known total
// reached the price: it refunds the remainder). Whether the purchase is
// still refunded in full is then decided by that total, as the charge's
// amount_refunded would: a purchase that was Refunded and no longer is
// becomes Completed again, with access (the one exception to Refunded being
// terminal: the buyer paid and was not refunded in full) — or Pending again
// if its payment was never observed (the refund was seen before the
// completion), until the completion arrives and grants access with its
// period. For example: 200 refunded in the dashboard, then the operator's
// refund of the remaining 300 succeeds (500, Refunded); if the dashboard
// refund then fails, 300 is refunded, not the whole price, and the purchase
// is Completed again with a RefundFailed Warning for support to handle.
//
// The refund must be status.stripeRefundId, or be for the purchase's
// PaymentIntent, or carry our metadata, otherwise ErrNotThisPurchase.
func ApplyRefund(p *v1alpha1.Purchase, r stripe.Refund, now time.Time) (Result, error) {
	ours := r.ID != "" && r.ID == p.Status.StripeRefundID
	if !ours {
		if err := checkPayment(p, "refund "+r.ID, r.PaymentIntentID, r.Metadata); err != nil {
			return Result{}, err
		}
	}
	t := begin(p, now)
	st := &p.Status
	if st.ExternalTransactionID == "" && r.PaymentIntentID != "" {
		st.ExternalTransactionID = r.PaymentIntentID
	}
	if ours {
		t.ownRefund(r)
		return t.finish(), nil
	}
	switch r.Status {
	case stripe.RefundSucceeded:
		if r.Amount >= p.Spec.Price.Amount {
			t.refunded(p.Spec.Price.Amount)
		} else if st.AmountRefunded == 0 && r.Amount > 0 {
			t.partiallyRefunded(r.Amount, r.Currency)
		}
	case stripe.RefundFailed, stripe.RefundCanceled:
		t.refundFailed(r, true)
	}
	return t.finish(), nil
}

// ownRefund applies an observation of the operator's own refund.
func (t *tx) ownRefund(r stripe.Refund) {
	st := &t.p.Status
	prev := st.StripeRefundStatus
	switch {
	case refundStatusFailed(prev):
		// Final: a later observation is stale.
		return
	case prev == string(stripe.RefundSucceeded) && r.Status != stripe.RefundFailed && r.Status != stripe.RefundCanceled:
		return
	}
	st.StripeRefundStatus = string(r.Status)
	switch r.Status {
	case stripe.RefundSucceeded:
		t.refunded(min(st.AmountRefunded+r.Amount, t.p.Spec.Price.Amount))
	case stripe.RefundFailed, stripe.RefundCanceled:
		// Counted only if it succeeded, or if a charge reported the
		// whole price refunded, which includes it.
		counted := prev == string(stripe.RefundSucceeded) || st.AmountRefunded >= t.p.Spec.Price.Amount
		t.refundFailed(r, counted)
	case stripe.RefundPending, stripe.RefundRequiresAction:
		if st.Phase == v1alpha1.PurchaseCompleted {
			t.setCondition(v1alpha1.ConditionRefunded, metav1.ConditionFalse, ReasonRefundPending,
				fmt.Sprintf("refund %s is %s at Stripe", r.ID, r.Status))
		}
	}
}

// refundStatusFailed reports whether a refund status means no money was
// returned, for good.
func refundStatusFailed(status string) bool {
	return status == string(stripe.RefundFailed) || status == string(stripe.RefundCanceled)
}

// RefundSettled reports whether the operator's refund has a final status in
// Stripe (succeeded, failed or canceled), so it need not be read again.
func RefundSettled(p *v1alpha1.Purchase) bool {
	return p.Status.StripeRefundStatus == string(stripe.RefundSucceeded) || refundStatusFailed(p.Status.StripeRefundStatus)
}

// refundFailed records a refund that returned no money, once per refund (the
// condition message names the refund, which makes duplicates no-ops).
// counted says whether its amount is in amountRefunded.
func (t *tx) refundFailed(r stripe.Refund, counted bool) {
	st := &t.p.Status
	if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionRefunded); c != nil &&
		c.Reason == ReasonRefundFailed && strings.Contains(c.Message, "refund "+r.ID+" ") {
		return
	}
	if counted {
		st.AmountRefunded = max(st.AmountRefunded-r.Amount, 0)
		// The total it is taken from came from events, which may be older
		// than another refund made meanwhile: the charge decides.
		t.requestChargeCheck(ReasonRefundFailureCounted, fmt.Sprintf(
			"refund %s failed after it was counted in the charge's refunded total; reading the charge from Stripe to confirm %d %s is refunded",
			r.ID, st.AmountRefunded, t.p.Spec.Price.Currency))
	}
	msg := fmt.Sprintf("refund %s %s", r.ID, r.Status)
	if r.FailureReason != "" {
		msg += " (" + r.FailureReason + ")"
	}
	switch {
	case st.Phase == v1alpha1.PurchaseRefunded && st.AmountRefunded < t.p.Spec.Price.Amount && st.CompletedAt != nil:
		st.Phase = v1alpha1.PurchaseCompleted
		st.RefundedAt = nil
		msg += "; the purchase is Completed again and keeps access, handle the refund in the Stripe dashboard"
	case st.Phase == v1alpha1.PurchaseRefunded && st.AmountRefunded < t.p.Spec.Price.Amount:
		// Refunded before the payment itself was seen (events out of
		// order): it is not known to be paid yet, so it waits, Pending,
		// for the session's completion (webhook or healing), which
		// grants access with its period.
		st.Phase = v1alpha1.PurchasePending
		st.RefundedAt = nil
		msg += "; the purchase is Pending again until its payment is confirmed"
	case st.Phase == v1alpha1.PurchaseCompleted:
		msg += "; access kept, handle the refund in the Stripe dashboard"
	}
	t.setCondition(v1alpha1.ConditionRefunded, metav1.ConditionFalse, ReasonRefundFailed, msg)
	t.event(corev1.EventTypeWarning, ReasonRefundFailed, "%s", msg)
}

// ApplyDispute applies a Dispute (charge.dispute.created or
// charge.dispute.closed). An open dispute suspends access (Disputed); won
// restores it unless it expired or was refunded meanwhile; lost ends it for
// good (DisputeLost). A closed dispute is final: the same dispute seen open
// again (a late created event) changes nothing, and a lost one is never
// replaced.
//
// The dispute must be for the purchase's PaymentIntent, otherwise
// ErrNotThisPurchase.
func ApplyDispute(p *v1alpha1.Purchase, d stripe.Dispute, now time.Time) (Result, error) {
	if d.PaymentIntentID == "" || d.PaymentIntentID != p.Status.ExternalTransactionID {
		return Result{}, fmt.Errorf("%w: dispute %s is for PaymentIntent %q, purchase %s was paid by %q",
			ErrNotThisPurchase, d.ID, d.PaymentIntentID, p.Name, p.Status.ExternalTransactionID)
	}
	t := begin(p, now)
	cur := p.Status.Dispute
	switch {
	case cur != nil && cur.ID == d.ID && disputeClosed(cur.Status):
		// Closed is final; anything later about it is stale.
	case cur != nil && cur.Status == disputeLost:
	case cur != nil && cur.ID == d.ID && cur.Status == d.Status:
	default:
		wasOpen := cur != nil && disputeOpen(cur.Status)
		p.Status.Dispute = &v1alpha1.DisputeStatus{ID: d.ID, Status: d.Status}
		switch {
		case d.Status == disputeLost:
			t.event(corev1.EventTypeWarning, ReasonDisputeLost, "dispute %s lost; access revoked", d.ID)
		case disputeClosed(d.Status):
			t.event(corev1.EventTypeNormal, EventDisputeWon, "dispute %s closed (%s); access restored unless it expired", d.ID, d.Status)
		case !wasOpen:
			t.event(corev1.EventTypeWarning, ReasonDisputed, "payment disputed (%s, %s); access suspended", d.ID, d.Status)
		}
	}
	return t.finish(), nil
}

// checkPayment matches a charge or refund to the purchase by PaymentIntent,
// or by our metadata when the purchase has not recorded its PaymentIntent yet.
func checkPayment(p *v1alpha1.Purchase, what, paymentIntentID string, md map[string]string) error {
	if err := checkMetadata(p, md); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if pi := p.Status.ExternalTransactionID; pi != "" {
		if paymentIntentID != pi {
			return fmt.Errorf("%w: %s is for PaymentIntent %q, purchase %s was paid by %q", ErrNotThisPurchase, what, paymentIntentID, p.Name, pi)
		}
		return nil
	}
	if md[stripe.MetaPurchaseID] != p.Name {
		return fmt.Errorf("%w: %s names no PaymentIntent or purchase of %s", ErrNotThisPurchase, what, p.Name)
	}
	return nil
}

// refunded records a full refund. Any phase may become Refunded: it means
// money was taken and given back.
func (t *tx) refunded(amount int64) {
	st := &t.p.Status
	st.AmountRefunded = amount
	if st.Phase == v1alpha1.PurchaseRefunded {
		if st.RefundedAt == nil {
			st.RefundedAt = t.nowTime()
		}
		return
	}
	st.Phase = v1alpha1.PurchaseRefunded
	st.RefundedAt = t.nowTime()
	msg := fmt.Sprintf("refunded %d %s in full", st.AmountRefunded, t.p.Spec.Price.Currency)
	t.setCondition(v1alpha1.ConditionRefunded, metav1.ConditionTrue, ReasonRefunded, msg)
	t.event(corev1.EventTypeNormal, ReasonRefunded, "%s; access revoked", msg)
}

func (t *tx) partiallyRefunded(amount int64, currency string) {
	if t.p.Status.Phase == v1alpha1.PurchaseRefunded {
		t.p.Status.AmountRefunded = amount
		return
	}
	if currency == "" {
		currency = t.p.Spec.Price.Currency
	}
	t.p.Status.AmountRefunded = amount
	msg := fmt.Sprintf("%d of %d %s refunded; access kept", amount, t.p.Spec.Price.Amount, currency)
	t.setCondition(v1alpha1.ConditionRefunded, metav1.ConditionFalse, ReasonPartiallyRefunded, msg)
	t.event(corev1.EventTypeNormal, ReasonPartiallyRefunded, "%s", msg)
}

// conditionIs reports whether the condition has this status and reason (and
// message, unless message is empty).
func conditionIs(p *v1alpha1.Purchase, typ string, status metav1.ConditionStatus, reason, message string) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == typ {
			return c.Status == status && c.Reason == reason && (message == "" || c.Message == message)
		}
	}
	return false
}

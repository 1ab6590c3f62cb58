package emulator

import (
	"time"
)

// RefundFailMode says how the next refund created through the API ends.
type RefundFailMode string

// Refund failure modes for FailNextRefund.
const (
	// RefundSucceeds is Stripe's common case: the refund succeeds at once.
	RefundSucceeds RefundFailMode = ""
	// RefundFails creates the refund pending and fails it right after the
	// create call (charge.refund.updated with status failed), which is how
	// card refunds fail in Stripe.
	RefundFails RefundFailMode = "fail"
	// RefundStaysPending leaves the refund pending until FailRefund or
	// SucceedRefund.
	RefundStaysPending RefundFailMode = "pending"
)

// refundFailureReason is the failure_reason of refunds the emulator fails.
const refundFailureReason = "expired_or_canceled_card"

func (e *Emulator) createRefund(c *call) ([]byte, *apiError) {
	f := c.form
	piID, chID := f.str("payment_intent"), f.str("charge")
	if piID == "" && chID == "" {
		return nil, invalidRequestCode("parameter_missing", "charge", "One of `charge` or `payment_intent` is required.")
	}
	amount, amountSet, err := f.int64("amount")
	if err != nil {
		return nil, err
	}
	if amountSet && amount < 1 {
		return nil, invalidRequest("amount", "This value must be greater than or equal to 1.")
	}
	reason := f.str("reason")
	switch reason {
	case "", "duplicate", "fraudulent", "requested_by_customer":
	default:
		return nil, invalidRequest("reason", "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer.")
	}
	md, err := f.createMetadata("metadata")
	if err != nil {
		return nil, err
	}

	now := e.lock()
	defer e.mu.Unlock()
	var ch *charge
	if piID != "" {
		pi, ok := e.intents[piID]
		if !ok {
			return nil, noSuch("payment_intent", piID, "payment_intent")
		}
		if pi.Status != "succeeded" || pi.LatestCharge == nil {
			return nil, invalidRequestCode("payment_intent_unexpected_state", "payment_intent",
				"This PaymentIntent (%s) does not have a successful charge to refund.", piID)
		}
		ch = e.charges[*pi.LatestCharge]
		if chID != "" && chID != ch.ID {
			return nil, invalidRequest("charge", "The charge %s does not belong to PaymentIntent %s.", chID, piID)
		}
	} else {
		var ok bool
		if ch, ok = e.charges[chID]; !ok {
			return nil, noSuch("charge", chID, "charge")
		}
	}
	if ch.Status != "succeeded" {
		return nil, invalidRequestCode("charge_not_refundable", "", "Charge %s has status %s and cannot be refunded.", ch.ID, ch.Status)
	}
	if dp, ok := e.disputes[ch.dispute]; ok && dp.Status != "won" {
		return nil, invalidRequestCode("charge_disputed", "", "Charge %s has been charged back; it cannot be refunded.", ch.ID)
	}
	remaining := ch.Amount - ch.AmountRefunded
	if remaining <= 0 {
		return nil, invalidRequestCode("charge_already_refunded", "", "Charge %s has already been refunded.", ch.ID)
	}
	if !amountSet {
		amount = remaining
	}
	if amount > remaining {
		return nil, invalidRequestCode("amount_too_large", "amount",
			"Refund amount (%d %s) is greater than unrefunded amount on charge (%d %s).", amount, ch.Currency, remaining, ch.Currency)
	}

	mode := e.refundFail
	e.refundFail = RefundSucceeds
	re := &refund{
		ID:            newID("re_", 24),
		Object:        "refund",
		Amount:        amount,
		Charge:        ch.ID,
		Created:       now.Unix(),
		Currency:      ch.Currency,
		Metadata:      md,
		PaymentIntent: ch.PaymentIntent,
		Reason:        nullable(reason),
		Status:        "succeeded",
	}
	if mode == RefundSucceeds {
		re.BalanceTransaction = nullable(newID("txn_", 24))
	} else {
		re.Status = "pending"
	}
	e.refunds[re.ID] = re
	// amount_refunded counts pending refunds too: Stripe takes the money
	// back from the balance when the refund is created.
	ch.AmountRefunded += amount
	ch.Refunded = ch.AmountRefunded == ch.Amount
	req := c.eventRequest()
	e.emitLocked("refund.created", re, req, nil, nil)
	e.emitLocked("charge.refunded", ch, req, map[string]any{"amount_refunded": ch.AmountRefunded - amount, "refunded": false}, nil)
	body, apiErr := e.render(re, c.expand())
	if mode == RefundFails {
		if err := e.failRefundLocked(re); err != nil {
			return nil, err
		}
	}
	return body, apiErr
}

func (e *Emulator) getRefund(c *call) ([]byte, *apiError) {
	return retrieve(e, c, "refund", func() map[string]*refund { return e.refunds })
}

// failRefundLocked fails a pending or succeeded refund: the money goes back
// to the merchant's balance, so the charge's amount_refunded drops again.
func (e *Emulator) failRefundLocked(re *refund) *apiError {
	if re.Status != "pending" && re.Status != "succeeded" {
		return invalidRequest("", "Refund %s has status %s and cannot fail.", re.ID, re.Status)
	}
	prev := map[string]any{"status": re.Status}
	re.Status = "failed"
	re.FailureReason = nullable(refundFailureReason)
	if ch, ok := e.charges[re.Charge]; ok {
		ch.AmountRefunded -= re.Amount
		ch.Refunded = false
	}
	e.emitLocked("charge.refund.updated", re, eventRequest{}, prev, nil)
	e.emitLocked("refund.updated", re, eventRequest{}, prev, nil)
	e.emitLocked("refund.failed", re, eventRequest{}, nil, nil)
	return nil
}

func (e *Emulator) succeedRefundLocked(re *refund) *apiError {
	if re.Status != "pending" {
		return invalidRequest("", "Refund %s has status %s; only pending refunds can succeed.", re.ID, re.Status)
	}
	prev := map[string]any{"status": re.Status}
	re.Status = "succeeded"
	re.BalanceTransaction = nullable(newID("txn_", 24))
	e.emitLocked("charge.refund.updated", re, eventRequest{}, prev, nil)
	e.emitLocked("refund.updated", re, eventRequest{}, prev, nil)
	return nil
}

// disputeLocked opens a dispute on a paid charge.
func (e *Emulator) disputeLocked(ch *charge, now time.Time) (*dispute, *apiError) {
	if ch.Status != "succeeded" {
		return nil, invalidRequest("", "Charge %s has status %s; only succeeded charges can be disputed.", ch.ID, ch.Status)
	}
	if ch.dispute != "" {
		return nil, invalidRequest("", "Charge %s already has dispute %s.", ch.ID, ch.dispute)
	}
	dp := &dispute{
		ID:                  newID("dp_", 24),
		Object:              "dispute",
		Amount:              ch.Amount - ch.AmountRefunded,
		BalanceTransactions: []struct{}{},
		Charge:              ch.ID,
		Created:             now.Unix(),
		Currency:            ch.Currency,
		Metadata:            map[string]string{},
		PaymentIntent:       ch.PaymentIntent,
		Reason:              "fraudulent",
		Status:              "needs_response",
	}
	e.disputes[dp.ID] = dp
	ch.dispute = dp.ID
	ch.Disputed = true
	e.emitLocked("charge.dispute.created", dp, eventRequest{}, nil, nil)
	return dp, nil
}

// closeDisputeLocked ends a dispute as won or lost.
func (e *Emulator) closeDisputeLocked(dp *dispute, status string) *apiError {
	switch status {
	case "won", "lost":
	default:
		return invalidRequest("status", "Invalid status %q: must be won or lost.", status)
	}
	switch dp.Status {
	case "won", "lost", "warning_closed":
		return invalidRequest("", "Dispute %s is already closed (%s).", dp.ID, dp.Status)
	}
	prev := map[string]any{"status": dp.Status}
	dp.Status = status
	e.emitLocked("charge.dispute.closed", dp, eventRequest{}, prev, nil)
	return nil
}

func (e *Emulator) getDispute(c *call) ([]byte, *apiError) {
	return retrieve(e, c, "dispute", func() map[string]*dispute { return e.disputes })
}

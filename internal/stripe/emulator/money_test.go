package emulator_test

import (
	"net/http"
	"net/url"
	"testing"

	stripego "github.com/stripe/stripe-go/v76"

	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

func refundParams(pi string, amount int64) *stripego.RefundParams {
	p := &stripego.RefundParams{PaymentIntent: stripego.String(pi), Metadata: map[string]string{"payToViewPurchaseId": "ptv-abc12"}}
	if amount > 0 {
		p.Amount = stripego.Int64(amount)
	}
	return p
}

func TestRefund_FullRefundSucceedsAndEmitsChargeRefunded(t *testing.T) {
	h := newHarness(t)
	_, pi := h.paidSession()

	re, err := h.sc.Refunds.New(refundParams(pi.ID, 0))
	if err != nil {
		t.Fatalf("refunding: %v", err)
	}
	if re.Status != stripego.RefundStatusSucceeded || re.Amount != 1000 || re.PaymentIntent.ID != pi.ID || re.Charge.ID != pi.LatestCharge.ID {
		t.Errorf("refund %+v", re)
	}
	if re.Metadata["payToViewPurchaseId"] != "ptv-abc12" {
		t.Errorf("refund metadata %v", re.Metadata)
	}
	ev := h.recv.waitForType(t, "charge.refunded", pi.LatestCharge.ID)
	ch := decodeObject[stripego.Charge](t, ev)
	if ch.AmountRefunded != 1000 || !ch.Refunded || ch.PaymentIntent.ID != pi.ID || ch.Metadata["payToViewPurchaseId"] != "ptv-abc12" {
		t.Errorf("charge.refunded charge %+v", ch)
	}
	got, err := h.sc.Refunds.Get(re.ID, nil)
	if err != nil || got.Status != stripego.RefundStatusSucceeded {
		t.Errorf("retrieved refund %+v, %v", got, err)
	}

	_, err = h.sc.Refunds.New(refundParams(pi.ID, 0))
	if se := stripeErr(t, err); se.Code != stripego.ErrorCodeChargeAlreadyRefunded || se.HTTPStatusCode != 400 {
		t.Errorf("second full refund: %d %s %s", se.HTTPStatusCode, se.Code, se.Msg)
	}
}

func TestRefund_PartialRefundsUpToTheChargeAmount(t *testing.T) {
	h := newHarness(t)
	_, pi := h.paidSession()
	if _, err := h.sc.Refunds.New(refundParams(pi.ID, 300)); err != nil {
		t.Fatalf("partial refund: %v", err)
	}
	ch, err := h.sc.Charges.Get(pi.LatestCharge.ID, nil)
	if err != nil || ch.AmountRefunded != 300 || ch.Refunded {
		t.Fatalf("after 300: %+v, %v", ch, err)
	}
	_, err = h.sc.Refunds.New(refundParams(pi.ID, 800))
	if se := stripeErr(t, err); se.Code != stripego.ErrorCodeAmountTooLarge || se.Param != "amount" {
		t.Errorf("over-refund: %s %s %s", se.Code, se.Param, se.Msg)
	}
	// Refunding by charge id takes what is left.
	re, err := h.sc.Refunds.New(&stripego.RefundParams{Charge: stripego.String(pi.LatestCharge.ID)})
	if err != nil || re.Amount != 700 {
		t.Fatalf("refunding the rest: %+v, %v", re, err)
	}
	ch, _ = h.sc.Charges.Get(pi.LatestCharge.ID, nil)
	if ch.AmountRefunded != 1000 || !ch.Refunded {
		t.Errorf("after full refund: amount_refunded=%d refunded=%v", ch.AmountRefunded, ch.Refunded)
	}
	if n := len(h.em.State().Refunds); n != 2 {
		t.Errorf("%d refunds, want 2", n)
	}
}

func TestRefund_RejectsBadRequests(t *testing.T) {
	h := newHarness(t)
	s := h.openSession()
	pending, err := h.em.PayAsync(s.ID, emulator.AsyncPending, emulator.PayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		params *stripego.RefundParams
		code   stripego.ErrorCode
		status int
	}{
		"neither charge nor intent": {&stripego.RefundParams{}, "parameter_missing", 400},
		"unknown intent":            {refundParams("pi_nope", 0), stripego.ErrorCodeResourceMissing, 400},
		"intent still processing":   {refundParams(pending.PaymentIntentID, 0), "payment_intent_unexpected_state", 400},
		"zero amount":               {&stripego.RefundParams{Charge: stripego.String("ch_x"), Amount: stripego.Int64(0)}, "", 400},
		"invalid reason":            {&stripego.RefundParams{Charge: stripego.String("ch_x"), Reason: stripego.String("bored")}, "", 400},
		"unknown charge":            {&stripego.RefundParams{Charge: stripego.String("ch_nope")}, stripego.ErrorCodeResourceMissing, 400},
		"unknown parameter in extra": {func() *stripego.RefundParams {
			p := refundParams("pi_x", 0)
			p.AddExtra("refund_all", "true")
			return p
		}(), "parameter_unknown", 400},
	} {
		_, err := h.sc.Refunds.New(tc.params)
		se := stripeErr(t, err)
		if se.Code != tc.code || se.HTTPStatusCode != tc.status || se.Type != stripego.ErrorTypeInvalidRequest {
			t.Errorf("%s: %d %s %q (%s)", name, se.HTTPStatusCode, se.Type, se.Code, se.Msg)
		}
	}
}

func TestRefund_FailNextEndsPendingThenFailed(t *testing.T) {
	h := newHarness(t)
	_, pi := h.paidSession()
	if code, body := h.helper("/_emulator/v1/refunds/fail_next", nil, nil); code != http.StatusOK {
		t.Fatalf("fail_next: %d %s", code, body)
	}
	re, err := h.sc.Refunds.New(refundParams(pi.ID, 0))
	if err != nil {
		t.Fatalf("refunding: %v", err)
	}
	if re.Status != stripego.RefundStatusPending {
		t.Errorf("create answered status %s, want pending", re.Status)
	}
	ev := h.recv.waitForType(t, "charge.refund.updated", re.ID)
	upd := decodeObject[stripego.Refund](t, ev)
	if upd.Status != stripego.RefundStatusFailed || upd.FailureReason == "" {
		t.Errorf("charge.refund.updated refund %s reason %q, want failed with a reason", upd.Status, upd.FailureReason)
	}
	if ev.Data.PreviousAttributes["status"] != "pending" {
		t.Errorf("previous_attributes %v, want status pending", ev.Data.PreviousAttributes)
	}
	// charge.refunded came first, with the money out; the failure put it back.
	evs := h.recv.snapshot()
	if evs[len(evs)-2].Type != "charge.refunded" {
		t.Errorf("events %s, want charge.refunded before charge.refund.updated", eventTypes(evs))
	}
	ch, _ := h.sc.Charges.Get(pi.LatestCharge.ID, nil)
	if ch.AmountRefunded != 0 || ch.Refunded {
		t.Errorf("charge after failed refund: amount_refunded=%d refunded=%v, want 0/false", ch.AmountRefunded, ch.Refunded)
	}
	got, _ := h.sc.Refunds.Get(re.ID, nil)
	if got.Status != stripego.RefundStatusFailed {
		t.Errorf("retrieved refund %s", got.Status)
	}
	// Only the next refund fails: a new one succeeds.
	if again, err := h.sc.Refunds.New(refundParams(pi.ID, 0)); err != nil || again.Status != stripego.RefundStatusSucceeded {
		t.Errorf("refund after the failed one: %+v, %v", again, err)
	}
}

func TestRefund_PendingUntilHelperDecides(t *testing.T) {
	h := newHarness(t)
	_, pi := h.paidSession()
	if err := h.em.FailNextRefund(emulator.RefundStaysPending); err != nil {
		t.Fatal(err)
	}
	re, err := h.sc.Refunds.New(refundParams(pi.ID, 400))
	if err != nil || re.Status != stripego.RefundStatusPending {
		t.Fatalf("pending refund: %+v, %v", re, err)
	}
	code, body := h.helper("/_emulator/v1/refunds/"+re.ID+"/succeed", nil, nil)
	if code != http.StatusOK {
		t.Fatalf("succeed: %d %s", code, body)
	}
	ev := h.recv.waitForType(t, "charge.refund.updated", re.ID)
	if r := decodeObject[stripego.Refund](t, ev); r.Status != stripego.RefundStatusSucceeded {
		t.Errorf("updated refund %s", r.Status)
	}
	if _, err := h.em.SucceedRefund(re.ID); err == nil {
		t.Errorf("a succeeded refund succeeded again")
	}
	// Stripe can still fail a succeeded refund; the charge gets the money back.
	failed, err := h.em.FailRefund(re.ID)
	if err != nil || failed.Status != "failed" {
		t.Fatalf("failing a succeeded refund: %+v, %v", failed, err)
	}
	if ch, _ := h.sc.Charges.Get(pi.LatestCharge.ID, nil); ch.AmountRefunded != 0 {
		t.Errorf("amount_refunded %d after the failure", ch.AmountRefunded)
	}
}

func TestDispute_OpensAndCloses(t *testing.T) {
	for _, outcome := range []string{"won", "lost"} {
		t.Run(outcome, func(t *testing.T) {
			h := newHarness(t)
			_, pi := h.paidSession()
			var opened map[string]any
			code, body := h.helper("/_emulator/v1/charges/"+pi.LatestCharge.ID+"/dispute", nil, &opened)
			if code != http.StatusOK {
				t.Fatalf("dispute: %d %s", code, body)
			}
			dpID := opened["id"].(string)
			ev := h.recv.waitForType(t, "charge.dispute.created", dpID)
			dp := decodeObject[stripego.Dispute](t, ev)
			if dp.Status != stripego.DisputeStatusNeedsResponse || dp.Charge.ID != pi.LatestCharge.ID || dp.PaymentIntent.ID != pi.ID || dp.Amount != 1000 {
				t.Errorf("created dispute %+v", dp)
			}
			if ch, _ := h.sc.Charges.Get(pi.LatestCharge.ID, nil); !ch.Disputed {
				t.Errorf("charge not marked disputed")
			}
			_, err := h.sc.Refunds.New(refundParams(pi.ID, 0))
			if se := stripeErr(t, err); se.Code != stripego.ErrorCodeChargeDisputed {
				t.Errorf("refunding a disputed charge: %s %s", se.Code, se.Msg)
			}

			code, body = h.helper("/_emulator/v1/disputes/"+dpID+"/close", url.Values{"status": {outcome}}, nil)
			if code != http.StatusOK {
				t.Fatalf("close: %d %s", code, body)
			}
			ev = h.recv.waitForType(t, "charge.dispute.closed", dpID)
			if closed := decodeObject[stripego.Dispute](t, ev); string(closed.Status) != outcome {
				t.Errorf("closed dispute status %s, want %s", closed.Status, outcome)
			}
			if _, err := h.em.CloseDispute(dpID, "won"); err == nil {
				t.Errorf("closing a closed dispute succeeded")
			}
		})
	}
}

func TestDispute_ByPaymentIntentClosedAtOnce(t *testing.T) {
	h := newHarness(t)
	_, pi := h.paidSession()
	dp, err := h.em.Dispute(pi.ID, "lost")
	if err != nil {
		t.Fatalf("dispute: %v", err)
	}
	if dp.Status != "lost" || dp.ChargeID != pi.LatestCharge.ID {
		t.Errorf("dispute %+v", dp)
	}
	evs := h.recv.waitFor(t, "dispute events", func(evs []stripego.Event) bool { return len(evs) >= 3 })
	if evs[1].Type != "charge.dispute.created" || evs[2].Type != "charge.dispute.closed" {
		t.Errorf("events %s", eventTypes(evs))
	}
	if _, err := h.em.Dispute(pi.LatestCharge.ID, ""); err == nil {
		t.Errorf("a second dispute on the same charge was opened")
	}
	if _, err := h.em.Dispute(pi.ID, "maybe"); err == nil {
		t.Errorf("invalid close status accepted")
	}
}

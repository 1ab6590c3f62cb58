package stripe

import (
	"encoding/json"
	"errors"
	"fmt"

	stripego "github.com/stripe/stripe-go/v76"
)

// Event types the operator subscribes to. The webhook endpoint in Stripe
// must enable exactly these.
const (
	EventCheckoutSessionCompleted             = "checkout.session.completed"
	EventCheckoutSessionAsyncPaymentSucceeded = "checkout.session.async_payment_succeeded"
	EventCheckoutSessionAsyncPaymentFailed    = "checkout.session.async_payment_failed"
	EventCheckoutSessionExpired               = "checkout.session.expired"
	EventChargeRefunded                       = "charge.refunded"
	EventChargeRefundUpdated                  = "charge.refund.updated"
	EventChargeDisputeCreated                 = "charge.dispute.created"
	EventChargeDisputeClosed                  = "charge.dispute.closed"
)

// HandledEventTypes lists the event types the operator acts on.
var HandledEventTypes = []string{
	EventCheckoutSessionCompleted,
	EventCheckoutSessionAsyncPaymentSucceeded,
	EventCheckoutSessionAsyncPaymentFailed,
	EventCheckoutSessionExpired,
	EventChargeRefunded,
	EventChargeRefundUpdated,
	EventChargeDisputeCreated,
	EventChargeDisputeClosed,
}

// ErrUnexpectedObject is wrapped by the decoders when an event carries a
// different object type than asked for, or no object at all.
var ErrUnexpectedObject = errors.New("unexpected event data object")

// decodeObject unmarshals the event's data.object into v after checking
// that its "object" field is want.
func decodeObject(ev stripego.Event, want string, v any) error {
	if ev.Data == nil || len(ev.Data.Raw) == 0 {
		return fmt.Errorf("event %s (%s) has no data.object: %w", ev.ID, ev.Type, ErrUnexpectedObject)
	}
	var head struct {
		Object string `json:"object"`
	}
	if err := json.Unmarshal(ev.Data.Raw, &head); err != nil {
		return fmt.Errorf("decoding data.object of event %s (%s): %w", ev.ID, ev.Type, err)
	}
	if head.Object != want {
		return fmt.Errorf("event %s (%s) carries a %q object, want %q: %w", ev.ID, ev.Type, head.Object, want, ErrUnexpectedObject)
	}
	if err := json.Unmarshal(ev.Data.Raw, v); err != nil {
		return fmt.Errorf("decoding %s of event %s (%s): %w", want, ev.ID, ev.Type, err)
	}
	return nil
}

// SessionFromEvent decodes the Checkout Session of a checkout.session.*
// event.
func SessionFromEvent(ev stripego.Event) (Session, error) {
	var s stripego.CheckoutSession
	if err := decodeObject(ev, "checkout.session", &s); err != nil {
		return Session{}, err
	}
	return SessionFromStripe(&s), nil
}

// ChargeFromEvent decodes the Charge of a charge.* event such as
// charge.refunded.
func ChargeFromEvent(ev stripego.Event) (Charge, error) {
	var c stripego.Charge
	if err := decodeObject(ev, "charge", &c); err != nil {
		return Charge{}, err
	}
	return ChargeFromStripe(&c), nil
}

// RefundFromEvent decodes the Refund of a charge.refund.updated event.
func RefundFromEvent(ev stripego.Event) (Refund, error) {
	var r stripego.Refund
	if err := decodeObject(ev, "refund", &r); err != nil {
		return Refund{}, err
	}
	return RefundFromStripe(&r), nil
}

// DisputeFromEvent decodes the Dispute of a charge.dispute.* event.
func DisputeFromEvent(ev stripego.Event) (Dispute, error) {
	var d stripego.Dispute
	if err := decodeObject(ev, "dispute", &d); err != nil {
		return Dispute{}, err
	}
	return DisputeFromStripe(&d), nil
}

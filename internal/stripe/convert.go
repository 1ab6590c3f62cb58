package stripe

import (
	"time"

	stripego "github.com/stripe/stripe-go/v76"
)

// The converters below are the only place stripe-go objects become the
// package's value types; client methods and event decoders both use them.
// Expandable fields (customer, payment_intent, charge, product) may arrive
// as bare ids (webhook payloads) or expanded objects (API responses);
// stripe-go fills ID in both cases.

// SessionFromStripe converts a Checkout Session.
func SessionFromStripe(s *stripego.CheckoutSession) Session {
	if s == nil {
		return Session{}
	}
	out := Session{
		ID:                s.ID,
		ClientSecret:      s.ClientSecret,
		Status:            SessionStatus(s.Status),
		PaymentStatus:     PaymentStatus(s.PaymentStatus),
		ClientReferenceID: s.ClientReferenceID,
		AmountTotal:       s.AmountTotal,
		Currency:          string(s.Currency),
		Created:           unixTime(s.Created),
		ExpiresAt:         unixTime(s.ExpiresAt),
		Metadata:          copyMap(s.Metadata),
	}
	if s.PaymentIntent != nil {
		out.PaymentIntentID = s.PaymentIntent.ID
	}
	if s.Customer != nil {
		out.CustomerID = s.Customer.ID
	}
	return out
}

// ChargeFromStripe converts a Charge.
func ChargeFromStripe(c *stripego.Charge) Charge {
	if c == nil {
		return Charge{}
	}
	out := Charge{
		ID:             c.ID,
		Amount:         c.Amount,
		AmountRefunded: c.AmountRefunded,
		Refunded:       c.Refunded,
		Disputed:       c.Disputed,
		Currency:       string(c.Currency),
		Metadata:       copyMap(c.Metadata),
	}
	if c.PaymentIntent != nil {
		out.PaymentIntentID = c.PaymentIntent.ID
	}
	return out
}

// PaymentIntentFromStripe converts a PaymentIntent. When latest_charge was
// not expanded, LatestCharge holds only the charge's ID.
func PaymentIntentFromStripe(pi *stripego.PaymentIntent) PaymentIntent {
	if pi == nil {
		return PaymentIntent{}
	}
	out := PaymentIntent{
		ID:       pi.ID,
		Status:   string(pi.Status),
		Amount:   pi.Amount,
		Currency: string(pi.Currency),
		Metadata: copyMap(pi.Metadata),
	}
	if pi.LatestCharge != nil && pi.LatestCharge.ID != "" {
		ch := ChargeFromStripe(pi.LatestCharge)
		if ch.PaymentIntentID == "" {
			ch.PaymentIntentID = pi.ID
		}
		out.LatestCharge = &ch
	}
	return out
}

// RefundFromStripe converts a Refund.
func RefundFromStripe(r *stripego.Refund) Refund {
	if r == nil {
		return Refund{}
	}
	out := Refund{
		ID:            r.ID,
		Amount:        r.Amount,
		Currency:      string(r.Currency),
		Status:        RefundStatus(r.Status),
		FailureReason: string(r.FailureReason),
		Metadata:      copyMap(r.Metadata),
	}
	if r.PaymentIntent != nil {
		out.PaymentIntentID = r.PaymentIntent.ID
	}
	if r.Charge != nil {
		out.ChargeID = r.Charge.ID
	}
	return out
}

// DisputeFromStripe converts a Dispute.
func DisputeFromStripe(d *stripego.Dispute) Dispute {
	if d == nil {
		return Dispute{}
	}
	out := Dispute{
		ID:     d.ID,
		Status: string(d.Status),
		Amount: d.Amount,
	}
	if d.Charge != nil {
		out.ChargeID = d.Charge.ID
	}
	if d.PaymentIntent != nil {
		out.PaymentIntentID = d.PaymentIntent.ID
	}
	return out
}

// CustomerFromStripe converts a Customer.
func CustomerFromStripe(c *stripego.Customer) Customer {
	if c == nil {
		return Customer{}
	}
	return Customer{ID: c.ID}
}

// ProductFromStripe converts a Product.
func ProductFromStripe(p *stripego.Product) Product {
	if p == nil {
		return Product{}
	}
	return Product{ID: p.ID, Active: p.Active}
}

// PriceFromStripe converts a Price.
func PriceFromStripe(p *stripego.Price) Price {
	if p == nil {
		return Price{}
	}
	out := Price{
		ID:         p.ID,
		Active:     p.Active,
		Type:       string(p.Type),
		UnitAmount: p.UnitAmount,
		Currency:   string(p.Currency),
	}
	if p.Product != nil {
		out.ProductID = p.Product.ID
	}
	return out
}

func unixTime(sec int64) time.Time {
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0).UTC()
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

package emulator

import (
	"context"
	"sort"
	"time"
)

// The types below are read-only snapshots of the emulator's objects for
// tests: what GET /_emulator/v1/state returns, and what the Go helpers
// return. Ids reference other objects of the same snapshot.

// Customer is a snapshot of a customer.
type Customer struct {
	ID       string            `json:"id"`
	Email    string            `json:"email,omitempty"`
	Name     string            `json:"name,omitempty"`
	Metadata map[string]string `json:"metadata"`
}

// Product is a snapshot of a product.
type Product struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Active   bool              `json:"active"`
	Metadata map[string]string `json:"metadata"`
}

// Price is a snapshot of a price.
type Price struct {
	ID         string `json:"id"`
	ProductID  string `json:"product_id"`
	Active     bool   `json:"active"`
	UnitAmount int64  `json:"unit_amount"`
	Currency   string `json:"currency"`
}

// Session is a snapshot of a Checkout Session.
type Session struct {
	ID                    string            `json:"id"`
	Status                string            `json:"status"`
	PaymentStatus         string            `json:"payment_status"`
	CustomerID            string            `json:"customer_id,omitempty"`
	ClientReferenceID     string            `json:"client_reference_id,omitempty"`
	PaymentIntentID       string            `json:"payment_intent_id,omitempty"`
	ChargeID              string            `json:"charge_id,omitempty"`
	AmountTotal           int64             `json:"amount_total"`
	Currency              string            `json:"currency"`
	Created               time.Time         `json:"created"`
	ExpiresAt             time.Time         `json:"expires_at"`
	Metadata              map[string]string `json:"metadata"`
	PaymentIntentMetadata map[string]string `json:"payment_intent_metadata"`
}

// PaymentIntent is a snapshot of a PaymentIntent.
type PaymentIntent struct {
	ID             string            `json:"id"`
	Status         string            `json:"status"`
	CustomerID     string            `json:"customer_id,omitempty"`
	LatestChargeID string            `json:"latest_charge_id,omitempty"`
	Amount         int64             `json:"amount"`
	Currency       string            `json:"currency"`
	Metadata       map[string]string `json:"metadata"`
}

// Charge is a snapshot of a charge.
type Charge struct {
	ID              string            `json:"id"`
	Status          string            `json:"status"`
	CustomerID      string            `json:"customer_id,omitempty"`
	PaymentIntentID string            `json:"payment_intent_id"`
	DisputeID       string            `json:"dispute_id,omitempty"`
	Amount          int64             `json:"amount"`
	AmountRefunded  int64             `json:"amount_refunded"`
	Currency        string            `json:"currency"`
	Paid            bool              `json:"paid"`
	Refunded        bool              `json:"refunded"`
	Disputed        bool              `json:"disputed"`
	Metadata        map[string]string `json:"metadata"`
}

// Refund is a snapshot of a refund.
type Refund struct {
	ID              string            `json:"id"`
	Status          string            `json:"status"`
	ChargeID        string            `json:"charge_id"`
	PaymentIntentID string            `json:"payment_intent_id,omitempty"`
	Amount          int64             `json:"amount"`
	Currency        string            `json:"currency"`
	Reason          string            `json:"reason,omitempty"`
	FailureReason   string            `json:"failure_reason,omitempty"`
	Metadata        map[string]string `json:"metadata"`
}

// Dispute is a snapshot of a dispute.
type Dispute struct {
	ID              string `json:"id"`
	Status          string `json:"status"`
	ChargeID        string `json:"charge_id"`
	PaymentIntentID string `json:"payment_intent_id,omitempty"`
	Amount          int64  `json:"amount"`
}

// Event is a summary of an event.
type Event struct {
	ID       string    `json:"id"`
	Type     string    `json:"type"`
	ObjectID string    `json:"object_id"`
	Created  time.Time `json:"created"`
}

// State is everything the emulator holds, for assertions such as "no user
// was charged twice" and "no purchase has two sessions". Lists are in
// creation order.
type State struct {
	Now            time.Time       `json:"now"`
	Counts         map[string]int  `json:"counts"`
	Customers      []Customer      `json:"customers"`
	Products       []Product       `json:"products"`
	Prices         []Price         `json:"prices"`
	Sessions       []Session       `json:"sessions"`
	PaymentIntents []PaymentIntent `json:"payment_intents"`
	Charges        []Charge        `json:"charges"`
	Refunds        []Refund        `json:"refunds"`
	Disputes       []Dispute       `json:"disputes"`
	Events         []Event         `json:"events"`
	Deliveries     []Delivery      `json:"deliveries"`
	// SessionsByClientReference maps client_reference_id to session ids.
	SessionsByClientReference map[string][]string `json:"sessions_by_client_reference"`
	// ChargesByCustomer maps customer id to ids of paid charges.
	ChargesByCustomer map[string][]string `json:"charges_by_customer"`
}

// PaidChargesByMetadata groups the paid charges by the value of one
// metadata key (e.g. the purchase id the operator puts on PaymentIntents):
// more than one charge under a value means someone paid twice.
func (s State) PaidChargesByMetadata(key string) map[string][]Charge {
	out := map[string][]Charge{}
	for _, c := range s.Charges {
		if v, ok := c.Metadata[key]; ok && c.Paid {
			out[v] = append(out[v], c)
		}
	}
	return out
}

// State returns a snapshot of everything the emulator holds.
func (e *Emulator) State() State {
	deliveries := e.hooks.snapshot()
	now := e.lock()
	defer e.mu.Unlock()
	st := State{
		Now:                       now,
		Counts:                    map[string]int{},
		Deliveries:                deliveries,
		SessionsByClientReference: map[string][]string{},
		ChargesByCustomer:         map[string][]string{},
	}
	for _, c := range sortedByCreated(e.customers, func(c *customer) (int64, string) { return c.Created, c.ID }) {
		st.Customers = append(st.Customers, Customer{ID: c.ID, Email: deref(c.Email), Name: deref(c.Name), Metadata: copyMap(c.Metadata)})
	}
	for _, p := range sortedByCreated(e.products, func(p *product) (int64, string) { return p.Created, p.ID }) {
		st.Products = append(st.Products, Product{ID: p.ID, Name: p.Name, Active: p.Active, Metadata: copyMap(p.Metadata)})
	}
	for _, p := range sortedByCreated(e.prices, func(p *price) (int64, string) { return p.Created, p.ID }) {
		st.Prices = append(st.Prices, Price{ID: p.ID, ProductID: p.Product, Active: p.Active, UnitAmount: p.UnitAmount, Currency: p.Currency})
	}
	for _, s := range e.sessionList {
		snap := e.sessionSnapshotLocked(s)
		st.Sessions = append(st.Sessions, snap)
		if snap.ClientReferenceID != "" {
			st.SessionsByClientReference[snap.ClientReferenceID] = append(st.SessionsByClientReference[snap.ClientReferenceID], s.ID)
		}
	}
	for _, pi := range sortedByCreated(e.intents, func(p *paymentIntent) (int64, string) { return p.Created, p.ID }) {
		st.PaymentIntents = append(st.PaymentIntents, intentSnapshot(pi))
	}
	for _, c := range sortedByCreated(e.charges, func(c *charge) (int64, string) { return c.Created, c.ID }) {
		snap := chargeSnapshot(c)
		st.Charges = append(st.Charges, snap)
		if snap.Paid {
			st.Counts["paid_charges"]++
			if snap.CustomerID != "" {
				st.ChargesByCustomer[snap.CustomerID] = append(st.ChargesByCustomer[snap.CustomerID], c.ID)
			}
		}
	}
	for _, r := range sortedByCreated(e.refunds, func(r *refund) (int64, string) { return r.Created, r.ID }) {
		st.Refunds = append(st.Refunds, refundSnapshot(r))
	}
	for _, d := range sortedByCreated(e.disputes, func(d *dispute) (int64, string) { return d.Created, d.ID }) {
		st.Disputes = append(st.Disputes, disputeSnapshot(d))
	}
	for _, ev := range e.events {
		st.Events = append(st.Events, Event{ID: ev.id, Type: ev.typ, ObjectID: ev.objectID, Created: time.Unix(ev.created, 0)})
	}
	st.Counts["customers"] = len(st.Customers)
	st.Counts["products"] = len(st.Products)
	st.Counts["prices"] = len(st.Prices)
	st.Counts["sessions"] = len(st.Sessions)
	st.Counts["payment_intents"] = len(st.PaymentIntents)
	st.Counts["charges"] = len(st.Charges)
	st.Counts["refunds"] = len(st.Refunds)
	st.Counts["disputes"] = len(st.Disputes)
	st.Counts["events"] = len(st.Events)
	st.Counts["deliveries"] = len(st.Deliveries)
	for _, s := range st.Sessions {
		st.Counts["sessions_"+s.Status]++
	}
	for _, d := range st.Deliveries {
		st.Counts["deliveries_"+string(d.Status)]++
	}
	return st
}

// Deliveries returns the webhook deliveries so far, oldest first.
func (e *Emulator) Deliveries() []Delivery {
	return e.hooks.snapshot()
}

// WaitForWebhooks waits until no delivery is queued, in flight or waiting
// to retry (held deliveries do not count), or ctx ends.
func (e *Emulator) WaitForWebhooks(ctx context.Context) error {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for e.hooks.busy() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

func sortedByCreated[T any](m map[string]T, key func(T) (int64, string)) []T {
	out := make([]T, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool {
		ci, ii := key(out[i])
		cj, ij := key(out[j])
		if ci != cj {
			return ci < cj
		}
		return ii < ij
	})
	return out
}

func (e *Emulator) sessionSnapshotLocked(s *checkoutSession) Session {
	snap := Session{
		ID:                    s.ID,
		Status:                s.Status,
		PaymentStatus:         s.PaymentStatus,
		CustomerID:            deref(s.Customer),
		ClientReferenceID:     deref(s.ClientReferenceID),
		PaymentIntentID:       deref(s.PaymentIntent),
		AmountTotal:           s.AmountTotal,
		Currency:              s.Currency,
		Created:               time.Unix(s.Created, 0),
		ExpiresAt:             time.Unix(s.ExpiresAt, 0),
		Metadata:              copyMap(s.Metadata),
		PaymentIntentMetadata: copyMap(s.paymentIntentMetadata),
	}
	if pi, ok := e.intents[snap.PaymentIntentID]; ok {
		snap.ChargeID = deref(pi.LatestCharge)
	}
	return snap
}

func intentSnapshot(pi *paymentIntent) PaymentIntent {
	return PaymentIntent{
		ID:             pi.ID,
		Status:         pi.Status,
		CustomerID:     deref(pi.Customer),
		LatestChargeID: deref(pi.LatestCharge),
		Amount:         pi.Amount,
		Currency:       pi.Currency,
		Metadata:       copyMap(pi.Metadata),
	}
}

func chargeSnapshot(c *charge) Charge {
	return Charge{
		ID:              c.ID,
		Status:          c.Status,
		CustomerID:      deref(c.Customer),
		PaymentIntentID: deref(c.PaymentIntent),
		DisputeID:       c.dispute,
		Amount:          c.Amount,
		AmountRefunded:  c.AmountRefunded,
		Currency:        c.Currency,
		Paid:            c.Paid,
		Refunded:        c.Refunded,
		Disputed:        c.Disputed,
		Metadata:        copyMap(c.Metadata),
	}
}

func refundSnapshot(r *refund) Refund {
	return Refund{
		ID:              r.ID,
		Status:          r.Status,
		ChargeID:        r.Charge,
		PaymentIntentID: deref(r.PaymentIntent),
		Amount:          r.Amount,
		Currency:        r.Currency,
		Reason:          deref(r.Reason),
		FailureReason:   deref(r.FailureReason),
		Metadata:        copyMap(r.Metadata),
	}
}

func disputeSnapshot(d *dispute) Dispute {
	return Dispute{ID: d.ID, Status: d.Status, ChargeID: d.Charge, PaymentIntentID: deref(d.PaymentIntent), Amount: d.Amount}
}

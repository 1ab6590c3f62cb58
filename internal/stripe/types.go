// Package stripe is the only place the operator talks to Stripe. It wraps
// stripe-go v76 (API version 2023-10-16) behind small value types, gives every
// create call a deterministic idempotency key, classifies errors for callers,
// records metrics, and verifies webhook signatures.
package stripe

import (
	"fmt"
	"strconv"
	"time"
)

// Metadata keys put on Checkout Sessions and their PaymentIntents. They are
// part of the frontend contract (paytoviewweb.md) and must not change.
const (
	MetaPurchaseID = "payToViewPurchaseId"
	MetaProductID  = "payToViewProductId"
	MetaUserID     = "userId"
	MetaEntityType = "entityType"
	MetaEntityID   = "entityId"
)

// SessionStatus is a Checkout Session's status.
type SessionStatus string

// Checkout Session statuses.
const (
	SessionOpen     SessionStatus = "open"
	SessionComplete SessionStatus = "complete"
	SessionExpired  SessionStatus = "expired"
)

// PaymentStatus is a Checkout Session's payment_status.
type PaymentStatus string

// Checkout Session payment statuses.
const (
	PaymentPaid              PaymentStatus = "paid"
	PaymentUnpaid            PaymentStatus = "unpaid"
	PaymentNoPaymentRequired PaymentStatus = "no_payment_required"
)

// PurchaseMetadata is the metadata the operator puts on a Checkout Session and
// on its PaymentIntent, so that every event can be traced back to a Purchase.
type PurchaseMetadata struct {
	PurchaseID string // Purchase name
	ProductID  string // Product name
	UserID     string
	EntityType int // 1=Video, 2=Channel, 3=Content
	EntityID   string
}

// Map returns the metadata as it is stored on Stripe objects.
func (m PurchaseMetadata) Map() map[string]string {
	return map[string]string{
		MetaPurchaseID: m.PurchaseID,
		MetaProductID:  m.ProductID,
		MetaUserID:     m.UserID,
		MetaEntityType: strconv.Itoa(m.EntityType),
		MetaEntityID:   m.EntityID,
	}
}

// ParsePurchaseMetadata reads the operator's metadata back from a Stripe
// object (session, payment intent, charge). It fails when the purchase id
// is missing (the object was not created by the operator) or entityType is
// not 1, 2 or 3; other keys may be empty.
func ParsePurchaseMetadata(md map[string]string) (PurchaseMetadata, error) {
	m := PurchaseMetadata{
		PurchaseID: md[MetaPurchaseID],
		ProductID:  md[MetaProductID],
		UserID:     md[MetaUserID],
		EntityID:   md[MetaEntityID],
	}
	if m.PurchaseID == "" {
		return m, fmt.Errorf("metadata has no %s: not a pay-to-view object", MetaPurchaseID)
	}
	if v, ok := md[MetaEntityType]; ok {
		t, err := strconv.Atoi(v)
		if err != nil || t < 1 || t > 3 {
			return m, fmt.Errorf("metadata %s=%q is not 1, 2 or 3", MetaEntityType, v)
		}
		m.EntityType = t
	}
	return m, nil
}

// Customer is a Stripe customer.
type Customer struct {
	ID string
}

// CreateCustomerParams creates a Stripe customer for one user.
type CreateCustomerParams struct {
	// OwnerUID is the UID of the Customer resource; it keys idempotency.
	OwnerUID string
	// Attempt selects the idempotency key (AttemptOperation); 0 is the first.
	Attempt int32
	UserID  string // stored as metadata userId
	Email   string // optional
}

// CreateSessionParams creates an embedded, one-item, payment-mode Checkout
// Session for one Purchase.
type CreateSessionParams struct {
	// OwnerUID is the UID of the Purchase resource; it keys idempotency.
	OwnerUID   string
	CustomerID string
	PriceID    string
	ReturnURL  string
	// ExpiresAt is passed as expires_at; Stripe accepts 30 min to 24 h ahead.
	ExpiresAt time.Time
	Metadata  PurchaseMetadata
}

// Session is what the operator needs of a Checkout Session.
type Session struct {
	ID string
	// ClientSecret is returned by Stripe on create only; empty otherwise.
	ClientSecret      string
	Status            SessionStatus
	PaymentStatus     PaymentStatus
	PaymentIntentID   string
	CustomerID        string
	ClientReferenceID string
	AmountTotal       int64
	Currency          string
	Created           time.Time
	ExpiresAt         time.Time
	Metadata          map[string]string
}

// Charge is what the operator needs of a Charge.
type Charge struct {
	ID              string
	PaymentIntentID string
	Amount          int64
	AmountRefunded  int64
	Refunded        bool
	Disputed        bool
	Currency        string
	// Metadata is copied by Stripe from the PaymentIntent.
	Metadata map[string]string
}

// PaymentIntent is what the operator needs of a PaymentIntent.
type PaymentIntent struct {
	ID       string
	Status   string // e.g. succeeded, processing, requires_payment_method, canceled
	Amount   int64
	Currency string
	Metadata map[string]string
	// LatestCharge is expanded; nil when the intent has no charge yet.
	LatestCharge *Charge
}

// RefundStatus is a Refund's status.
type RefundStatus string

// Refund statuses.
const (
	RefundPending        RefundStatus = "pending"
	RefundRequiresAction RefundStatus = "requires_action"
	RefundSucceeded      RefundStatus = "succeeded"
	RefundFailed         RefundStatus = "failed"
	RefundCanceled       RefundStatus = "canceled"
)

// Refund is what the operator needs of a Refund.
type Refund struct {
	ID              string
	PaymentIntentID string
	ChargeID        string
	Amount          int64
	Currency        string
	Status          RefundStatus
	FailureReason   string
	Metadata        map[string]string
}

// CreateRefundParams refunds a PaymentIntent in full.
type CreateRefundParams struct {
	// OwnerUID is the UID of the Purchase resource; it keys idempotency.
	OwnerUID string
	// Attempt selects the idempotency key (AttemptOperation); 0 is the first.
	Attempt         int32
	PaymentIntentID string
	// Metadata is stored on the refund (purchase id, reason, requestedBy).
	Metadata map[string]string
}

// Dispute is what the operator needs of a Dispute.
type Dispute struct {
	ID              string
	ChargeID        string
	PaymentIntentID string
	Status          string // warning_needs_response, needs_response, under_review, won, lost, ...
	Amount          int64
}

// Product is a Stripe product.
type Product struct {
	ID     string
	Active bool
}

// CreateProductParams creates a Stripe product for a Product resource.
type CreateProductParams struct {
	// OwnerUID is the UID of the Product resource; it keys idempotency.
	OwnerUID string
	// Attempt selects the idempotency key (AttemptOperation); 0 is the first.
	Attempt     int32
	Name        string
	Description string
	Metadata    map[string]string
}

// UpdateProductParams updates a Stripe product. Nil fields are left alone.
type UpdateProductParams struct {
	Name        *string
	Description *string
	Active      *bool
}

// Price is a Stripe price.
type Price struct {
	ID         string
	ProductID  string
	Active     bool
	Type       string // one_time or recurring
	UnitAmount int64
	Currency   string
}

// CreatePriceParams creates a one-time Stripe price.
type CreatePriceParams struct {
	// OwnerUID and Generation (the Product's metadata.generation) key
	// idempotency, so a retry reuses the price and a spec change makes a new one.
	OwnerUID   string
	Generation int64
	// Attempt selects the idempotency key (AttemptOperation); 0 is the first.
	Attempt   int32
	ProductID string
	Amount    int64
	Currency  string
	Metadata  map[string]string
}

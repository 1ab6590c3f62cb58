package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PurchasePhase is where a Purchase is in its life.
// +kubebuilder:validation:Enum=Pending;Completed;Refunded;Canceled;Failed
type PurchasePhase string

// Purchase phases. Refunded, Canceled and Failed are terminal; a Canceled
// purchase whose session is paid anyway still becomes Completed, because the
// user's money was taken.
const (
	// PurchasePending waits for the user to pay in Stripe Checkout.
	PurchasePending PurchasePhase = "Pending"
	// PurchaseCompleted was paid; the Access condition says whether it
	// currently grants access (it may have expired or be disputed).
	PurchaseCompleted PurchasePhase = "Completed"
	// PurchaseRefunded was refunded in full; access is revoked.
	PurchaseRefunded PurchasePhase = "Refunded"
	// PurchaseCanceled was never paid: its checkout session expired or was
	// superseded.
	PurchaseCanceled PurchasePhase = "Canceled"
	// PurchaseFailed could not be paid: the payment failed or Stripe refused
	// to create the checkout session.
	PurchaseFailed PurchasePhase = "Failed"
)

// Finalizers and annotations of this group.
const (
	// PurchaseFinalizer lets the operator expire a still-open checkout session
	// before its Purchase goes away, so nobody can pay for a deleted purchase.
	PurchaseFinalizer = "paytoview.md-platform.io/checkout-session"
	// ProductFinalizer lets the operator archive the Stripe product and price
	// before the Product goes away.
	ProductFinalizer = "paytoview.md-platform.io/stripe-product"
	// AnnotationRecheckRequested asks the operator to re-read the Purchase's
	// checkout session from Stripe now (value: RFC 3339 time of the request).
	// The API sets it when a client polls a Pending purchase.
	AnnotationRecheckRequested = "paytoview.md-platform.io/recheck-requested-at"
)

// PurchaseSpec is what was sold, to whom, at what price. It is immutable once
// created, except that a refund may be requested.
// +kubebuilder:validation:XValidation:rule="self.productRef == oldSelf.productRef && self.userId == oldSelf.userId && self.entityId == oldSelf.entityId && self.entityType == oldSelf.entityType && self.returnUrl == oldSelf.returnUrl && self.price == oldSelf.price && self.stripePriceId == oldSelf.stripePriceId && has(self.accessDurationDays) == has(oldSelf.accessDurationDays) && (!has(self.accessDurationDays) || self.accessDurationDays == oldSelf.accessDurationDays)",message="spec is immutable after creation, except spec.refund"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.refund) || (has(self.refund) && self.refund == oldSelf.refund)",message="spec.refund cannot be changed or withdrawn once requested"
type PurchaseSpec struct {
	// ProductRef is the name of the Product bought, in the same namespace
	// (the payToViewProductId of the API).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	ProductRef string `json:"productRef"`

	// UserID is the buyer's user id (the JWT sub claim).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9._~:@|=+/-]+$`
	UserID string `json:"userId"`

	// EntityID is the encoded id of the video, channel or content item bought.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9._~:=+/-]+$`
	EntityID string `json:"entityId"`

	// EntityType is the kind of entity, copied from the Product.
	EntityType EntityType `json:"entityType"`

	// ReturnURL is where Stripe sends the buyer after checkout if a redirect
	// is ever needed. Must be https (http only for localhost).
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (url(self).getScheme() == 'https' || (url(self).getScheme() == 'http' && url(self).getHostname() in ['localhost', '127.0.0.1', '::1']))",message="returnUrl must be an absolute https URL (http only for localhost)"
	ReturnURL string `json:"returnUrl"`

	// Price is what the buyer is charged, copied from the Product's Stripe
	// price when the purchase was made; later Product edits never change it.
	Price Price `json:"price"`

	// StripePriceID is the Stripe Price the checkout session charges, copied
	// from the Product when the purchase was made.
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^price_[A-Za-z0-9]+$`
	StripePriceID string `json:"stripePriceId"`

	// AccessDurationDays is how many days access lasts after payment, copied
	// from the Product. Unset means lifetime access.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=36500
	AccessDurationDays *int32 `json:"accessDurationDays,omitempty"`

	// Refund, once set, asks the operator to refund the purchase in full
	// through Stripe. It can be set once and never withdrawn.
	// +optional
	Refund *RefundRequest `json:"refund,omitempty"`
}

// RefundRequest asks for a full refund of a Completed purchase.
type RefundRequest struct {
	// Requested must be true.
	// +kubebuilder:validation:XValidation:rule="self == true",message="refund.requested must be true; a refund request cannot be withdrawn"
	Requested bool `json:"requested"`

	// Reason is a note for support staff, stored on the Stripe refund's metadata.
	// +optional
	// +kubebuilder:validation:MaxLength=500
	Reason string `json:"reason,omitempty"`

	// RequestedBy is who asked for the refund (an admin's user id).
	// +optional
	// +kubebuilder:validation:MaxLength=255
	RequestedBy string `json:"requestedBy,omitempty"`
}

// DisputeStatus is the last known state of a chargeback on the purchase's payment.
type DisputeStatus struct {
	// ID is the Stripe dispute id (dp_...).
	ID string `json:"id"`
	// Status is Stripe's dispute status, e.g. needs_response, won or lost.
	Status string `json:"status"`
}

// PurchaseStatus is what the operator has observed of the purchase in Stripe.
type PurchaseStatus struct {
	// Phase is Pending, Completed, Refunded, Canceled or Failed. Empty means
	// the operator has not seen the purchase yet (treat as Pending).
	// +optional
	Phase PurchasePhase `json:"phase,omitempty"`

	// StripeCustomerID is the buyer's Stripe customer (cus_...).
	// +optional
	StripeCustomerID string `json:"stripeCustomerId,omitempty"`

	// CheckoutSessionID is the Stripe Checkout Session (cs_...). Its client
	// secret is kept in a Secret with the Purchase's name, never in status.
	// +optional
	CheckoutSessionID string `json:"checkoutSessionId,omitempty"`

	// CheckoutSessionExpiresAt is when Stripe expires the session if unpaid.
	// +optional
	CheckoutSessionExpiresAt *metav1.Time `json:"checkoutSessionExpiresAt,omitempty"`

	// ExternalTransactionID is the Stripe PaymentIntent that paid (pi_...).
	// +optional
	ExternalTransactionID string `json:"externalTransactionId,omitempty"`

	// CompletedAt is when the payment was confirmed.
	// +optional
	CompletedAt *metav1.Time `json:"completedAt,omitempty"`

	// ExpiresAt is when access ends: CompletedAt plus the access duration.
	// Unset on a Completed purchase means lifetime access.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// StripeRefundID is the refund the operator created for spec.refund (re_...).
	// +optional
	StripeRefundID string `json:"stripeRefundId,omitempty"`

	// StripeRefundStatus is the last known status of StripeRefundID in
	// Stripe: pending, requires_action, succeeded, failed or canceled.
	// +optional
	StripeRefundStatus string `json:"stripeRefundStatus,omitempty"`

	// RefundAttempt counts the creates of the refund that Stripe answered
	// with a server error (5xx). It is part of the create's idempotency key:
	// Stripe replays a saved 5xx to the same key for 24 hours, so each such
	// answer moves the next create to a new key. It is recorded before the
	// new key is used, so a restart reuses the key of a create whose outcome
	// is unknown. A second refund cannot come of it: Stripe refuses to refund
	// a charge beyond its amount (charge_already_refunded).
	// +optional
	// +kubebuilder:validation:Minimum=0
	RefundAttempt int32 `json:"refundAttempt,omitempty"`

	// RefundedAt is when the purchase was refunded in full.
	// +optional
	RefundedAt *metav1.Time `json:"refundedAt,omitempty"`

	// AmountRefunded is the total refunded so far in minor units; less than
	// the price means a partial refund, which keeps access.
	// +optional
	AmountRefunded int64 `json:"amountRefunded,omitempty"`

	// Dispute is the last known chargeback on the payment, if any.
	// +optional
	Dispute *DisputeStatus `json:"dispute,omitempty"`

	// LastSessionCheckAt is when the operator last read the checkout session
	// from Stripe to heal a missed webhook.
	// +optional
	LastSessionCheckAt *metav1.Time `json:"lastSessionCheckAt,omitempty"`

	// Conditions: Ready (checkout session usable), Access (grants access now)
	// and Refunded (state of a refund).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// Purchase is one user's payment for access to one entity. Its name is the
// purchaseId of the client API (ptv- followed by random characters).
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ptv,categories=paytoview
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="User",type=string,JSONPath=`.spec.userId`
// +kubebuilder:printcolumn:name="Entity",type=string,JSONPath=`.spec.entityId`
// +kubebuilder:printcolumn:name="Product",type=string,JSONPath=`.spec.productRef`
// +kubebuilder:printcolumn:name="Access",type=string,JSONPath=`.status.conditions[?(@.type=="Access")].status`
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.status.expiresAt`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Purchase struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   PurchaseSpec   `json:"spec"`
	Status PurchaseStatus `json:"status,omitempty"`
}

// PurchaseList is a list of Purchases.
// +kubebuilder:object:root=true
type PurchaseList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Purchase `json:"items"`
}

package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CustomerSpec identifies the user a Customer stands for.
type CustomerSpec struct {
	// UserID is the user's id (the JWT sub claim). Immutable.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9._~:@|=+/-]+$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="userId is immutable"
	UserID string `json:"userId"`

	// Email is passed to Stripe so receipts reach the user. Optional.
	// +optional
	// +kubebuilder:validation:MaxLength=254
	// +kubebuilder:validation:Pattern=`^[^@\s]+@[^@\s]+$`
	Email string `json:"email,omitempty"`
}

// CustomerStatus reports the Stripe customer behind a Customer.
type CustomerStatus struct {
	// StripeCustomerID is the id of the Stripe customer (cus_...).
	// +optional
	StripeCustomerID string `json:"stripeCustomerId,omitempty"`

	// CreateAttempt counts the creates of the Stripe customer that Stripe
	// answered with a server error (5xx). It is part of the create's
	// idempotency key: Stripe replays a saved 5xx to the same key for 24
	// hours, so each such answer moves the next create to a new key. It is
	// recorded before the new key is used, so a restart reuses the key of a
	// create whose outcome is unknown.
	// +optional
	// +kubebuilder:validation:Minimum=0
	CreateAttempt int32 `json:"createAttempt,omitempty"`

	// Conditions: Ready is True once the Stripe customer exists.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// Customer is one user's Stripe customer, created once on the user's first
// purchase. Its name is derived from a hash of the user id, so it is stable and
// valid whatever characters the id contains.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ptvc,categories=paytoview
// +kubebuilder:printcolumn:name="User",type=string,JSONPath=`.spec.userId`
// +kubebuilder:printcolumn:name="Stripe Customer",type=string,JSONPath=`.status.stripeCustomerId`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Customer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   CustomerSpec   `json:"spec"`
	Status CustomerStatus `json:"status,omitempty"`
}

// CustomerList is a list of Customers.
// +kubebuilder:object:root=true
type CustomerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Customer `json:"items"`
}

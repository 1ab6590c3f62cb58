package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ProductSpec describes what a Product sells, for how much and for how long.
// +kubebuilder:validation:XValidation:rule="has(self.price) != has(self.stripePriceRef)",message="exactly one of spec.price or spec.stripePriceRef must be set"
type ProductSpec struct {
	// DisplayName is the name shown to buyers in Stripe Checkout.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=250
	DisplayName string `json:"displayName"`

	// Description is shown to buyers in Stripe Checkout under the name.
	// +optional
	// +kubebuilder:validation:MaxLength=2000
	Description string `json:"description,omitempty"`

	// EntityType is the kind of content this Product unlocks: Video, Channel
	// or Content.
	EntityType EntityType `json:"entityType"`

	// EntityIDs, when not empty, limits the Product to these encoded entity
	// ids. Empty means any entity of EntityType can be bought with it.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=1000
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	// +kubebuilder:validation:items:Pattern=`^[A-Za-z0-9._~:=+/-]+$`
	EntityIDs []string `json:"entityIds,omitempty"`

	// Price is the one-time price the operator creates in Stripe. Changing it
	// creates a new Stripe Price and archives the old one; purchases already
	// made keep the price they were sold at. Exactly one of price and
	// stripePriceRef must be set.
	// +optional
	Price *Price `json:"price,omitempty"`

	// StripePriceRef is the id of an existing one-time Stripe Price (price_...)
	// to sell instead of letting the operator create one. The operator checks
	// that it exists and is active but never changes it.
	// +optional
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^price_[A-Za-z0-9]+$`
	StripePriceRef string `json:"stripePriceRef,omitempty"`

	// AccessDurationDays is how many days access lasts after payment. Unset
	// means lifetime access.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=36500
	AccessDurationDays *int32 `json:"accessDurationDays,omitempty"`

	// Active, when false, stops new purchases of this Product and archives it
	// in Stripe. Purchases already made keep their access.
	// +optional
	// +kubebuilder:default=true
	Active *bool `json:"active,omitempty"`
}

// ProductStatus reports the Stripe objects behind a Product.
type ProductStatus struct {
	// StripeProductID is the id of the Stripe Product (prod_...).
	// +optional
	StripeProductID string `json:"stripeProductId,omitempty"`

	// StripePriceID is the id of the Stripe Price new purchases are charged
	// (price_...).
	// +optional
	StripePriceID string `json:"stripePriceId,omitempty"`

	// Price is what StripePriceID charges, as last seen in Stripe.
	// +optional
	Price *Price `json:"price,omitempty"`

	// ProductCreateAttempt counts the creates of the Stripe product that
	// Stripe answered with a server error (5xx). It is part of the create's
	// idempotency key: Stripe replays a saved 5xx to the same key for 24
	// hours, so each such answer moves the next create to a new key. It is
	// recorded before the new key is used, so a restart reuses the key of a
	// create whose outcome is unknown.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ProductCreateAttempt int32 `json:"productCreateAttempt,omitempty"`

	// PriceCreateAttempt is ProductCreateAttempt for the creates of the
	// Stripe price.
	// +optional
	// +kubebuilder:validation:Minimum=0
	PriceCreateAttempt int32 `json:"priceCreateAttempt,omitempty"`

	// Conditions: Ready is True when the Product can be sold.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// Product is something users can pay once to watch: access to one video,
// channel or content item, for a number of days or for life. Its name is the
// payToViewProductId of the client API.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ptvp,categories=paytoview
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="Product names are at most 63 characters: they are used as label values"
// +kubebuilder:printcolumn:name="Display Name",type=string,JSONPath=`.spec.displayName`
// +kubebuilder:printcolumn:name="Entity Type",type=string,JSONPath=`.spec.entityType`
// +kubebuilder:printcolumn:name="Amount",type=integer,JSONPath=`.spec.price.amount`
// +kubebuilder:printcolumn:name="Currency",type=string,JSONPath=`.spec.price.currency`
// +kubebuilder:printcolumn:name="Days",type=integer,JSONPath=`.spec.accessDurationDays`
// +kubebuilder:printcolumn:name="Active",type=boolean,JSONPath=`.spec.active`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Product struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ProductSpec   `json:"spec"`
	Status ProductStatus `json:"status,omitempty"`
}

// ProductList is a list of Products.
// +kubebuilder:object:root=true
type ProductList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Product `json:"items"`
}

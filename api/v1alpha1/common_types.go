package v1alpha1

// EntityType is the kind of content a Product sells access to. The Stripe
// metadata key entityType carries it as a number: Video=1, Channel=2, Content=3.
// +kubebuilder:validation:Enum=Video;Channel;Content
type EntityType string

// Entity types.
const (
	EntityTypeVideo   EntityType = "Video"
	EntityTypeChannel EntityType = "Channel"
	EntityTypeContent EntityType = "Content"
)

// Price is a one-time price in a currency's minor units.
type Price struct {
	// Amount is the price in the currency's smallest unit (cents for usd,
	// yen for jpy). Must be positive and at most 99999999, Stripe's limit.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=99999999
	Amount int64 `json:"amount"`

	// Currency is a lower-case ISO 4217 code, for example usd or eur.
	// +kubebuilder:validation:Pattern=`^[a-z]{3}$`
	Currency string `json:"currency"`
}

// Label keys set on Purchases and Customers so that people and tools can
// select them with kubectl. Values that may be long or contain characters a
// label cannot hold (user and entity ids) are hashed.
const (
	// LabelUser holds the hash of the user id.
	LabelUser = "paytoview.md-platform.io/user"
	// LabelEntity holds the hash of the entity id.
	LabelEntity = "paytoview.md-platform.io/entity"
	// LabelProduct holds the Product name.
	LabelProduct = "paytoview.md-platform.io/product"
)

// AnnotationCheckoutSession is set on the Secret holding a Purchase's client
// secret: the id of the checkout session the client secret opens, so that
// the API hands it out only for the session the Purchase records.
const AnnotationCheckoutSession = "paytoview.md-platform.io/checkout-session"

// Condition types shared by the kinds of this group.
const (
	// ConditionReady means the object's Stripe counterpart exists and is usable:
	// a Product's price can be sold, a Customer has a Stripe customer, a
	// Purchase has an open checkout session (or is past needing one).
	ConditionReady = "Ready"
	// ConditionAccess means the Purchase currently grants access to its entity.
	ConditionAccess = "Access"
	// ConditionRefunded reports the state of a refund of a Purchase.
	ConditionRefunded = "Refunded"
)

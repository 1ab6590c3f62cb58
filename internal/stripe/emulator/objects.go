package emulator

import (
	"encoding/json"
	"math/rand/v2"
	"strconv"
)

// The structs below are the wire shapes of API 2023-10-16 for the fields the
// emulator models. Expandable references (customer, payment_intent, charge,
// ...) are id strings, as Stripe sends them unless asked to expand; nullable
// fields are pointers so that they encode as null. Unexported fields are
// state that Stripe does not return.

type customer struct {
	ID               string            `json:"id"`
	Object           string            `json:"object"`
	Balance          int64             `json:"balance"`
	Created          int64             `json:"created"`
	Currency         *string           `json:"currency"`
	Delinquent       bool              `json:"delinquent"`
	Description      *string           `json:"description"`
	Email            *string           `json:"email"`
	InvoicePrefix    string            `json:"invoice_prefix"`
	Livemode         bool              `json:"livemode"`
	Metadata         map[string]string `json:"metadata"`
	Name             *string           `json:"name"`
	Phone            *string           `json:"phone"`
	PreferredLocales []string          `json:"preferred_locales"`
	TaxExempt        string            `json:"tax_exempt"`
}

type product struct {
	ID           string            `json:"id"`
	Object       string            `json:"object"`
	Active       bool              `json:"active"`
	Created      int64             `json:"created"`
	DefaultPrice *string           `json:"default_price"`
	Description  *string           `json:"description"`
	Images       []string          `json:"images"`
	Livemode     bool              `json:"livemode"`
	Metadata     map[string]string `json:"metadata"`
	Name         string            `json:"name"`
	Type         string            `json:"type"`
	Updated      int64             `json:"updated"`
	URL          *string           `json:"url"`
}

type price struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	Active            bool              `json:"active"`
	BillingScheme     string            `json:"billing_scheme"`
	Created           int64             `json:"created"`
	Currency          string            `json:"currency"`
	Livemode          bool              `json:"livemode"`
	LookupKey         *string           `json:"lookup_key"`
	Metadata          map[string]string `json:"metadata"`
	Nickname          *string           `json:"nickname"`
	Product           string            `json:"product"`
	Recurring         *struct{}         `json:"recurring"`
	TaxBehavior       string            `json:"tax_behavior"`
	Type              string            `json:"type"`
	UnitAmount        int64             `json:"unit_amount"`
	UnitAmountDecimal string            `json:"unit_amount_decimal"`
}

type checkoutSession struct {
	ID                   string            `json:"id"`
	Object               string            `json:"object"`
	AmountSubtotal       int64             `json:"amount_subtotal"`
	AmountTotal          int64             `json:"amount_total"`
	CancelURL            *string           `json:"cancel_url"`
	ClientReferenceID    *string           `json:"client_reference_id"`
	ClientSecret         *string           `json:"client_secret"`
	Created              int64             `json:"created"`
	Currency             string            `json:"currency"`
	Customer             *string           `json:"customer"`
	CustomerEmail        *string           `json:"customer_email"`
	ExpiresAt            int64             `json:"expires_at"`
	Livemode             bool              `json:"livemode"`
	Locale               *string           `json:"locale"`
	Metadata             map[string]string `json:"metadata"`
	Mode                 string            `json:"mode"`
	PaymentIntent        *string           `json:"payment_intent"`
	PaymentMethodTypes   []string          `json:"payment_method_types"`
	PaymentStatus        string            `json:"payment_status"`
	RedirectOnCompletion string            `json:"redirect_on_completion"`
	ReturnURL            *string           `json:"return_url"`
	Status               string            `json:"status"`
	SuccessURL           *string           `json:"success_url"`
	UIMode               string            `json:"ui_mode"`
	URL                  *string           `json:"url"`

	clientSecret          string
	paymentIntentMetadata map[string]string
	paymentIntentDesc     string
	lineItems             []lineItem
}

type lineItem struct {
	price    string
	quantity int64
}

type paymentIntent struct {
	ID                 string            `json:"id"`
	Object             string            `json:"object"`
	Amount             int64             `json:"amount"`
	AmountCapturable   int64             `json:"amount_capturable"`
	AmountReceived     int64             `json:"amount_received"`
	CaptureMethod      string            `json:"capture_method"`
	ClientSecret       string            `json:"client_secret"`
	ConfirmationMethod string            `json:"confirmation_method"`
	Created            int64             `json:"created"`
	Currency           string            `json:"currency"`
	Customer           *string           `json:"customer"`
	Description        *string           `json:"description"`
	LastPaymentError   *lastPaymentError `json:"last_payment_error"`
	LatestCharge       *string           `json:"latest_charge"`
	Livemode           bool              `json:"livemode"`
	Metadata           map[string]string `json:"metadata"`
	PaymentMethodTypes []string          `json:"payment_method_types"`
	Status             string            `json:"status"`
}

type lastPaymentError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Type    string `json:"type"`
}

type charge struct {
	ID                 string            `json:"id"`
	Object             string            `json:"object"`
	Amount             int64             `json:"amount"`
	AmountCaptured     int64             `json:"amount_captured"`
	AmountRefunded     int64             `json:"amount_refunded"`
	BalanceTransaction *string           `json:"balance_transaction"`
	Captured           bool              `json:"captured"`
	Created            int64             `json:"created"`
	Currency           string            `json:"currency"`
	Customer           *string           `json:"customer"`
	Description        *string           `json:"description"`
	Disputed           bool              `json:"disputed"`
	FailureCode        *string           `json:"failure_code"`
	FailureMessage     *string           `json:"failure_message"`
	Livemode           bool              `json:"livemode"`
	Metadata           map[string]string `json:"metadata"`
	Paid               bool              `json:"paid"`
	PaymentIntent      *string           `json:"payment_intent"`
	Refunded           bool              `json:"refunded"`
	Status             string            `json:"status"`

	// dispute is the id of the charge's dispute, if any (a charge has at
	// most one).
	dispute string
}

type refund struct {
	ID                 string            `json:"id"`
	Object             string            `json:"object"`
	Amount             int64             `json:"amount"`
	BalanceTransaction *string           `json:"balance_transaction"`
	Charge             string            `json:"charge"`
	Created            int64             `json:"created"`
	Currency           string            `json:"currency"`
	FailureReason      *string           `json:"failure_reason,omitempty"`
	Metadata           map[string]string `json:"metadata"`
	PaymentIntent      *string           `json:"payment_intent"`
	Reason             *string           `json:"reason"`
	ReceiptNumber      *string           `json:"receipt_number"`
	Status             string            `json:"status"`
}

type dispute struct {
	ID                  string            `json:"id"`
	Object              string            `json:"object"`
	Amount              int64             `json:"amount"`
	BalanceTransactions []struct{}        `json:"balance_transactions"`
	Charge              string            `json:"charge"`
	Created             int64             `json:"created"`
	Currency            string            `json:"currency"`
	IsChargeRefundable  bool              `json:"is_charge_refundable"`
	Livemode            bool              `json:"livemode"`
	Metadata            map[string]string `json:"metadata"`
	PaymentIntent       *string           `json:"payment_intent"`
	Reason              string            `json:"reason"`
	Status              string            `json:"status"`
}

// event is an Event as listed by GET /v1/events and sent to webhooks.
type event struct {
	ID              string       `json:"id"`
	Object          string       `json:"object"`
	APIVersion      string       `json:"api_version"`
	Created         int64        `json:"created"`
	Data            eventData    `json:"data"`
	Livemode        bool         `json:"livemode"`
	PendingWebhooks int          `json:"pending_webhooks"`
	Request         eventRequest `json:"request"`
	Type            string       `json:"type"`
}

type eventData struct {
	Object             json.RawMessage `json:"object"`
	PreviousAttributes map[string]any  `json:"previous_attributes,omitempty"`
}

type eventRequest struct {
	ID             *string `json:"id"`
	IdempotencyKey *string `json:"idempotency_key"`
}

// listPage is Stripe's list envelope.
type listPage struct {
	Object  string            `json:"object"`
	Data    []json.RawMessage `json:"data"`
	HasMore bool              `json:"has_more"`
	URL     string            `json:"url"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

const idAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// newID returns prefix followed by n random base-62 characters, the shape of
// Stripe ids. math/rand/v2's generator is seeded from the OS, so ids do not
// repeat across emulator instances.
func newID(prefix string, n int) string {
	b := make([]byte, len(prefix)+n)
	copy(b, prefix)
	for i := len(prefix); i < len(b); i++ {
		b[i] = idAlphabet[rand.IntN(len(idAlphabet))]
	}
	return string(b)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

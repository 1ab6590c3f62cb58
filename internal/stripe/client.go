package stripe

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
)

// Defaults for Config.
const (
	DefaultAPIBase = "https://api.stripe.com"
	DefaultTimeout = 10 * time.Second
)

// Operation names: the "operation" label of the metrics, the Op of *Error,
// and the operation part of idempotency keys.
const (
	OpCreateCustomer        = "create_customer"
	OpCreateCheckoutSession = "create_checkout_session"
	OpGetCheckoutSession    = "get_checkout_session"
	OpExpireCheckoutSession = "expire_checkout_session"
	OpCreateRefund          = "create_refund"
	OpGetRefund             = "get_refund"
	OpGetPaymentIntent      = "get_payment_intent"
	OpCreateProduct         = "create_product"
	OpUpdateProduct         = "update_product"
	OpCreatePrice           = "create_price"
	OpGetPrice              = "get_price"
	OpArchivePrice          = "archive_price"
)

// Config configures a Client.
type Config struct {
	// SecretKey is the Stripe secret (sk_...) or restricted (rk_...) key,
	// from STRIPE_SECRET_KEY. Required.
	SecretKey string
	// APIBase is the API's base URL (STRIPE_API_BASE): real Stripe by
	// default, or the emulator / stripe-mock in tests and local runs.
	APIBase string
	// Timeout bounds each call, stripe-go's own retries included.
	// Default 10s.
	Timeout time.Duration
	// MaxNetworkRetries is how often stripe-go itself retries a call that
	// failed on the network, 409, 503 or with Stripe-Should-Retry, with the
	// same idempotency key. 0 leaves retrying to the caller (controllers
	// requeue with backoff).
	MaxNetworkRetries int64
	// HTTPClient is the HTTP client; nil means a fresh default client.
	HTTPClient *http.Client
}

// Client calls Stripe for the operator. It is safe for concurrent use and
// holds its own stripe-go backend, so several clients (e.g. in tests) can
// point at different servers at once.
type Client struct {
	api     *client.API
	key     string
	timeout time.Duration
}

// New builds a Client. It fails on a missing or publishable key, a bad base
// URL, or a negative timeout or retry count.
func New(cfg Config) (*Client, error) {
	key := strings.TrimSpace(cfg.SecretKey)
	switch {
	case key == "":
		return nil, errors.New("stripe: a secret key is required (set STRIPE_SECRET_KEY)")
	case strings.HasPrefix(key, "pk_"):
		return nil, errors.New("stripe: the key is a publishable key (pk_...); the API needs a secret key (sk_...) or restricted key (rk_...)")
	}
	base := cfg.APIBase
	if base == "" {
		base = DefaultAPIBase
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("stripe: API base %q is not an http(s) URL", base)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("stripe: timeout %s is negative", cfg.Timeout)
	}
	if cfg.MaxNetworkRetries < 0 {
		return nil, fmt.Errorf("stripe: max network retries %d is negative", cfg.MaxNetworkRetries)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	httpClient := cfg.HTTPClient
	if httpClient == nil {
		httpClient = &http.Client{}
	}
	backend := stripego.GetBackendWithConfig(stripego.APIBackend, &stripego.BackendConfig{
		URL:               stripego.String(base),
		HTTPClient:        httpClient,
		MaxNetworkRetries: stripego.Int64(cfg.MaxNetworkRetries),
		// stripe-go would log every error itself; callers log with context.
		LeveledLogger:   &stripego.LeveledLogger{Level: stripego.LevelNull},
		EnableTelemetry: stripego.Bool(false),
	})
	api := &client.API{}
	api.Init(key, &stripego.Backends{API: backend, Connect: backend, Uploads: backend})
	return &Client{api: api, key: key, timeout: timeout}, nil
}

// call runs one stripe-go request with the per-call timeout and an optional
// idempotency key, classifies its error and records metrics.
func (c *Client) call(ctx context.Context, op string, p *stripego.Params, idempotencyKey string, do func() error) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	p.Context = ctx
	if idempotencyKey != "" {
		p.IdempotencyKey = stripego.String(idempotencyKey)
	}
	start := time.Now()
	err := do()
	var e *Error
	if err != nil {
		e = newError(op, err, c.key)
	}
	observe(op, e, time.Since(start))
	if e != nil {
		return e
	}
	return nil
}

// inputCheck collects caller bugs found before anything is sent to Stripe,
// reported together as one terminal *Error.
type inputCheck struct {
	op       string
	problems []string
}

func (c *inputCheck) require(what, value string) {
	if strings.TrimSpace(value) == "" {
		c.problems = append(c.problems, what+" is required")
	}
}

func (c *inputCheck) failIf(bad bool, format string, args ...any) {
	if bad {
		c.problems = append(c.problems, fmt.Sprintf(format, args...))
	}
}

func (c *inputCheck) err() error {
	if len(c.problems) == 0 {
		return nil
	}
	return &Error{Op: c.op, Kind: ErrorTerminal, Message: "invalid input: " + strings.Join(c.problems, "; ")}
}

// requireID checks the one id a retrieve or update call needs.
func requireID(op, what, id string) error {
	check := inputCheck{op: op}
	check.require(what, id)
	return check.err()
}

// CreateCustomer creates the Stripe customer of one user, keyed by the
// Customer resource's UID.
func (c *Client) CreateCustomer(ctx context.Context, p CreateCustomerParams) (Customer, error) {
	const op = OpCreateCustomer
	check := inputCheck{op: op}
	check.require("OwnerUID", p.OwnerUID)
	check.failIf(p.Attempt < 0, "Attempt %d is negative", p.Attempt)
	check.require("UserID", p.UserID)
	if err := check.err(); err != nil {
		return Customer{}, err
	}
	params := &stripego.CustomerParams{Metadata: map[string]string{MetaUserID: p.UserID}}
	if p.Email != "" {
		params.Email = stripego.String(p.Email)
	}
	var out *stripego.Customer
	err := c.call(ctx, op, &params.Params, IdempotencyKey(p.OwnerUID, AttemptOperation(op, p.Attempt)), func() (err error) {
		out, err = c.api.Customers.New(params)
		return err
	})
	if err != nil {
		return Customer{}, err
	}
	return CustomerFromStripe(out), nil
}

// checkoutSessionParams builds the create request of an embedded,
// one-item, payment-mode session. redirect_on_completion=never keeps the
// buyer on our page and disables redirect-based payment methods; Stripe then
// rejects return_url, so ReturnURL is deliberately not sent.
func checkoutSessionParams(p CreateSessionParams) *stripego.CheckoutSessionParams {
	md := p.Metadata.Map()
	return &stripego.CheckoutSessionParams{
		UIMode:               stripego.String(string(stripego.CheckoutSessionUIModeEmbedded)),
		RedirectOnCompletion: stripego.String(string(stripego.CheckoutSessionRedirectOnCompletionNever)),
		Mode:                 stripego.String(string(stripego.CheckoutSessionModePayment)),
		LineItems: []*stripego.CheckoutSessionLineItemParams{{
			Price:    stripego.String(p.PriceID),
			Quantity: stripego.Int64(1),
		}},
		Customer:          stripego.String(p.CustomerID),
		ClientReferenceID: stripego.String(p.Metadata.PurchaseID),
		Metadata:          md,
		PaymentIntentData: &stripego.CheckoutSessionPaymentIntentDataParams{Metadata: copyMap(md)},
		ExpiresAt:         stripego.Int64(p.ExpiresAt.Unix()),
	}
}

// CreateCheckoutSession creates the Checkout Session of one Purchase, keyed
// by the Purchase's UID. The returned Session carries the ClientSecret
// (only create returns it). ExpiresAt must be the same on every retry (derive
// it from the Purchase, not from now): Stripe answers an idempotency
// mismatch when a key is reused with different parameters.
func (c *Client) CreateCheckoutSession(ctx context.Context, p CreateSessionParams) (Session, error) {
	const op = OpCreateCheckoutSession
	md := p.Metadata
	check := inputCheck{op: op}
	check.require("OwnerUID", p.OwnerUID)
	check.require("CustomerID", p.CustomerID)
	check.require("PriceID", p.PriceID)
	check.require("Metadata.PurchaseID", md.PurchaseID)
	check.require("Metadata.ProductID", md.ProductID)
	check.require("Metadata.UserID", md.UserID)
	check.require("Metadata.EntityID", md.EntityID)
	check.failIf(md.EntityType < 1 || md.EntityType > 3,
		"Metadata.EntityType %d is not 1 (video), 2 (channel) or 3 (content)", md.EntityType)
	check.failIf(p.ExpiresAt.IsZero(), "ExpiresAt is required")
	if err := check.err(); err != nil {
		return Session{}, err
	}
	params := checkoutSessionParams(p)
	var out *stripego.CheckoutSession
	err := c.call(ctx, op, &params.Params, IdempotencyKey(p.OwnerUID, op), func() (err error) {
		out, err = c.api.CheckoutSessions.New(params)
		return err
	})
	if err != nil {
		return Session{}, err
	}
	return SessionFromStripe(out), nil
}

// GetCheckoutSession retrieves a Checkout Session (without client secret).
func (c *Client) GetCheckoutSession(ctx context.Context, id string) (Session, error) {
	const op = OpGetCheckoutSession
	if err := requireID(op, "session id", id); err != nil {
		return Session{}, err
	}
	params := &stripego.CheckoutSessionParams{}
	var out *stripego.CheckoutSession
	err := c.call(ctx, op, &params.Params, "", func() (err error) {
		out, err = c.api.CheckoutSessions.Get(id, params)
		return err
	})
	if err != nil {
		return Session{}, err
	}
	return SessionFromStripe(out), nil
}

// ExpireCheckoutSession expires an open Checkout Session so nobody can pay
// it any more. Stripe refuses (terminal error) when the session is no longer
// open; callers then re-read it, since it may have been paid meanwhile.
func (c *Client) ExpireCheckoutSession(ctx context.Context, id string) (Session, error) {
	const op = OpExpireCheckoutSession
	if err := requireID(op, "session id", id); err != nil {
		return Session{}, err
	}
	params := &stripego.CheckoutSessionExpireParams{}
	var out *stripego.CheckoutSession
	err := c.call(ctx, op, &params.Params, "", func() (err error) {
		out, err = c.api.CheckoutSessions.Expire(id, params)
		return err
	})
	if err != nil {
		return Session{}, err
	}
	return SessionFromStripe(out), nil
}

// CreateRefund refunds a PaymentIntent in full, keyed by the Purchase's UID,
// so a purchase is never refunded twice.
func (c *Client) CreateRefund(ctx context.Context, p CreateRefundParams) (Refund, error) {
	const op = OpCreateRefund
	check := inputCheck{op: op}
	check.require("OwnerUID", p.OwnerUID)
	check.failIf(p.Attempt < 0, "Attempt %d is negative", p.Attempt)
	check.require("PaymentIntentID", p.PaymentIntentID)
	if err := check.err(); err != nil {
		return Refund{}, err
	}
	params := &stripego.RefundParams{
		PaymentIntent: stripego.String(p.PaymentIntentID),
		Metadata:      copyMap(p.Metadata),
	}
	var out *stripego.Refund
	err := c.call(ctx, op, &params.Params, IdempotencyKey(p.OwnerUID, AttemptOperation(op, p.Attempt)), func() (err error) {
		out, err = c.api.Refunds.New(params)
		return err
	})
	if err != nil {
		return Refund{}, err
	}
	return RefundFromStripe(out), nil
}

// GetRefund retrieves a Refund.
func (c *Client) GetRefund(ctx context.Context, id string) (Refund, error) {
	const op = OpGetRefund
	if err := requireID(op, "refund id", id); err != nil {
		return Refund{}, err
	}
	params := &stripego.RefundParams{}
	var out *stripego.Refund
	err := c.call(ctx, op, &params.Params, "", func() (err error) {
		out, err = c.api.Refunds.Get(id, params)
		return err
	})
	if err != nil {
		return Refund{}, err
	}
	return RefundFromStripe(out), nil
}

// GetPaymentIntent retrieves a PaymentIntent with its latest charge
// expanded, so amounts refunded and disputes are visible in one call.
func (c *Client) GetPaymentIntent(ctx context.Context, id string) (PaymentIntent, error) {
	const op = OpGetPaymentIntent
	if err := requireID(op, "payment intent id", id); err != nil {
		return PaymentIntent{}, err
	}
	params := &stripego.PaymentIntentParams{}
	params.AddExpand("latest_charge")
	var out *stripego.PaymentIntent
	err := c.call(ctx, op, &params.Params, "", func() (err error) {
		out, err = c.api.PaymentIntents.Get(id, params)
		return err
	})
	if err != nil {
		return PaymentIntent{}, err
	}
	return PaymentIntentFromStripe(out), nil
}

// CreateProduct creates the Stripe product of a Product resource, keyed by
// its UID.
func (c *Client) CreateProduct(ctx context.Context, p CreateProductParams) (Product, error) {
	const op = OpCreateProduct
	check := inputCheck{op: op}
	check.require("OwnerUID", p.OwnerUID)
	check.failIf(p.Attempt < 0, "Attempt %d is negative", p.Attempt)
	check.require("Name", p.Name)
	if err := check.err(); err != nil {
		return Product{}, err
	}
	params := &stripego.ProductParams{
		Name:     stripego.String(p.Name),
		Metadata: copyMap(p.Metadata),
	}
	if p.Description != "" {
		params.Description = stripego.String(p.Description)
	}
	var out *stripego.Product
	err := c.call(ctx, op, &params.Params, IdempotencyKey(p.OwnerUID, AttemptOperation(op, p.Attempt)), func() (err error) {
		out, err = c.api.Products.New(params)
		return err
	})
	if err != nil {
		return Product{}, err
	}
	return ProductFromStripe(out), nil
}

// UpdateProduct changes a Stripe product's name, description or active
// flag; Active=false archives it (Stripe products with prices cannot be
// deleted). Updates are naturally idempotent, so no key is derived.
func (c *Client) UpdateProduct(ctx context.Context, id string, p UpdateProductParams) (Product, error) {
	const op = OpUpdateProduct
	if err := requireID(op, "product id", id); err != nil {
		return Product{}, err
	}
	check := inputCheck{op: op}
	check.failIf(p.Name != nil && strings.TrimSpace(*p.Name) == "", "Name must not be empty")
	if err := check.err(); err != nil {
		return Product{}, err
	}
	params := &stripego.ProductParams{Name: p.Name, Description: p.Description, Active: p.Active}
	var out *stripego.Product
	err := c.call(ctx, op, &params.Params, "", func() (err error) {
		out, err = c.api.Products.Update(id, params)
		return err
	})
	if err != nil {
		return Product{}, err
	}
	return ProductFromStripe(out), nil
}

// CreatePrice creates a one-time price, keyed by the owner's UID and
// generation: a retry reuses the price, a spec change makes a new one
// (Stripe prices are immutable).
func (c *Client) CreatePrice(ctx context.Context, p CreatePriceParams) (Price, error) {
	const op = OpCreatePrice
	check := inputCheck{op: op}
	check.require("OwnerUID", p.OwnerUID)
	check.failIf(p.Attempt < 0, "Attempt %d is negative", p.Attempt)
	check.require("ProductID", p.ProductID)
	check.failIf(p.Amount < 0, "Amount %d is negative", p.Amount)
	check.failIf(len(p.Currency) != 3, "Currency %q is not a three-letter ISO code", p.Currency)
	if err := check.err(); err != nil {
		return Price{}, err
	}
	params := &stripego.PriceParams{
		Product:    stripego.String(p.ProductID),
		UnitAmount: stripego.Int64(p.Amount),
		Currency:   stripego.String(strings.ToLower(p.Currency)),
		Metadata:   copyMap(p.Metadata),
	}
	key := IdempotencyKey(p.OwnerUID, AttemptOperation(op+":"+strconv.FormatInt(p.Generation, 10), p.Attempt))
	var out *stripego.Price
	err := c.call(ctx, op, &params.Params, key, func() (err error) {
		out, err = c.api.Prices.New(params)
		return err
	})
	if err != nil {
		return Price{}, err
	}
	return PriceFromStripe(out), nil
}

// GetPrice retrieves a Price.
func (c *Client) GetPrice(ctx context.Context, id string) (Price, error) {
	const op = OpGetPrice
	if err := requireID(op, "price id", id); err != nil {
		return Price{}, err
	}
	params := &stripego.PriceParams{}
	var out *stripego.Price
	err := c.call(ctx, op, &params.Params, "", func() (err error) {
		out, err = c.api.Prices.Get(id, params)
		return err
	})
	if err != nil {
		return Price{}, err
	}
	return PriceFromStripe(out), nil
}

// ArchivePrice deactivates a Price so no new session can use it; sessions
// already created keep working.
func (c *Client) ArchivePrice(ctx context.Context, id string) (Price, error) {
	const op = OpArchivePrice
	if err := requireID(op, "price id", id); err != nil {
		return Price{}, err
	}
	params := &stripego.PriceParams{Active: stripego.Bool(false)}
	var out *stripego.Price
	err := c.call(ctx, op, &params.Params, "", func() (err error) {
		out, err = c.api.Prices.Update(id, params)
		return err
	})
	if err != nil {
		return Price{}, err
	}
	return PriceFromStripe(out), nil
}

package stripe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	stripego "github.com/stripe/stripe-go/v76"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

const testKey = "sk_test_51FakeKeyForUnitTestsOnly0123456789"

// recordedRequest is what the fake Stripe saw.
type recordedRequest struct {
	Method, Path string
	Form         url.Values
	Header       http.Header
}

// fakeStripe is an httptest server whose answers the test chooses; it
// records every request.
type fakeStripe struct {
	*httptest.Server
	mu       sync.Mutex
	requests []recordedRequest
	respond  func(n int, r *http.Request) (status int, header http.Header, body string)
}

func newFakeStripe(t *testing.T, respond func(n int, r *http.Request) (int, http.Header, string)) *fakeStripe {
	t.Helper()
	f := &fakeStripe{respond: respond}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		if r.Method == http.MethodGet {
			form = r.URL.Query()
		}
		f.mu.Lock()
		n := len(f.requests)
		f.requests = append(f.requests, recordedRequest{Method: r.Method, Path: r.URL.Path, Form: form, Header: r.Header.Clone()})
		f.mu.Unlock()
		status, header, respBody := f.respond(n, r)
		for k, vs := range header {
			for _, v := range vs {
				w.Header().Add(k, v)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, respBody)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeStripe) recorded() []recordedRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recordedRequest(nil), f.requests...)
}

func ok(body string) func(int, *http.Request) (int, http.Header, string) {
	return func(int, *http.Request) (int, http.Header, string) { return http.StatusOK, nil, body }
}

func newTestClient(t *testing.T, base string, mutate ...func(*Config)) *Client {
	t.Helper()
	cfg := Config{SecretKey: testKey, APIBase: base}
	for _, m := range mutate {
		m(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func validSessionParams() CreateSessionParams {
	return CreateSessionParams{
		OwnerUID:   "6b1c3a52-8f4e-4c1e-9a55-0d2f1e7c9b10",
		CustomerID: "cus_123",
		PriceID:    "price_123",
		ReturnURL:  "https://example.com/purchase/complete",
		ExpiresAt:  time.Unix(1900000000, 0),
		Metadata: PurchaseMetadata{
			PurchaseID: "ptv-7k2m9", ProductID: "gold-video", UserID: "user-42", EntityType: 1, EntityID: "vid-9",
		},
	}
}

func TestNew_RejectsBadConfiguration(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"missing secret key", Config{}, "STRIPE_SECRET_KEY"},
		{"publishable key", Config{SecretKey: "pk_test_abc"}, "publishable"},
		{"base URL without scheme", Config{SecretKey: testKey, APIBase: "localhost:12111"}, "not an http(s) URL"},
		{"negative timeout", Config{SecretKey: testKey, Timeout: -time.Second}, "negative"},
		{"negative retries", Config{SecretKey: testKey, MaxNetworkRetries: -1}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error = %v, want one mentioning %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "sk_test_") {
				t.Fatalf("error %q leaks the key", err)
			}
		})
	}
}

func TestCreateCheckoutSession_SendsEmbeddedNoRedirectSession(t *testing.T) {
	fake := newFakeStripe(t, ok(`{"id":"cs_test_1","object":"checkout.session","client_secret":"cs_test_1_secret_abc",
		"status":"open","payment_status":"unpaid","customer":"cus_123","expires_at":1900000000,"metadata":{"payToViewPurchaseId":"ptv-7k2m9"}}`))
	c := newTestClient(t, fake.URL)

	s, err := c.CreateCheckoutSession(context.Background(), validSessionParams())
	if err != nil {
		t.Fatalf("CreateCheckoutSession: %v", err)
	}
	if s.ID != "cs_test_1" || s.ClientSecret != "cs_test_1_secret_abc" || s.Status != SessionOpen || s.CustomerID != "cus_123" {
		t.Fatalf("session = %+v", s)
	}

	reqs := fake.recorded()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Method != http.MethodPost || r.Path != "/v1/checkout/sessions" {
		t.Fatalf("request %s %s", r.Method, r.Path)
	}
	want := map[string]string{
		"ui_mode":                       "embedded",
		"redirect_on_completion":        "never",
		"mode":                          "payment",
		"line_items[0][price]":          "price_123",
		"line_items[0][quantity]":       "1",
		"customer":                      "cus_123",
		"client_reference_id":           "ptv-7k2m9",
		"expires_at":                    "1900000000",
		"metadata[payToViewPurchaseId]": "ptv-7k2m9",
		"metadata[payToViewProductId]":  "gold-video",
		"metadata[userId]":              "user-42",
		"metadata[entityType]":          "1",
		"metadata[entityId]":            "vid-9",
		"payment_intent_data[metadata][payToViewPurchaseId]": "ptv-7k2m9",
		"payment_intent_data[metadata][payToViewProductId]":  "gold-video",
		"payment_intent_data[metadata][userId]":              "user-42",
		"payment_intent_data[metadata][entityType]":          "1",
		"payment_intent_data[metadata][entityId]":            "vid-9",
	}
	for k, v := range want {
		if got := r.Form.Get(k); got != v {
			t.Errorf("form %s = %q, want %q", k, got, v)
		}
	}
	if len(r.Form) != len(want) {
		t.Errorf("form has %d fields, want exactly %d: %v", len(r.Form), len(want), r.Form)
	}
	if r.Form.Has("return_url") || r.Form.Has("success_url") {
		t.Errorf("form carries a redirect URL although redirect_on_completion=never: %v", r.Form)
	}
	if got, want := r.Header.Get("Idempotency-Key"), "paytoview:6b1c3a52-8f4e-4c1e-9a55-0d2f1e7c9b10:create_checkout_session"; got != want {
		t.Errorf("Idempotency-Key = %q, want %q", got, want)
	}
	if got := r.Header.Get("Stripe-Version"); got != "2023-10-16" {
		t.Errorf("Stripe-Version = %q, want 2023-10-16", got)
	}
	if got := r.Header.Get("Authorization"); got != "Bearer "+testKey {
		t.Errorf("Authorization header not the configured key")
	}
}

func TestCreateCheckoutSession_RejectsIncompleteInputWithoutCallingStripe(t *testing.T) {
	fake := newFakeStripe(t, ok(`{}`))
	c := newTestClient(t, fake.URL)
	tests := []struct {
		name   string
		mutate func(*CreateSessionParams)
		want   string
	}{
		{"no owner", func(p *CreateSessionParams) { p.OwnerUID = "" }, "OwnerUID is required"},
		{"no customer", func(p *CreateSessionParams) { p.CustomerID = "" }, "CustomerID is required"},
		{"no price", func(p *CreateSessionParams) { p.PriceID = " " }, "PriceID is required"},
		{"no purchase id", func(p *CreateSessionParams) { p.Metadata.PurchaseID = "" }, "Metadata.PurchaseID is required"},
		{"bad entity type", func(p *CreateSessionParams) { p.Metadata.EntityType = 4 }, "EntityType 4"},
		{"no expiry", func(p *CreateSessionParams) { p.ExpiresAt = time.Time{} }, "ExpiresAt is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := validSessionParams()
			tt.mutate(&p)
			_, err := c.CreateCheckoutSession(context.Background(), p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want one mentioning %q", err, tt.want)
			}
			if !IsTerminal(err) || IsRetryable(err) {
				t.Fatalf("input error must be terminal: %v", err)
			}
		})
	}
	if n := len(fake.recorded()); n != 0 {
		t.Fatalf("Stripe was called %d times for invalid input", n)
	}
}

func TestClient_RequestShapes(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		call       func(c *Client) error
		method     string
		path       string
		form       map[string]string
		absent     []string
		idempotent string // expected Idempotency-Key, "" when not derived
	}{
		{
			name: "create customer carries userId and email",
			body: `{"id":"cus_1","object":"customer"}`,
			call: func(c *Client) error {
				_, err := c.CreateCustomer(context.Background(), CreateCustomerParams{OwnerUID: "uid-c", UserID: "user-42", Email: "a@example.com"})
				return err
			},
			method: http.MethodPost, path: "/v1/customers",
			form:       map[string]string{"metadata[userId]": "user-42", "email": "a@example.com"},
			idempotent: "paytoview:uid-c:create_customer",
		},
		{
			name: "create refund targets the payment intent",
			body: `{"id":"re_1","object":"refund","status":"pending"}`,
			call: func(c *Client) error {
				_, err := c.CreateRefund(context.Background(), CreateRefundParams{OwnerUID: "uid-p", PaymentIntentID: "pi_9",
					Metadata: map[string]string{"payToViewPurchaseId": "ptv-1", "requestedBy": "admin-1"}})
				return err
			},
			method: http.MethodPost, path: "/v1/refunds",
			form:       map[string]string{"payment_intent": "pi_9", "metadata[payToViewPurchaseId]": "ptv-1", "metadata[requestedBy]": "admin-1"},
			absent:     []string{"amount", "charge"},
			idempotent: "paytoview:uid-p:create_refund",
		},
		{
			name: "get payment intent expands the latest charge",
			body: `{"id":"pi_9","object":"payment_intent"}`,
			call: func(c *Client) error {
				_, err := c.GetPaymentIntent(context.Background(), "pi_9")
				return err
			},
			method: http.MethodGet, path: "/v1/payment_intents/pi_9",
			form: map[string]string{"expand[0]": "latest_charge"},
		},
		{
			name: "create price is one-time, lower-case currency, keyed by generation",
			body: `{"id":"price_1","object":"price","type":"one_time"}`,
			call: func(c *Client) error {
				_, err := c.CreatePrice(context.Background(), CreatePriceParams{OwnerUID: "uid-prod", Generation: 3,
					ProductID: "prod_1", Amount: 499, Currency: "EUR"})
				return err
			},
			method: http.MethodPost, path: "/v1/prices",
			form:       map[string]string{"product": "prod_1", "unit_amount": "499", "currency": "eur"},
			absent:     []string{"recurring[interval]"},
			idempotent: "paytoview:uid-prod:create_price:3",
		},
		{
			name: "archive price deactivates it",
			body: `{"id":"price_1","object":"price","active":false}`,
			call: func(c *Client) error {
				_, err := c.ArchivePrice(context.Background(), "price_1")
				return err
			},
			method: http.MethodPost, path: "/v1/prices/price_1",
			form: map[string]string{"active": "false"},
		},
		{
			name: "create product",
			body: `{"id":"prod_1","object":"product","active":true}`,
			call: func(c *Client) error {
				_, err := c.CreateProduct(context.Background(), CreateProductParams{OwnerUID: "uid-prod", Name: "Gold video",
					Description: "One video", Metadata: map[string]string{"payToViewProductId": "gold"}})
				return err
			},
			method: http.MethodPost, path: "/v1/products",
			form:       map[string]string{"name": "Gold video", "description": "One video", "metadata[payToViewProductId]": "gold"},
			idempotent: "paytoview:uid-prod:create_product",
		},
		{
			name: "update product archives with active=false and leaves the rest alone",
			body: `{"id":"prod_1","object":"product","active":false}`,
			call: func(c *Client) error {
				_, err := c.UpdateProduct(context.Background(), "prod_1", UpdateProductParams{Active: stripego.Bool(false)})
				return err
			},
			method: http.MethodPost, path: "/v1/products/prod_1",
			form:   map[string]string{"active": "false"},
			absent: []string{"name", "description"},
		},
		{
			name: "expire session",
			body: `{"id":"cs_1","object":"checkout.session","status":"expired"}`,
			call: func(c *Client) error {
				_, err := c.ExpireCheckoutSession(context.Background(), "cs_1")
				return err
			},
			method: http.MethodPost, path: "/v1/checkout/sessions/cs_1/expire",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := newFakeStripe(t, ok(tt.body))
			if err := tt.call(newTestClient(t, fake.URL)); err != nil {
				t.Fatalf("call: %v", err)
			}
			reqs := fake.recorded()
			if len(reqs) != 1 {
				t.Fatalf("got %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Method != tt.method || r.Path != tt.path {
				t.Fatalf("request %s %s, want %s %s", r.Method, r.Path, tt.method, tt.path)
			}
			for k, v := range tt.form {
				if got := r.Form.Get(k); got != v {
					t.Errorf("%s = %q, want %q (all: %v)", k, got, v, r.Form)
				}
			}
			for _, k := range tt.absent {
				if r.Form.Has(k) {
					t.Errorf("%s sent, want it absent", k)
				}
			}
			if tt.idempotent != "" {
				if got := r.Header.Get("Idempotency-Key"); got != tt.idempotent {
					t.Errorf("Idempotency-Key = %q, want %q", got, tt.idempotent)
				}
			}
		})
	}
}

func TestClient_RetrySendsTheSameIdempotencyKey(t *testing.T) {
	fake := newFakeStripe(t, func(n int, r *http.Request) (int, http.Header, string) {
		if n == 0 {
			return http.StatusServiceUnavailable, nil, `{"error":{"type":"api_error","message":"try again"}}`
		}
		return http.StatusOK, nil, `{"id":"cus_1","object":"customer"}`
	})
	c := newTestClient(t, fake.URL, func(cfg *Config) { cfg.MaxNetworkRetries = 1 })
	params := CreateCustomerParams{OwnerUID: "uid-retry", UserID: "user-1"}

	// stripe-go's own retry after a 503.
	if _, err := c.CreateCustomer(context.Background(), params); err != nil {
		t.Fatalf("CreateCustomer: %v", err)
	}
	// The caller's retry, e.g. a reconcile after a crash.
	if _, err := c.CreateCustomer(context.Background(), params); err != nil {
		t.Fatalf("CreateCustomer again: %v", err)
	}
	reqs := fake.recorded()
	if len(reqs) != 3 {
		t.Fatalf("got %d requests, want 3 (503, retry, caller retry)", len(reqs))
	}
	want := IdempotencyKey("uid-retry", OpCreateCustomer)
	for i, r := range reqs {
		if got := r.Header.Get("Idempotency-Key"); got != want {
			t.Errorf("request %d Idempotency-Key = %q, want %q", i, got, want)
		}
	}
}

func TestClient_AttemptSelectsTheIdempotencyKey(t *testing.T) {
	fake := newFakeStripe(t, func(_ int, r *http.Request) (int, http.Header, string) {
		switch r.URL.Path {
		case "/v1/customers":
			return http.StatusOK, nil, `{"id":"cus_1","object":"customer"}`
		case "/v1/refunds":
			return http.StatusOK, nil, `{"id":"re_1","object":"refund","status":"succeeded"}`
		case "/v1/products":
			return http.StatusOK, nil, `{"id":"prod_1","object":"product","active":true}`
		default:
			return http.StatusOK, nil, `{"id":"price_1","object":"price","active":true}`
		}
	})
	c := newTestClient(t, fake.URL)
	ctx := context.Background()
	const uid = "uid-attempt"
	want := []string{}
	for _, attempt := range []int32{0, 2} {
		if _, err := c.CreateCustomer(ctx, CreateCustomerParams{OwnerUID: uid, Attempt: attempt, UserID: "user-1"}); err != nil {
			t.Fatalf("CreateCustomer: %v", err)
		}
		if _, err := c.CreateRefund(ctx, CreateRefundParams{OwnerUID: uid, Attempt: attempt, PaymentIntentID: "pi_1"}); err != nil {
			t.Fatalf("CreateRefund: %v", err)
		}
		if _, err := c.CreateProduct(ctx, CreateProductParams{OwnerUID: uid, Attempt: attempt, Name: "Gold"}); err != nil {
			t.Fatalf("CreateProduct: %v", err)
		}
		if _, err := c.CreatePrice(ctx, CreatePriceParams{OwnerUID: uid, Generation: 3, Attempt: attempt, ProductID: "prod_1", Amount: 500, Currency: "usd"}); err != nil {
			t.Fatalf("CreatePrice: %v", err)
		}
		suffix := ""
		if attempt > 0 {
			suffix = "#2"
		}
		want = append(want,
			"paytoview:"+uid+":create_customer"+suffix,
			"paytoview:"+uid+":create_refund"+suffix,
			"paytoview:"+uid+":create_product"+suffix,
			"paytoview:"+uid+":create_price:3"+suffix)
	}
	reqs := fake.recorded()
	if len(reqs) != len(want) {
		t.Fatalf("%d requests, want %d", len(reqs), len(want))
	}
	for i, r := range reqs {
		if got := r.Header.Get("Idempotency-Key"); got != want[i] {
			t.Errorf("request %d (%s) Idempotency-Key = %q, want %q", i, r.Path, got, want[i])
		}
	}

	_, err := c.CreateRefund(ctx, CreateRefundParams{OwnerUID: uid, Attempt: -1, PaymentIntentID: "pi_1"})
	if !IsTerminal(err) || !strings.Contains(err.Error(), "Attempt -1 is negative") {
		t.Fatalf("negative attempt: %v, want a terminal input error", err)
	}
	if n := len(fake.recorded()); n != len(want) {
		t.Errorf("a negative attempt was sent to Stripe")
	}
}

func TestErrors_AreClassified(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		header      http.Header
		body        string
		kind        ErrorKind
		notFound    bool
		keySpent    bool
		retryAfter  time.Duration
		userMessage string
	}{
		{
			name: "invalid request is terminal", status: 400,
			body: `{"error":{"type":"invalid_request_error","code":"parameter_invalid_empty","param":"line_items","message":"Missing line items."}}`,
			kind: ErrorTerminal, userMessage: "Missing line items.",
		},
		{
			name: "missing resource is terminal and not found", status: 404,
			body: `{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such checkout.session: 'cs_x'"}}`,
			kind: ErrorTerminal, notFound: true, userMessage: "No such checkout.session: 'cs_x'",
		},
		{
			name: "card error is terminal", status: 402,
			body: `{"error":{"type":"card_error","code":"card_declined","message":"Your card was declined."}}`,
			kind: ErrorTerminal, userMessage: "Your card was declined.",
		},
		{
			name: "permission error is terminal", status: 403,
			body: `{"error":{"type":"invalid_request_error","message":"The provided key does not have access."}}`,
			kind: ErrorTerminal, userMessage: "The provided key does not have access.",
		},
		{
			name: "idempotency mismatch", status: 400,
			body: `{"error":{"type":"idempotency_error","message":"Keys for idempotent requests can only be used with the same parameters they were first used with."}}`,
			kind: ErrorIdempotencyMismatch,
		},
		{
			name: "concurrent use of a key is retryable", status: 409,
			body: `{"error":{"type":"idempotency_error","message":"There is currently another in-progress request using this Idempotent Key."}}`,
			kind: ErrorRetryable,
		},
		{
			name: "rate limit is retryable and honours Retry-After", status: 429,
			header: http.Header{"Retry-After": {"7"}},
			body:   `{"error":{"type":"invalid_request_error","code":"rate_limit","message":"Too many requests."}}`,
			kind:   ErrorRetryable, retryAfter: 7 * time.Second,
		},
		{
			name: "lock timeout is retryable", status: 400,
			body: `{"error":{"type":"invalid_request_error","code":"lock_timeout","message":"This object cannot be accessed right now."}}`,
			kind: ErrorRetryable,
		},
		{
			name: "server error is retryable and spends the key", status: 500,
			body: `{"error":{"type":"api_error","message":"Something went wrong."}}`,
			kind: ErrorRetryable, keySpent: true,
		},
		{
			name: "server error Stripe says to retry does not spend the key", status: 503,
			header: http.Header{"Stripe-Should-Retry": {"true"}},
			body:   `{"error":{"type":"api_error","message":"Please retry."}}`,
			kind:   ErrorRetryable,
		},
		{
			name: "Stripe-Should-Retry true makes a 400 retryable", status: 400,
			header: http.Header{"Stripe-Should-Retry": {"true"}},
			body:   `{"error":{"type":"invalid_request_error","message":"Please retry."}}`,
			kind:   ErrorRetryable,
		},
		{
			name: "Stripe-Should-Retry false makes a 500 terminal", status: 500,
			header: http.Header{"Stripe-Should-Retry": {"false"}},
			body:   `{"error":{"type":"api_error","message":"Replayed failure."}}`,
			kind:   ErrorTerminal, keySpent: true,
		},
		{
			name: "HTML from a proxy is retryable", status: 502,
			body: `<html>bad gateway</html>`,
			kind: ErrorRetryable, userMessage: "the payment provider is temporarily unavailable, please try again",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := newFakeStripe(t, func(int, *http.Request) (int, http.Header, string) { return tt.status, tt.header, tt.body })
			c := newTestClient(t, fake.URL)
			_, err := c.GetCheckoutSession(context.Background(), "cs_x")
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T) is not *Error", err, err)
			}
			if e.Kind != tt.kind {
				t.Fatalf("kind = %s, want %s (%v)", e.Kind, tt.kind, err)
			}
			if e.Op != OpGetCheckoutSession {
				t.Errorf("op = %q", e.Op)
			}
			if got := IsRetryable(err); got != (tt.kind == ErrorRetryable) {
				t.Errorf("IsRetryable = %v", got)
			}
			if got := IsTerminal(err); got != (tt.kind != ErrorRetryable) {
				t.Errorf("IsTerminal = %v", got)
			}
			if got := IsIdempotencyMismatch(err); got != (tt.kind == ErrorIdempotencyMismatch) {
				t.Errorf("IsIdempotencyMismatch = %v", got)
			}
			if got := IsNotFound(err); got != tt.notFound {
				t.Errorf("IsNotFound = %v, want %v", got, tt.notFound)
			}
			if got := IsKeySpent(err); got != tt.keySpent {
				t.Errorf("IsKeySpent = %v, want %v", got, tt.keySpent)
			}
			if got := RetryAfter(err); got != tt.retryAfter {
				t.Errorf("RetryAfter = %s, want %s", got, tt.retryAfter)
			}
			if tt.userMessage != "" && UserMessage(err) != tt.userMessage {
				t.Errorf("UserMessage = %q, want %q", UserMessage(err), tt.userMessage)
			}
			// Wrapping by callers keeps the classification.
			wrapped := fmt.Errorf("reconciling purchase: %w", err)
			if IsRetryable(wrapped) != IsRetryable(err) || IsTerminal(wrapped) != IsTerminal(err) {
				t.Errorf("classification lost through wrapping")
			}
			var se *stripego.Error
			if tt.status != 502 && !errors.As(err, &se) {
				t.Errorf("the stripe-go error is not reachable through errors.As")
			}
		})
	}
}

func TestErrors_AuthenticationFailureNeverShowsTheKey(t *testing.T) {
	// Worst case: a server that echoes the whole key back.
	fake := newFakeStripe(t, func(int, *http.Request) (int, http.Header, string) {
		return http.StatusUnauthorized, nil,
			`{"error":{"type":"invalid_request_error","message":"Invalid API Key provided: ` + testKey + ` (also sk_live_abcdef****wxyz)"}}`
	})
	c := newTestClient(t, fake.URL)
	_, err := c.CreateCustomer(context.Background(), CreateCustomerParams{OwnerUID: "uid", UserID: "u"})
	if err == nil {
		t.Fatal("want an error")
	}
	if !IsTerminal(err) {
		t.Errorf("authentication failure should be terminal: %v", err)
	}
	var se *stripego.Error
	errors.As(err, &se)
	for what, s := range map[string]string{
		"Error()":           err.Error(),
		"UserMessage":       UserMessage(err),
		"stripe-go Error()": se.Error(),
		"%+v":               fmt.Sprintf("%+v", err),
	} {
		if strings.Contains(s, testKey) || strings.Contains(s, "sk_live_") {
			t.Errorf("%s leaks a secret key: %s", what, s)
		}
	}
	if !strings.Contains(err.Error(), "Invalid API Key provided") {
		t.Errorf("error lost Stripe's explanation: %v", err)
	}
}

func TestErrors_NetworkFailureIsRetryable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close() // nothing listens any more
	c := newTestClient(t, base)
	_, err := c.GetPrice(context.Background(), "price_1")
	if !IsRetryable(err) || IsTerminal(err) {
		t.Fatalf("connection refused should be retryable: %v", err)
	}
	if UserMessage(err) == "" || strings.Contains(UserMessage(err), "127.0.0.1") {
		t.Fatalf("UserMessage = %q, want a generic message", UserMessage(err))
	}
}

func TestErrors_TimeoutIsRetryable(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	c := newTestClient(t, srv.URL, func(cfg *Config) { cfg.Timeout = 50 * time.Millisecond })
	_, err := c.GetRefund(context.Background(), "re_1")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error = %v, want a deadline exceeded", err)
	}
	if !IsRetryable(err) {
		t.Fatalf("a timeout should be retryable: %v", err)
	}
}

func TestMetrics_CountCallsByOperationAndOutcome(t *testing.T) {
	fake := newFakeStripe(t, func(n int, r *http.Request) (int, http.Header, string) {
		if strings.HasSuffix(r.URL.Path, "/price_missing") {
			return 404, nil, `{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such price"}}`
		}
		if strings.HasSuffix(r.URL.Path, "/price_busy") {
			return 503, nil, `{"error":{"type":"api_error","message":"busy"}}`
		}
		return 200, nil, `{"id":"price_1","object":"price"}`
	})
	c := newTestClient(t, fake.URL)
	count := func(outcome string) float64 {
		return testutil.ToFloat64(requestsTotal.WithLabelValues(OpGetPrice, outcome))
	}
	before := map[string]float64{}
	for _, o := range []string{OutcomeSuccess, OutcomeNotFound, OutcomeRetryableError} {
		before[o] = count(o)
	}
	observedBefore := observations(t, OpGetPrice)

	if _, err := c.GetPrice(context.Background(), "price_1"); err != nil {
		t.Fatal(err)
	}
	_, _ = c.GetPrice(context.Background(), "price_missing")
	_, _ = c.GetPrice(context.Background(), "price_busy")
	_, _ = c.GetPrice(context.Background(), "") // invalid input: no request, not counted

	for o, want := range map[string]float64{OutcomeSuccess: 1, OutcomeNotFound: 1, OutcomeRetryableError: 1} {
		if got := count(o) - before[o]; got != want {
			t.Errorf("requests_total{operation=get_price,outcome=%s} grew by %v, want %v", o, got, want)
		}
	}
	if n := len(fake.recorded()); n != 3 {
		t.Errorf("Stripe saw %d requests, want 3", n)
	}
	if got := observations(t, OpGetPrice) - observedBefore; got != 3 {
		t.Errorf("request_duration_seconds{operation=get_price} got %d observations, want 3", got)
	}
	lint, err := testutil.GatherAndLint(metrics.Registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range lint {
		if strings.HasPrefix(p.Metric, "paytoview_stripe_") {
			t.Errorf("metric lint: %s: %s", p.Metric, p.Text)
		}
	}
}

// observations returns the sample count of the duration histogram for op.
func observations(t *testing.T, op string) uint64 {
	t.Helper()
	var m dto.Metric
	if err := requestDuration.WithLabelValues(op).(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

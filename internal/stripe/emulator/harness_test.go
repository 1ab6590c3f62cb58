package emulator_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

const (
	testKey    = "sk_test_emulator_harness"
	testSecret = "whsec_test_harness_secret"
	waitLimit  = 10 * time.Second
)

// harness is an emulator on a real socket, a stripe-go client pointed at it,
// and a webhook endpoint that verifies every delivery with stripe-go's own
// verifier.
type harness struct {
	t    testing.TB
	em   *emulator.Emulator
	srv  *httptest.Server
	sc   *client.API
	recv *receiver
}

func newHarness(t testing.TB, tweak ...func(*emulator.Options)) *harness {
	t.Helper()
	recv := &receiver{secret: testSecret, changed: make(chan struct{}, 1)}
	hookSrv := httptest.NewServer(recv)
	opts := emulator.Options{
		WebhookURL:        hookSrv.URL,
		WebhookSecret:     testSecret,
		WebhookBackoff:    5 * time.Millisecond,
		WebhookMaxBackoff: 20 * time.Millisecond,
	}
	for _, f := range tweak {
		f(&opts)
	}
	em := emulator.New(opts)
	srv := httptest.NewServer(em)
	t.Cleanup(func() {
		em.Close()
		srv.Close()
		hookSrv.Close()
	})
	return &harness{t: t, em: em, srv: srv, sc: newStripeClient(srv, testKey, nil), recv: recv}
}

func newStripeClient(srv *httptest.Server, key string, hc *http.Client) *client.API {
	if hc == nil {
		hc = srv.Client()
	}
	backend := stripego.GetBackendWithConfig(stripego.APIBackend, &stripego.BackendConfig{
		URL:               stripego.String(srv.URL),
		HTTPClient:        hc,
		MaxNetworkRetries: stripego.Int64(0),
		LeveledLogger:     &stripego.LeveledLogger{Level: stripego.LevelNull},
	})
	sc := &client.API{}
	sc.Init(key, &stripego.Backends{API: backend, Connect: backend, Uploads: backend})
	return sc
}

// receiver is a webhook endpoint. It answers 500 to the first failNext
// deliveries, and 400 to deliveries that do not verify.
type receiver struct {
	secret  string
	changed chan struct{}

	mu        sync.Mutex
	failNext  int
	events    []stripego.Event
	failures  int
	rejected  []string
	userAgent string
	ctype     string
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	ev, err := webhook.ConstructEventWithOptions(body, r.Header.Get("Stripe-Signature"), rc.secret, webhook.ConstructEventOptions{})
	rc.mu.Lock()
	defer func() {
		rc.mu.Unlock()
		select {
		case rc.changed <- struct{}{}:
		default:
		}
	}()
	rc.userAgent, rc.ctype = r.Header.Get("User-Agent"), r.Header.Get("Content-Type")
	if err != nil {
		rc.rejected = append(rc.rejected, err.Error())
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if rc.failNext > 0 {
		rc.failNext--
		rc.failures++
		http.Error(w, "try later", http.StatusInternalServerError)
		return
	}
	rc.events = append(rc.events, ev)
	w.WriteHeader(http.StatusOK)
}

func (rc *receiver) snapshot() []stripego.Event {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]stripego.Event(nil), rc.events...)
}

// waitFor waits until cond holds for the received events, or fails the test
// after waitLimit.
func (rc *receiver) waitFor(t testing.TB, what string, cond func([]stripego.Event) bool) []stripego.Event {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		evs := rc.snapshot()
		if cond(evs) {
			return evs
		}
		select {
		case <-rc.changed:
		case <-deadline.C:
			rc.mu.Lock()
			rejected := rc.rejected
			rc.mu.Unlock()
			t.Fatalf("timed out waiting for %s; received %s; rejected %v", what, eventTypes(evs), rejected)
		}
	}
}

// waitForType waits for an event of type typ about object id and returns it.
func (rc *receiver) waitForType(t *testing.T, typ, id string) stripego.Event {
	t.Helper()
	var found stripego.Event
	rc.waitFor(t, typ+" for "+id, func(evs []stripego.Event) bool {
		for _, ev := range evs {
			if string(ev.Type) == typ && ev.Data.Object["id"] == id {
				found = ev
				return true
			}
		}
		return false
	})
	return found
}

func eventTypes(evs []stripego.Event) string {
	var s []string
	for _, ev := range evs {
		s = append(s, string(ev.Type))
	}
	return "[" + strings.Join(s, " ") + "]"
}

func decodeObject[T any](t *testing.T, ev stripego.Event) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(ev.Data.Raw, &v); err != nil {
		t.Fatalf("decoding %s object: %v", ev.Type, err)
	}
	return v
}

// send makes one plain HTTP request and returns the status and body.
func send(t testing.TB, method, target, contentType, body string, header http.Header) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, target, strings.NewReader(body))
	if err != nil {
		t.Fatalf("building %s %s: %v", method, target, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s %s: %v", method, target, err)
	}
	return resp.StatusCode, b
}

// helper POSTs a form to a /_emulator/v1 endpoint and decodes the answer.
func (h *harness) helper(path string, form url.Values, out any) (int, []byte) {
	h.t.Helper()
	code, body := send(h.t, http.MethodPost, h.srv.URL+path, "application/x-www-form-urlencoded", form.Encode(), nil)
	if out != nil && code == http.StatusOK {
		if err := json.Unmarshal(body, out); err != nil {
			h.t.Fatalf("decoding %s answer %s: %v", path, body, err)
		}
	}
	return code, body
}

// catalog creates a product and a one-time price of amount (eur).
func (h *harness) catalog(amount int64) *stripego.Price {
	h.t.Helper()
	prod, err := h.sc.Products.New(&stripego.ProductParams{Name: stripego.String("Video 42")})
	if err != nil {
		h.t.Fatalf("creating product: %v", err)
	}
	pr, err := h.sc.Prices.New(&stripego.PriceParams{
		Product:    stripego.String(prod.ID),
		UnitAmount: stripego.Int64(amount),
		Currency:   stripego.String("eur"),
	})
	if err != nil {
		h.t.Fatalf("creating price: %v", err)
	}
	return pr
}

func (h *harness) customer() *stripego.Customer {
	h.t.Helper()
	cu, err := h.sc.Customers.New(&stripego.CustomerParams{
		Email:    stripego.String("user@example.com"),
		Metadata: map[string]string{"userId": "user-1"},
	})
	if err != nil {
		h.t.Fatalf("creating customer: %v", err)
	}
	return cu
}

var purchaseMetadata = map[string]string{
	"payToViewPurchaseId": "ptv-abc12",
	"payToViewProductId":  "video-42",
	"userId":              "user-1",
	"entityType":          "1",
	"entityId":            "42",
}

// sessionParams are the parameters the operator's client sends.
func sessionParams(priceID, customerID, ref string, expiresAt time.Time) *stripego.CheckoutSessionParams {
	return &stripego.CheckoutSessionParams{
		UIMode:               stripego.String("embedded"),
		RedirectOnCompletion: stripego.String("never"),
		Mode:                 stripego.String("payment"),
		LineItems: []*stripego.CheckoutSessionLineItemParams{{
			Price:    stripego.String(priceID),
			Quantity: stripego.Int64(1),
		}},
		Customer:          stripego.String(customerID),
		ClientReferenceID: stripego.String(ref),
		Metadata:          purchaseMetadata,
		PaymentIntentData: &stripego.CheckoutSessionPaymentIntentDataParams{Metadata: purchaseMetadata},
		ExpiresAt:         stripego.Int64(expiresAt.Unix()),
	}
}

// openSession creates a customer, a 1000 eur price and an open session.
func (h *harness) openSession() *stripego.CheckoutSession {
	h.t.Helper()
	pr := h.catalog(1000)
	cu := h.customer()
	// Stripe's minimum, rounded up to a whole second: expires_at travels as
	// whole seconds, and rounding down could fall short of the minimum.
	expires := h.em.Now().Add(30 * time.Minute)
	if frac := expires.Sub(expires.Truncate(time.Second)); frac > 0 {
		expires = expires.Add(time.Second - frac)
	}
	s, err := h.sc.CheckoutSessions.New(sessionParams(pr.ID, cu.ID, "ptv-abc12", expires))
	if err != nil {
		h.t.Fatalf("creating session: %v", err)
	}
	return s
}

// paidSession returns a session paid with a card, and its PaymentIntent
// with the charge expanded.
func (h *harness) paidSession() (*stripego.CheckoutSession, *stripego.PaymentIntent) {
	h.t.Helper()
	s := h.openSession()
	if _, err := h.em.Pay(s.ID, emulator.PayOptions{}); err != nil {
		h.t.Fatalf("paying: %v", err)
	}
	s, err := h.sc.CheckoutSessions.Get(s.ID, nil)
	if err != nil {
		h.t.Fatalf("retrieving session: %v", err)
	}
	pi := h.intent(s.PaymentIntent.ID)
	return s, pi
}

func (h *harness) intent(id string) *stripego.PaymentIntent {
	h.t.Helper()
	p := &stripego.PaymentIntentParams{}
	p.AddExpand("latest_charge")
	pi, err := h.sc.PaymentIntents.Get(id, p)
	if err != nil {
		h.t.Fatalf("retrieving payment intent: %v", err)
	}
	return pi
}

// stripeErr asserts err is a Stripe API error and returns it.
func stripeErr(t *testing.T, err error) *stripego.Error {
	t.Helper()
	var se *stripego.Error
	if !errors.As(err, &se) {
		t.Fatalf("want a *stripe.Error, got %T: %v", err, err)
	}
	return se
}

func waitWebhooks(t *testing.T, em *emulator.Emulator) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := em.WaitForWebhooks(ctx); err != nil {
		t.Fatalf("waiting for webhook deliveries: %v", err)
	}
}

// fakeClock is an injectable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

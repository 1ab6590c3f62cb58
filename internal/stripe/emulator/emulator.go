// Package emulator is a stateful, in-memory Stripe that speaks the wire
// format of stripe-go v76 (API version 2023-10-16) for the part of Stripe the
// operator uses: customers, products, prices, embedded Checkout Sessions,
// PaymentIntents, charges, refunds, disputes and events. It delivers signed
// webhooks like Stripe does, and exposes test helpers under /_emulator/v1/
// (and as Go methods) that play the paying customer and Stripe's side:
// paying a session, settling an asynchronous payment, opening and closing
// disputes, failing refunds, injecting API and webhook faults.
//
// Run it inside a test with httptest.NewServer(emulator.New(opts)), or as a
// process with go run ./hack/stripe-emulator. docs/emulator.md documents the
// /_emulator/v1/ contract.
package emulator

import (
	"container/heap"
	"context"
	"crypto/subtle"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	stripego "github.com/stripe/stripe-go/v76"
)

// APIVersion is the only Stripe API version the emulator speaks: the one
// stripe-go v76 pins.
const APIVersion = stripego.APIVersion

// DefaultWebhookEvents are the event types delivered to the webhook endpoint
// when Options.WebhookEvents is empty: the ones the operator's endpoint is
// configured for. Other events are recorded and listed by GET /v1/events.
var DefaultWebhookEvents = []string{
	"checkout.session.completed",
	"checkout.session.async_payment_succeeded",
	"checkout.session.async_payment_failed",
	"checkout.session.expired",
	"charge.refunded",
	"charge.refund.updated",
	"charge.dispute.created",
	"charge.dispute.closed",
}

// Options configures an Emulator. The zero value is usable: any sk_test_ key
// is accepted, no webhook endpoint is configured, and a random webhook
// secret is generated (see (*Emulator).WebhookSecret).
type Options struct {
	// APIKey, when set, is the only secret key accepted. When empty, any key
	// starting with sk_test_ or rk_test_ is accepted.
	APIKey string
	// WebhookURL is where events are POSTed. Empty means no endpoint: events
	// are still recorded. It can be changed later with SetWebhookURL.
	WebhookURL string
	// WebhookSecret signs deliveries (the endpoint's whsec_ secret).
	WebhookSecret string
	// WebhookEvents are the event types the endpoint is subscribed to;
	// "*" subscribes to all. Defaults to DefaultWebhookEvents.
	WebhookEvents []string
	// Now is the clock for object timestamps and session expiry. Defaults
	// to time.Now. Webhook signatures always use the wall clock, because
	// verifiers check them against theirs.
	Now func() time.Time
	// WebhookMaxAttempts bounds delivery attempts per event (default 5).
	WebhookMaxAttempts int
	// WebhookBackoff is the delay before the first retry (default 100ms);
	// it doubles per attempt up to WebhookMaxBackoff (default 5s). Stripe's
	// real schedule is hours long; tests need it short.
	WebhookBackoff    time.Duration
	WebhookMaxBackoff time.Duration
	// WebhookTimeout bounds one delivery attempt (default 10s).
	WebhookTimeout time.Duration
	// WebhookConcurrency is the number of delivery workers (default 1).
	// With one worker, events are delivered in the order they happened
	// unless a fault says otherwise; more workers trade order for throughput.
	WebhookConcurrency int
	// WebhookDelay is the delay of the "delay" webhook mode when a call does
	// not give one (default 500ms).
	WebhookDelay time.Duration
	// ExpiryInterval is how often open sessions past expires_at are expired
	// in the background (default 1s; negative disables the sweep). Sessions
	// are also expired lazily on every API request.
	ExpiryInterval time.Duration
	// MaxEvents bounds the events kept in memory (default 100000); the
	// oldest are forgotten first, as Stripe forgets events after 30 days.
	MaxEvents int
	// MaxIdempotencyKeys bounds the idempotency results kept (default
	// 100000); the oldest are forgotten first (Stripe keeps them 24 hours).
	MaxIdempotencyKeys int
	// HTTPClient delivers webhooks. Defaults to a client with
	// WebhookTimeout that does not follow redirects (Stripe treats a 3xx as
	// a failure).
	HTTPClient *http.Client
	// Logger receives delivery failures and, at V(1), every request. It
	// never receives keys, secrets or client secrets.
	Logger logr.Logger
}

func (o Options) withDefaults() Options {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.WebhookSecret == "" {
		o.WebhookSecret = newID("whsec_", 32)
	}
	if len(o.WebhookEvents) == 0 {
		o.WebhookEvents = DefaultWebhookEvents
	}
	if o.WebhookMaxAttempts <= 0 {
		o.WebhookMaxAttempts = 5
	}
	if o.WebhookBackoff <= 0 {
		o.WebhookBackoff = 100 * time.Millisecond
	}
	if o.WebhookMaxBackoff <= 0 {
		o.WebhookMaxBackoff = 5 * time.Second
	}
	if o.WebhookTimeout <= 0 {
		o.WebhookTimeout = 10 * time.Second
	}
	if o.WebhookConcurrency <= 0 {
		o.WebhookConcurrency = 1
	}
	if o.WebhookDelay <= 0 {
		o.WebhookDelay = 500 * time.Millisecond
	}
	if o.ExpiryInterval == 0 {
		o.ExpiryInterval = time.Second
	}
	if o.MaxEvents <= 0 {
		o.MaxEvents = 100000
	}
	if o.MaxIdempotencyKeys <= 0 {
		o.MaxIdempotencyKeys = 100000
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{
			Timeout: o.WebhookTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	return o
}

// Emulator is an in-memory Stripe. It is an http.Handler, safe for
// concurrent use. Close it to stop background work.
type Emulator struct {
	opts  Options
	log   logr.Logger
	mux   *http.ServeMux
	hooks *dispatcher

	mu          sync.Mutex
	clockOffset time.Duration
	customers   map[string]*customer
	products    map[string]*product
	prices      map[string]*price
	sessions    map[string]*checkoutSession
	sessionList []*checkoutSession // creation order
	intents     map[string]*paymentIntent
	charges     map[string]*charge
	refunds     map[string]*refund
	disputes    map[string]*dispute
	events      []*storedEvent // oldest first
	eventByID   map[string]*storedEvent
	expiry      expiryHeap
	refundFail  RefundFailMode
	faults      []*Fault
	idem        map[string]*idemEntry
	idemOrder   []string

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New returns a running emulator. Call Close when done with it.
func New(opts Options) *Emulator {
	opts = opts.withDefaults()
	e := &Emulator{
		opts:      opts,
		log:       opts.Logger.WithName("stripe-emulator"),
		customers: map[string]*customer{},
		products:  map[string]*product{},
		prices:    map[string]*price{},
		sessions:  map[string]*checkoutSession{},
		intents:   map[string]*paymentIntent{},
		charges:   map[string]*charge{},
		refunds:   map[string]*refund{},
		disputes:  map[string]*dispute{},
		eventByID: map[string]*storedEvent{},
		idem:      map[string]*idemEntry{},
		stop:      make(chan struct{}),
	}
	e.hooks = newDispatcher(opts, e.log)
	e.mux = http.NewServeMux()
	e.routes()
	if opts.ExpiryInterval > 0 {
		e.wg.Add(1)
		go e.sweepExpired(opts.ExpiryInterval)
	}
	return e
}

// ServeHTTP implements http.Handler.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := e.mux.Handler(r); pattern == "" {
		if strings.HasPrefix(r.URL.Path, helperPrefix) {
			helperCORS(w)
			if r.Method == http.MethodOptions {
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		writeError(w, "", unrecognizedURL(r))
		return
	}
	e.mux.ServeHTTP(w, r)
}

// Close stops the expiry sweep and webhook delivery, aborting attempts in
// flight, and waits for their goroutines. Deliveries not yet made are
// abandoned. It is safe to call more than once.
func (e *Emulator) Close() {
	e.closeOnce.Do(func() {
		close(e.stop)
		e.wg.Wait()
		e.hooks.close()
	})
}

// SetWebhookURL changes the endpoint that receives events. Retries of
// earlier deliveries go to the new URL, as they would after an endpoint is
// edited in Stripe's dashboard.
func (e *Emulator) SetWebhookURL(url string) {
	e.hooks.setURL(url)
}

// WebhookSecret returns the secret deliveries are signed with.
func (e *Emulator) WebhookSecret() string {
	return e.opts.WebhookSecret
}

// Now returns the emulator's current time: Options.Now plus any
// AdvanceClock offset.
func (e *Emulator) Now() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.nowLocked()
}

// AdvanceClock moves the emulator's clock forward by d (for a process whose
// clock cannot be injected) and expires the sessions that became due.
func (e *Emulator) AdvanceClock(d time.Duration) time.Time {
	e.lock()
	defer e.mu.Unlock()
	e.clockOffset += d
	now := e.nowLocked()
	e.expireDueLocked(now)
	return now
}

// ExpireDueSessions expires every open session whose expires_at has passed,
// emitting checkout.session.expired for each, and returns how many.
func (e *Emulator) ExpireDueSessions() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.expireDueLocked(e.nowLocked())
}

func (e *Emulator) nowLocked() time.Time {
	return e.opts.Now().Add(e.clockOffset)
}

// lock takes the state lock, expires due sessions (so every read sees
// Stripe's view of time), and returns the current time. The caller unlocks.
func (e *Emulator) lock() time.Time {
	e.mu.Lock()
	now := e.nowLocked()
	e.expireDueLocked(now)
	return now
}

func (e *Emulator) sweepExpired(every time.Duration) {
	defer e.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			e.ExpireDueSessions()
		}
	}
}

// authenticate checks the secret key the way Stripe does: Bearer auth, or
// Basic auth with the key as user name (curl -u sk_test_...:).
func (e *Emulator) authenticate(r *http.Request) *apiError {
	key := ""
	h := r.Header.Get("Authorization")
	switch {
	case strings.HasPrefix(h, "Bearer "):
		key = strings.TrimSpace(strings.TrimPrefix(h, "Bearer "))
	case strings.HasPrefix(h, "Basic "):
		if user, _, ok := r.BasicAuth(); ok {
			key = user
		}
	}
	if key == "" {
		return &apiError{
			status:  http.StatusUnauthorized,
			typ:     errTypeInvalidRequest,
			message: "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
		}
	}
	valid := false
	if e.opts.APIKey != "" {
		valid = subtle.ConstantTimeCompare([]byte(key), []byte(e.opts.APIKey)) == 1
	} else {
		valid = strings.HasPrefix(key, "sk_test_") || strings.HasPrefix(key, "rk_test_")
	}
	if !valid {
		return &apiError{
			status:  http.StatusUnauthorized,
			typ:     errTypeInvalidRequest,
			code:    "api_key_invalid",
			message: "Invalid API Key provided: " + maskKey(key),
		}
	}
	return nil
}

// maskKey shows a key the way Stripe's error does: prefix and last four.
func maskKey(key string) string {
	if len(key) <= 12 {
		return strings.Repeat("*", len(key))
	}
	return key[:8] + strings.Repeat("*", len(key)-12) + key[len(key)-4:]
}

// expiryHeap orders open sessions by expires_at so that lazy expiry costs
// O(log n) per request instead of a scan. Entries of sessions that left
// "open" another way are skipped when popped.
type expiryHeap []*checkoutSession

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].ExpiresAt < h[j].ExpiresAt }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(*checkoutSession)) }
func (h *expiryHeap) Pop() any {
	old := *h
	n := len(old)
	x := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return x
}

func (e *Emulator) expireDueLocked(now time.Time) int {
	n := 0
	for len(e.expiry) > 0 && e.expiry[0].ExpiresAt <= now.Unix() {
		s := heap.Pop(&e.expiry).(*checkoutSession)
		if s.Status != sessionOpen {
			continue
		}
		e.expireSessionLocked(s, nil)
		n++
	}
	return n
}

// waitCtx waits for d or until ctx is done.
func waitCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func subtleEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

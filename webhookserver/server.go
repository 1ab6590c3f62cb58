// Package webhookserver serves the Pay-to-View HTTP API: the client API the
// frontend calls (paytoviewweb.md), the admin API for support staff, the
// forward-auth access check for ingresses, and the Stripe webhook receiver.
//
// It runs on every replica, not only the leader: it reads through the
// manager's cache and field indexes, and writes only Purchases (create,
// refund request, recheck annotation, status patches from webhooks). The
// Purchase controller does everything that talks to Stripe except verifying
// webhooks.
package webhookserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	stripego "github.com/stripe/stripe-go/v76"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/auth"
)

// Authenticator verifies the bearer token of a request. *auth.Authenticator
// implements it. It returns auth.ErrMissingToken when there is no token and
// an error (typically *auth.TokenError) when the token is not valid.
type Authenticator interface {
	Authenticate(r *http.Request) (auth.Principal, error)
}

// WebhookVerifier checks a Stripe webhook's signature over the raw body and
// decodes the event. *stripe.Verifier implements it.
type WebhookVerifier interface {
	Verify(payload []byte, header string) (stripego.Event, error)
}

// Defaults of Options.
const (
	DefaultAddr               = ":8082"
	DefaultEntityIDHeader     = "X-Entity-Id"
	DefaultPendingReuseWindow = 5 * time.Minute
	DefaultCreateTimeout      = 10 * time.Second
	DefaultRefundTimeout      = 10 * time.Second
	DefaultRecheckAfter       = 5 * time.Second
	DefaultRecheckInterval    = 15 * time.Second
	DefaultCreateRate         = rate.Limit(1.0 / 6) // 10 purchases a minute per user
	DefaultCreateBurst        = 5
	DefaultMaxPendingPerUser  = 10
	DefaultShutdownTimeout    = 30 * time.Second
	DefaultReadHeaderTimeout  = 5 * time.Second
	DefaultReadTimeout        = 15 * time.Second
	DefaultIdleTimeout        = 120 * time.Second
	DefaultMaxHeaderBytes     = 64 << 10
)

// Options configure a Server. Zero durations and limits take the Default*
// values.
type Options struct {
	// Addr is the address Start listens on, e.g. ":8082".
	Addr string
	// Namespace is where Products and Purchases live.
	Namespace string

	// Client is the manager's client: it reads from the cache (with the
	// field indexes of internal/index registered) and writes to the apiserver.
	Client client.Client
	// APIReader reads from the apiserver directly (mgr.GetAPIReader()). The
	// webhook receiver reads a Purchase through it before applying an event,
	// so a stale cache never loses an update; the client secret is read
	// through it too (see readClientSecret).
	APIReader client.Reader
	// Cache is the manager's cache; the server waits for Purchases to change
	// through its informer and is ready once it has synced.
	Cache cache.Cache

	// Auth verifies bearer tokens.
	Auth Authenticator
	// Verifier verifies Stripe webhook signatures.
	Verifier WebhookVerifier

	// AllowedReturnOrigins are the origins (scheme://host[:port]) a
	// returnUrl may point to. https only; http only for a loopback host.
	// At least one is required.
	AllowedReturnOrigins []string
	// CORSAllowedOrigins are the frontend origins browsers may call the API
	// from. Empty disables CORS.
	CORSAllowedOrigins []string
	// EntityIDHeader is the request header the forward-auth check reads the
	// entity id from when the entityId query parameter is absent.
	EntityIDHeader string

	// PendingReuseWindow is how old a Pending purchase may be and still be
	// handed out again instead of creating a new one (5 minutes).
	PendingReuseWindow time.Duration
	// CreateTimeout bounds how long a create waits for the checkout session
	// before answering 503 checkout_not_ready.
	CreateTimeout time.Duration
	// RefundTimeout bounds how long a refund waits for Stripe before
	// answering 202 with the current status.
	RefundTimeout time.Duration
	// RecheckAfter is how old a Pending purchase must be before a client's
	// GET asks the controller to re-read its session from Stripe.
	RecheckAfter time.Duration
	// RecheckInterval is the least time between two such requests for one purchase.
	RecheckInterval time.Duration

	// CreateRate and CreateBurst limit how fast one user creates purchases
	// (a token bucket per user); beyond it the API answers 429 with
	// Retry-After. Use rate.Inf to disable.
	CreateRate  rate.Limit
	CreateBurst int
	// MaxPendingPerUser caps how many unpaid purchases one user may have open.
	MaxPendingPerUser int

	// ShutdownTimeout bounds how long Start waits for in-flight requests
	// after its context is cancelled.
	ShutdownTimeout time.Duration
	// HTTP server limits. WriteTimeout defaults to the longest wait of a
	// handler (CreateTimeout or RefundTimeout) plus 10 seconds.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int

	// Clock tells the time for access, reuse and recheck decisions; tests
	// inject a fake one. Waits use real time.
	Clock clock.PassiveClock
	// Logger is the base logger; each request logs with its request id.
	Logger logr.Logger
	// Recorder records Kubernetes Events on Purchases when a webhook changes
	// their phase. Optional.
	Recorder events.EventRecorder
}

// The API reads Products and Purchases through the cache, creates
// Purchases, patches them (refund request, recheck annotation) and their
// status (webhooks), reads the client secret Secrets directly, and records
// Events.
// +kubebuilder:rbac:groups=paytoview.md-platform.io,resources=purchases,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=paytoview.md-platform.io,resources=purchases/status,verbs=get;patch
// +kubebuilder:rbac:groups=paytoview.md-platform.io,resources=products,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Server is the HTTP API. Create it with New, run it with Start (or mount
// Handler in tests).
type Server struct {
	opts    Options
	log     logr.Logger
	handler http.Handler
	mux     *http.ServeMux

	returnOrigins map[string]bool
	corsOrigins   map[string]bool

	waiter     *waiter
	informers  []cache.Informer
	creates    singleflight.Group
	createRate *keyedLimiter
	rechecks   *recentKeys

	shuttingDown atomic.Bool
	addrMu       sync.Mutex
	addr         net.Addr
}

var (
	_ manager.Runnable               = (*Server)(nil)
	_ manager.LeaderElectionRunnable = (*Server)(nil)
)

// New validates opts, fills in defaults and builds the Server. It registers
// the server's informers (Products, Purchases) on the cache, so call it
// before the manager starts or the informers start on first use.
func New(opts Options) (*Server, error) {
	if err := opts.defaultAndValidate(); err != nil {
		return nil, fmt.Errorf("invalid webhookserver options: %w", err)
	}
	s := &Server{
		opts:       opts,
		log:        opts.Logger.WithName("webhookserver"),
		createRate: newKeyedLimiter(opts.CreateRate, opts.CreateBurst, 10*time.Minute),
		rechecks:   newRecentKeys(opts.RecheckInterval),
	}
	var err error
	if s.returnOrigins, err = parseOrigins(opts.AllowedReturnOrigins, true); err != nil {
		return nil, fmt.Errorf("invalid webhookserver options: AllowedReturnOrigins: %w", err)
	}
	if s.corsOrigins, err = parseOrigins(opts.CORSAllowedOrigins, false); err != nil {
		return nil, fmt.Errorf("invalid webhookserver options: CORSAllowedOrigins: %w", err)
	}

	ctx := context.Background()
	for _, obj := range []client.Object{&v1alpha1.Product{}, &v1alpha1.Purchase{}} {
		inf, err := opts.Cache.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
		if err != nil {
			return nil, fmt.Errorf("getting the %T informer: %w", obj, err)
		}
		s.informers = append(s.informers, inf)
	}
	s.waiter, err = newWaiter(opts.Namespace, opts.Client, s.informers[1])
	if err != nil {
		return nil, err
	}

	s.mux = http.NewServeMux()
	for _, rt := range s.routes() {
		s.mux.Handle(rt.method+" "+rt.path, rt.handler)
	}
	s.handler = s.withMiddleware(s.mux)
	return s, nil
}

func (o *Options) defaultAndValidate() error {
	var errs []error
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	if o.Namespace == "" {
		errs = append(errs, errors.New("option Namespace is required (where Products and Purchases live)"))
	}
	if o.Client == nil {
		errs = append(errs, errors.New("option Client is required (the manager's client)"))
	}
	if o.APIReader == nil {
		errs = append(errs, errors.New("option APIReader is required (the manager's uncached reader)"))
	}
	if o.Cache == nil {
		errs = append(errs, errors.New("option Cache is required (the manager's cache)"))
	}
	if o.Auth == nil {
		errs = append(errs, errors.New("option Auth is required (a bearer token authenticator)"))
	}
	if o.Verifier == nil {
		errs = append(errs, errors.New("option Verifier is required (the Stripe webhook signature verifier)"))
	}
	if len(o.AllowedReturnOrigins) == 0 {
		errs = append(errs, errors.New("option AllowedReturnOrigins must list at least one origin, or every returnUrl would be refused"))
	}
	if o.EntityIDHeader == "" {
		o.EntityIDHeader = DefaultEntityIDHeader
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"PendingReuseWindow", &o.PendingReuseWindow, DefaultPendingReuseWindow},
		{"CreateTimeout", &o.CreateTimeout, DefaultCreateTimeout},
		{"RefundTimeout", &o.RefundTimeout, DefaultRefundTimeout},
		{"RecheckAfter", &o.RecheckAfter, DefaultRecheckAfter},
		{"RecheckInterval", &o.RecheckInterval, DefaultRecheckInterval},
		{"ShutdownTimeout", &o.ShutdownTimeout, DefaultShutdownTimeout},
		{"ReadHeaderTimeout", &o.ReadHeaderTimeout, DefaultReadHeaderTimeout},
		{"ReadTimeout", &o.ReadTimeout, DefaultReadTimeout},
		{"WriteTimeout", &o.WriteTimeout, 0},
		{"IdleTimeout", &o.IdleTimeout, DefaultIdleTimeout},
	}
	for _, d := range durations {
		if *d.v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative, got %s", d.name, *d.v))
		} else if *d.v == 0 {
			*d.v = d.def
		}
	}
	longestWait := max(o.CreateTimeout, o.RefundTimeout)
	if o.WriteTimeout == 0 {
		o.WriteTimeout = longestWait + 10*time.Second
	} else if o.WriteTimeout <= longestWait {
		errs = append(errs, fmt.Errorf("WriteTimeout (%s) must exceed CreateTimeout and RefundTimeout (%s), or waiting requests lose their answer", o.WriteTimeout, longestWait))
	}
	if o.CreateRate < 0 {
		errs = append(errs, fmt.Errorf("CreateRate must not be negative, got %v", o.CreateRate))
	} else if o.CreateRate == 0 {
		o.CreateRate = DefaultCreateRate
	}
	if o.CreateBurst < 0 {
		errs = append(errs, fmt.Errorf("CreateBurst must not be negative, got %d", o.CreateBurst))
	} else if o.CreateBurst == 0 {
		o.CreateBurst = DefaultCreateBurst
	}
	if o.MaxPendingPerUser < 0 {
		errs = append(errs, fmt.Errorf("MaxPendingPerUser must not be negative, got %d", o.MaxPendingPerUser))
	} else if o.MaxPendingPerUser == 0 {
		o.MaxPendingPerUser = DefaultMaxPendingPerUser
	}
	if o.MaxHeaderBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxHeaderBytes must not be negative, got %d", o.MaxHeaderBytes))
	} else if o.MaxHeaderBytes == 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Logger.GetSink() == nil {
		o.Logger = logr.Discard()
	}
	return errors.Join(errs...)
}

// parseOrigins normalises a list of origins (scheme://host[:port], no path)
// to lower case without default ports. For return URLs the scheme must be
// https, or http with a loopback host (local development).
func parseOrigins(list []string, returnURL bool) (map[string]bool, error) {
	out := make(map[string]bool, len(list))
	for _, raw := range list {
		u, err := url.Parse(strings.TrimSuffix(raw, "/"))
		if err != nil || u.Host == "" || u.Opaque != "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("%q is not an origin of the form scheme://host[:port]", raw)
		}
		switch {
		case u.Scheme == "https":
		case u.Scheme == "http" && (!returnURL || isLoopback(u.Hostname())):
		default:
			if returnURL {
				return nil, fmt.Errorf("%q must be https (http only for localhost)", raw)
			}
			return nil, fmt.Errorf("%q must be http or https", raw)
		}
		out[originOf(u)] = true
	}
	return out, nil
}

// originOf is the normalised origin of u: lower-case scheme and host, no
// default port.
func originOf(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		return scheme + "://" + host + ":" + port
	}
	return scheme + "://" + host
}

func isLoopback(host string) bool {
	switch strings.ToLower(host) {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	return false
}

// Handler is the server's full HTTP handler, middleware included. Tests
// mount it in an httptest.Server.
func (s *Server) Handler() http.Handler { return s.handler }

// NeedLeaderElection is false: every replica serves the API.
func (s *Server) NeedLeaderElection() bool { return false }

// Addr is the address Start listens on, once it does (nil before).
func (s *Server) Addr() net.Addr {
	s.addrMu.Lock()
	defer s.addrMu.Unlock()
	return s.addr
}

// Start serves until ctx is cancelled, then stops accepting connections,
// reports not ready, and lets in-flight requests finish (up to
// ShutdownTimeout). It implements manager.Runnable.
func (s *Server) Start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.opts.Addr, err)
	}
	s.addrMu.Lock()
	s.addr = ln.Addr()
	s.addrMu.Unlock()

	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		ReadTimeout:       s.opts.ReadTimeout,
		WriteTimeout:      s.opts.WriteTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		MaxHeaderBytes:    s.opts.MaxHeaderBytes,
		ErrorLog:          newServerErrorLog(s.log),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	s.log.Info("serving the pay-to-view API", "addr", ln.Addr().String())

	select {
	case err := <-serveErr:
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	s.shuttingDown.Store(true)
	s.log.Info("shutting down the pay-to-view API, letting in-flight requests finish", "timeout", s.opts.ShutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("shutting down the API server: %w", err)
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	}
	return nil
}

// webhookPath is where Stripe delivers webhooks (paytoviewweb.md).
const webhookPath = "/client/v1/webhooks/stripe"

// route is one endpoint. The OpenAPI test checks docs/openapi.yaml against
// this table.
type route struct {
	method  string
	path    string
	handler http.Handler
}

func (s *Server) routes() []route {
	return []route{
		{http.MethodGet, "/healthz", http.HandlerFunc(s.healthz)},
		{http.MethodGet, "/readyz", http.HandlerFunc(s.readyz)},
		{http.MethodPost, "/client/v1/pay-to-view/purchases", http.HandlerFunc(s.createPurchase)},
		{http.MethodGet, "/client/v1/pay-to-view/purchases", http.HandlerFunc(s.listPurchases)},
		{http.MethodGet, "/client/v1/pay-to-view/purchases/{id}", http.HandlerFunc(s.getPurchase)},
		{http.MethodGet, "/client/v1/pay-to-view/access", http.HandlerFunc(s.getAccess)},
		{http.MethodGet, "/client/v1/pay-to-view/access/check", http.HandlerFunc(s.checkAccess)},
		{http.MethodPost, webhookPath, http.HandlerFunc(s.stripeWebhook)},
		{http.MethodPost, "/admin/v1/pay-to-view/purchases/{id}/refund", http.HandlerFunc(s.adminRefund)},
		{http.MethodGet, "/admin/v1/pay-to-view/purchases", http.HandlerFunc(s.adminListPurchases)},
	}
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz is ready when the informers the API reads have synced, and not
// while shutting down, so load balancers drain the replica first.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if s.shuttingDown.Load() {
		writeError(w, newError(http.StatusServiceUnavailable, CodeUnavailable, "shutting down"))
		return
	}
	for _, inf := range s.informers {
		if !inf.HasSynced() {
			writeError(w, newError(http.StatusServiceUnavailable, CodeUnavailable, "caches have not synced yet"))
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

package webhookserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/auth"
	"github.com/md-platform/paytoview-operator/internal/index"
	"github.com/md-platform/paytoview-operator/internal/naming"
	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
	"github.com/md-platform/paytoview-operator/internal/testenv"
)

// env is the package's control plane, started on first use by
// requireEnv, so that tests and fuzz workers that need none (the decoder's
// fuzz target, the pure unit tests) start none.
var (
	env      *testenv.Env
	envOnce  sync.Once
	envError error
)

// requireEnv starts the control plane if it is not running yet.
func requireEnv(t testing.TB) {
	t.Helper()
	envOnce.Do(func() { env, envError = testenv.Start() })
	if envError != nil {
		t.Fatalf("starting envtest: %v", envError)
	}
}

func TestMain(m *testing.M) {
	// Managers get their own logger; this silences controller-runtime's
	// warning about the global one, which nothing here uses.
	ctrllog.SetLogger(logr.Discard())
	code := m.Run()
	if env != nil {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}
	os.Exit(code)
}

// waitTimeout bounds every wait of the tests on the apiserver, the
// controllers or the emulator.
const waitTimeout = 30 * time.Second

// testSecret signs the HS256 test tokens.
var testSecret = []byte("webhookserver-tests-hs256-secret-0123456789")

// offsetClock is the real clock moved by an offset, so tests can jump past
// the reuse window or an access expiry while the apiserver and the
// controllers keep real time.
type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) Now() time.Time                  { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *offsetClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c *offsetClock) Advance(d time.Duration)         { c.offset.Add(int64(d)) }

// harness is one test's world: a namespace, the Stripe emulator, a manager
// running the real controllers against envtest, and the API served on a
// real socket, with the emulator's webhooks pointed at it.
type harness struct {
	t        testing.TB
	ctx      context.Context
	ns       string
	em       *emulator.Emulator
	stripe   *stripe.Client
	mgr      ctrl.Manager
	srv      *Server
	api      *httptest.Server
	clock    *offsetClock
	recorder *events.FakeRecorder
}

type harnessConfig struct {
	// noPurchaseController leaves Purchases to the test alone (nobody
	// creates sessions), for tests of the wait and of shutdown.
	noPurchaseController bool
	// options adjusts the server's options before New.
	options func(*Options)
	// client wraps the manager's client the server writes with.
	client func(client.Client) client.Client
	// quiet discards logs: a fuzz target may not log through testing.F.
	quiet bool
}

func newHarness(t testing.TB, cfg harnessConfig) *harness {
	t.Helper()
	requireEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	logger := testenv.Logger(t)
	if cfg.quiet {
		logger = logr.Discard()
	}

	h := &harness{t: t, ctx: ctx, ns: env.Namespace(t), clock: &offsetClock{}, recorder: events.NewFakeRecorder(1000)}
	// The API, the Purchase controller and Stripe share the test's clock, so
	// a test can jump past a reuse window or an access expiry. Only the
	// apiserver's timestamps (and webhook signatures) keep real time.
	h.em = emulator.New(emulator.Options{Logger: logger.WithName("emulator"), WebhookConcurrency: 1, Now: h.clock.Now})
	emSrv := httptest.NewServer(h.em)
	t.Cleanup(func() { emSrv.Close(); h.em.Close() })
	var err error
	h.stripe, err = stripe.New(stripe.Config{SecretKey: "sk_test_webhookserver", APIBase: emSrv.URL})
	if err != nil {
		t.Fatalf("creating Stripe client: %v", err)
	}

	h.mgr, err = ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Logger:                 logger,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{h.ns: {}}},
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatalf("creating manager: %v", err)
	}
	if err := index.Setup(ctx, h.mgr.GetFieldIndexer()); err != nil {
		t.Fatalf("registering indexes: %v", err)
	}
	if err := setupControllers(h, !cfg.noPurchaseController); err != nil {
		t.Fatalf("setting up controllers: %v", err)
	}

	authn, err := auth.New(ctx, auth.Config{HS256Secret: testSecret})
	if err != nil {
		t.Fatalf("creating authenticator: %v", err)
	}
	verifier, err := stripe.NewVerifier([]string{h.em.WebhookSecret()}, stripe.VerifierOptions{})
	if err != nil {
		t.Fatalf("creating verifier: %v", err)
	}
	writer := h.mgr.GetClient()
	if cfg.client != nil {
		writer = cfg.client(writer)
	}
	opts := Options{
		Addr:                 "127.0.0.1:0",
		Namespace:            h.ns,
		Client:               writer,
		APIReader:            h.mgr.GetAPIReader(),
		Cache:                h.mgr.GetCache(),
		Auth:                 authn,
		Verifier:             verifier,
		AllowedReturnOrigins: []string{"https://shop.example.com", "http://localhost:3000"},
		CORSAllowedOrigins:   []string{"https://shop.example.com"},
		CreateRate:           50,
		CreateBurst:          50,
		Clock:                h.clock,
		Logger:               logger,
		Recorder:             h.recorder,
	}
	if cfg.options != nil {
		cfg.options(&opts)
	}
	h.srv, err = New(opts)
	if err != nil {
		t.Fatalf("creating server: %v", err)
	}
	h.api = httptest.NewServer(h.srv.Handler())
	t.Cleanup(h.api.Close)
	h.em.SetWebhookURL(h.api.URL + webhookPath)

	mgrCtx, stopMgr := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.mgr.Start(mgrCtx) }()
	t.Cleanup(func() {
		stopMgr()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("manager stopped with error: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("manager did not stop within %s", waitTimeout)
		}
	})
	syncCtx, cancelSync := context.WithTimeout(ctx, waitTimeout)
	defer cancelSync()
	if !h.mgr.GetCache().WaitForCacheSync(syncCtx) {
		t.Fatalf("cache did not sync")
	}
	return h
}

// eventually polls cond until true, failing with msg after waitTimeout. It
// is how tests wait: no sleeps.
func eventually(t testing.TB, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: "+msg, append([]any{waitTimeout}, args...)...)
		}
		<-tick.C
	}
}

// token mints a bearer token for user, with the admin role if admin.
func token(t testing.TB, user string, admin bool) string {
	t.Helper()
	var roles []string
	if admin {
		roles = []string{"admin"}
	}
	tok, err := auth.MintHS256(testSecret, user, roles, time.Hour)
	if err != nil {
		t.Fatalf("minting token: %v", err)
	}
	return tok
}

// response is an answer of the API.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("answer %d is not a JSON object: %v: %s", r.status, err, r.body)
	}
	return m
}

// errorCode asserts r is a JSON error with status and code.
func (r response) expectError(t testing.TB, status int, code string) map[string]any {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
	m := r.json(t)
	if m["success"] != false || m["code"] != code || m["message"] == "" || m["message"] == nil {
		t.Fatalf("error body = %s, want success=false code=%s and a message", r.body, code)
	}
	return m
}

// request sends a request to the API over its socket. body is sent as is
// when it is a string or []byte, as JSON otherwise.
func (h *harness) request(method, path, tok string, body any, headers ...string) response {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			h.t.Fatalf("encoding body: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(h.ctx, method, h.api.URL+path, rd)
	if err != nil {
		h.t.Fatalf("building request: %v", err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := h.api.Client().Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("reading answer of %s %s: %v", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// pending is an answer still to come, from requestAsync.
type pending struct {
	method, path string
	ch           chan asyncResult
}

type asyncResult struct {
	resp response
	err  error
}

// requestAsync sends a request like request, without waiting for the
// answer: for requests that block (a create waiting for its checkout, a
// refund waiting for Stripe) while the test changes the world.
func (h *harness) requestAsync(method, path, tok string, body any) pending {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			h.t.Fatalf("encoding body: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(h.ctx, method, h.api.URL+path, rd)
	if err != nil {
		h.t.Fatalf("building request: %v", err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	p := pending{method: method, path: path, ch: make(chan asyncResult, 1)}
	go func() {
		resp, err := h.api.Client().Do(req)
		if err != nil {
			p.ch <- asyncResult{err: err}
			return
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		p.ch <- asyncResult{resp: response{status: resp.StatusCode, header: resp.Header, body: b}, err: err}
	}()
	return p
}

// answer waits for the answer of an async request.
func (p pending) answer(t testing.TB) response {
	t.Helper()
	select {
	case res := <-p.ch:
		if res.err != nil {
			t.Fatalf("%s %s: %v", p.method, p.path, res.err)
		}
		return res.resp
	case <-time.After(waitTimeout):
		t.Fatalf("%s %s: no answer within %s", p.method, p.path, waitTimeout)
		return response{}
	}
}

// createReq is a create request body.
func createReq(product, entity string) map[string]string {
	return map[string]string{
		"payToViewProductId": product,
		"entityId":           entity,
		"returnUrl":          "https://shop.example.com/purchase/complete",
	}
}

const purchasesPath = "/client/v1/pay-to-view/purchases"

// create posts a create request as user.
func (h *harness) create(user, product, entity string) response {
	h.t.Helper()
	return h.request(http.MethodPost, purchasesPath, token(h.t, user, false), createReq(product, entity))
}

// createOK posts a create request and expects a checkout.
func (h *harness) createOK(user, product, entity string) (purchaseID, clientSecret string) {
	h.t.Helper()
	r := h.create(user, product, entity)
	if r.status != http.StatusOK {
		h.t.Fatalf("create: status %d, body %s", r.status, r.body)
	}
	m := r.json(h.t)
	if m["success"] != true || m["hasAccess"] != false {
		h.t.Fatalf("create: want success=true hasAccess=false, got %s", r.body)
	}
	id, _ := m["purchaseId"].(string)
	cs, _ := m["clientSecret"].(string)
	if id == "" || cs == "" || m["stripeCustomerId"] == "" || m["stripeCustomerId"] == nil {
		h.t.Fatalf("create: purchaseId, clientSecret and stripeCustomerId must be set: %s", r.body)
	}
	return id, cs
}

// product creates a Product selling access to any Video for amount cents
// and waits until the Product controller made it sellable.
func (h *harness) product(name string, mutate func(*v1alpha1.Product)) *v1alpha1.Product {
	h.t.Helper()
	p := &v1alpha1.Product{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: h.ns},
		Spec: v1alpha1.ProductSpec{
			DisplayName: "Access to " + name,
			EntityType:  v1alpha1.EntityTypeVideo,
			Price:       &v1alpha1.Price{Amount: 499, Currency: "usd"},
		},
	}
	if mutate != nil {
		mutate(p)
	}
	if err := env.Client.Create(h.ctx, p); err != nil {
		h.t.Fatalf("creating Product %s: %v", name, err)
	}
	eventually(h.t, func() bool {
		if err := env.Client.Get(h.ctx, client.ObjectKeyFromObject(p), p); err != nil {
			return false
		}
		return meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.ConditionReady) && p.Status.StripePriceID != ""
	}, "Product %s never became Ready", name)
	// The server reads Products from the cache.
	eventually(h.t, func() bool {
		var cached v1alpha1.Product
		err := h.mgr.GetClient().Get(h.ctx, client.ObjectKeyFromObject(p), &cached)
		return err == nil && meta.IsStatusConditionTrue(cached.Status.Conditions, v1alpha1.ConditionReady) && cached.Status.StripePriceID != ""
	}, "Product %s never became Ready in the cache", name)
	return p
}

// purchase reads a Purchase from the apiserver.
func (h *harness) purchase(name string) *v1alpha1.Purchase {
	h.t.Helper()
	var p v1alpha1.Purchase
	if err := env.Client.Get(h.ctx, client.ObjectKey{Namespace: h.ns, Name: name}, &p); err != nil {
		h.t.Fatalf("getting Purchase %s: %v", name, err)
	}
	return &p
}

// waitPhase waits until the Purchase has phase, in the apiserver and in the
// server's cache.
func (h *harness) waitPhase(name string, phase v1alpha1.PurchasePhase) *v1alpha1.Purchase {
	h.t.Helper()
	var p v1alpha1.Purchase
	eventually(h.t, func() bool {
		err := h.mgr.GetClient().Get(h.ctx, client.ObjectKey{Namespace: h.ns, Name: name}, &p)
		return err == nil && p.Status.Phase == phase
	}, "Purchase %s never reached phase %s (now %q)", name, phase, &p.Status.Phase)
	return &p
}

// purchases lists the namespace's Purchases from the apiserver.
func (h *harness) purchases() []v1alpha1.Purchase {
	h.t.Helper()
	var list v1alpha1.PurchaseList
	if err := env.Client.List(h.ctx, &list, client.InNamespace(h.ns)); err != nil {
		h.t.Fatalf("listing Purchases: %v", err)
	}
	return list.Items
}

// pay plays the user paying the purchase's checkout in the emulator and
// waits until the webhook made it Completed.
func (h *harness) pay(purchaseID, clientSecret string) *v1alpha1.Purchase {
	h.t.Helper()
	if _, err := h.em.Pay(clientSecret, emulator.PayOptions{}); err != nil {
		h.t.Fatalf("paying %s: %v", purchaseID, err)
	}
	return h.waitPhase(purchaseID, v1alpha1.PurchaseCompleted)
}

// sessions is how many checkout sessions the emulator holds.
func (h *harness) sessions() int {
	return len(h.em.State().Sessions)
}

// setStatus writes a Purchase's status directly, to put it in a state the
// test needs (e.g. to age it) without going through Stripe.
func (h *harness) setStatus(p *v1alpha1.Purchase) {
	h.t.Helper()
	if err := env.Client.Status().Update(h.ctx, p); err != nil {
		h.t.Fatalf("updating status of %s: %v", p.Name, err)
	}
}

// discard is a logger for code under test that should stay quiet.
var discard = logr.Discard()

// seed creates a Purchase of product for user and entity as the API would,
// then gives it status (when not nil), and waits until the server's cache
// holds that version. For tests without the Purchase controller.
func (h *harness) seed(user, entity, product string, status *v1alpha1.PurchaseStatus) *v1alpha1.Purchase {
	h.t.Helper()
	p := &v1alpha1.Purchase{
		ObjectMeta: metav1.ObjectMeta{Name: naming.NewPurchaseName(), Namespace: h.ns, Labels: naming.PurchaseLabels(user, entity, product)},
		Spec: v1alpha1.PurchaseSpec{
			ProductRef: product, UserID: user, EntityID: entity, EntityType: v1alpha1.EntityTypeVideo,
			ReturnURL: "https://shop.example.com/done", Price: v1alpha1.Price{Amount: 499, Currency: "usd"},
			StripePriceID: "price_seeded",
		},
	}
	if err := env.Client.Create(h.ctx, p); err != nil {
		h.t.Fatalf("creating Purchase: %v", err)
	}
	if status != nil {
		p.Status = *status
		h.setStatus(p)
	}
	h.waitCached(p)
	return p
}

// waitCached waits until the server's cache has p's resourceVersion.
func (h *harness) waitCached(p *v1alpha1.Purchase) {
	h.t.Helper()
	eventually(h.t, func() bool {
		var c v1alpha1.Purchase
		err := h.mgr.GetClient().Get(h.ctx, client.ObjectKeyFromObject(p), &c)
		return err == nil && c.ResourceVersion == p.ResourceVersion
	}, "Purchase %s version %s never reached the cache", p.Name, p.ResourceVersion)
}

// completedStatus is the status of a purchase paid at completedAt, with
// access for days (0: lifetime).
func completedStatus(completedAt time.Time, days int) *v1alpha1.PurchaseStatus {
	st := &v1alpha1.PurchaseStatus{
		Phase:                 v1alpha1.PurchaseCompleted,
		StripeCustomerID:      "cus_seeded",
		CheckoutSessionID:     "cs_test_seeded" + naming.Hash(completedAt.String())[:8],
		ExternalTransactionID: "pi_seeded" + naming.Hash(completedAt.String())[:8],
		CompletedAt:           &metav1.Time{Time: completedAt},
	}
	if days > 0 {
		st.ExpiresAt = &metav1.Time{Time: completedAt.Add(time.Duration(days) * 24 * time.Hour)}
	}
	return st
}

// pendingStatus is the status of a purchase with an open session.
func pendingStatus() *v1alpha1.PurchaseStatus {
	return &v1alpha1.PurchaseStatus{
		Phase:                    v1alpha1.PurchasePending,
		StripeCustomerID:         "cus_seeded",
		CheckoutSessionID:        "cs_test_" + naming.NewPurchaseName()[4:],
		CheckoutSessionExpiresAt: &metav1.Time{Time: time.Now().Add(time.Hour)},
		Conditions: []metav1.Condition{{
			Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "CheckoutSessionOpen",
			Message: "open", LastTransitionTime: metav1.Now(),
		}},
	}
}

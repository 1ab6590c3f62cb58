package webhookserver

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/md-platform/paytoview-operator/internal/auth"
	"github.com/md-platform/paytoview-operator/internal/index"
	"github.com/md-platform/paytoview-operator/internal/stripe"
)

// unstartedOptions are complete Options over a manager that never starts.
func unstartedOptions(t *testing.T) Options {
	t.Helper()
	requireEnv(t)
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{"default": {}}},
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := index.Setup(context.Background(), mgr.GetFieldIndexer()); err != nil {
		t.Fatal(err)
	}
	authn, err := auth.New(context.Background(), auth.Config{HS256Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := stripe.NewVerifier([]string{"whsec_test"}, stripe.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return Options{
		Namespace: "default", Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Cache: mgr.GetCache(),
		Auth: authn, Verifier: verifier, AllowedReturnOrigins: []string{"https://shop.example.com"},
	}
}

func TestNew_ValidatesOptions(t *testing.T) {
	base := unstartedOptions(t)
	if _, err := New(base); err != nil {
		t.Fatalf("complete options refused: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(*Options)
		want   string
	}{
		{"no namespace", func(o *Options) { o.Namespace = "" }, "Namespace"},
		{"no client", func(o *Options) { o.Client = nil }, "Client"},
		{"no API reader", func(o *Options) { o.APIReader = nil }, "APIReader"},
		{"no cache", func(o *Options) { o.Cache = nil }, "Cache"},
		{"no authenticator", func(o *Options) { o.Auth = nil }, "Auth"},
		{"no verifier", func(o *Options) { o.Verifier = nil }, "Verifier"},
		{"no return origins", func(o *Options) { o.AllowedReturnOrigins = nil }, "AllowedReturnOrigins"},
		{"http return origin", func(o *Options) { o.AllowedReturnOrigins = []string{"http://shop.example.com"} }, "https"},
		{"return origin with a path", func(o *Options) { o.AllowedReturnOrigins = []string{"https://shop.example.com/x"} }, "origin"},
		{"CORS origin that is no origin", func(o *Options) { o.CORSAllowedOrigins = []string{"*"} }, "CORSAllowedOrigins"},
		{"negative timeout", func(o *Options) { o.CreateTimeout = -time.Second }, "CreateTimeout"},
		{"write timeout shorter than the waits", func(o *Options) { o.WriteTimeout = 5 * time.Second }, "WriteTimeout"},
		{"negative rate", func(o *Options) { o.CreateRate = -1 }, "CreateRate"},
		{"negative pending cap", func(o *Options) { o.MaxPendingPerUser = -1 }, "MaxPendingPerUser"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base
			tt.mutate(&o)
			_, err := New(o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one naming %s", err, tt.want)
			}
		})
	}
	// Several problems are reported together.
	o := base
	o.Namespace, o.Auth = "", nil
	if _, err := New(o); err == nil || !strings.Contains(err.Error(), "Namespace") || !strings.Contains(err.Error(), "Auth") {
		t.Fatalf("error %v, want both problems", err)
	}
}

func TestReadyz_NotReadyUntilTheCacheHasSynced(t *testing.T) {
	s, err := New(unstartedOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("readyz before sync: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("healthz: %d", rec.Code)
	}

	h := newHarness(t, harnessConfig{noPurchaseController: true})
	if r := h.request(http.MethodGet, "/readyz", "", nil); r.status != http.StatusOK {
		t.Fatalf("readyz after sync: %d %s", r.status, r.body)
	}
}

func TestStart_ShutdownLetsInFlightRequestsFinish(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true, options: func(o *Options) { o.CreateTimeout = 2 * time.Second }})
	h.product("movie", nil)
	if h.srv.NeedLeaderElection() {
		t.Fatal("the API must run on every replica, not only the leader")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.srv.Start(ctx) }()
	t.Cleanup(cancel)
	eventually(t, func() bool { return h.srv.Addr() != nil }, "server never listened")
	base := "http://" + h.srv.Addr().String()

	resp, err := http.Get(base + "/readyz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz on the socket: %v %v", resp, err)
	}
	_ = resp.Body.Close()

	// A create waits for a checkout nobody prepares: in flight at shutdown.
	type result struct {
		status int
		body   string
		err    error
	}
	inFlight := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, base+purchasesPath, strings.NewReader(
			`{"payToViewProductId":"movie","entityId":"vid-1","returnUrl":"https://shop.example.com/x"}`))
		req.Header.Set("Authorization", "Bearer "+token(t, "alice", false))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			inFlight <- result{err: err}
			return
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		inFlight <- result{status: resp.StatusCode, body: string(b), err: err}
	}()
	eventually(t, func() bool { return h.srv.waiter.waiting() == 1 }, "create never started waiting")

	cancel()
	eventually(t, func() bool {
		rec := httptest.NewRecorder()
		h.srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code == http.StatusServiceUnavailable
	}, "readyz still ready while shutting down")

	res := <-inFlight
	if res.err != nil || res.status != http.StatusServiceUnavailable || !strings.Contains(res.body, CodeCheckoutNotReady) {
		t.Fatalf("in-flight request: %d %q %v; want its own answer, not a cut connection", res.status, res.body, res.err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Start returned %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("still accepting connections after shutdown")
	}
}

func TestStart_FailsWhenTheAddressIsTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	o := unstartedOptions(t)
	o.Addr = ln.Addr().String()
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err == nil || !strings.Contains(err.Error(), o.Addr) {
		t.Fatalf("Start on a taken address: %v", err)
	}
}

// TestStart_SlowHeadersAreCutOff is the slowloris case: a client that sends
// its headers byte by byte forever is disconnected once ReadHeaderTimeout
// has passed, and the server keeps serving others.
func TestStart_SlowHeadersAreCutOff(t *testing.T) {
	o := unstartedOptions(t)
	o.Addr = "127.0.0.1:0"
	o.ReadHeaderTimeout = 300 * time.Millisecond
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	}()
	eventually(t, func() bool { return s.Addr() != nil }, "server never listened")

	conn, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if _, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")); err != nil {
		t.Fatal(err)
	}
	// Keep dripping; the server must close the connection by itself.
	closed := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(conn)
		closed <- err
	}()
	drip := time.NewTicker(50 * time.Millisecond)
	defer drip.Stop()
	deadline := time.After(waitTimeout)
	for {
		select {
		case err := <-closed:
			// A reset or EOF both mean the server hung up; either is fine.
			t.Logf("server closed the slow connection (%v)", err)
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
			if rec.Code != http.StatusOK {
				t.Fatalf("healthz after the slow client: %d", rec.Code)
			}
			return
		case <-drip.C:
			if _, err := conn.Write([]byte("a")); err != nil && !errors.Is(err, net.ErrClosed) {
				// The server hung up: the reader sees it next.
				continue
			}
		case <-deadline:
			t.Fatal("the server never cut off a client dripping its headers")
		}
	}
}

// TestStart_SlowBodiesAreCutOff: a client that sends its headers and then
// drips the body is cut off by ReadTimeout instead of holding a handler.
func TestStart_SlowBodiesAreCutOff(t *testing.T) {
	o := unstartedOptions(t)
	o.Addr = "127.0.0.1:0"
	o.ReadTimeout = 300 * time.Millisecond
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	}()
	eventually(t, func() bool { return s.Addr() != nil }, "server never listened")

	conn, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if _, err := conn.Write([]byte("POST " + webhookPath + " HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nStripe-Signature: t=1,v1=00\r\n\r\n{")); err != nil {
		t.Fatal(err)
	}
	answered := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(conn)
		answered <- string(b)
	}()
	drip := time.NewTicker(50 * time.Millisecond)
	defer drip.Stop()
	deadline := time.After(waitTimeout)
	for {
		select {
		case got := <-answered:
			// Either an error answer and a close, or a bare close: never a
			// handler held open by the drip.
			if got != "" && !strings.HasPrefix(got, "HTTP/1.1 4") {
				t.Fatalf("slow body answered %q", got)
			}
			return
		case <-drip.C:
			_, _ = conn.Write([]byte(" "))
		case <-deadline:
			t.Fatal("the server never cut off a client dripping its body")
		}
	}
}

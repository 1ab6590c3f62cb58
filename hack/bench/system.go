package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/auth"
	"github.com/md-platform/paytoview-operator/internal/operator"
	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
	"github.com/md-platform/paytoview-operator/internal/testenv"
)

const (
	// benchNamespace holds the in-process operator's Products and Purchases.
	benchNamespace = "paytoview-bench"
	// productName is the Product every benchmark purchase buys.
	productName = "bench-video"
	// returnOrigin is the frontend the operator accepts return URLs of.
	returnOrigin = "https://shop.bench.example"
	webhookPath  = "/client/v1/webhooks/stripe"
	stripeKey    = "sk_test_paytoview_bench"
)

// system is the control plane, the Stripe emulator and one operator running
// in this process, as `make run` has them.
type system struct {
	dir     string
	env     *testenv.Env
	em      *emulator.Emulator
	emURL   string
	stopEm  func()
	hs256   []byte
	apiURL  string
	writes  *writeCounter
	stripe  *stripe.Client
	http    *http.Client
	opStop  context.CancelFunc
	opDone  chan error
	logFile *os.File
}

func startSystem(ctx context.Context, dir string) (*system, error) {
	s := &system{dir: dir, http: &http.Client{
		Timeout:   60 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 0},
	}}
	env, err := testenv.Start()
	if err != nil {
		return nil, err
	}
	s.env = env
	if err := s.createNamespace(ctx, benchNamespace); err != nil {
		return s, err
	}

	apiAddr, err := freeAddr()
	if err != nil {
		return s, err
	}
	healthAddr, err := freeAddr()
	if err != nil {
		return s, err
	}
	s.apiURL = "http://" + apiAddr

	s.em = emulator.New(emulator.Options{WebhookURL: s.apiURL + webhookPath, WebhookSecret: "whsec_" + randomHex(24), Logger: logr.Discard()})
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return s, fmt.Errorf("listening for the Stripe emulator: %w", err)
	}
	srv := &http.Server{Handler: s.em, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	s.emURL = "http://" + l.Addr().String()
	s.stopEm = func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		s.em.Close()
	}
	if s.stripe, err = stripe.New(stripe.Config{SecretKey: stripeKey, APIBase: s.emURL}); err != nil {
		return s, err
	}

	s.hs256 = []byte(randomHex(32))
	secretFile := filepath.Join(dir, "auth-hs256-secret")
	if err := os.WriteFile(secretFile, s.hs256, 0o600); err != nil {
		return s, err
	}

	cfg := operator.DefaultConfig()
	cfg.PurchaseNamespace = benchNamespace
	cfg.APIBindAddress = apiAddr
	cfg.MetricsBindAddress = "0"
	cfg.HealthProbeBindAddress = healthAddr
	cfg.AuthHS256SecretFile = secretFile
	cfg.AllowedReturnOrigins = []string{returnOrigin}
	cfg.StripeSecretKey = stripeKey
	cfg.StripeAPIBase = s.emURL
	cfg.StripeWebhookSecrets = []string{s.em.WebhookSecret()}

	if s.logFile, err = os.Create(filepath.Join(dir, "operator.log")); err != nil {
		return s, err
	}
	log := zap.New(zap.WriteTo(s.logFile), zap.Level(zapcore.InfoLevel))
	ctrl.SetLogger(log)
	klog.SetLogger(log)

	// The operator's client counts every request it sends and, as main.go
	// gets it from controller-runtime, has no client-side rate limit.
	restCfg := rest.CopyConfig(env.Config)
	restCfg.QPS, restCfg.Burst = -1, 0
	s.writes = &writeCounter{counts: map[string]int{}}
	restCfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { s.writes.next = rt; return s.writes })

	opCtx, stop := context.WithCancel(ctx)
	s.opStop, s.opDone = stop, make(chan error, 1)
	go func() { s.opDone <- operator.Run(opCtx, cfg, restCfg, log) }()
	if err := s.waitHTTP(ctx, "http://"+healthAddr+"/readyz", 2*time.Minute); err != nil {
		return s, err
	}
	if err := s.applyProduct(ctx, benchNamespace); err != nil {
		return s, err
	}
	return s, s.waitProductReady(ctx, benchNamespace)
}

// stopOperator stops the in-process operator and waits for it.
func (s *system) stopOperator() error {
	if s.opStop == nil {
		return nil
	}
	s.opStop()
	s.opStop = nil
	return <-s.opDone
}

func (s *system) close() {
	if err := s.stopOperator(); err != nil {
		fmt.Fprintln(os.Stderr, "operator:", err)
	}
	if s.stopEm != nil {
		s.stopEm()
	}
	if s.env != nil {
		if err := s.env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
		}
	}
	if s.logFile != nil {
		_ = s.logFile.Close()
	}
}

func (s *system) createNamespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := s.env.Client.Create(ctx, ns); err != nil {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

// applyProduct creates the benchmark's Product: 4.99 USD for 7 days of a video.
func (s *system) applyProduct(ctx context.Context, ns string) error {
	days := int32(7)
	p := &v1alpha1.Product{
		ObjectMeta: metav1.ObjectMeta{Name: productName, Namespace: ns},
		Spec: v1alpha1.ProductSpec{
			DisplayName:        "Watch this video for 7 days",
			EntityType:         v1alpha1.EntityTypeVideo,
			Price:              &v1alpha1.Price{Amount: 499, Currency: "usd"},
			AccessDurationDays: &days,
		},
	}
	if err := s.env.Client.Create(ctx, p); err != nil {
		return fmt.Errorf("creating Product %s/%s: %w", ns, productName, err)
	}
	return nil
}

func (s *system) waitProductReady(ctx context.Context, ns string) error {
	return poll(ctx, time.Minute, "Product "+productName+" Ready", func() (bool, error) {
		var p v1alpha1.Product
		if err := s.env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: productName}, &p); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.ConditionReady), nil
	})
}

// token mints a user's bearer token.
func (s *system) token(user string) string {
	t, err := auth.MintHS256(s.hs256, user, nil, 24*time.Hour)
	if err != nil {
		panic(err) // a fixed, valid key: cannot fail
	}
	return t
}

// createResult is the API's answer to a create.
type createResult struct {
	Success          bool   `json:"success"`
	HasAccess        bool   `json:"hasAccess"`
	PurchaseID       string `json:"purchaseId"`
	ClientSecret     string `json:"clientSecret"`
	StripeCustomerID string `json:"stripeCustomerId"`
}

// create buys entity for the token's user through the client API.
func (s *system) create(ctx context.Context, apiURL, token, entity string) (createResult, error) {
	var out createResult
	body, _ := json.Marshal(map[string]string{
		"payToViewProductId": productName, "entityId": entity, "returnUrl": returnOrigin + "/return",
	})
	status, resp, err := s.do(ctx, http.MethodPost, apiURL+"/client/v1/pay-to-view/purchases", token, body, nil)
	if err != nil {
		return out, err
	}
	if status != http.StatusOK {
		return out, fmt.Errorf("create %s: %d %s", entity, status, resp)
	}
	if err := json.Unmarshal(resp, &out); err != nil {
		return out, fmt.Errorf("create %s: decoding %q: %w", entity, resp, err)
	}
	if !out.Success || out.ClientSecret == "" {
		return out, fmt.Errorf("create %s: no checkout in %s", entity, resp)
	}
	return out, nil
}

// do sends one request and reads the whole answer.
func (s *system) do(ctx context.Context, method, url, token string, body []byte, header http.Header) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (s *system) waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	return poll(ctx, timeout, url, func() (bool, error) {
		status, _, err := s.do(ctx, http.MethodGet, url, "", nil, nil)
		return err == nil && status == http.StatusOK, nil
	})
}

// poll calls cond every 50ms until it is true, fails, or timeout passes.
func poll(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// writeCounter counts the operator's requests to the apiserver (but
// watches) by method and resource.
type writeCounter struct {
	next   http.RoundTripper
	mu     sync.Mutex
	counts map[string]int
}

func (c *writeCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Query().Get("watch") == "" {
		key := r.Method + " " + resourceOf(r.URL.Path)
		c.mu.Lock()
		c.counts[key]++
		c.mu.Unlock()
	}
	return c.next.RoundTrip(r)
}

// snapshot returns the counts so far.
func (c *writeCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

// resourceOf names the resource of an apiserver path:
// /apis/g/v/namespaces/ns/purchases/name/status → purchases/status.
func resourceOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i, p := range parts {
		if p == "namespaces" && i+2 < len(parts) {
			rest := parts[i+2:]
			if len(rest) == 3 {
				return rest[0] + "/" + rest[2]
			}
			return rest[0]
		}
	}
	if len(parts) > 0 {
		return parts[len(parts)-1]
	}
	return path
}

func freeAddr() (string, error) {
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/testenv"
)

const (
	// replicaCount is how many operator processes run, as the Deployment's
	// replicas: one leads the controllers, every one serves the API.
	replicaCount = 2
	// returnOrigin is the frontend the operators accept return URLs of.
	returnOrigin = "https://shop.e2e.example"
	// webhookPath is where Stripe delivers events.
	webhookPath = "/client/v1/webhooks/stripe"
	// leaseName is the operator's leader-election Lease (its default
	// --leader-election-id).
	leaseName = "paytoview-operator.md-platform.io"
	// leaseAcquiredLog is what client-go's leader elector logs when this
	// process becomes the leader.
	leaseAcquiredLog = "Successfully acquired lease"
	// readyTimeout bounds how long a process may take to start.
	readyTimeout = 2 * time.Minute
	// stopGrace is how long a process has to stop after SIGTERM: the
	// manager's graceful shutdown timeout plus a margin.
	stopGrace = 40 * time.Second
)

// system is everything under test: the control plane, the operator
// replicas behind a Service-like proxy, and the Stripe emulator.
type system struct {
	cluster *cluster
	ns      string
	dir     string

	hs256      []byte
	secretFile string
	// webhookSecret signs the emulator's deliveries (whsec_).
	webhookSecret string
	// apiURL is the Service in front of the replicas: the frontend and
	// Stripe reach the API through it.
	apiURL string
	// emulatorURL is the Stripe emulator (its API and /_emulator/v1/).
	emulatorURL string

	managerBin  string
	operatorEnv []string
	replicas    []*replica

	// metricsToken is the bearer token of a ServiceAccount allowed to
	// scrape /metrics; empty unless systemOptions.metrics.
	metricsToken string

	http *http.Client
}

// systemOptions are what runs may set up differently.
type systemOptions struct {
	// metrics serves each replica's secure /metrics on a port of its own,
	// as the Deployment does, and lets a scraper ServiceAccount read it.
	metrics bool
}

// replica is one operator process slot, like a pod of the Deployment: a
// process, restarted in the same slot (same ports) when it ends.
type replica struct {
	name       string
	apiAddr    string
	healthAddr string
	// metricsAddr serves /metrics (HTTPS); empty when metrics are off.
	metricsAddr string
	logPath     string

	mu    sync.Mutex
	proc  *process
	ready bool
}

func (r *replica) current() (*process, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc, r.ready
}

// serving reports whether the Service would route to this replica: its
// process runs and passed its readiness probe.
func (r *replica) serving() bool {
	p, ready := r.current()
	return p != nil && ready && !p.exited()
}

// startSystem builds the binaries and starts the whole system in a fresh
// namespace; t.Cleanup stops every process it started and, when the test
// failed, prints their output.
func startSystem(t *testing.T) *system {
	t.Helper()
	return startSystemWith(t, systemOptions{})
}

// startSystemWith is startSystem with options.
func startSystemWith(t *testing.T, opts systemOptions) *system {
	t.Helper()
	s := &system{dir: t.TempDir(), http: &http.Client{Timeout: 30 * time.Second}}
	// Registered first so that it runs last: the output includes how each
	// process shut down.
	t.Cleanup(func() {
		if t.Failed() {
			s.dumpLogs(t)
		}
	})

	managerBin, emulatorBin := buildBinaries(t, s.dir)
	s.managerBin = managerBin
	s.cluster = startCluster(t, s.dir)
	s.ns = s.cluster.createNamespace(t)
	t.Logf("namespace %s, work directory %s", s.ns, s.dir)
	kubeconfig := s.cluster.operatorKubeconfig(t, s.ns, s.dir)
	if opts.metrics {
		s.metricsToken = s.cluster.grantMetricsAccess(t, s.ns)
	}

	s.hs256 = []byte(randomHex(t, 32))
	s.secretFile = filepath.Join(s.dir, "auth-hs256-secret")
	if err := os.WriteFile(s.secretFile, s.hs256, 0o600); err != nil {
		t.Fatal(err)
	}

	svc := httptest.NewServer(&service{s: s})
	t.Cleanup(svc.Close)
	s.apiURL = svc.URL

	stripeKey := "sk_test_e2e_" + randomHex(t, 12)
	s.webhookSecret = "whsec_" + randomHex(t, 24)
	s.startEmulator(t, emulatorBin, stripeKey, s.webhookSecret)

	s.operatorEnv = childEnv(
		"KUBECONFIG="+kubeconfig,
		"STRIPE_SECRET_KEY="+stripeKey,
		"STRIPE_WEBHOOK_SECRETS="+s.webhookSecret,
		"STRIPE_API_BASE="+s.emulatorURL,
	)
	for i := range replicaCount {
		r := &replica{
			name:       fmt.Sprintf("manager-%d", i),
			apiAddr:    freeAddr(t),
			healthAddr: freeAddr(t),
		}
		if opts.metrics {
			r.metricsAddr = freeAddr(t)
		}
		r.logPath = filepath.Join(s.dir, r.name+".log")
		s.replicas = append(s.replicas, r)
		s.startReplica(t, r)
	}
	t.Cleanup(func() { s.stopReplicas(t) })
	for _, r := range s.replicas {
		s.waitReplicaReady(t, r)
	}

	s.applySamples(t)
	return s
}

// startEmulator runs the Stripe emulator process on a free port, delivering
// webhooks through the Service as Stripe would to the Ingress.
func (s *system) startEmulator(t *testing.T, bin, apiKey, webhookSecret string) {
	t.Helper()
	p, err := startProcess("stripe-emulator", filepath.Join(s.dir, "stripe-emulator.log"), bin, []string{
		"-listen", "127.0.0.1:0",
		"-api-key", apiKey,
		"-webhook-url", s.apiURL + webhookPath,
		"-webhook-secret", webhookSecret,
	}, childEnv())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.stop(stopGrace); err != nil {
			t.Error(err)
		}
	})
	base, err := p.waitForLine("STRIPE_API_BASE=", readyTimeout)
	if err != nil {
		t.Fatal(err)
	}
	s.emulatorURL = strings.TrimSpace(base)
}

// startReplica starts the operator process of a replica slot.
func (s *system) startReplica(t *testing.T, r *replica) {
	t.Helper()
	metricsAddr := "0"
	if r.metricsAddr != "" {
		metricsAddr = r.metricsAddr
	}
	p, err := startProcess(r.name, r.logPath, s.managerBin, []string{
		"--leader-elect",
		"--api-bind-address=" + r.apiAddr,
		"--health-probe-bind-address=" + r.healthAddr,
		"--metrics-bind-address=" + metricsAddr,
		"--purchase-namespace=" + s.ns,
		"--auth-hs256-secret-file=" + s.secretFile,
		"--allowed-return-origins=" + returnOrigin,
		"--zap-encoder=console",
	}, s.operatorEnv)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.proc, r.ready = p, false
	r.mu.Unlock()
}

// waitReplicaReady polls a replica's readiness probe, as the kubelet does,
// and lets the Service route to it once it answers 200.
func (s *system) waitReplicaReady(t *testing.T, r *replica) {
	t.Helper()
	p, _ := r.current()
	probe := &http.Client{Timeout: 2 * time.Second}
	eventually(t, readyTimeout, r.name+" ready", func() (bool, string) {
		if p.exited() {
			t.Fatalf("%s exited while starting: %v", r.name, p.err)
		}
		resp, err := probe.Get("http://" + r.healthAddr + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	r.mu.Lock()
	r.ready = r.proc == p
	r.mu.Unlock()
}

// restartExitedReplicas does what the kubelet does for a Deployment: it
// starts again every replica whose process ended, and waits until it is
// ready. It returns the names of the replicas it restarted.
func (s *system) restartExitedReplicas(t *testing.T) []string {
	t.Helper()
	var restarted []*replica
	for _, r := range s.replicas {
		if p, _ := r.current(); p.exited() {
			t.Logf("%s had exited (%v); restarting it", r.name, p.err)
			s.startReplica(t, r)
			restarted = append(restarted, r)
		}
	}
	var names []string
	for _, r := range restarted {
		s.waitReplicaReady(t, r)
		names = append(names, r.name)
	}
	return names
}

// kill ends a replica's process with SIGKILL: no graceful shutdown, no
// release of the Lease, as when a node dies.
func (r *replica) kill() {
	r.mu.Lock()
	p := r.proc
	r.ready = false
	r.mu.Unlock()
	p.kill()
}

func (s *system) stopReplicas(t *testing.T) {
	var wg sync.WaitGroup
	for _, r := range s.replicas {
		p, _ := r.current()
		if p == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.stop(stopGrace); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

func (s *system) dumpLogs(t *testing.T) {
	logs, _ := filepath.Glob(filepath.Join(s.dir, "*.log"))
	sort.Strings(logs)
	for _, l := range logs {
		dumpLog(t, l)
	}
}

// leader returns the replica that holds the leader-election Lease, and the
// Lease's holder identity. The identity (hostname_uuid) does not name the
// process, so the leader is the only serving replica whose log says it
// acquired the Lease; a replica that loses the Lease exits, so no live
// process has acquired it but the holder.
func (s *system) leader(t *testing.T) (*replica, string) {
	t.Helper()
	var (
		leader *replica
		holder string
	)
	eventually(t, time.Minute, "a leader", func() (bool, string) {
		lease, err := s.cluster.lease(s.ns)
		if err != nil {
			return false, err.Error()
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return false, "the Lease has no holder"
		}
		holder = *lease.Spec.HolderIdentity
		var leaders []*replica
		for _, r := range s.replicas {
			p, _ := r.current()
			if !p.exited() && logContains(p.logPath, leaseAcquiredLog) && acquiredInCurrentRun(p) {
				leaders = append(leaders, r)
			}
		}
		if len(leaders) != 1 {
			return false, fmt.Sprintf("%d live replicas say they acquired the Lease held by %s", len(leaders), holder)
		}
		leader = leaders[0]
		return true, ""
	})
	return leader, holder
}

// acquiredInCurrentRun reports whether the process's own run (its part of
// a log that restarts append to) logged acquiring the Lease.
func acquiredInCurrentRun(p *process) bool {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return false
	}
	log := string(data)
	if i := strings.LastIndex(log, "\n=== "); i >= 0 {
		log = log[i:]
	}
	return strings.Contains(log, leaseAcquiredLog)
}

// applySamples creates the sample Products of config/samples in the test
// namespace, as `kubectl apply -k config/samples` would, and waits until
// they are Ready (synced to Stripe).
func (s *system) applySamples(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	dir := filepath.Join(testenv.RepoRoot(), "config", "samples")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(data), "\n---") {
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
				t.Fatalf("parsing %s: %v", f, err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			obj.SetNamespace(s.ns)
			if err := s.cluster.client.Create(ctx, obj); err != nil {
				t.Fatalf("applying %s %s from %s: %v", obj.GetKind(), obj.GetName(), f, err)
			}
			names = append(names, obj.GetName())
		}
	}
	for _, name := range names {
		s.waitProductReady(t, name, nil)
	}
}

// waitProductReady waits until a Product is Ready for its current
// generation and cond (if any) holds, and returns it.
func (s *system) waitProductReady(t *testing.T, name string, cond func(*v1alpha1.Product) bool) *v1alpha1.Product {
	t.Helper()
	var p v1alpha1.Product
	eventually(t, 2*time.Minute, "Product "+name+" Ready", func() (bool, string) {
		if err := s.cluster.client.Get(t.Context(), client.ObjectKey{Namespace: s.ns, Name: name}, &p); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady)
		if c == nil || c.Status != "True" || c.ObservedGeneration != p.Generation || p.Status.StripePriceID == "" {
			return false, fmt.Sprintf("conditions %+v, generation %d", p.Status.Conditions, p.Generation)
		}
		if cond != nil && !cond(&p) {
			return false, fmt.Sprintf("status %+v", p.Status)
		}
		return true, ""
	})
	return &p
}

// purchase reads a Purchase from the apiserver, for assertions.
func (s *system) purchase(t *testing.T, id string) *v1alpha1.Purchase {
	t.Helper()
	var p v1alpha1.Purchase
	if err := s.cluster.client.Get(t.Context(), client.ObjectKey{Namespace: s.ns, Name: id}, &p); err != nil {
		t.Fatalf("reading Purchase %s: %v", id, err)
	}
	return &p
}

// purchasesOf lists a user's Purchases from the apiserver.
func (s *system) purchasesOf(t *testing.T, user string) []v1alpha1.Purchase {
	t.Helper()
	var list v1alpha1.PurchaseList
	if err := s.cluster.client.List(t.Context(), &list, client.InNamespace(s.ns)); err != nil {
		t.Fatalf("listing Purchases: %v", err)
	}
	var out []v1alpha1.Purchase
	for _, p := range list.Items {
		if p.Spec.UserID == user {
			out = append(out, p)
		}
	}
	return out
}

// service load-balances requests over the serving replicas, as a
// Kubernetes Service does over ready endpoints.
type service struct {
	s    *system
	next atomic.Uint64
}

func (sv *service) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var serving []*replica
	for _, r := range sv.s.replicas {
		if r.serving() {
			serving = append(serving, r)
		}
	}
	if len(serving) == 0 {
		http.Error(w, "no ready endpoints", http.StatusServiceUnavailable)
		return
	}
	r := serving[sv.next.Add(1)%uint64(len(serving))]
	target := &url.URL{Scheme: "http", Host: r.apiAddr}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			if !errors.Is(err, context.Canceled) {
				http.Error(w, "upstream "+r.name+": "+err.Error(), http.StatusBadGateway)
			}
		},
	}
	proxy.ServeHTTP(w, req)
}

// eventually polls cond until it holds, failing the test with cond's last
// explanation when timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/lifecycle"
	"github.com/md-platform/paytoview-operator/internal/naming"
	"github.com/md-platform/paytoview-operator/internal/testenv"
)

// purchasesPerUser is how many purchases each seeded user has.
const purchasesPerUser = 10

// MemoryPoint is the operator process with a number of Purchases cached.
type MemoryPoint struct {
	Purchases int   `json:"purchases"`
	RSSBytes  int64 `json:"rss_bytes"`
	// LiveHeapBytes is the heap live after the last garbage collection
	// (GODEBUG=gctrace=1), to the MB.
	LiveHeapBytes int64 `json:"live_heap_bytes"`
	// RSSPerPurchase and HeapPerPurchase are the growth over the empty
	// cache, divided by Purchases.
	RSSPerPurchase  float64 `json:"rss_bytes_per_purchase"`
	HeapPerPurchase float64 `json:"live_heap_bytes_per_purchase"`
	// ReadySeconds is how long the process took to answer /readyz, and
	// SettledSeconds until it had reconciled every Purchase (its CPU use
	// fell under 5% of a core).
	ReadySeconds   float64 `json:"ready_seconds"`
	SettledSeconds float64 `json:"settled_seconds"`
	// EtcdBytesPerPurchase is etcd's database growth (compacted and
	// defragmented) over the empty namespace, divided by Purchases.
	EtcdBytesPerPurchase float64 `json:"etcd_bytes_per_purchase"`
	// SeedPerSecond is how fast Purchases were written (create and status).
	SeedPerSecond float64 `json:"seed_purchases_per_second"`
}

// Reads is the read path with many Purchases cached.
type Reads struct {
	Purchases   int     `json:"purchases"`
	List        Latency `json:"list"`
	Access      Latency `json:"access"`
	ForwardAuth Latency `json:"forward_auth"`
}

// opProcess is the operator binary running as its own process, so its
// memory is its own.
type opProcess struct {
	cmd     *exec.Cmd
	apiURL  string
	health  string
	logPath string
	done    chan error
}

func buildManager(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "manager")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the manager: %w\n%s", err, out)
	}
	return bin, nil
}

func (s *system) startOperatorProcess(ctx context.Context, bin, ns, kubeconfig string) (*opProcess, error) {
	apiAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	healthAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p := &opProcess{apiURL: "http://" + apiAddr, health: "http://" + healthAddr, logPath: filepath.Join(s.dir, "operator-"+ns+".log"), done: make(chan error, 1)}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	// Not bound to ctx: stop() ends it gracefully, SIGTERM first.
	p.cmd = exec.Command(bin, //nolint:noctx // stopped by stop()
		"--api-bind-address="+apiAddr,
		"--health-probe-bind-address="+healthAddr,
		"--metrics-bind-address=0",
		"--purchase-namespace="+ns,
		"--auth-hs256-secret-file="+filepath.Join(s.dir, "auth-hs256-secret"),
		"--allowed-return-origins="+returnOrigin,
	)
	p.cmd.Env = append(os.Environ(),
		"KUBECONFIG="+kubeconfig,
		"STRIPE_SECRET_KEY="+stripeKey,
		"STRIPE_WEBHOOK_SECRETS="+s.em.WebhookSecret(),
		"STRIPE_API_BASE="+s.emURL,
		"GODEBUG=gctrace=1",
	)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting the manager: %w", err)
	}
	go func() { p.done <- p.cmd.Wait(); logFile.Close() }()
	if err := s.waitHTTP(ctx, p.health+"/readyz", 5*time.Minute); err != nil {
		p.stop()
		return nil, fmt.Errorf("%w (see %s)", err, p.logPath)
	}
	return p, nil
}

func (p *opProcess) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	// The exit status of a process told to stop says nothing new.
	select {
	case err := <-p.done:
		_ = err
	case <-time.After(45 * time.Second):
		_ = p.cmd.Process.Kill()
		err := <-p.done
		_ = err
	}
}

// settle waits until the process has used under 5% of a core for three
// seconds in a row (the controllers have finished their initial
// reconciles), at most ten minutes.
func (p *opProcess) settle(ctx context.Context) error {
	prev, err := cpuSeconds(p.cmd.Process.Pid)
	if err != nil {
		return err
	}
	quiet := 0
	deadline := time.Now().Add(10 * time.Minute)
	for quiet < 3 {
		if time.Now().After(deadline) {
			return errors.New("the operator process did not settle in 10 minutes")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
		cur, err := cpuSeconds(p.cmd.Process.Pid)
		if err != nil {
			return err
		}
		if cur-prev < 0.05 {
			quiet++
		} else {
			quiet = 0
		}
		prev = cur
	}
	return nil
}

// cpuSeconds is the user+system CPU time of a process (Linux /proc).
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100, nil // USER_HZ is 100 on Linux
}

// rss is a process's resident set size in bytes.
func rss(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

var gcLine = regexp.MustCompile(`gc \d+ @.* (\d+)->(\d+)->(\d+) MB`)

// liveHeap is the live heap after the last GC the process logged.
func (p *opProcess) liveHeap() int64 {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return 0
	}
	m := gcLine.FindAllSubmatch(b, -1)
	if len(m) == 0 {
		return 0
	}
	mb, _ := strconv.ParseInt(string(m[len(m)-1][3]), 10, 64)
	return mb << 20
}

// measureProcess starts the operator on ns, waits until it settles, and
// reads its memory.
func (s *system) measureProcess(ctx context.Context, bin, ns, kubeconfig string, purchases int) (MemoryPoint, *opProcess, error) {
	pt := MemoryPoint{Purchases: purchases}
	start := time.Now()
	p, err := s.startOperatorProcess(ctx, bin, ns, kubeconfig)
	if err != nil {
		return pt, nil, err
	}
	pt.ReadySeconds = time.Since(start).Seconds()
	if err := p.settle(ctx); err != nil {
		p.stop()
		return pt, nil, err
	}
	pt.SettledSeconds = time.Since(start).Seconds() - 3 // the quiet seconds that proved it
	if pt.RSSBytes, err = rss(p.cmd.Process.Pid); err != nil {
		p.stop()
		return pt, nil, err
	}
	pt.LiveHeapBytes = p.liveHeap()
	return pt, p, nil
}

// completedTemplate is a Purchase as the operator leaves it when paid: the
// seeded Purchases copy it so that they are the size of real ones.
func (s *system) completedTemplate(ctx context.Context) (v1alpha1.Purchase, error) {
	var list v1alpha1.PurchaseList
	if err := s.env.Client.List(ctx, &list, client.InNamespace(benchNamespace)); err != nil {
		return v1alpha1.Purchase{}, err
	}
	for _, p := range list.Items {
		if p.Status.Phase == v1alpha1.PurchaseCompleted {
			return p, nil
		}
	}
	return v1alpha1.Purchase{}, errors.New("no Completed purchase to copy")
}

// seed writes Purchases from..to-1 into ns as Completed with access, ten per
// user, the way the API and the controller write them (create, then
// status).
func seed(ctx context.Context, c client.Client, ns string, tmpl v1alpha1.Purchase, from, to int) (float64, error) {
	l, err := load(ctx, 32, to-from, func(ctx context.Context, i int) error {
		i += from
		user, entity := seedUser(i/purchasesPerUser), fmt.Sprintf("mem-video-%d", i)
		p := &v1alpha1.Purchase{
			ObjectMeta: metav1.ObjectMeta{
				Name: naming.NewPurchaseName(), Namespace: ns, Labels: naming.PurchaseLabels(user, entity, productName),
				Finalizers: tmpl.Finalizers,
			},
			Spec: *tmpl.Spec.DeepCopy(),
		}
		p.Spec.UserID, p.Spec.EntityID = user, entity
		if err := c.Create(ctx, p); err != nil {
			return err
		}
		now := metav1.Now()
		p.Status = *tmpl.Status.DeepCopy()
		p.Status.CheckoutSessionID = "cs_test_" + randomAlnum(58)
		p.Status.ExternalTransactionID = "pi_" + randomAlnum(24)
		p.Status.CompletedAt = &now
		until := metav1.NewTime(now.Add(7 * 24 * time.Hour))
		p.Status.ExpiresAt = &until
		p.Status.ObservedGeneration = p.Generation
		lifecycle.Refresh(p, now.Time) // conditions as the controller would have them
		return c.Status().Update(ctx, p)
	})
	return l.PerSecond, err
}

func seedUser(i int) string { return fmt.Sprintf("mem-user-%d", i) }

func randomAlnum(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rand.IntN(len(alphabet))]
	}
	return string(b)
}

// etcdInUse compacts etcd at its current revision, defragments it, and
// returns the bytes its database uses.
func etcdInUse(ctx context.Context, hc *http.Client, etcdURL string) (int64, error) {
	post := func(path string, body any, into any) error {
		b, _ := json.Marshal(body)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, etcdURL+path, bytes.NewReader(b))
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd %s: %d %s", path, resp.StatusCode, out)
		}
		if into != nil {
			return json.Unmarshal(out, into)
		}
		return nil
	}
	var rng struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	if err := post("/v3/kv/range", map[string]any{"key": "Lw==", "limit": 1}, &rng); err != nil {
		return 0, err
	}
	rev, _ := strconv.ParseInt(rng.Header.Revision, 10, 64)
	if err := post("/v3/kv/compaction", map[string]any{"revision": rev, "physical": true}, nil); err != nil &&
		!strings.Contains(err.Error(), "compacted") {
		return 0, err
	}
	if err := post("/v3/maintenance/defragment", map[string]any{}, nil); err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, etcdURL+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "etcd_mvcc_db_total_size_in_use_in_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int64(f), err
		}
	}
	return 0, errors.New("etcd /metrics has no etcd_mvcc_db_total_size_in_use_in_bytes")
}

// measureReads reads from an operator process holding purchases seeded
// Purchases: each user's list, access checks, and forward-auth checks.
func (s *system) measureReads(ctx context.Context, apiURL string, purchases int) (Reads, error) {
	r := Reads{Purchases: purchases}
	users := purchases / purchasesPerUser
	tokens := make([]string, min(users, 2000))
	for i := range tokens {
		tokens[i] = s.token(seedUser(i * (users / len(tokens))))
	}
	userOf := func(i int) (string, int) {
		k := i % len(tokens)
		return tokens[k], k * (users / len(tokens))
	}
	var err error
	if r.List, err = load(ctx, 8, 4000, func(ctx context.Context, i int) error {
		tok, _ := userOf(i)
		status, body, err := s.do(ctx, http.MethodGet, apiURL+"/client/v1/pay-to-view/purchases", tok, nil, nil)
		if err != nil {
			return err
		}
		var page struct {
			Items []json.RawMessage `json:"items"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &page) != nil || len(page.Items) != purchasesPerUser {
			return fmt.Errorf("list: %d %.200s", status, body)
		}
		return nil
	}); err != nil {
		return r, err
	}
	entityOf := func(i int) (string, string) {
		tok, u := userOf(i)
		return tok, fmt.Sprintf("mem-video-%d", u*purchasesPerUser+i%purchasesPerUser)
	}
	if r.Access, err = load(ctx, 8, 4000, func(ctx context.Context, i int) error {
		tok, entity := entityOf(i)
		status, body, err := s.do(ctx, http.MethodGet, apiURL+"/client/v1/pay-to-view/access?entityId="+entity, tok, nil, nil)
		if err != nil {
			return err
		}
		if status != http.StatusOK || !bytes.Contains(body, []byte(`"hasAccess":true`)) {
			return fmt.Errorf("access: %d %.200s", status, body)
		}
		return nil
	}); err != nil {
		return r, err
	}
	r.ForwardAuth, err = loadFor(ctx, 32, 10*time.Second, func(ctx context.Context, i int) error {
		tok, entity := entityOf(i)
		status, body, err := s.do(ctx, http.MethodGet, apiURL+"/client/v1/pay-to-view/access/check?entityId="+entity, tok, nil, nil)
		if err != nil {
			return err
		}
		if status != http.StatusNoContent {
			return fmt.Errorf("access check: %d %.200s", status, body)
		}
		return nil
	})
	return r, err
}

// Command bench is `make bench`: it starts the local control plane, the
// Stripe emulator and the operator, drives them through the client API and
// the webhook receiver, and prints each figure next to its target and, for
// creates, next to the physical limit measured in the same run (one Stripe
// session create plus one apiserver create). It writes the figures to
// bench/results.json.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/md-platform/paytoview-operator/internal/testenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	out          string
	creates      []int // per concurrency level
	levels       []int
	webhooks     int
	writeSamples int
	memory       []int
	cpuProfile   string
}

// Results is bench/results.json.
type Results struct {
	Date       string `json:"date"`
	GoVersion  string `json:"go_version"`
	CPUs       int    `json:"cpus"`
	Kubernetes string `json:"kubernetes"`
	Etcd       string `json:"etcd"`

	// Limit and Create are keyed by concurrency ("1", "8", "32").
	Limit  map[string]Latency `json:"physical_limit"`
	Create map[string]Latency `json:"create"`
	// FirstPurchase is a new user's first create (Stripe customer too), at
	// concurrency 8.
	FirstPurchase Latency        `json:"first_purchase_new_user"`
	Webhooks      WebhookResult  `json:"webhooks"`
	WritesNew     Writes         `json:"apiserver_writes_new_user"`
	WritesReturn  Writes         `json:"apiserver_writes_returning_user"`
	Memory        []MemoryPoint  `json:"memory"`
	ObjectBytes   int            `json:"purchase_object_json_bytes"`
	Reads         Reads          `json:"reads"`
	FinalPhases   map[string]int `json:"final_purchase_phases"`
	// CPUPerCreate and CPUPerWebhook are CPU milliseconds each process
	// used per create at the highest concurrency, and per webhook.
	CPUPerCreate  map[string]float64 `json:"cpu_ms_per_create"`
	CPUPerWebhook map[string]float64 `json:"cpu_ms_per_webhook"`
	Checks        []Check            `json:"checks"`
}

// Check is one figure against its target.
type Check struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Target string  `json:"target"`
	Met    bool    `json:"met"`
}

func run(ctx context.Context, args []string, out io.Writer) error {
	root := testenv.RepoRoot()
	o := options{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&o.out, "out", filepath.Join(root, "bench", "results.json"), "where to write the results")
	levels := fs.String("concurrency", "1,8,32", "concurrency levels of the create benchmark")
	creates := fs.String("creates", "100,400,1200", "creates per concurrency level")
	fs.IntVar(&o.webhooks, "webhooks", 2000, "webhook events delivered")
	fs.IntVar(&o.writeSamples, "write-samples", 20, "purchases whose apiserver writes are counted, per kind of user")
	memory := fs.String("memory", "10000,100000", "cached Purchase counts to measure memory and reads at (ascending)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write CPU profiles of this process (operator, emulator, load) for the highest-concurrency create and the webhooks to <prefix>-create.pprof and <prefix>-webhooks.pprof")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if o.levels, err = ints(*levels); err != nil {
		return err
	}
	if o.creates, err = ints(*creates); err != nil {
		return err
	}
	if len(o.creates) != len(o.levels) {
		return fmt.Errorf("-creates has %d numbers for %d concurrency levels", len(o.creates), len(o.levels))
	}
	if o.memory, err = ints(*memory); err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "paytoview-bench-")
	if err != nil {
		return err
	}
	res := Results{
		Date: time.Now().UTC().Format(time.RFC3339), GoVersion: runtime.Version(), CPUs: runtime.NumCPU(),
		Kubernetes: testenv.KubernetesVersion, Etcd: testenv.EtcdVersion,
		Limit: map[string]Latency{}, Create: map[string]Latency{},
	}
	step := func(format string, a ...any) { fmt.Fprintf(out, "• "+format+"\n", a...) }

	step("starting the control plane, the Stripe emulator and the operator (logs in %s)", dir)
	s, err := startSystem(ctx, dir)
	if s != nil {
		defer s.close()
	}
	if err != nil {
		return err
	}

	step("apiserver writes per purchase: %d new users, then each again as a returning user", o.writeSamples)
	if res.WritesNew, res.WritesReturn, err = measureWrites(ctx, s, o.writeSamples); err != nil {
		return err
	}

	lc, err := s.limitClient()
	if err != nil {
		return err
	}
	if err := s.createNamespace(ctx, "bench-limit"); err != nil {
		return err
	}
	c := &creator{s: s, perUser: 3}
	total := 0
	for _, n := range o.creates {
		total += n
	}
	users := c.users(total + o.webhooks)
	step("warm-up: first purchase of %d users", len(users))
	if res.FirstPurchase, err = warmUp(ctx, s, users, 8); err != nil {
		return err
	}
	for i, level := range o.levels {
		key := strconv.Itoa(level)
		step("physical limit at concurrency %d: %d × (Stripe session create + apiserver create)", level, o.creates[i])
		if res.Limit[key], err = physicalLimit(ctx, s, lc, "bench-limit", level, o.creates[i]); err != nil {
			return err
		}
		step("create at concurrency %d: %d × POST /client/v1/pay-to-view/purchases", level, o.creates[i])
		cpu0 := cpuByProcess()
		stopProfile, err := startProfile(o.cpuProfile, "create")
		if err != nil {
			return err
		}
		res.Create[key], err = load(ctx, level, o.creates[i], c.op)
		stopProfile()
		if err != nil {
			return err
		}
		res.CPUPerCreate = perOp(cpuSince(cpu0), res.Create[key].Count)
	}
	step("creating %d more purchases for the webhook benchmark", o.webhooks)
	if _, err := load(ctx, 32, o.webhooks, c.op); err != nil {
		return err
	}
	step("webhooks: paying %d sessions, then delivering their checkout.session.completed at concurrency 32", o.webhooks)
	made := c.made[len(c.made)-o.webhooks:]
	if res.Webhooks, res.CPUPerWebhook, err = webhooks(ctx, s, made, 32, o.cpuProfile); err != nil {
		return err
	}
	if res.FinalPhases, err = countPhases(ctx, s.env.Client, benchNamespace); err != nil {
		return err
	}

	if len(o.memory) > 0 {
		if err := measureMemory(ctx, s, o, &res, step); err != nil {
			return err
		}
	}

	res.Checks = checks(res, o)
	printTable(out, res, o)
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(o.out, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nwrote %s\n", o.out)
	return nil
}

// measureMemory runs the operator binary as a process on a namespace with
// no Purchases, then with each count in o.memory, and measures reads with
// the largest.
func measureMemory(ctx context.Context, s *system, o options, res *Results, step func(string, ...any)) error {
	const ns = "bench-memory"
	if err := s.stopOperator(); err != nil {
		return fmt.Errorf("stopping the in-process operator: %w", err)
	}
	tmpl, err := s.completedTemplate(ctx)
	if err != nil {
		return err
	}
	if b, err := json.Marshal(tmpl); err == nil {
		res.ObjectBytes = len(b)
	}
	step("building the manager binary")
	bin, err := buildManager(ctx, s.dir)
	if err != nil {
		return err
	}
	kc, err := s.env.AdminKubeconfig()
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(s.dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		return err
	}
	if err := s.createNamespace(ctx, ns); err != nil {
		return err
	}
	if err := s.applyProduct(ctx, ns); err != nil {
		return err
	}
	etcd0, err := etcdInUse(ctx, s.http, s.env.EtcdURL())
	if err != nil {
		return fmt.Errorf("reading etcd's size: %w", err)
	}
	step("operator process with no Purchases cached")
	base, p, err := s.measureProcess(ctx, bin, ns, kubeconfig, 0)
	if err != nil {
		return err
	}
	p.stop()
	res.Memory = append(res.Memory, base)

	lc, err := s.limitClient()
	if err != nil {
		return err
	}
	have := 0
	for i, n := range o.memory {
		step("seeding Purchases %d..%d (Completed, %d per user)", have, n, purchasesPerUser)
		rate, err := seed(ctx, lc, ns, tmpl, have, n)
		if err != nil {
			return fmt.Errorf("seeding: %w", err)
		}
		have = n
		etcdN, err := etcdInUse(ctx, s.http, s.env.EtcdURL())
		if err != nil {
			return err
		}
		step("operator process with %d Purchases cached", n)
		pt, p, err := s.measureProcess(ctx, bin, ns, kubeconfig, n)
		if err != nil {
			return err
		}
		pt.SeedPerSecond = rate
		pt.RSSPerPurchase = float64(pt.RSSBytes-base.RSSBytes) / float64(n)
		pt.HeapPerPurchase = float64(pt.LiveHeapBytes-base.LiveHeapBytes) / float64(n)
		pt.EtcdBytesPerPurchase = float64(etcdN-etcd0) / float64(n)
		res.Memory = append(res.Memory, pt)
		if i == len(o.memory)-1 {
			step("reads with %d Purchases cached", n)
			res.Reads, err = s.measureReads(ctx, p.apiURL, n)
		}
		p.stop()
		if err != nil {
			return err
		}
	}
	return nil
}

// startProfile profiles this process's CPU into <prefix>-<name>.pprof until
// the returned function is called; with no prefix it does nothing.
func startProfile(prefix, name string) (func(), error) {
	if prefix == "" {
		return func() {}, nil
	}
	f, err := os.Create(prefix + "-" + name + ".pprof")
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func perOp(cpu map[string]float64, n int) map[string]float64 {
	out := map[string]float64{}
	for k, v := range cpu {
		if n > 0 {
			out[k] = v * 1000 / float64(n)
		}
	}
	return out
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

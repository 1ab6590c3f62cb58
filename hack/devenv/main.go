// Command devenv is `make run`: the whole paytoview system on one machine.
// It starts a local control plane (kube-apiserver and etcd built from
// source), installs the CRDs and the sample Products, starts the Stripe
// emulator (or uses real Stripe test mode when STRIPE_SECRET_KEY is set), runs
// the operator against both with an HS256 development secret, writes .dev/env
// and prints a walkthrough. Ctrl-C stops everything it started.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/auth"
	"github.com/md-platform/paytoview-operator/internal/operator"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
	"github.com/md-platform/paytoview-operator/internal/testenv"
)

const (
	namespace   = "paytoview"
	devUser     = "dev-user-1"
	devAdmin    = "dev-admin"
	webhookPath = "/client/v1/webhooks/stripe"
	tokenTTL    = 24 * time.Hour
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "make run:", err)
		os.Exit(1)
	}
}

type options struct {
	devDir   string
	apiPort  int
	demoPort int
}

func run(ctx context.Context, args []string, out io.Writer) error {
	root := testenv.RepoRoot()
	var o options
	fs := flag.NewFlagSet("devenv", flag.ContinueOnError)
	fs.StringVar(&o.devDir, "dev-dir", filepath.Join(root, ".dev"), "where env, kubeconfig, secrets and logs are written")
	fs.IntVar(&o.apiPort, "api-port", 8080, "port of the API; a busy port is replaced by a free one")
	fs.IntVar(&o.demoPort, "demo-port", 8090, "port of the demo checkout page; a busy port is replaced by a free one")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := os.MkdirAll(o.devDir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", o.devDir, err)
	}
	// A stale env file would point scripts at a system that is not up yet.
	_ = os.Remove(filepath.Join(o.devDir, "env"))
	if err := ensureControlPlaneBinaries(ctx, root, out); err != nil {
		return err
	}

	fmt.Fprintln(out, "starting the local control plane (kube-apiserver + etcd)...")
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(out, "stopping the local control plane...")
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
		}
	}()
	kubeconfig := filepath.Join(o.devDir, "kubeconfig")
	kc, err := env.AdminKubeconfig()
	if err != nil {
		return err
	}
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", kubeconfig, err)
	}
	if err := ensureNamespace(ctx, env.Client); err != nil {
		return err
	}
	if _, err := applySamples(ctx, env.Client, filepath.Join(root, "config", "samples")); err != nil {
		return err
	}

	apiAddr, err := listenAddr(o.apiPort)
	if err != nil {
		return err
	}
	demoAddr, err := listenAddr(o.demoPort)
	if err != nil {
		return err
	}
	healthAddr, err := listenAddr(0)
	if err != nil {
		return err
	}
	apiURL, demoURL := "http://"+apiAddr, "http://"+demoAddr

	hs256 := randomHex(32)
	hs256File := filepath.Join(o.devDir, "auth-hs256-secret")
	if err := os.WriteFile(hs256File, []byte(hs256), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", hs256File, err)
	}

	cfg := operator.DefaultConfig()
	cfg.PurchaseNamespace = namespace
	cfg.APIBindAddress = apiAddr
	cfg.MetricsBindAddress = "0"
	cfg.HealthProbeBindAddress = healthAddr
	cfg.AuthHS256SecretFile = hs256File
	cfg.AllowedReturnOrigins = []string{demoURL, "http://localhost:3000", "http://localhost:5173"}
	cfg.CORSAllowedOrigins = cfg.AllowedReturnOrigins

	emulatorURL := ""
	if key := os.Getenv("STRIPE_SECRET_KEY"); key != "" {
		cfg.StripeSecretKey = key
		cfg.StripeAPIBase = os.Getenv("STRIPE_API_BASE")
		cfg.StripeWebhookSecrets = strings.Split(os.Getenv("STRIPE_WEBHOOK_SECRETS"), ",")
		if os.Getenv("STRIPE_WEBHOOK_SECRETS") == "" {
			return fmt.Errorf(`STRIPE_SECRET_KEY is set, so real Stripe test mode is used, and webhooks need a secret:
  run   stripe listen --forward-to %s%s
  then  STRIPE_WEBHOOK_SECRETS=<the whsec_ it prints> make run`, apiURL, webhookPath)
		}
	} else {
		em, url, stopEmulator, err := startEmulator(apiURL + webhookPath)
		if err != nil {
			return err
		}
		defer stopEmulator()
		emulatorURL = url
		cfg.StripeSecretKey = "sk_test_paytoview_dev"
		cfg.StripeAPIBase = url
		cfg.StripeWebhookSecrets = []string{em.WebhookSecret()}
	}

	logFile := filepath.Join(o.devDir, "operator.log")
	logOut, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("opening %s: %w", logFile, err)
	}
	defer logOut.Close()
	log := zap.New(zap.WriteTo(logOut), zap.UseDevMode(true), zap.Level(zapcore.InfoLevel))
	ctrl.SetLogger(log)
	klog.SetLogger(log)

	opCtx, stopOperator := context.WithCancel(ctx)
	opDone := make(chan error, 1)
	go func() { opDone <- operator.Run(opCtx, cfg, env.Config, log) }()
	defer func() {
		stopOperator()
		if err := <-opDone; err != nil {
			fmt.Fprintln(os.Stderr, "operator:", err)
		}
	}()
	if err := waitReady(ctx, apiURL+"/readyz", opDone); err != nil {
		return fmt.Errorf("%w (see %s)", err, logFile)
	}
	waitProductsReady(ctx, env.Client, out)

	userToken, err := auth.MintHS256([]byte(hs256), devUser, nil, tokenTTL)
	if err != nil {
		return err
	}
	adminToken, err := auth.MintHS256([]byte(hs256), devAdmin, []string{"admin"}, tokenTTL)
	if err != nil {
		return err
	}
	demo, err := startDemo(demoAddr, demoPage{APIURL: apiURL, EmulatorURL: emulatorURL, Token: userToken,
		PublishableKey: os.Getenv("STRIPE_PUBLISHABLE_KEY"), ReturnURL: demoURL + "/dev/checkout"})
	if err != nil {
		return err
	}
	defer demo.Close()

	vars := []string{
		"KUBECONFIG=" + kubeconfig,
		"PAYTOVIEW_API_URL=" + apiURL,
		"PAYTOVIEW_NAMESPACE=" + namespace,
		"PAYTOVIEW_USER_TOKEN=" + userToken,
		"PAYTOVIEW_ADMIN_TOKEN=" + adminToken,
		"PAYTOVIEW_AUTH_HS256_SECRET=" + hs256,
		"PAYTOVIEW_DEMO_URL=" + demoURL + "/dev/checkout",
		"STRIPE_API_BASE=" + cfg.StripeAPIBase,
		"STRIPE_WEBHOOK_SECRET=" + cfg.StripeWebhookSecrets[0],
		"PAYTOVIEW_EMULATOR_URL=" + emulatorURL,
	}
	envFile := filepath.Join(o.devDir, "env")
	if err := writeFileAtomic(envFile, []byte(strings.Join(vars, "\n")+"\n")); err != nil {
		return err
	}
	printWalkthrough(out, envFile, logFile, emulatorURL != "")

	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "\nstopping...")
		return nil
	case err := <-opDone:
		opDone <- err // for the deferred stop
		return fmt.Errorf("the operator stopped: %w (see %s)", err, logFile)
	}
}

func printWalkthrough(out io.Writer, envFile, logFile string, emulated bool) {
	stripeLine := "Stripe: the local emulator (no account needed)."
	if !emulated {
		stripeLine = "Stripe: real test mode (STRIPE_SECRET_KEY); keep `stripe listen` forwarding webhooks."
	}
	fmt.Fprintf(out, `
paytoview is running. %s
Operator log: %s

In another terminal (set -a exports what the env file sets, for kubectl):

  set -a; source %s; set +a

  # 1. create a purchase (the seed's step 1): note purchaseId and clientSecret
  curl -s -X POST "$PAYTOVIEW_API_URL/client/v1/pay-to-view/purchases" \
    -H "Authorization: Bearer $PAYTOVIEW_USER_TOKEN" -H 'Content-Type: application/json' \
    -d '{"payToViewProductId":"video-7-days","entityId":"vid_demo_1","returnUrl":"'"$PAYTOVIEW_DEMO_URL"'"}'
`, stripeLine, logFile, envFile)
	if emulated {
		fmt.Fprint(out, `
  # 2-4. pay it as the user would; the emulator sends the signed webhook
  curl -s -X POST "$PAYTOVIEW_EMULATOR_URL/_emulator/v1/checkout/sessions/<clientSecret>/pay"
`)
	} else {
		fmt.Fprint(out, `
  # 2-4. pay it in the browser with a Stripe test card: open $PAYTOVIEW_DEMO_URL
`)
	}
	fmt.Fprint(out, `
  # 5. check access: the purchase is Completed
  curl -s "$PAYTOVIEW_API_URL/client/v1/pay-to-view/purchases?page=1&pageSize=10" \
    -H "Authorization: Bearer $PAYTOVIEW_USER_TOKEN"
  kubectl get ptv -n "$PAYTOVIEW_NAMESPACE"

  # refund it as an admin
  curl -s -X POST "$PAYTOVIEW_API_URL/admin/v1/pay-to-view/purchases/<purchaseId>/refund" \
    -H "Authorization: Bearer $PAYTOVIEW_ADMIN_TOKEN" -H 'Content-Type: application/json' -d '{"reason":"demo"}'

Or click through it in a browser: $PAYTOVIEW_DEMO_URL (printed in the env file).
Press Ctrl-C to stop everything.
`)
}

// ensureControlPlaneBinaries builds kube-apiserver and etcd with
// hack/envtest.sh when they are not cached yet.
func ensureControlPlaneBinaries(ctx context.Context, root string, out io.Writer) error {
	if _, err := testenv.AssetsDir(); err == nil {
		return nil
	}
	fmt.Fprintln(out, "building kube-apiserver and etcd from source (first run only, several minutes)...")
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "envtest.sh"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building the control plane with hack/envtest.sh: %w", err)
	}
	return nil
}

func ensureNamespace(ctx context.Context, c client.Client) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", namespace, err)
	}
	return nil
}

// applySamples creates every object in the YAML files of dir (but the
// kustomization) in the dev namespace, and returns how many it applied.
func applySamples(ctx context.Context, c client.Client, dir string) (int, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return 0, err
	}
	sort.Strings(files)
	n := 0
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return n, fmt.Errorf("reading sample %s: %w", f, err)
		}
		for _, doc := range strings.Split(string(data), "\n---") {
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
				return n, fmt.Errorf("parsing sample %s: %w", f, err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			obj.SetNamespace(namespace)
			if err := c.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
				return n, fmt.Errorf("applying sample %s %s: %w", obj.GetKind(), obj.GetName(), err)
			}
			n++
		}
	}
	if n == 0 {
		return 0, errors.New("no sample objects found in " + dir)
	}
	return n, nil
}

// startEmulator serves the Stripe emulator on a free loopback port.
func startEmulator(webhookURL string) (*emulator.Emulator, string, func(), error) {
	em := emulator.New(emulator.Options{WebhookURL: webhookURL, WebhookSecret: "whsec_" + randomHex(24), Logger: logr.Discard()})
	l, err := listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, fmt.Errorf("listening for the Stripe emulator: %w", err)
	}
	srv := &http.Server{Handler: em, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		em.Close()
	}
	return em, "http://" + l.Addr().String(), stop, nil
}

// listenAddr returns 127.0.0.1:port when that port is free, else a free one.
func listenAddr(port int) (string, error) {
	for _, p := range []int{port, 0} {
		l, err := listen(context.Background(), fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		addr := l.Addr().String()
		if err := l.Close(); err != nil {
			return "", err
		}
		return addr, nil
	}
	return "", errors.New("no free loopback port")
}

// waitReady polls the API's readiness until it answers 200, the operator
// exits, or two minutes pass.
func waitReady(ctx context.Context, url string, opDone chan error) error {
	deadline := time.NewTimer(2 * time.Minute)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-opDone:
			opDone <- err
			return fmt.Errorf("the operator stopped while starting: %w", err)
		case <-deadline.C:
			return errors.New("the API did not become ready within 2 minutes")
		case <-tick.C:
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if resp, err := hc.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
		}
	}
}

// waitProductsReady gives the Product controller a moment to sync the
// samples to Stripe, so the walkthrough's first request finds them sellable,
// and says which are not.
func waitProductsReady(ctx context.Context, c client.Client, out io.Writer) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		var list v1alpha1.ProductList
		notReady := []string{}
		if err := c.List(ctx, &list, client.InNamespace(namespace)); err == nil {
			for _, p := range list.Items {
				if !meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.ConditionReady) {
					notReady = append(notReady, p.Name)
				}
			}
			if len(notReady) == 0 {
				return
			}
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(out, "warning: Products not Ready yet: %s (kubectl describe ptvp -n %s)\n", strings.Join(notReady, ", "), namespace)
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func listen(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	return lc.Listen(ctx, "tcp", addr)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("reading random bytes: %v", err))
	}
	return hex.EncodeToString(b)
}

// writeFileAtomic writes through a temporary file and a rename, so a reader
// polling for the file never sees it half written.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("renaming %s: %w", tmp, err)
	}
	return nil
}

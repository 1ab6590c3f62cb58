// Command devenv is `make run`: it starts a local control plane (kube-apiserver
// and etcd built from source), installs the CRDs and the sample Products, and
// keeps running until interrupted, stopping everything it started.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/md-platform/paytoview-operator/internal/testenv"
)

const namespace = "paytoview"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "make run:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	root := testenv.RepoRoot()
	devDir := filepath.Join(root, ".dev")
	if err := os.MkdirAll(devDir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", devDir, err)
	}
	if err := ensureControlPlaneBinaries(ctx, root); err != nil {
		return err
	}

	fmt.Println("starting the local control plane (kube-apiserver + etcd)...")
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("stopping the local control plane...")
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping control plane:", err)
		}
	}()

	kubeconfig := filepath.Join(devDir, "kubeconfig")
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
	applied, err := applySamples(ctx, env.Client, filepath.Join(root, "config", "samples"))
	if err != nil {
		return err
	}

	envFile := filepath.Join(devDir, "env")
	lines := []string{
		"KUBECONFIG=" + kubeconfig,
		"PAYTOVIEW_NAMESPACE=" + namespace,
	}
	if err := os.WriteFile(envFile, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", envFile, err)
	}

	fmt.Printf(`
The local control plane is up with the paytoview CRDs and %d sample Products.

  source %s
  kubectl get ptvp -n %s

Press Ctrl-C to stop everything.
`, applied, envFile, namespace)
	<-ctx.Done()
	return nil
}

// ensureControlPlaneBinaries builds kube-apiserver and etcd with
// hack/envtest.sh when they are not cached yet.
func ensureControlPlaneBinaries(ctx context.Context, root string) error {
	if _, err := testenv.AssetsDir(); err == nil {
		return nil
	}
	fmt.Println("building kube-apiserver and etcd from source (first run only, several minutes)...")
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
			if strings.TrimSpace(doc) == "" {
				continue
			}
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


// Package testenv starts a real kube-apiserver and etcd (envtest) with the
// project's CRDs installed, once per test package, and gives each test a
// namespace of its own.
package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/md-platform/paytoview-operator/internal/kube"
)

// Versions of the control plane hack/envtest.sh builds; keep them in step.
const (
	KubernetesVersion = "1.37.2"
	EtcdVersion       = "3.6.16"
)

// Env is a running control plane.
type Env struct {
	// Config reaches the apiserver as a cluster admin.
	Config *rest.Config
	// Client is an uncached client for the apiserver.
	Client client.Client
	// Scheme knows core types and the paytoview types.
	Scheme *k8sruntime.Scheme

	env *envtest.Environment
}

// Scheme returns a scheme with client-go's types and the paytoview types.
func Scheme() *k8sruntime.Scheme { return kube.NewScheme() }

// RepoRoot is the root of this repository, found from this file's location.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// AssetsDir returns where kube-apiserver and etcd are: KUBEBUILDER_ASSETS when
// set, else the cache directory hack/envtest.sh builds into.
func AssetsDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("finding the envtest cache: %w", err)
		}
		cache = filepath.Join(home, ".cache")
	}
	dir := filepath.Join(cache, "paytoview", "envtest", "k8s-"+KubernetesVersion+"-etcd-"+EtcdVersion)
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("no %s in %s: run 'make envtest' (or set KUBEBUILDER_ASSETS)", bin, dir)
		}
	}
	return dir, nil
}

// Start starts etcd and kube-apiserver and installs the CRDs from config/crd/bases.
func Start() (*Env, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	e := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := e.Start()
	if err != nil {
		return nil, fmt.Errorf("starting envtest control plane from %s: %w", assets, err)
	}
	// Tests create many objects quickly; the client-go default of 5 QPS
	// would make them wait on the client, not on the apiserver.
	cfg.QPS, cfg.Burst = 500, 1000
	s := Scheme()
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		_ = e.Stop()
		return nil, fmt.Errorf("creating client: %w", err)
	}
	return &Env{Config: cfg, Client: c, Scheme: s, env: e}, nil
}

// AdminKubeconfig returns a kubeconfig for a cluster-admin user of this
// control plane, for kubectl and for processes started outside the test.
func (e *Env) AdminKubeconfig() ([]byte, error) {
	u, err := e.env.AddUser(envtest.User{Name: "paytoview-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("adding an admin user: %w", err)
	}
	kc, err := u.KubeConfig()
	if err != nil {
		return nil, fmt.Errorf("rendering the admin kubeconfig: %w", err)
	}
	return kc, nil
}

// EtcdURL is the client URL of the control plane's etcd, for reading its
// metrics and maintenance endpoints.
func (e *Env) EtcdURL() string {
	if e.env.ControlPlane.Etcd == nil || e.env.ControlPlane.Etcd.URL == nil {
		return ""
	}
	return e.env.ControlPlane.Etcd.URL.String()
}

// Stop stops the control plane.
func (e *Env) Stop() error {
	return e.env.Stop()
}

// Main runs a package's tests against a control plane started for it, and
// stops it afterwards. Use it as TestMain: func TestMain(m *testing.M) { testenv.Main(m, &env) }.
func Main(m *testing.M, env **Env) {
	e, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		os.Exit(1)
	}
	*env = e
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "testenv: stopping control plane:", err)
	}
	os.Exit(code)
}

// Namespace creates a namespace for one test, named after it.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	name := strings.ToLower(t.Name())
	name = strings.Map(func(r rune) rune {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			return r
		}
		return '-'
	}, name)
	if len(name) > 40 {
		name = name[:40]
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: strings.Trim(name, "-") + "-"}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Client.Create(ctx, ns); err != nil {
		t.Fatalf("creating namespace for %s: %v", t.Name(), err)
	}
	return ns.Name
}

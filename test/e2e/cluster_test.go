//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/md-platform/paytoview-operator/internal/kube"
	"github.com/md-platform/paytoview-operator/internal/testenv"
)

// externalKubeconfigEnv names a kubeconfig of an existing cluster (kind) to
// run against instead of a local control plane.
const externalKubeconfigEnv = "E2E_KUBECONFIG"

// serviceAccountName is the operator's identity, as in config/rbac.
const serviceAccountName = "paytoview-operator"

// cluster is the Kubernetes side of the system under test: an admin client
// for setting up and for assertions, and, for the local control plane, the
// handle to restart its kube-apiserver.
type cluster struct {
	admin  *rest.Config
	client client.Client
	// local is the local control plane; nil for an external cluster.
	local *envtest.Environment
}

// startCluster connects to the cluster in E2E_KUBECONFIG (installing the
// CRDs of config/crd/bases), or starts a local kube-apiserver and etcd.
func startCluster(t *testing.T, logDir string) *cluster {
	t.Helper()
	crdDir := filepath.Join(testenv.RepoRoot(), "config", "crd", "bases")
	var c cluster
	if path := os.Getenv(externalKubeconfigEnv); path != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			t.Fatalf("loading %s=%s: %v", externalKubeconfigEnv, path, err)
		}
		if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{crdDir}, ErrorIfPathMissing: true}); err != nil {
			t.Fatalf("installing the CRDs of %s: %v", crdDir, err)
		}
		c.admin = cfg
	} else {
		assets, err := testenv.AssetsDir()
		if err != nil {
			t.Fatal(err)
		}
		// The control plane's output goes to log files printed on failure.
		apiserverLog, err := os.Create(filepath.Join(logDir, "kube-apiserver.log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { apiserverLog.Close() })
		etcdLog, err := os.Create(filepath.Join(logDir, "etcd.log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { etcdLog.Close() })
		apiserver := &envtest.APIServer{CertDir: t.TempDir(), Out: apiserverLog, Err: apiserverLog}
		// kube-apiserver otherwise waits its full 60 s shutdown timeout for
		// the operators' open watches before it exits; a few seconds of
		// draining is enough for a restart the test waits on.
		apiserver.Configure().Set("shutdown-watch-termination-grace-period", "5s")
		env := &envtest.Environment{
			CRDDirectoryPaths:        []string{crdDir},
			ErrorIfCRDPathMissing:    true,
			BinaryAssetsDirectory:    assets,
			ControlPlaneStartTimeout: 2 * time.Minute,
			ControlPlaneStopTimeout:  time.Minute,
			// A certificate directory of our own survives a kube-apiserver
			// restart: envtest wipes a directory it made itself on Stop and
			// the restarted apiserver would serve (and sign ServiceAccount
			// tokens) with new keys that no running client trusts.
			ControlPlane: envtest.ControlPlane{
				APIServer: apiserver,
				Etcd:      &envtest.Etcd{Out: etcdLog, Err: etcdLog},
			},
		}
		cfg, err := env.Start()
		if err != nil {
			t.Fatalf("starting the local control plane from %s: %v", assets, err)
		}
		t.Cleanup(func() {
			if err := env.Stop(); err != nil {
				t.Errorf("stopping the local control plane: %v", err)
			}
		})
		c.admin, c.local = cfg, env
	}
	c.admin.QPS, c.admin.Burst = 100, 200
	// Bounded, so that a hung apiserver call fails the test instead of
	// hanging it.
	c.admin.Timeout = 30 * time.Second
	cl, err := client.New(c.admin, client.Options{Scheme: kube.NewScheme()})
	if err != nil {
		t.Fatalf("creating the admin client: %v", err)
	}
	c.client = cl
	return &c
}

// restartAPIServer stops the local kube-apiserver and runs whileDown while
// it is down, then starts it again on the same port with the same certificates
// (etcd keeps running, so nothing stored is lost).
func (c *cluster) restartAPIServer(t *testing.T, whileDown func()) {
	t.Helper()
	apiserver := c.local.ControlPlane.GetAPIServer()
	if err := apiserver.Stop(); err != nil {
		t.Fatalf("stopping kube-apiserver: %v", err)
	}
	started := false
	defer func() {
		// whileDown failed the test: still bring the apiserver back, so the
		// scenarios after this one run against a working system.
		if !started {
			if err := apiserver.Start(); err != nil {
				t.Errorf("starting kube-apiserver again: %v", err)
			}
		}
	}()
	whileDown()
	started = true
	if err := apiserver.Start(); err != nil {
		t.Fatalf("starting kube-apiserver again: %v", err)
	}
}

// lease reads the operator's leader-election Lease.
func (c *cluster) lease(ns string) (*coordinationv1.Lease, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var l coordinationv1.Lease
	if err := c.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: leaseName}, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// createNamespace creates the namespace the whole run lives in, and deletes
// it at the end on an external cluster (a local control plane goes away
// whole).
func (c *cluster) createNamespace(t *testing.T) string {
	t.Helper()
	ctx := t.Context()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "paytoview-e2e-"}}
	if err := c.client.Create(ctx, ns); err != nil {
		t.Fatalf("creating the test namespace: %v", err)
	}
	if c.local == nil {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.client.Delete(ctx, ns); err != nil {
				t.Errorf("deleting namespace %s: %v", ns.Name, err)
			}
		})
	}
	return ns.Name
}

// rbacRules reads the rules of one Role or ClusterRole manifest of
// config/rbac, so the operator gets exactly what the deployment grants.
func rbacRules(t *testing.T, file string) []rbacv1.PolicyRule {
	t.Helper()
	path := filepath.Join(testenv.RepoRoot(), "config", "rbac", file)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	var role struct {
		Kind  string              `json:"kind"`
		Rules []rbacv1.PolicyRule `json:"rules"`
	}
	if err := yaml.Unmarshal(trimYAMLDocuments(data), &role); err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	if (role.Kind != "Role" && role.Kind != "ClusterRole") || len(role.Rules) == 0 {
		t.Fatalf("%s is a %q with %d rules, want a Role or ClusterRole with rules", path, role.Kind, len(role.Rules))
	}
	return role.Rules
}

// trimYAMLDocuments drops a leading "---" document separator, which
// controller-gen writes at the top of role.yaml.
func trimYAMLDocuments(data []byte) []byte {
	s := strings.TrimSpace(string(data))
	s = strings.TrimPrefix(s, "---")
	return []byte(s)
}

// operatorKubeconfig creates the operator's ServiceAccount with the Roles
// of config/rbac/role.yaml (a ClusterRole there, turned into a Role of the
// namespace as the kustomize patch does) and leader_election_role.yaml, and
// writes a kubeconfig that authenticates as it with a token from the
// TokenRequest API.
//
// A token rather than impersonation: the apiserver itself then decides who
// the operator is (user system:serviceaccount:<ns>:<sa> and its groups),
// exactly as for a pod's projected token, instead of the test asserting an
// identity; and it works the same on a kind cluster.
func (c *cluster) operatorKubeconfig(t *testing.T, ns, dir string) string {
	t.Helper()
	ctx := t.Context()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: serviceAccountName, Namespace: ns}}
	subject := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: ns}}
	objs := []client.Object{sa}
	for name, file := range map[string]string{"manager-role": "role.yaml", "leader-election-role": "leader_election_role.yaml"} {
		objs = append(objs,
			&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Rules: rbacRules(t, file)},
			&rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
				Subjects:   subject,
			})
	}
	for _, o := range objs {
		if err := c.client.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}

	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](4 * 3600)}}
	if err := c.client.SubResource("token").Create(ctx, sa, tr); err != nil {
		t.Fatalf("requesting a token for ServiceAccount %s/%s: %v", ns, sa.Name, err)
	}
	server := c.admin.Host
	if !strings.Contains(server, "://") {
		server = "https://" + server
	}
	if c.admin.APIPath != "" && c.admin.APIPath != "/api" {
		t.Fatalf("the admin config has API path %q; only the default is supported", c.admin.APIPath)
	}
	caData := c.admin.CAData
	if len(caData) == 0 && c.admin.CAFile != "" {
		var err error
		if caData, err = os.ReadFile(c.admin.CAFile); err != nil {
			t.Fatalf("reading the cluster CA %s: %v", c.admin.CAFile, err)
		}
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["e2e"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caData,
		InsecureSkipTLSVerify: c.admin.Insecure, TLSServerName: c.admin.ServerName}
	kc.AuthInfos["operator"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "operator", Namespace: ns}
	kc.CurrentContext = "e2e"
	path := filepath.Join(dir, "operator.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatalf("writing %s: %v", path, err)
	}
	return path
}

// metricsScraperName is the ServiceAccount that scrapes the operators'
// /metrics, as a Prometheus would.
const metricsScraperName = "metrics-scraper"

// grantMetricsAccess sets up the secure /metrics endpoint as config/rbac
// does: the operator's ServiceAccount may create TokenReviews and
// SubjectAccessReviews (metrics_auth_role.yaml), and a scraper
// ServiceAccount holds metrics_reader_role.yaml. It returns a token of the
// scraper. The ClusterRoles and bindings are named after the namespace and
// deleted at the end on an external cluster.
func (c *cluster) grantMetricsAccess(t *testing.T, ns string) string {
	t.Helper()
	ctx := t.Context()
	scraper := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: metricsScraperName, Namespace: ns}}
	if err := c.client.Create(ctx, scraper); err != nil {
		t.Fatalf("creating ServiceAccount %s/%s: %v", ns, scraper.Name, err)
	}
	for file, sa := range map[string]string{"metrics_auth_role.yaml": serviceAccountName, "metrics_reader_role.yaml": metricsScraperName} {
		name := ns + "-" + strings.TrimSuffix(file, ".yaml")
		objs := []client.Object{
			&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rbacRules(t, file)},
			&rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}},
			},
		}
		for _, o := range objs {
			if err := c.client.Create(ctx, o); err != nil {
				t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
			}
			if c.local == nil {
				t.Cleanup(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					if err := c.client.Delete(ctx, o); client.IgnoreNotFound(err) != nil {
						t.Errorf("deleting %T %s: %v", o, o.GetName(), err)
					}
				})
			}
		}
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](4 * 3600)}}
	if err := c.client.SubResource("token").Create(ctx, scraper, tr); err != nil {
		t.Fatalf("requesting a token for ServiceAccount %s/%s: %v", ns, scraper.Name, err)
	}
	return tr.Status.Token
}

// randomHex returns n random bytes, hex-encoded.
func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("reading random bytes: %v", err)
	}
	return hex.EncodeToString(b)
}

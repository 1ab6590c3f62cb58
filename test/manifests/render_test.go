package manifests

import (
	"bufio"
	"bytes"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/md-platform/paytoview-operator/internal/testenv"
)

// Names every rendering must agree on; users and docs refer to them.
const (
	namespace        = "paytoview-system"
	deploymentName   = "paytoview-controller-manager"
	serviceAccount   = "paytoview-controller-manager"
	apiServiceName   = "paytoview-api"
	metricsService   = "paytoview-controller-manager-metrics-service"
	managerRoleName  = "paytoview-manager-role"
	managerContainer = "manager"
	emulatorName     = "paytoview-stripe-emulator"
	authSecretName   = "paytoview-auth"
)

// root is where the repository's config/ and docs/ are copied in the
// in-memory filesystem the renderings run on; overlays written by the tests
// live next to them, so nothing is ever written to the working tree.
const root = "/repo"

// productionOverlayPath is where docs/deploy.md tells users to put its
// example overlay, relative to a checkout of this repository.
const productionOverlayPath = "deploy/production/kustomization.yaml"

// rendering is the output of one `kustomize build`.
type rendering struct {
	name string
	objs []*unstructured.Unstructured
}

// repoFS copies config/ and docs/ into an in-memory filesystem.
func repoFS(t *testing.T) filesys.FileSystem {
	t.Helper()
	fs := filesys.MakeFsInMemory()
	repo := testenv.RepoRoot()
	for _, dir := range []string{"config", "docs"} {
		err := filepath.WalkDir(filepath.Join(repo, dir), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, err := filepath.Rel(repo, p)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return fs.WriteFile(path.Join(root, filepath.ToSlash(rel)), b)
		})
		if err != nil {
			t.Fatalf("copying %s into the in-memory filesystem: %v", dir, err)
		}
	}
	if !fs.Exists(path.Join(root, "config/rbac/role.yaml")) {
		t.Fatalf("config/rbac/role.yaml is missing: run 'make manifests' to generate it from the RBAC markers")
	}
	return fs
}

// render runs kustomize on dir (relative to the repository root).
func render(t *testing.T, fs filesys.FileSystem, dir string) rendering {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, path.Join(root, dir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	r := rendering{name: dir}
	for _, res := range m.Resources() {
		b, err := res.MarshalJSON()
		if err != nil {
			t.Fatalf("kustomize build %s: encoding %s: %v", dir, res.CurId(), err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(b); err != nil {
			t.Fatalf("kustomize build %s: decoding %s: %v", dir, res.CurId(), err)
		}
		r.objs = append(r.objs, u)
	}
	return r
}

// productionOverlay extracts the example overlay from docs/deploy.md (the
// YAML block whose first line names productionOverlayPath) and writes it
// where the docs say, so the documented overlay is the tested one.
func productionOverlay(t *testing.T, fs filesys.FileSystem) string {
	t.Helper()
	doc, err := fs.ReadFile(path.Join(root, "docs/deploy.md"))
	if err != nil {
		t.Fatalf("reading docs/deploy.md: %v", err)
	}
	var block bytes.Buffer
	in, found := false, false
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !in && strings.HasPrefix(line, "```yaml"):
			in = true
			block.Reset()
		case in && strings.HasPrefix(line, "```"):
			in = false
			if strings.HasPrefix(block.String(), "# "+productionOverlayPath+"\n") {
				found = true
			}
		case in:
			block.WriteString(line + "\n")
		}
		if found {
			break
		}
	}
	if !found {
		t.Fatalf("docs/deploy.md has no ```yaml block starting with '# %s'", productionOverlayPath)
	}
	if err := fs.WriteFile(path.Join(root, productionOverlayPath), block.Bytes()); err != nil {
		t.Fatal(err)
	}
	return path.Dir(productionOverlayPath)
}

// renderings builds every way the repository is meant to be installed.
type renderings struct {
	dflt, emulator, production rendering
}

func (rs renderings) all() []rendering { return []rendering{rs.dflt, rs.emulator, rs.production} }

func renderAll(t *testing.T) renderings {
	t.Helper()
	fs := repoFS(t)
	return renderings{
		dflt:       render(t, fs, "config/default"),
		emulator:   render(t, fs, "config/emulator"),
		production: render(t, fs, productionOverlay(t, fs)),
	}
}

func (r rendering) ofKind(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range r.objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

func (r rendering) find(kind, name string) *unstructured.Unstructured {
	for _, o := range r.objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// get decodes the object kind/name into out, failing the test when absent.
func get[T any](t *testing.T, r rendering, kind, name string) *T {
	t.Helper()
	u := r.find(kind, name)
	if u == nil {
		t.Fatalf("%s: no %s %q", r.name, kind, name)
	}
	return decode[T](t, u)
}

func decode[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := k8sruntime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true); err != nil {
		t.Fatalf("decoding %s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return out
}

// userObject is a Secret or ConfigMap the user creates from a template in
// config/secrets; no rendering contains them.
type userObject struct {
	file, kind, name string
	data             map[string]string
}

// userObjects reads every template in config/secrets.
func userObjects(t *testing.T) []userObject {
	t.Helper()
	dir := filepath.Join(testenv.RepoRoot(), "config", "secrets")
	files, err := filepath.Glob(filepath.Join(dir, "*.example.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no templates in %s: %v", dir, err)
	}
	var out []userObject
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var o struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
			StringData map[string]string `json:"stringData"`
			Data       map[string]string `json:"data"`
		}
		if err := yaml.Unmarshal(b, &o); err != nil {
			t.Fatalf("decoding %s: %v", f, err)
		}
		data := o.Data
		if o.Kind == "Secret" {
			data = o.StringData // readable templates: stringData, not base64
		}
		if (o.Kind != "Secret" && o.Kind != "ConfigMap") || o.Metadata.Namespace != namespace || len(data) == 0 {
			t.Fatalf("%s: want a Secret (stringData) or ConfigMap (data) in %s, got kind %q namespace %q", f, namespace, o.Kind, o.Metadata.Namespace)
		}
		out = append(out, userObject{file: filepath.Base(f), kind: o.Kind, name: o.Metadata.Name, data: data})
	}
	return out
}

// userObjectData returns the data of the user-created kind/name.
func userObjectData(t *testing.T, kind, name string) (map[string]string, bool) {
	t.Helper()
	for _, o := range userObjects(t) {
		if o.kind == kind && o.name == name {
			return o.data, true
		}
	}
	return nil, false
}

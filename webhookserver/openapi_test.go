package webhookserver

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/md-platform/paytoview-operator/internal/testenv"
)

// openAPIOperations reads docs/openapi.yaml and returns its operations as
// "METHOD /path".
func openAPIOperations(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "openapi.yaml"))
	if err != nil {
		t.Fatalf("reading the OpenAPI document: %v", err)
	}
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	// Strict: a key given twice (e.g. a path documented twice) is an error.
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		t.Fatalf("parsing the OpenAPI document: %v", err)
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		t.Fatalf("decoding the OpenAPI document: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q, want 3.x", doc.OpenAPI)
	}
	methods := []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}
	var ops []string
	for path, item := range doc.Paths {
		for key := range item {
			if slices.Contains(methods, key) {
				ops = append(ops, strings.ToUpper(key)+" "+path)
			}
		}
	}
	slices.Sort(ops)
	return ops
}

func routeOperations() []string {
	var ops []string
	for _, r := range (&Server{}).routes() {
		ops = append(ops, r.method+" "+r.path)
	}
	slices.Sort(ops)
	return ops
}

func TestOpenAPI_DocumentsExactlyTheRoutes(t *testing.T) {
	documented, routed := openAPIOperations(t), routeOperations()
	for _, op := range routed {
		if !slices.Contains(documented, op) {
			t.Errorf("route %s is not documented in docs/openapi.yaml", op)
		}
	}
	for _, op := range documented {
		if !slices.Contains(routed, op) {
			t.Errorf("docs/openapi.yaml documents %s, which is not routed", op)
		}
	}
}

// TestOpenAPI_EveryDocumentedOperationIsServed sends each documented
// operation to the real handler: none may fall through to the router's
// not-found or method-not-allowed answers.
func TestOpenAPI_EveryDocumentedOperationIsServed(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true})
	for _, op := range openAPIOperations(t) {
		method, path, _ := strings.Cut(op, " ")
		path = strings.ReplaceAll(path, "{id}", "ptv-0000000000")
		r := h.request(method, path, "", nil)
		if r.status == http.StatusNotFound || r.status == http.StatusMethodNotAllowed {
			if m := r.json(t); m["code"] == CodeNotFound || m["code"] == CodeMethodNotAllowed {
				t.Errorf("%s: the router does not serve it (%d %s)", op, r.status, r.body)
			}
		}
	}
	// And the router's own answers look like that, so the check can fail.
	r := h.request(http.MethodGet, "/client/v1/pay-to-view/nothing-here", "", nil)
	r.expectError(t, http.StatusNotFound, CodeNotFound)
	r = h.request(http.MethodDelete, purchasesPath, "", nil)
	r.expectError(t, http.StatusMethodNotAllowed, CodeMethodNotAllowed)
}

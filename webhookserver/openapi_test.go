package webhookserver

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
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

// errorCodes reads the error code constants (Code*) declared in errors.go,
// by name, so a new code is checked without anyone listing it here.
func errorCodes(t *testing.T) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(gotoken.NewFileSet(), "errors.go", nil, 0)
	if err != nil {
		t.Fatalf("parsing errors.go: %v", err)
	}
	codes := map[string]string{}
	for _, decl := range f.Decls {
		gen, ok := decl.(*ast.GenDecl)
		if !ok || gen.Tok != gotoken.CONST {
			continue
		}
		for _, spec := range gen.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Code") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != gotoken.STRING {
					t.Fatalf("%s is not a string literal", name.Name)
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatalf("%s: %v", name.Name, err)
				}
				codes[name.Name] = v
			}
		}
	}
	return codes
}

// TestOpenAPI_DocumentsEveryErrorCode keeps the document in step with the
// codes clients switch on: each code in errors.go must be named in it, in
// backquotes as the document writes codes.
func TestOpenAPI_DocumentsEveryErrorCode(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "openapi.yaml"))
	if err != nil {
		t.Fatalf("reading the OpenAPI document: %v", err)
	}
	doc := string(raw)
	codes := errorCodes(t)
	// The parse must have found the codes, or the check proves nothing.
	if codes["CodeNoAccess"] != CodeNoAccess || codes["CodeRefundFailed"] != CodeRefundFailed || len(codes) < 20 {
		t.Fatalf("found %d error codes in errors.go: %v", len(codes), codes)
	}
	for name, code := range codes {
		if !strings.Contains(doc, "`"+code+"`") {
			t.Errorf("%s (%q) is not documented in docs/openapi.yaml", name, code)
		}
	}
}

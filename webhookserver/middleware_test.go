package webhookserver

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// middlewareServer is the middleware chain around a small mux, served on a
// real socket.
func middlewareServer(t *testing.T) *httptest.Server {
	t.Helper()
	s := &Server{opts: Options{EntityIDHeader: DefaultEntityIDHeader}, log: discard}
	var err error
	if s.corsOrigins, err = parseOrigins([]string{"https://shop.example.com"}, false); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"requestId": infoFrom(r.Context()).id})
	})
	mux.HandleFunc("GET /panic", func(http.ResponseWriter, *http.Request) { panic("boom") })
	mux.HandleFunc("GET /panic-after-write", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("partial"))
		panic("boom")
	})
	mux.HandleFunc("POST "+webhookPath, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	srv := httptest.NewServer(s.withMiddleware(mux))
	t.Cleanup(srv.Close)
	return srv
}

func do(t *testing.T, srv *httptest.Server, method, path string, headers ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func errorCodeOf(t *testing.T, body []byte) string {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("not a JSON error: %v: %s", err, body)
	}
	if e.Success || e.Message == "" {
		t.Fatalf("error body %s lacks success=false or a message", body)
	}
	return e.Code
}

func TestMiddleware_PanicBecomes500JSON(t *testing.T) {
	srv := middlewareServer(t)
	resp, body := do(t, srv, http.MethodGet, "/panic")
	if resp.StatusCode != http.StatusInternalServerError || errorCodeOf(t, body) != CodeInternal {
		t.Fatalf("got %d %s, want 500 %s", resp.StatusCode, body, CodeInternal)
	}
	if resp.Header.Get(requestIDHeader) == "" {
		t.Fatal("500 answer has no request id")
	}
	// The server survives and keeps serving.
	if resp, _ := do(t, srv, http.MethodGet, "/ok"); resp.StatusCode != http.StatusOK {
		t.Fatalf("after a panic: status %d", resp.StatusCode)
	}
}

func TestMiddleware_PanicAfterWritingAbortsTheConnection(t *testing.T) {
	srv := middlewareServer(t)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/panic-after-write", nil)
	resp, err := srv.Client().Do(req)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
	}
	if err == nil {
		t.Fatal("a half-written answer was delivered as complete; want the connection aborted")
	}
}

func TestMiddleware_RequestID(t *testing.T) {
	srv := middlewareServer(t)
	resp, body := do(t, srv, http.MethodGet, "/ok", requestIDHeader, "abc-123_X.y")
	if got := resp.Header.Get(requestIDHeader); got != "abc-123_X.y" {
		t.Fatalf("well-formed caller id not kept: got %q", got)
	}
	if !strings.Contains(string(body), "abc-123_X.y") {
		t.Fatalf("handler did not see the request id: %s", body)
	}
	for _, bad := range []string{"has space", "inject\"quote", strings.Repeat("a", 65), "ünïcode"} {
		resp, _ := do(t, srv, http.MethodGet, "/ok", requestIDHeader, bad)
		got := resp.Header.Get(requestIDHeader)
		if got == bad || !validRequestID(got) {
			t.Errorf("ill-formed caller id %q: answered with %q, want a fresh one", bad, got)
		}
	}
	r1, _ := do(t, srv, http.MethodGet, "/ok")
	r2, _ := do(t, srv, http.MethodGet, "/ok")
	if id1, id2 := r1.Header.Get(requestIDHeader), r2.Header.Get(requestIDHeader); id1 == "" || id1 == id2 {
		t.Fatalf("generated ids %q and %q: want distinct, non-empty", id1, id2)
	}
}

func TestMiddleware_UnknownRouteAndMethodAreJSON(t *testing.T) {
	srv := middlewareServer(t)
	resp, body := do(t, srv, http.MethodGet, "/nope")
	if resp.StatusCode != http.StatusNotFound || errorCodeOf(t, body) != CodeNotFound {
		t.Fatalf("unknown route: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("404 content type %q", ct)
	}
	resp, body = do(t, srv, http.MethodDelete, "/ok")
	if resp.StatusCode != http.StatusMethodNotAllowed || errorCodeOf(t, body) != CodeMethodNotAllowed {
		t.Fatalf("wrong method: %d %s", resp.StatusCode, body)
	}
	if allow := resp.Header.Get("Allow"); !strings.Contains(allow, "GET") {
		t.Fatalf("405 without Allow: %q", allow)
	}
}

func TestCORS_PreflightFromAllowedOrigin(t *testing.T) {
	srv := middlewareServer(t)
	resp, _ := do(t, srv, http.MethodOptions, "/ok",
		"Origin", "https://shop.example.com",
		"Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "authorization, content-type")
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("preflight status %d, want 204", resp.StatusCode)
	}
	h := resp.Header
	if h.Get("Access-Control-Allow-Origin") != "https://shop.example.com" {
		t.Fatalf("Allow-Origin = %q", h.Get("Access-Control-Allow-Origin"))
	}
	for _, want := range []string{"Authorization", "Content-Type", DefaultEntityIDHeader} {
		if !strings.Contains(h.Get("Access-Control-Allow-Headers"), want) {
			t.Errorf("Allow-Headers %q lacks %s", h.Get("Access-Control-Allow-Headers"), want)
		}
	}
	if !strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") || h.Get("Access-Control-Max-Age") == "" {
		t.Errorf("Allow-Methods %q, Max-Age %q", h.Get("Access-Control-Allow-Methods"), h.Get("Access-Control-Max-Age"))
	}
	if h.Get("Access-Control-Allow-Credentials") != "" {
		t.Error("credentials allowed; the API uses bearer tokens only")
	}
	if !strings.Contains(strings.Join(h.Values("Vary"), ","), "Origin") {
		t.Error("no Vary: Origin")
	}
}

func TestCORS_PreflightFromOtherOriginIsRefused(t *testing.T) {
	srv := middlewareServer(t)
	resp, body := do(t, srv, http.MethodOptions, "/ok",
		"Origin", "https://evil.example.com", "Access-Control-Request-Method", "GET")
	if resp.StatusCode != http.StatusForbidden || errorCodeOf(t, body) != CodeCORSOriginNotAllowed {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("Allow-Origin set for a foreign origin")
	}
}

func TestCORS_SimpleRequests(t *testing.T) {
	srv := middlewareServer(t)
	resp, _ := do(t, srv, http.MethodGet, "/ok", "Origin", "https://SHOP.example.com:443")
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://SHOP.example.com:443" {
		t.Fatalf("allowed origin (other spelling) not echoed: %q", resp.Header.Get("Access-Control-Allow-Origin"))
	}
	if !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), requestIDHeader) {
		t.Fatal("request id header not exposed to the browser")
	}
	resp, _ = do(t, srv, http.MethodGet, "/ok", "Origin", "https://evil.example.com")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("foreign origin: status %d, Allow-Origin %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	// Stripe is not a browser: no CORS on the webhook.
	resp, _ = do(t, srv, http.MethodPost, webhookPath, "Origin", "https://shop.example.com")
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS headers on the webhook")
	}
}

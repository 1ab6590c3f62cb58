package webhookserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
)

// requestIDHeader carries the request id in both directions: a caller (an
// ingress) may set it, and every answer has it so a user can quote it.
const requestIDHeader = "X-Request-Id"

// requestInfo travels in the request context so outer middleware learns what
// inner layers found (the mux's route pattern).
type requestInfo struct {
	id    string
	route string
}

type requestInfoKey struct{}

func infoFrom(ctx context.Context) *requestInfo {
	if ri, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
		return ri
	}
	return &requestInfo{}
}

// withMiddleware wraps the mux: request id and logger, access log and
// metrics, panic recovery, CORS, JSON answers for unknown routes.
func (s *Server) withMiddleware(mux *http.ServeMux) http.Handler {
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner, pattern := mux.Handler(r)
		if pattern == "" {
			// The mux's own 404/405 answers are text; keep their status and
			// Allow header but answer JSON like every other error.
			inner.ServeHTTP(&jsonStatusWriter{ResponseWriter: w}, r)
			return
		}
		infoFrom(r.Context()).route = pattern
		mux.ServeHTTP(w, r)
	})
	h = s.cors(h)
	h = s.recoverPanics(h)
	h = s.accessLog(h)
	return s.requestID(h)
}

// requestID takes a well-formed X-Request-Id from the caller or makes one,
// echoes it, and puts a logger carrying it in the context.
func (s *Server) requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(requestIDHeader)
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set(requestIDHeader, id)
		ri := &requestInfo{id: id}
		ctx := context.WithValue(r.Context(), requestInfoKey{}, ri)
		ctx = logr.NewContext(ctx, s.log.WithValues("requestId", id))
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// validRequestID accepts ids an ingress would generate (uuids, hex) and
// nothing that could forge log lines.
func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !requestIDChar(c) {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// statusWriter remembers what was answered, for the access log and metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// accessLog logs one line per request (never headers or bodies: they carry
// tokens and client secrets) and records the request metrics.
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		elapsed := time.Since(start)
		route := infoFrom(r.Context()).route
		if route == "" {
			route = "unmatched"
		}
		apiRequests.WithLabelValues(route, strconv.Itoa(sw.status)).Inc()
		apiLatency.WithLabelValues(route).Observe(elapsed.Seconds())
		log := logr.FromContextOrDiscard(r.Context())
		v := 1
		if sw.status >= 500 {
			v = 0
		}
		log.V(v).Info("served request", "method", r.Method, "route", route, "path", r.URL.Path,
			"status", sw.status, "bytes", sw.bytes, "duration", elapsed)
	})
}

// recoverPanics turns a handler panic into a logged 500 JSON answer instead
// of a dropped connection. http.ErrAbortHandler keeps its meaning.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw, _ := w.(*statusWriter)
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(v)
			}
			log := logr.FromContextOrDiscard(r.Context())
			log.Error(fmt.Errorf("panic: %v", v), "handler panicked", "stack", string(debug.Stack()))
			if sw != nil && sw.status != 0 {
				// Too late for a clean answer; abort the connection so the
				// client does not take a half-written body for a whole one.
				panic(http.ErrAbortHandler)
			}
			writeError(w, newError(http.StatusInternalServerError, CodeInternal, "internal error; quote the X-Request-Id header when reporting it"))
		}()
		next.ServeHTTP(w, r)
	})
}

// cors answers preflights and marks answers to allowed origins. Browsers call
// the client API directly with a bearer token (no cookies), so credentials
// are not allowed. Stripe's webhook is server to server and gets no CORS.
func (s *Server) cors(next http.Handler) http.Handler {
	allowHeaders := strings.Join([]string{"Authorization", "Content-Type", requestIDHeader, s.opts.EntityIDHeader}, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" || len(s.corsOrigins) == 0 || r.URL.Path == webhookPath {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		allowed := s.corsOrigins[normaliseOrigin(origin)]
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if preflight {
			h.Add("Vary", "Access-Control-Request-Method")
			h.Add("Vary", "Access-Control-Request-Headers")
			if !allowed {
				writeError(w, newError(http.StatusForbidden, CodeCORSOriginNotAllowed, "this origin may not call the API"))
				return
			}
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Methods", "GET, POST")
			h.Set("Access-Control-Allow-Headers", allowHeaders)
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if allowed {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Expose-Headers", requestIDHeader+", Retry-After")
		}
		next.ServeHTTP(w, r)
	})
}

// normaliseOrigin is originOf for a header value; "" when it is not an origin.
func normaliseOrigin(origin string) string {
	m, err := parseOrigins([]string{origin}, false)
	if err != nil {
		return ""
	}
	for o := range m {
		return o
	}
	return ""
}

// jsonStatusWriter rewrites the mux's plain-text 404 and 405 answers as JSON
// errors, keeping the status and the Allow header.
type jsonStatusWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *jsonStatusWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote = true
	switch code {
	case http.StatusMethodNotAllowed:
		writeError(w.ResponseWriter, newError(code, CodeMethodNotAllowed, "method not allowed on this path"))
	case http.StatusNotFound:
		writeError(w.ResponseWriter, newError(code, CodeNotFound, "no such endpoint"))
	default:
		w.ResponseWriter.WriteHeader(code)
	}
}

func (w *jsonStatusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	// The text body is replaced by the JSON written in WriteHeader.
	return len(b), nil
}

// newServerErrorLog routes net/http's own error log (TLS handshakes, broken
// connections) into logr.
func newServerErrorLog(l logr.Logger) *log.Logger {
	return log.New(logWriter{l.WithName("http")}, "", 0)
}

type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.V(1).Info(strings.TrimSpace(string(p)))
	return len(p), nil
}

// requestIDChar is whether c may appear in a caller-supplied request id.
func requestIDChar(c rune) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return c == '-' || c == '_' || c == '.'
}

package emulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
)

// maxBodyBytes bounds request bodies; Stripe's own limit is far above
// anything the operator sends.
const maxBodyBytes = 1 << 20

// call is one API request after authentication and parameter decoding.
type call struct {
	r              *http.Request
	form           form
	requestID      string
	idempotencyKey string
}

// expand returns the expand[] parameter.
func (c *call) expand() []string {
	return c.form.list("expand")
}

// eventRequest is the "request" of events this call causes.
func (c *call) eventRequest() eventRequest {
	return eventRequest{ID: nullable(c.requestID), IdempotencyKey: nullable(c.idempotencyKey)}
}

// apiHandler serves one Stripe endpoint. It returns the JSON body of a 200
// answer, rendered while it held the state lock, or an error.
type apiHandler func(c *call) ([]byte, *apiError)

// retrieveParams is the schema of plain retrieve calls, which only expand.
type retrieveParams struct {
	Expand []*string `form:"expand"`
}

func (e *Emulator) routes() {
	api := []struct {
		name    string
		pattern string
		schema  reflect.Type
		h       apiHandler
	}{
		{"create_customer", "POST /v1/customers", reflect.TypeFor[stripego.CustomerParams](), e.createCustomer},
		{"get_customer", "GET /v1/customers/{id}", reflect.TypeFor[retrieveParams](), e.getCustomer},
		{"create_product", "POST /v1/products", reflect.TypeFor[stripego.ProductParams](), e.createProduct},
		{"get_product", "GET /v1/products/{id}", reflect.TypeFor[retrieveParams](), e.getProduct},
		{"update_product", "POST /v1/products/{id}", reflect.TypeFor[stripego.ProductParams](), e.updateProduct},
		{"create_price", "POST /v1/prices", reflect.TypeFor[stripego.PriceParams](), e.createPrice},
		{"get_price", "GET /v1/prices/{id}", reflect.TypeFor[retrieveParams](), e.getPrice},
		{"update_price", "POST /v1/prices/{id}", reflect.TypeFor[stripego.PriceParams](), e.updatePrice},
		{"create_checkout_session", "POST /v1/checkout/sessions", reflect.TypeFor[stripego.CheckoutSessionParams](), e.createSession},
		{"list_checkout_sessions", "GET /v1/checkout/sessions", reflect.TypeFor[stripego.CheckoutSessionListParams](), e.listSessions},
		{"get_checkout_session", "GET /v1/checkout/sessions/{id}", reflect.TypeFor[retrieveParams](), e.getSession},
		{"expire_checkout_session", "POST /v1/checkout/sessions/{id}/expire", reflect.TypeFor[stripego.CheckoutSessionExpireParams](), e.expireSession},
		{"get_payment_intent", "GET /v1/payment_intents/{id}", reflect.TypeFor[retrieveParams](), e.getPaymentIntent},
		{"get_charge", "GET /v1/charges/{id}", reflect.TypeFor[retrieveParams](), e.getCharge},
		{"create_refund", "POST /v1/refunds", reflect.TypeFor[stripego.RefundParams](), e.createRefund},
		{"get_refund", "GET /v1/refunds/{id}", reflect.TypeFor[retrieveParams](), e.getRefund},
		{"get_dispute", "GET /v1/disputes/{id}", reflect.TypeFor[retrieveParams](), e.getDispute},
		{"list_events", "GET /v1/events", reflect.TypeFor[stripego.EventListParams](), e.listEvents},
		{"get_event", "GET /v1/events/{id}", reflect.TypeFor[retrieveParams](), e.getEvent},
	}
	for _, rt := range api {
		e.mux.Handle(rt.pattern, e.serveAPI(rt.name, rt.pattern, rt.schema, rt.h))
	}
	e.helperRoutes()
}

// serveAPI wraps an endpoint with what every Stripe call goes through:
// request id, authentication, version check, parameter decoding and schema
// check, injected faults, and idempotency.
func (e *Emulator) serveAPI(name, pattern string, schema reflect.Type, h apiHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqID := newID("req_", 14)
		w.Header().Set("Request-Id", reqID)
		w.Header().Set("Stripe-Version", APIVersion)
		w.Header().Set("Cache-Control", "no-cache, no-store")

		if err := e.authenticate(r); err != nil {
			writeError(w, reqID, err)
			return
		}
		if v := r.Header.Get("Stripe-Version"); v != "" && v != APIVersion {
			writeError(w, reqID, invalidRequest("", "Invalid Stripe API version: %s. The emulator speaks %s only.", v, APIVersion))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		if err := r.ParseForm(); err != nil {
			writeError(w, reqID, invalidRequest("", "Invalid request body: %v", err))
			return
		}
		f := form(r.Form)
		if err := checkKnownParams(f, schema); err != nil {
			writeError(w, reqID, err)
			return
		}
		e.log.V(1).Info("serve request", "operation", name, "requestId", reqID)

		c := &call{r: r, form: f, requestID: reqID}
		if r.Method == http.MethodPost {
			c.idempotencyKey = strings.TrimSpace(r.Header.Get("Idempotency-Key"))
		}
		withKey := c.idempotencyKey != ""
		scope := apiKeyOf(r) + "\x00" + c.idempotencyKey
		flt := e.takeFault(name, pattern, r, withKey && e.idemDone(scope))
		if flt != nil && flt.inFront(withKey) {
			waitCtx(r.Context(), time.Duration(flt.DelayMS)*time.Millisecond)
			flt.writeAnswer(w, reqID)
			return
		}

		var status int
		var body []byte
		saved := false // the fault's answer is the stored one
		if withKey {
			w.Header().Set("Idempotency-Key", c.idempotencyKey)
			fp := r.Method + " " + r.URL.Path + "?" + url.Values(f).Encode()
			entry, err := e.idemBegin(scope, c.idempotencyKey, r.Method+" "+r.URL.Path, fp)
			if err != nil {
				writeError(w, reqID, err)
				return
			}
			if entry != nil {
				status, body = entry.status, entry.body
				w.Header().Set("Idempotent-Replayed", "true")
				w.Header().Set("Original-Request", entry.requestID)
			} else {
				if flt == nil || !flt.savedByStripe() || flt.AfterProcessing {
					status, body = e.run(c, h)
				}
				if flt != nil && flt.savedByStripe() {
					// Stripe failed while running the request (after
					// doing its work, with AfterProcessing); it saves
					// the failure, not the work, under the key.
					ae := flt.apiError()
					status, body, saved = ae.status, ae.body(reqID), true
				}
				e.idemFinish(scope, status, body, reqID)
			}
		} else {
			status, body = e.run(c, h)
		}

		if flt != nil {
			waitCtx(r.Context(), time.Duration(flt.DelayMS)*time.Millisecond)
			if flt.Status != 0 && !saved {
				flt.writeAnswer(w, reqID)
				return
			}
			if flt.RetryAfter > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(flt.RetryAfter))
			}
		}
		writeJSON(w, status, body)
	})
}

func (e *Emulator) run(c *call, h apiHandler) (int, []byte) {
	body, err := h(c)
	if err != nil {
		return err.status, err.body(c.requestID)
	}
	return http.StatusOK, body
}

func apiKeyOf(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if k, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(k)
	}
	if user, _, ok := r.BasicAuth(); ok {
		return user
	}
	return ""
}

// idemEntry is a remembered result of an idempotent request.
type idemEntry struct {
	endpoint    string
	fingerprint string
	done        bool
	status      int
	body        []byte
	requestID   string
}

// idemDone reports whether the key of scope holds a finished answer.
func (e *Emulator) idemDone(scope string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	en, ok := e.idem[scope]
	return ok && en.done
}

// idemBegin looks the key up. It returns the stored entry to replay, an
// error (parameters differ, or the first request is still running), or
// neither, in which case the caller runs the request and calls idemFinish.
func (e *Emulator) idemBegin(scope, key, endpoint, fingerprint string) (*idemEntry, *apiError) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if en, ok := e.idem[scope]; ok {
		switch {
		case en.endpoint != endpoint:
			return nil, &apiError{status: http.StatusBadRequest, typ: errTypeIdempotency,
				message: "Keys for idempotent requests can only be used for the same endpoint they were first used for ('" +
					en.endpoint + "' vs '" + endpoint + "'). Try using a key other than '" + key + "' if you meant to execute a different request."}
		case en.fingerprint != fingerprint:
			return nil, &apiError{status: http.StatusBadRequest, typ: errTypeIdempotency,
				message: "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '" +
					key + "' if you meant to execute a different request."}
		case !en.done:
			return nil, &apiError{status: http.StatusConflict, typ: errTypeInvalidRequest, code: "idempotency_key_in_use",
				message: "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): " +
					key + ". Please try again later."}
		}
		return en, nil
	}
	e.idem[scope] = &idemEntry{endpoint: endpoint, fingerprint: fingerprint}
	e.idemOrder = append(e.idemOrder, scope)
	for len(e.idemOrder) > e.opts.MaxIdempotencyKeys {
		delete(e.idem, e.idemOrder[0])
		e.idemOrder = e.idemOrder[1:]
	}
	return nil, nil
}

// idemFinish stores the result. Like Stripe, it does not store results of
// requests that failed validation or conflicted (4xx other than 402), so
// the caller may fix the request and retry with the same key. Server errors
// (5xx) are stored and replayed like any other answer.
func (e *Emulator) idemFinish(scope string, status int, body []byte, requestID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	en, ok := e.idem[scope]
	if !ok {
		return
	}
	if status >= 400 && status < 500 && status != http.StatusPaymentRequired {
		delete(e.idem, scope)
		return
	}
	en.done, en.status, en.body, en.requestID = true, status, body, requestID
}

// render encodes obj, expanding the fields named in expand ("a" or "a.b").
func (e *Emulator) render(obj any, expand []string) ([]byte, *apiError) {
	if len(expand) == 0 {
		return mustJSON(obj), nil
	}
	var m map[string]any
	if err := json.Unmarshal(mustJSON(obj), &m); err != nil {
		return nil, &apiError{status: http.StatusInternalServerError, typ: errTypeAPI, message: "emulator: " + err.Error()}
	}
	for _, path := range expand {
		if err := e.expandPath(m, strings.Split(path, "."), path); err != nil {
			return nil, err
		}
	}
	return mustJSON(m), nil
}

// expandable lists, per object type, the fields that hold ids of objects
// the emulator stores.
var expandable = map[string][]string{
	"checkout.session": {"customer", "payment_intent"},
	"payment_intent":   {"customer", "latest_charge"},
	"charge":           {"customer", "payment_intent"},
	"refund":           {"charge", "payment_intent"},
	"dispute":          {"charge", "payment_intent"},
	"price":            {"product"},
}

func (e *Emulator) expandPath(m map[string]any, path []string, full string) *apiError {
	objType, _ := m["object"].(string)
	field := path[0]
	allowed := false
	for _, f := range expandable[objType] {
		allowed = allowed || f == field
	}
	if !allowed {
		return invalidRequest("expand", "This property cannot be expanded (%s).", full)
	}
	var child map[string]any
	switch v := m[field].(type) {
	case nil:
		return nil
	case map[string]any:
		child = v
	case string:
		obj := e.lookupLocked(v)
		if obj == nil {
			return nil
		}
		if err := json.Unmarshal(mustJSON(obj), &child); err != nil {
			return &apiError{status: http.StatusInternalServerError, typ: errTypeAPI, message: "emulator: " + err.Error()}
		}
		m[field] = child
	}
	if len(path) > 1 {
		return e.expandPath(child, path[1:], full)
	}
	return nil
}

// lookupLocked finds a stored object by id, for expansion.
func (e *Emulator) lookupLocked(id string) any {
	var v any
	var ok bool
	switch {
	case strings.HasPrefix(id, "cus_"):
		v, ok = e.customers[id]
	case strings.HasPrefix(id, "pi_"):
		v, ok = e.intents[id]
	case strings.HasPrefix(id, "ch_"):
		v, ok = e.charges[id]
	case strings.HasPrefix(id, "re_"):
		v, ok = e.refunds[id]
	case strings.HasPrefix(id, "dp_"):
		v, ok = e.disputes[id]
	case strings.HasPrefix(id, "price_"):
		v, ok = e.prices[id]
	case strings.HasPrefix(id, "cs_"):
		v, ok = e.sessions[id]
	default:
		v, ok = e.products[id]
	}
	if !ok {
		return nil
	}
	return v
}

func mustJSON(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Every value passed here is built from plain structs, maps and
		// strings; failing to encode one is a programming error.
		panic(errors.New("emulator: encoding JSON: " + err.Error()))
	}
	return bytes.TrimRight(buf.Bytes(), "\n")
}

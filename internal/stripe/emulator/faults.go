package emulator

import (
	"fmt"
	"math/rand/v2"
	"net/http"
)

// Fault makes upcoming API requests that match Operation fail or slow down.
//
// With Status set, a matching request is answered with that status. Where
// the answer comes from decides what Stripe's idempotency layer keeps:
//
//   - A 5xx is Stripe's own server error (api_error). Stripe saves the answer
//     of every request whose execution began, 500s included, and replays it
//     for 24 hours: a request with an Idempotency-Key gets the 5xx saved under
//     that key, and every later request with the key gets the same 5xx. A
//     request whose key already holds an answer is replayed instead (nothing
//     runs, so nothing fails), and the fault is kept for the next request.
//     Without AfterProcessing nothing was done; with it the request was
//     processed first (Stripe did the work, then failed: the object exists
//     although the saved answer is a 5xx).
//   - A 429, any other 4xx, or an answer from a Proxy is given in front of
//     Stripe's execution and saved under no key. With AfterProcessing the
//     request is processed and its real result saved under its key first
//     (Stripe did the work, the answer was lost on the way back: a retry with
//     the same key gets the result).
//
// With only DelayMS set, the request is processed and its answer held back
// for DelayMS (a client with a shorter timeout gives up, but the object
// exists: a retry with the same idempotency key gets it).
type Fault struct {
	ID string `json:"id,omitempty"`
	// Operation is an operation name (create_checkout_session,
	// get_checkout_session, create_refund, ...), a route pattern
	// ("POST /v1/checkout/sessions", "GET /v1/checkout/sessions/{id}"), a
	// concrete request ("GET /v1/checkout/sessions/cs_test_..."), or "*".
	Operation string `json:"operation"`
	// Status is 429, 500, 502, 503 or any 4xx/5xx; 0 for a pure delay.
	Status int `json:"status,omitempty"`
	// Code overrides the error code (e.g. lock_timeout, rate_limit).
	Code string `json:"code,omitempty"`
	// Message overrides the error message.
	Message string `json:"message,omitempty"`
	// RetryAfter is sent as Retry-After, in seconds (default 1 for 429).
	RetryAfter int `json:"retry_after,omitempty"`
	// DelayMS delays the answer.
	DelayMS int `json:"delay_ms,omitempty"`
	// Count is how many requests it applies to; 0 means until cleared. It
	// counts down as the fault is used.
	Count int `json:"count,omitempty"`
	// AfterProcessing processes the request before answering Status.
	AfterProcessing bool `json:"after_processing,omitempty"`
	// Proxy answers as a gateway in front of Stripe would: an HTML page with
	// Status, no Stripe error body, nothing saved under the idempotency key.
	Proxy bool `json:"proxy,omitempty"`
	// Rate, between 0 and 1, applies the fault to that fraction of matching
	// requests at random; 0 means every one.
	Rate float64 `json:"rate,omitempty"`
}

func (f Fault) validate() error {
	if f.Operation == "" {
		return fmt.Errorf("operation is required")
	}
	if f.Status == 0 && f.DelayMS <= 0 {
		return fmt.Errorf("a fault needs a status or a delay_ms")
	}
	if f.Status != 0 && (f.Status < 400 || f.Status > 599) {
		return fmt.Errorf("status %d is not an error status (400-599)", f.Status)
	}
	if f.Proxy && f.Status == 0 {
		return fmt.Errorf("a proxy fault needs a status")
	}
	if f.DelayMS < 0 || f.Count < 0 || f.RetryAfter < 0 {
		return fmt.Errorf("delay_ms, count and retry_after must not be negative")
	}
	if f.Rate < 0 || f.Rate > 1 {
		return fmt.Errorf("rate must be between 0 and 1")
	}
	return nil
}

// savedByStripe reports whether the fault's answer is a server error of
// Stripe itself, which Stripe saves under the request's idempotency key.
func (f Fault) savedByStripe() bool {
	return f.Status >= http.StatusInternalServerError && !f.Proxy
}

// inFront reports whether a request with (withKey) or without an
// idempotency key is answered before Stripe runs it, leaving no trace.
func (f Fault) inFront(withKey bool) bool {
	return f.Status != 0 && !f.AfterProcessing && (!withKey || !f.savedByStripe())
}

// writeAnswer writes the fault's answer: Stripe's error shape, or a
// gateway's HTML page for a Proxy fault.
func (f Fault) writeAnswer(w http.ResponseWriter, requestID string) {
	if !f.Proxy {
		writeError(w, requestID, f.apiError())
		return
	}
	w.Header().Del("Request-Id")
	w.Header().Del("Stripe-Version")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(f.Status)
	text := http.StatusText(f.Status)
	_, _ = fmt.Fprintf(w, "<html><head><title>%d %s</title></head><body><h1>%d %s</h1></body></html>\n", f.Status, text, f.Status, text)
}

// apiError is the answer of a fault with a status.
func (f Fault) apiError() *apiError {
	e := &apiError{status: f.Status, typ: errTypeInvalidRequest, code: f.Code, message: f.Message, retryAfter: f.RetryAfter}
	switch {
	case f.Status == http.StatusTooManyRequests:
		if e.code == "" {
			e.code = "rate_limit"
		}
		if e.message == "" {
			e.message = "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits."
		}
		if e.retryAfter == 0 {
			e.retryAfter = 1
		}
	case f.Status >= 500:
		e.typ = errTypeAPI
		if e.message == "" {
			e.message = "An unknown error occurred (injected by the emulator)."
		}
	default:
		if e.message == "" {
			e.message = fmt.Sprintf("Injected error %d.", f.Status)
		}
	}
	return e
}

// AddFault installs an API fault and returns it with its id.
func (e *Emulator) AddFault(f Fault) (Fault, error) {
	if err := f.validate(); err != nil {
		return Fault{}, fmt.Errorf("invalid fault: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	f.ID = newID("flt_", 14)
	e.faults = append(e.faults, &f)
	return f, nil
}

// Faults returns the installed API faults with their remaining counts.
func (e *Emulator) Faults() []Fault {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Fault, 0, len(e.faults))
	for _, f := range e.faults {
		out = append(out, *f)
	}
	return out
}

// ClearFaults removes every API fault.
func (e *Emulator) ClearFaults() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = nil
}

// takeFault returns the first fault matching this request and uses it up.
// For a replay (the request's idempotency key already holds an answer),
// Stripe's own server errors do not match: a replay runs nothing that
// could fail.
func (e *Emulator) takeFault(name, pattern string, r *http.Request, replay bool) *Fault {
	e.mu.Lock()
	defer e.mu.Unlock()
	concrete := r.Method + " " + r.URL.Path
	for i, f := range e.faults {
		if op := f.Operation; op != "*" && op != name && op != pattern && op != concrete {
			continue
		}
		if replay && f.savedByStripe() {
			continue
		}
		if f.Rate > 0 && f.Rate < 1 && rand.Float64() >= f.Rate {
			continue
		}
		used := *f
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				e.faults = append(e.faults[:i:i], e.faults[i+1:]...)
			}
		}
		return &used
	}
	return nil
}

// AddWebhookFault installs a rule for the delivery of upcoming events and
// returns it with its id.
func (e *Emulator) AddWebhookFault(f WebhookFault) (WebhookFault, error) {
	m, err := parseWebhookMode(string(f.Mode))
	if err != nil {
		return WebhookFault{}, err
	}
	f.Mode = m
	if f.DelayMS < 0 || f.Count < 0 || f.Rate < 0 || f.Rate > 1 {
		return WebhookFault{}, fmt.Errorf("invalid webhook fault: delay_ms and count must not be negative, rate must be between 0 and 1")
	}
	return e.hooks.addFault(f), nil
}

// WebhookFaults returns the installed webhook faults.
func (e *Emulator) WebhookFaults() []WebhookFault {
	return e.hooks.listFaults()
}

// ClearWebhookFaults removes every webhook fault.
func (e *Emulator) ClearWebhookFaults() {
	e.hooks.clearFaults()
}

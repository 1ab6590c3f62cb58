package emulator

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// helperPrefix is the root of the test-helper endpoints: Stripe's side of
// the world (the customer paying, the bank disputing) and fault injection.
// They need no API key, and allow cross-origin calls so that a demo page
// can pay from the browser.
const helperPrefix = "/_emulator/v1/"

// PayOptions says how the webhooks of a pay helper call are delivered.
type PayOptions struct {
	// Webhook is the delivery mode of this call's events. Empty applies the
	// default (deliver) and any installed WebhookFault.
	Webhook WebhookMode
	// WebhookDelay is the delay of WebhookDelay (default
	// Options.WebhookDelay).
	WebhookDelay time.Duration
}

func (o PayOptions) hook() (*hookMode, *apiError) {
	if o.Webhook == "" {
		return nil, nil
	}
	m, err := parseWebhookMode(string(o.Webhook))
	if err != nil {
		return nil, invalidRequest("webhook", "%v", err)
	}
	return &hookMode{mode: m, delay: o.WebhookDelay}, nil
}

// AsyncOutcome is how a delayed payment method ends.
type AsyncOutcome string

// Asynchronous payment outcomes.
const (
	AsyncSucceeded AsyncOutcome = "succeeded"
	AsyncFailed    AsyncOutcome = "failed"
	// AsyncPending leaves the payment processing until SettleAsync.
	AsyncPending AsyncOutcome = "pending"
)

// asErr turns a possibly nil *apiError into an error without the typed-nil
// trap.
func asErr(e *apiError) error {
	if e == nil {
		return nil
	}
	return e
}

// Pay plays the customer paying an open session (named by id or by its
// client secret) with a card that succeeds: it creates a succeeded
// PaymentIntent and a paid Charge carrying payment_intent_data.metadata,
// completes the session as paid, and emits checkout.session.completed.
func (e *Emulator) Pay(session string, opts PayOptions) (Session, error) {
	s, _, err := e.pay(session, opts)
	return s, asErr(err)
}

func (e *Emulator) pay(session string, opts PayOptions) (Session, []byte, *apiError) {
	hook, err := opts.hook()
	if err != nil {
		return Session{}, nil, err
	}
	now := e.lock()
	defer e.mu.Unlock()
	s, err := e.openSessionLocked(session)
	if err != nil {
		return Session{}, nil, err
	}
	e.payLocked(s, now, hook)
	return e.sessionSnapshotLocked(s), mustJSON(s), nil
}

// PayAsync plays the customer paying with a delayed method: the session
// completes with payment_status unpaid (checkout.session.completed), then
// the payment succeeds (checkout.session.async_payment_succeeded, paid
// charge) or fails (checkout.session.async_payment_failed). AsyncPending
// leaves it processing until SettleAsync.
func (e *Emulator) PayAsync(session string, outcome AsyncOutcome, opts PayOptions) (Session, error) {
	s, _, err := e.payAsync(session, outcome, opts)
	return s, asErr(err)
}

func (e *Emulator) payAsync(session string, outcome AsyncOutcome, opts PayOptions) (Session, []byte, *apiError) {
	switch outcome {
	case AsyncSucceeded, AsyncFailed, AsyncPending:
	default:
		return Session{}, nil, invalidRequest("outcome", "Invalid outcome %q: must be succeeded, failed or pending.", outcome)
	}
	hook, err := opts.hook()
	if err != nil {
		return Session{}, nil, err
	}
	now := e.lock()
	defer e.mu.Unlock()
	s, err := e.openSessionLocked(session)
	if err != nil {
		return Session{}, nil, err
	}
	e.payAsyncLocked(s, now, hook)
	if outcome != AsyncPending {
		if err := e.settleLocked(s, outcome == AsyncSucceeded, now, hook); err != nil {
			return Session{}, nil, err
		}
	}
	return e.sessionSnapshotLocked(s), mustJSON(s), nil
}

// SettleAsync ends the processing payment of a session paid with
// PayAsync(..., AsyncPending, ...).
func (e *Emulator) SettleAsync(session string, outcome AsyncOutcome, opts PayOptions) (Session, error) {
	s, _, err := e.settle(session, outcome, opts)
	return s, asErr(err)
}

func (e *Emulator) settle(session string, outcome AsyncOutcome, opts PayOptions) (Session, []byte, *apiError) {
	if outcome != AsyncSucceeded && outcome != AsyncFailed {
		return Session{}, nil, invalidRequest("outcome", "Invalid outcome %q: must be succeeded or failed.", outcome)
	}
	hook, err := opts.hook()
	if err != nil {
		return Session{}, nil, err
	}
	now := e.lock()
	defer e.mu.Unlock()
	s := e.sessionByIDOrSecretLocked(session)
	if s == nil {
		return Session{}, nil, noSuch("checkout.session", session, "id")
	}
	if err := e.settleLocked(s, outcome == AsyncSucceeded, now, hook); err != nil {
		return Session{}, nil, err
	}
	return e.sessionSnapshotLocked(s), mustJSON(s), nil
}

// GetSession returns a session by id or client secret.
func (e *Emulator) GetSession(session string) (Session, error) {
	e.lock()
	defer e.mu.Unlock()
	s := e.sessionByIDOrSecretLocked(session)
	if s == nil {
		return Session{}, noSuch("checkout.session", session, "id")
	}
	return e.sessionSnapshotLocked(s), nil
}

// Dispute opens a dispute (status needs_response, charge.dispute.created)
// on a paid charge, named by charge id or by its PaymentIntent id. With
// closeAs "won" or "lost" it then closes it (charge.dispute.closed); empty
// leaves it open for CloseDispute.
func (e *Emulator) Dispute(chargeOrIntent, closeAs string) (Dispute, error) {
	d, _, err := e.openDispute(chargeOrIntent, closeAs)
	return d, asErr(err)
}

func (e *Emulator) openDispute(chargeOrIntent, closeAs string) (Dispute, []byte, *apiError) {
	if closeAs != "" && closeAs != "won" && closeAs != "lost" {
		return Dispute{}, nil, invalidRequest("status", "Invalid status %q: must be won or lost.", closeAs)
	}
	now := e.lock()
	defer e.mu.Unlock()
	id := chargeOrIntent
	if strings.HasPrefix(id, "pi_") {
		pi, ok := e.intents[id]
		if !ok {
			return Dispute{}, nil, noSuch("payment_intent", id, "id")
		}
		if pi.LatestCharge == nil {
			return Dispute{}, nil, invalidRequest("", "PaymentIntent %s has no charge to dispute.", id)
		}
		id = *pi.LatestCharge
	}
	ch, ok := e.charges[id]
	if !ok {
		return Dispute{}, nil, noSuch("charge", id, "id")
	}
	dp, err := e.disputeLocked(ch, now)
	if err != nil {
		return Dispute{}, nil, err
	}
	if closeAs != "" {
		if err := e.closeDisputeLocked(dp, closeAs); err != nil {
			return Dispute{}, nil, err
		}
	}
	return disputeSnapshot(dp), mustJSON(dp), nil
}

// CloseDispute closes an open dispute as "won" or "lost".
func (e *Emulator) CloseDispute(disputeID, status string) (Dispute, error) {
	d, _, err := e.closeDispute(disputeID, status)
	return d, asErr(err)
}

func (e *Emulator) closeDispute(disputeID, status string) (Dispute, []byte, *apiError) {
	e.lock()
	defer e.mu.Unlock()
	dp, ok := e.disputes[disputeID]
	if !ok {
		return Dispute{}, nil, noSuch("dispute", disputeID, "id")
	}
	if err := e.closeDisputeLocked(dp, status); err != nil {
		return Dispute{}, nil, err
	}
	return disputeSnapshot(dp), mustJSON(dp), nil
}

// FailNextRefund makes the next refund created through the API end as mode
// says (RefundFails or RefundStaysPending); RefundSucceeds undoes it.
func (e *Emulator) FailNextRefund(mode RefundFailMode) error {
	return asErr(e.setRefundFail(mode))
}

func (e *Emulator) setRefundFail(mode RefundFailMode) *apiError {
	switch mode {
	case RefundSucceeds, RefundFails, RefundStaysPending:
	default:
		return invalidRequest("mode", "Invalid mode %q: must be fail or pending.", mode)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.refundFail = mode
	return nil
}

// FailRefund fails a pending or succeeded refund (charge.refund.updated with
// status failed); the charge's amount_refunded drops by its amount.
func (e *Emulator) FailRefund(refundID string) (Refund, error) {
	r, _, err := e.changeRefund(refundID, true)
	return r, asErr(err)
}

// SucceedRefund completes a pending refund (charge.refund.updated with
// status succeeded).
func (e *Emulator) SucceedRefund(refundID string) (Refund, error) {
	r, _, err := e.changeRefund(refundID, false)
	return r, asErr(err)
}

func (e *Emulator) changeRefund(refundID string, fail bool) (Refund, []byte, *apiError) {
	e.lock()
	defer e.mu.Unlock()
	re, ok := e.refunds[refundID]
	if !ok {
		return Refund{}, nil, noSuch("refund", refundID, "id")
	}
	var err *apiError
	if fail {
		err = e.failRefundLocked(re)
	} else {
		err = e.succeedRefundLocked(re)
	}
	if err != nil {
		return Refund{}, nil, err
	}
	return refundSnapshot(re), mustJSON(re), nil
}

// HoldWebhooks holds every delivery from now on until ReleaseWebhooks.
func (e *Emulator) HoldWebhooks() {
	e.hooks.hold()
}

// ReleaseWebhooks stops holding and sends the held deliveries in the given
// order (ReleaseReverse delivers the latest first). It returns how many
// were released.
func (e *Emulator) ReleaseWebhooks(order ReleaseOrder) (int, error) {
	return e.hooks.release(order)
}

func (e *Emulator) helperRoutes() {
	h := func(pattern string, fn func(r *http.Request, f form) ([]byte, *apiError)) {
		e.mux.Handle(pattern, e.serveHelper(fn))
	}
	h("POST /_emulator/v1/checkout/sessions/{id}/pay", func(r *http.Request, f form) ([]byte, *apiError) {
		opts, err := payOptions(f)
		if err != nil {
			return nil, err
		}
		_, body, err := e.pay(r.PathValue("id"), opts)
		return body, err
	})
	h("POST /_emulator/v1/checkout/sessions/{id}/pay_async", func(r *http.Request, f form) ([]byte, *apiError) {
		opts, err := payOptions(f)
		if err != nil {
			return nil, err
		}
		outcome := AsyncOutcome(f.str("outcome"))
		if outcome == "" {
			return nil, missingParam("outcome")
		}
		_, body, err := e.payAsync(r.PathValue("id"), outcome, opts)
		return body, err
	})
	h("POST /_emulator/v1/checkout/sessions/{id}/settle", func(r *http.Request, f form) ([]byte, *apiError) {
		opts, err := payOptions(f)
		if err != nil {
			return nil, err
		}
		_, body, err := e.settle(r.PathValue("id"), AsyncOutcome(f.str("outcome")), opts)
		return body, err
	})
	h("GET /_emulator/v1/checkout/sessions/{id}", func(r *http.Request, f form) ([]byte, *apiError) {
		e.lock()
		defer e.mu.Unlock()
		s := e.sessionByIDOrSecretLocked(r.PathValue("id"))
		if s == nil {
			return nil, noSuch("checkout.session", r.PathValue("id"), "id")
		}
		return mustJSON(s), nil
	})
	h("POST /_emulator/v1/charges/{id}/dispute", func(r *http.Request, f form) ([]byte, *apiError) {
		_, body, err := e.openDispute(r.PathValue("id"), f.str("status"))
		return body, err
	})
	h("POST /_emulator/v1/disputes/{id}/close", func(r *http.Request, f form) ([]byte, *apiError) {
		if f.str("status") == "" {
			return nil, missingParam("status")
		}
		_, body, err := e.closeDispute(r.PathValue("id"), f.str("status"))
		return body, err
	})
	h("POST /_emulator/v1/refunds/fail_next", func(r *http.Request, f form) ([]byte, *apiError) {
		mode := RefundFailMode(f.str("mode"))
		if mode == "" {
			mode = RefundFails
		}
		if mode == RefundSucceeds {
			return nil, invalidRequest("mode", "Invalid mode: must be fail or pending.")
		}
		if err := e.setRefundFail(mode); err != nil {
			return nil, err
		}
		return mustJSON(map[string]string{"next_refund": string(mode)}), nil
	})
	h("POST /_emulator/v1/refunds/{id}/fail", func(r *http.Request, f form) ([]byte, *apiError) {
		_, body, err := e.changeRefund(r.PathValue("id"), true)
		return body, err
	})
	h("POST /_emulator/v1/refunds/{id}/succeed", func(r *http.Request, f form) ([]byte, *apiError) {
		_, body, err := e.changeRefund(r.PathValue("id"), false)
		return body, err
	})

	h("POST /_emulator/v1/faults", func(r *http.Request, f form) ([]byte, *apiError) {
		var flt Fault
		if err := decodeHelperBody(r, f, &flt, faultFromForm); err != nil {
			return nil, err
		}
		out, err := e.AddFault(flt)
		if err != nil {
			return nil, invalidRequest("", "%v", err)
		}
		return mustJSON(out), nil
	})
	h("GET /_emulator/v1/faults", func(*http.Request, form) ([]byte, *apiError) {
		return mustJSON(listOf(e.Faults())), nil
	})
	h("DELETE /_emulator/v1/faults", func(*http.Request, form) ([]byte, *apiError) {
		e.ClearFaults()
		return mustJSON(listOf([]Fault{})), nil
	})
	h("POST /_emulator/v1/webhooks/faults", func(r *http.Request, f form) ([]byte, *apiError) {
		var wf WebhookFault
		if err := decodeHelperBody(r, f, &wf, webhookFaultFromForm); err != nil {
			return nil, err
		}
		out, err := e.AddWebhookFault(wf)
		if err != nil {
			return nil, invalidRequest("", "%v", err)
		}
		return mustJSON(out), nil
	})
	h("GET /_emulator/v1/webhooks/faults", func(*http.Request, form) ([]byte, *apiError) {
		return mustJSON(listOf(e.WebhookFaults())), nil
	})
	h("DELETE /_emulator/v1/webhooks/faults", func(*http.Request, form) ([]byte, *apiError) {
		e.ClearWebhookFaults()
		return mustJSON(listOf([]WebhookFault{})), nil
	})
	h("POST /_emulator/v1/webhooks/hold", func(*http.Request, form) ([]byte, *apiError) {
		e.HoldWebhooks()
		return mustJSON(map[string]bool{"holding": true}), nil
	})
	h("POST /_emulator/v1/webhooks/release", func(r *http.Request, f form) ([]byte, *apiError) {
		n, err := e.ReleaseWebhooks(ReleaseOrder(f.str("order")))
		if err != nil {
			return nil, invalidRequest("order", "%v", err)
		}
		return mustJSON(map[string]int{"released": n}), nil
	})
	h("GET /_emulator/v1/webhooks/deliveries", func(*http.Request, form) ([]byte, *apiError) {
		return mustJSON(listOf(e.Deliveries())), nil
	})
	h("POST /_emulator/v1/webhooks/endpoint", func(r *http.Request, f form) ([]byte, *apiError) {
		if !f.has("url") {
			return nil, missingParam("url")
		}
		e.SetWebhookURL(f.str("url"))
		return mustJSON(map[string]string{"url": f.str("url")}), nil
	})
	h("POST /_emulator/v1/clock/advance", func(r *http.Request, f form) ([]byte, *apiError) {
		d, err := time.ParseDuration(f.str("by"))
		if err != nil || d <= 0 {
			return nil, invalidRequest("by", "by must be a positive Go duration such as 90m or 25h.")
		}
		now := e.AdvanceClock(d)
		return mustJSON(map[string]int64{"now": now.Unix()}), nil
	})
	h("GET /_emulator/v1/clock", func(*http.Request, form) ([]byte, *apiError) {
		return mustJSON(map[string]int64{"now": e.Now().Unix()}), nil
	})
	h("GET /_emulator/v1/state", func(*http.Request, form) ([]byte, *apiError) {
		return mustJSON(e.State()), nil
	})
}

func (e *Emulator) serveHelper(fn func(r *http.Request, f form) ([]byte, *apiError)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		helperCORS(w)
		reqID := newID("req_", 14)
		w.Header().Set("Request-Id", reqID)
		r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		var f form
		if !isJSON(r) {
			if err := r.ParseForm(); err != nil {
				writeError(w, reqID, invalidRequest("", "Invalid request body: %v", err))
				return
			}
			f = form(r.Form)
		} else {
			f = form(r.URL.Query())
		}
		body, err := fn(r, f)
		if err != nil {
			writeError(w, reqID, err)
			return
		}
		writeJSON(w, http.StatusOK, body)
	})
}

func helperCORS(w http.ResponseWriter) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.Header().Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
	w.Header().Set("Access-Control-Allow-Headers", "Content-Type")
}

func isJSON(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == "application/json"
}

func listOf[T any](items []T) map[string]any {
	return map[string]any{"object": "list", "data": items}
}

func payOptions(f form) (PayOptions, *apiError) {
	opts := PayOptions{Webhook: WebhookMode(f.str("webhook"))}
	if f.has("delay_ms") {
		ms, _, err := f.int64("delay_ms")
		if err != nil {
			return PayOptions{}, err
		}
		if ms < 0 {
			return PayOptions{}, invalidRequest("delay_ms", "delay_ms must not be negative.")
		}
		opts.WebhookDelay = time.Duration(ms) * time.Millisecond
		if opts.Webhook == "" {
			opts.Webhook = WebhookDelay
		}
	}
	return opts, nil
}

// decodeHelperBody reads a helper's JSON body strictly, or its form.
func decodeHelperBody[T any](r *http.Request, f form, out *T, fromForm func(form, *T) *apiError) *apiError {
	if !isJSON(r) {
		return fromForm(f, out)
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		return invalidRequest("", "Invalid JSON body: %v", err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return invalidRequest("", "Invalid JSON body: more than one JSON value.")
	}
	return nil
}

func formInt(f form, key string) (int, *apiError) {
	if !f.has(key) {
		return 0, nil
	}
	n, err := strconv.Atoi(f.str(key))
	if err != nil {
		return 0, invalidRequestCode("parameter_invalid_integer", key, "Invalid integer: %s", f.str(key))
	}
	return n, nil
}

func formFloat(f form, key string) (float64, *apiError) {
	if !f.has(key) {
		return 0, nil
	}
	v, err := strconv.ParseFloat(f.str(key), 64)
	if err != nil {
		return 0, invalidRequest(key, "Invalid number: %s", f.str(key))
	}
	return v, nil
}

func faultFromForm(f form, out *Fault) *apiError {
	out.Operation = f.str("operation")
	out.Code = f.str("code")
	out.Message = f.str("message")
	var err *apiError
	if out.Status, err = formInt(f, "status"); err != nil {
		return err
	}
	if out.RetryAfter, err = formInt(f, "retry_after"); err != nil {
		return err
	}
	if out.DelayMS, err = formInt(f, "delay_ms"); err != nil {
		return err
	}
	if out.Count, err = formInt(f, "count"); err != nil {
		return err
	}
	if out.Rate, err = formFloat(f, "rate"); err != nil {
		return err
	}
	after, _, err := f.bool("after_processing")
	if err != nil {
		return err
	}
	out.AfterProcessing = after
	proxy, _, err := f.bool("proxy")
	if err != nil {
		return err
	}
	out.Proxy = proxy
	return nil
}

func webhookFaultFromForm(f form, out *WebhookFault) *apiError {
	out.EventType = f.str("event_type")
	out.Mode = WebhookMode(f.str("mode"))
	var err *apiError
	if out.DelayMS, err = formInt(f, "delay_ms"); err != nil {
		return err
	}
	if out.Count, err = formInt(f, "count"); err != nil {
		return err
	}
	if out.Rate, err = formFloat(f, "rate"); err != nil {
		return err
	}
	return nil
}

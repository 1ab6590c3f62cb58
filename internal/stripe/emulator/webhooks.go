package emulator

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/stripe/stripe-go/v76/webhook"
)

// WebhookMode says what happens to the delivery of an event.
type WebhookMode string

// Webhook modes. They are the values of the webhook form field of the pay
// helpers and of WebhookFault.Mode.
const (
	// WebhookDeliver delivers at once, retrying failures with backoff.
	WebhookDeliver WebhookMode = "deliver"
	// WebhookDrop never delivers (a webhook lost on the way).
	WebhookDrop WebhookMode = "drop"
	// WebhookDuplicate delivers the same event twice.
	WebhookDuplicate WebhookMode = "duplicate"
	// WebhookDelay delivers after a delay.
	WebhookDelay WebhookMode = "delay"
	// WebhookHold keeps the delivery until ReleaseWebhooks, which can
	// release held deliveries in reverse order to reorder them.
	WebhookHold WebhookMode = "hold"
)

func parseWebhookMode(s string) (WebhookMode, error) {
	switch m := WebhookMode(s); m {
	case "":
		return WebhookDeliver, nil
	case WebhookDeliver, WebhookDrop, WebhookDuplicate, WebhookDelay, WebhookHold:
		return m, nil
	}
	return "", fmt.Errorf("invalid webhook mode %q: must be deliver, drop, duplicate, delay or hold", s)
}

// hookMode is a per-call override of how the events of that call are
// delivered.
type hookMode struct {
	mode  WebhookMode
	delay time.Duration
}

// DeliveryStatus is where a delivery stands.
type DeliveryStatus string

// Delivery statuses.
const (
	DeliveryPending   DeliveryStatus = "pending"   // scheduled, in flight or waiting to retry
	DeliveryHeld      DeliveryStatus = "held"      // waiting for ReleaseWebhooks
	DeliverySucceeded DeliveryStatus = "delivered" // the endpoint answered 2xx
	DeliveryFailed    DeliveryStatus = "failed"    // every attempt failed
	DeliveryDropped   DeliveryStatus = "dropped"   // never sent, by request
)

// DeliveryAttempt is one POST to the endpoint.
type DeliveryAttempt struct {
	At         time.Time `json:"at"`
	StatusCode int       `json:"status_code,omitempty"`
	Error      string    `json:"error,omitempty"`
}

// Delivery is the record of sending one event to the endpoint. A duplicated
// event has two deliveries, the second with Duplicate set.
type Delivery struct {
	ID        string            `json:"id"`
	EventID   string            `json:"event_id"`
	EventType string            `json:"event_type"`
	Mode      WebhookMode       `json:"mode"`
	Duplicate bool              `json:"duplicate,omitempty"`
	Status    DeliveryStatus    `json:"status"`
	Attempts  []DeliveryAttempt `json:"attempts"`
}

// WebhookFault changes the delivery of upcoming events that match it, for
// events caused by calls that cannot say so themselves (a refund the
// operator creates, a session that expires).
type WebhookFault struct {
	ID string `json:"id,omitempty"`
	// EventType is an event type or a path.Match pattern ("charge.*");
	// empty matches every type.
	EventType string      `json:"event_type,omitempty"`
	Mode      WebhookMode `json:"mode"`
	// DelayMS is the delay of WebhookDelay (default Options.WebhookDelay).
	DelayMS int `json:"delay_ms,omitempty"`
	// Count is how many events it applies to; 0 means until cleared. It
	// counts down as the fault is used.
	Count int `json:"count,omitempty"`
	// Rate, between 0 and 1, applies the fault to that fraction of matching
	// events at random; 0 means every one.
	Rate float64 `json:"rate,omitempty"`
}

// ReleaseOrder is the order in which held deliveries are released.
type ReleaseOrder string

// Release orders.
const (
	ReleaseInOrder ReleaseOrder = "fifo"
	ReleaseReverse ReleaseOrder = "reverse"
	ReleaseRandom  ReleaseOrder = "random"
)

type delivery struct {
	rec     Delivery
	payload []byte
}

// dispatcher delivers events to the endpoint from a FIFO queue served by
// Options.WebhookConcurrency workers. Retries and delays wait on timers and
// rejoin the queue. Its lock is a leaf: it is taken under the emulator's
// state lock and never takes it.
type dispatcher struct {
	opts      Options
	log       logr.Logger
	subAll    bool
	subscribe map[string]bool

	mu         sync.Mutex
	cond       *sync.Cond
	url        string
	queue      []*delivery
	held       []*delivery
	holding    bool
	closed     bool
	deliveries []*delivery
	faults     []*WebhookFault
	active     int // deliveries queued, in flight or waiting on a timer
	timers     map[*time.Timer]struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newDispatcher(opts Options, log logr.Logger) *dispatcher {
	d := &dispatcher{
		opts:      opts,
		log:       log,
		subscribe: map[string]bool{},
		url:       opts.WebhookURL,
		timers:    map[*time.Timer]struct{}{},
	}
	for _, t := range opts.WebhookEvents {
		d.subAll = d.subAll || t == "*"
		d.subscribe[t] = true
	}
	d.cond = sync.NewCond(&d.mu)
	d.ctx, d.cancel = context.WithCancel(context.Background())
	for i := 0; i < opts.WebhookConcurrency; i++ {
		d.wg.Add(1)
		go d.worker()
	}
	return d
}

func (d *dispatcher) setURL(url string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.url = url
}

// subscribed reports whether an event of this type goes to the endpoint.
func (d *dispatcher) subscribed(typ string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.url != "" && (d.subAll || d.subscribe[typ])
}

func (d *dispatcher) enqueue(eventID, typ string, payload []byte, hook *hookMode) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	mode, delay := WebhookDeliver, time.Duration(0)
	if hook != nil {
		mode, delay = hook.mode, hook.delay
	} else if f := d.takeFaultLocked(typ); f != nil {
		mode, delay = f.Mode, time.Duration(f.DelayMS)*time.Millisecond
	}
	if mode == WebhookDelay && delay <= 0 {
		delay = d.opts.WebhookDelay
	}
	n := 1
	if mode == WebhookDuplicate {
		n = 2
	}
	for i := 0; i < n; i++ {
		dl := &delivery{
			rec:     Delivery{ID: newID("whd_", 20), EventID: eventID, EventType: typ, Mode: mode, Duplicate: i > 0, Status: DeliveryPending, Attempts: []DeliveryAttempt{}},
			payload: payload,
		}
		d.recordLocked(dl)
		switch {
		case mode == WebhookDrop:
			dl.rec.Status = DeliveryDropped
		case mode == WebhookHold || d.holding:
			dl.rec.Status = DeliveryHeld
			d.held = append(d.held, dl)
		default:
			d.active++
			d.scheduleLocked(dl, delay)
		}
	}
}

func (d *dispatcher) recordLocked(dl *delivery) {
	d.deliveries = append(d.deliveries, dl)
	if over := len(d.deliveries) - d.opts.MaxEvents; over > 0 {
		d.deliveries = append([]*delivery(nil), d.deliveries[over:]...)
	}
}

func (d *dispatcher) takeFaultLocked(typ string) *WebhookFault {
	for i, f := range d.faults {
		if f.EventType != "" {
			if ok, _ := path.Match(f.EventType, typ); !ok && f.EventType != typ {
				continue
			}
		}
		if f.Rate > 0 && f.Rate < 1 && rand.Float64() >= f.Rate {
			continue
		}
		used := *f
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				d.faults = append(d.faults[:i:i], d.faults[i+1:]...)
			}
		}
		return &used
	}
	return nil
}

// scheduleLocked queues dl now or after a delay.
func (d *dispatcher) scheduleLocked(dl *delivery, after time.Duration) {
	if after <= 0 {
		d.queue = append(d.queue, dl)
		d.cond.Signal()
		return
	}
	d.wg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(after, func() {
		defer d.wg.Done()
		d.mu.Lock()
		defer d.mu.Unlock()
		delete(d.timers, t)
		if d.closed {
			return
		}
		d.queue = append(d.queue, dl)
		d.cond.Signal()
	})
	d.timers[t] = struct{}{}
}

func (d *dispatcher) worker() {
	defer d.wg.Done()
	for {
		d.mu.Lock()
		for len(d.queue) == 0 && !d.closed {
			d.cond.Wait()
		}
		if d.closed {
			d.mu.Unlock()
			return
		}
		dl := d.queue[0]
		d.queue[0] = nil
		d.queue = d.queue[1:]
		url := d.url
		d.mu.Unlock()
		d.attempt(dl, url)
	}
}

func (d *dispatcher) attempt(dl *delivery, url string) {
	at := time.Now()
	code, err := d.post(url, dl.payload, at)
	d.mu.Lock()
	defer d.mu.Unlock()
	a := DeliveryAttempt{At: at, StatusCode: code}
	if err == nil && (code < 200 || code > 299) {
		err = fmt.Errorf("endpoint answered %d", code)
	}
	if err != nil {
		a.Error = err.Error()
	}
	dl.rec.Attempts = append(dl.rec.Attempts, a)
	n := len(dl.rec.Attempts)
	switch {
	case err == nil:
		dl.rec.Status = DeliverySucceeded
		d.active--
	case d.closed:
		d.active--
	case n >= d.opts.WebhookMaxAttempts:
		dl.rec.Status = DeliveryFailed
		d.active--
		d.log.Info("give up webhook delivery", "event", dl.rec.EventID, "type", dl.rec.EventType, "attempts", n, "error", a.Error)
	default:
		backoff := d.opts.WebhookBackoff << (n - 1)
		if backoff > d.opts.WebhookMaxBackoff || backoff <= 0 {
			backoff = d.opts.WebhookMaxBackoff
		}
		d.log.V(1).Info("retry webhook delivery", "event", dl.rec.EventID, "type", dl.rec.EventType, "attempt", n, "backoff", backoff, "error", a.Error)
		d.scheduleLocked(dl, backoff)
	}
}

// post sends one attempt, signed over the exact bytes sent with a fresh
// timestamp, as Stripe re-signs every retry.
func (d *dispatcher) post(url string, payload []byte, at time.Time) (int, error) {
	if url == "" {
		return 0, fmt.Errorf("no webhook endpoint configured")
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.opts.WebhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		return 0, fmt.Errorf("building webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
	req.Header.Set("Cache-Control", "no-cache")
	req.Header.Set("Stripe-Signature", SignatureHeader(payload, d.opts.WebhookSecret, at))
	resp, err := d.opts.HTTPClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}

// SignatureHeader returns a Stripe-Signature header value for payload:
// t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<payload>" keyed by secret>.
func SignatureHeader(payload []byte, secret string, at time.Time) string {
	sig := webhook.ComputeSignature(at, payload, secret)
	return fmt.Sprintf("t=%d,v1=%s", at.Unix(), hex.EncodeToString(sig))
}

func (d *dispatcher) hold() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.holding = true
}

// release stops holding and queues the held deliveries in the given order.
func (d *dispatcher) release(order ReleaseOrder) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	held := d.held
	switch order {
	case "", ReleaseInOrder:
	case ReleaseReverse:
		for i, j := 0, len(held)-1; i < j; i, j = i+1, j-1 {
			held[i], held[j] = held[j], held[i]
		}
	case ReleaseRandom:
		rand.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
	default:
		return 0, fmt.Errorf("invalid order %q: must be fifo, reverse or random", order)
	}
	d.holding = false
	d.held = nil
	if d.closed {
		return 0, nil
	}
	for _, dl := range held {
		dl.rec.Status = DeliveryPending
		d.active++
		d.scheduleLocked(dl, 0)
	}
	return len(held), nil
}

func (d *dispatcher) addFault(f WebhookFault) WebhookFault {
	d.mu.Lock()
	defer d.mu.Unlock()
	f.ID = newID("whf_", 14)
	d.faults = append(d.faults, &f)
	return f
}

func (d *dispatcher) listFaults() []WebhookFault {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]WebhookFault, 0, len(d.faults))
	for _, f := range d.faults {
		out = append(out, *f)
	}
	return out
}

func (d *dispatcher) clearFaults() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults = nil
}

func (d *dispatcher) snapshot() []Delivery {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Delivery, 0, len(d.deliveries))
	for _, dl := range d.deliveries {
		r := dl.rec
		r.Attempts = append([]DeliveryAttempt(nil), dl.rec.Attempts...)
		out = append(out, r)
	}
	return out
}

// busy reports the deliveries not finished, not counting held ones.
func (d *dispatcher) busy() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.active
}

func (d *dispatcher) close() {
	d.mu.Lock()
	d.closed = true
	for t := range d.timers {
		if t.Stop() {
			d.wg.Done()
		}
		delete(d.timers, t)
	}
	d.cond.Broadcast()
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
}

package emulator_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	stripego "github.com/stripe/stripe-go/v76"

	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

func TestWebhook_RetriesAfterEndpointFailures(t *testing.T) {
	h := newHarness(t)
	h.recv.mu.Lock()
	h.recv.failNext = 2
	h.recv.mu.Unlock()
	s, _ := h.paidSession()

	h.recv.waitForType(t, "checkout.session.completed", s.ID)
	waitWebhooks(t, h.em)
	ds := h.em.Deliveries()
	if len(ds) != 1 {
		t.Fatalf("deliveries %+v, want 1", ds)
	}
	d := ds[0]
	if d.Status != emulator.DeliverySucceeded || len(d.Attempts) != 3 {
		t.Fatalf("delivery %+v, want delivered after 3 attempts", d)
	}
	if d.Attempts[0].StatusCode != 500 || d.Attempts[1].StatusCode != 500 || d.Attempts[2].StatusCode != 200 {
		t.Errorf("attempt codes %d %d %d", d.Attempts[0].StatusCode, d.Attempts[1].StatusCode, d.Attempts[2].StatusCode)
	}
}

func TestWebhook_GivesUpAfterMaxAttempts(t *testing.T) {
	h := newHarness(t, func(o *emulator.Options) { o.WebhookMaxAttempts = 3 })
	h.recv.mu.Lock()
	h.recv.failNext = 100
	h.recv.mu.Unlock()
	h.paidSession()
	waitWebhooks(t, h.em)
	d := h.em.Deliveries()[0]
	if d.Status != emulator.DeliveryFailed || len(d.Attempts) != 3 {
		t.Errorf("delivery %+v, want failed after 3 attempts", d)
	}
}

func TestWebhook_SignatureMadeWithOtherSecretIsRejectedByVerifier(t *testing.T) {
	h := newHarness(t, func(o *emulator.Options) {
		o.WebhookSecret = "whsec_not_the_endpoints"
		o.WebhookMaxAttempts = 1
	})
	h.paidSession()
	waitWebhooks(t, h.em)
	h.recv.mu.Lock()
	rejected := len(h.recv.rejected)
	h.recv.mu.Unlock()
	if rejected != 1 || len(h.recv.snapshot()) != 0 {
		t.Errorf("a delivery signed with another secret was accepted (rejected=%d)", rejected)
	}
}

func TestWebhook_DeliveryModes(t *testing.T) {
	t.Run("drop", func(t *testing.T) {
		h := newHarness(t)
		s := h.openSession()
		if code, body := h.helper("/_emulator/v1/checkout/sessions/"+s.ID+"/pay", url.Values{"webhook": {"drop"}}, nil); code != 200 {
			t.Fatalf("pay: %d %s", code, body)
		}
		waitWebhooks(t, h.em)
		if evs := h.recv.snapshot(); len(evs) != 0 {
			t.Errorf("dropped event delivered: %s", eventTypes(evs))
		}
		ds := h.em.Deliveries()
		if len(ds) != 1 || ds[0].Status != emulator.DeliveryDropped || len(ds[0].Attempts) != 0 {
			t.Errorf("deliveries %+v", ds)
		}
		// The event still exists for healing through GET /v1/events.
		it := h.sc.Events.List(&stripego.EventListParams{Type: stripego.String("checkout.session.completed")})
		if !it.Next() || it.Event().Data.Object["id"] != s.ID {
			t.Errorf("dropped event not listed")
		}
	})
	t.Run("duplicate", func(t *testing.T) {
		h := newHarness(t)
		s := h.openSession()
		if _, err := h.em.Pay(s.ID, emulator.PayOptions{Webhook: emulator.WebhookDuplicate}); err != nil {
			t.Fatal(err)
		}
		evs := h.recv.waitFor(t, "two deliveries", func(evs []stripego.Event) bool { return len(evs) == 2 })
		if evs[0].ID != evs[1].ID || evs[0].Type != "checkout.session.completed" {
			t.Errorf("duplicate deliveries %s / %s", evs[0].ID, evs[1].ID)
		}
	})
	t.Run("delay", func(t *testing.T) {
		h := newHarness(t)
		held := h.openSession()
		if _, err := h.em.Pay(held.ID, emulator.PayOptions{Webhook: emulator.WebhookDelay, WebhookDelay: time.Hour}); err != nil {
			t.Fatal(err)
		}
		ds := h.em.Deliveries()
		if len(ds) != 1 || ds[0].Status != emulator.DeliveryPending || len(ds[0].Attempts) != 0 || ds[0].Mode != emulator.WebhookDelay {
			t.Errorf("delayed delivery %+v, want pending with no attempt", ds)
		}
		short := h.openSession()
		code, body := h.helper("/_emulator/v1/checkout/sessions/"+short.ID+"/pay", url.Values{"webhook": {"delay"}, "delay_ms": {"20"}}, nil)
		if code != 200 {
			t.Fatalf("pay: %d %s", code, body)
		}
		h.recv.waitForType(t, "checkout.session.completed", short.ID)
	})
}

func TestWebhook_HoldAndReleaseInReverseReorders(t *testing.T) {
	h := newHarness(t)
	first, second := h.openSession(), h.openSession()
	if code, _ := h.helper("/_emulator/v1/webhooks/hold", nil, nil); code != 200 {
		t.Fatalf("hold: %d", code)
	}
	for _, s := range []string{first.ID, second.ID} {
		if _, err := h.em.Pay(s, emulator.PayOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range h.em.Deliveries() {
		if d.Status != emulator.DeliveryHeld {
			t.Errorf("delivery %s is %s while holding", d.EventID, d.Status)
		}
	}
	var released map[string]int
	if code, body := h.helper("/_emulator/v1/webhooks/release?order=reverse", nil, &released); code != 200 || released["released"] != 2 {
		t.Fatalf("release: %d %s", code, body)
	}
	evs := h.recv.waitFor(t, "both completions", func(evs []stripego.Event) bool { return len(evs) == 2 })
	if evs[0].Data.Object["id"] != second.ID || evs[1].Data.Object["id"] != first.ID {
		t.Errorf("delivered %v then %v, want the later payment first", evs[0].Data.Object["id"], evs[1].Data.Object["id"])
	}
}

func TestWebhook_AsyncEventsReorderedByPerCallHold(t *testing.T) {
	h := newHarness(t)
	s := h.openSession()
	if _, err := h.em.PayAsync(s.ID, emulator.AsyncSucceeded, emulator.PayOptions{Webhook: emulator.WebhookHold}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.em.ReleaseWebhooks(emulator.ReleaseReverse); err != nil {
		t.Fatal(err)
	}
	evs := h.recv.waitFor(t, "both session events", func(evs []stripego.Event) bool { return len(evs) == 2 })
	if evs[0].Type != "checkout.session.async_payment_succeeded" || evs[1].Type != "checkout.session.completed" {
		t.Errorf("events %s, want async_payment_succeeded before completed", eventTypes(evs))
	}
}

func TestWebhook_FaultRulesApplyToMatchingEvents(t *testing.T) {
	h := newHarness(t)
	var flt emulator.WebhookFault
	code, body := h.helper("/_emulator/v1/webhooks/faults", url.Values{"event_type": {"charge.*"}, "mode": {"drop"}, "count": {"1"}}, &flt)
	if code != 200 || flt.ID == "" {
		t.Fatalf("installing webhook fault: %d %s", code, body)
	}
	_, pi := h.paidSession() // checkout.session.completed: not matched
	if _, err := h.sc.Refunds.New(refundParams(pi.ID, 100)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.sc.Refunds.New(refundParams(pi.ID, 100)); err != nil {
		t.Fatal(err)
	}
	waitWebhooks(t, h.em)
	var types []string
	for _, d := range h.em.Deliveries() {
		types = append(types, d.EventType+":"+string(d.Status))
	}
	want := "[checkout.session.completed:delivered charge.refunded:dropped charge.refunded:delivered]"
	if got := "[" + strings.Join(types, " ") + "]"; got != want {
		t.Errorf("deliveries %s, want %s", got, want)
	}
	if len(h.em.WebhookFaults()) != 0 {
		t.Errorf("used-up fault still installed")
	}
}

func TestWebhook_EndpointChangeAppliesToRetries(t *testing.T) {
	h := newHarness(t, func(o *emulator.Options) { o.WebhookURL = "" })
	s := h.openSession()
	h.paidSession() // no endpoint: recorded, not delivered
	if ds := h.em.Deliveries(); len(ds) != 0 {
		t.Errorf("deliveries without an endpoint: %+v", ds)
	}
	// Point it at a dead endpoint, then at the receiver while retrying.
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	defer dead.Close()
	h.em.SetWebhookURL(dead.URL)
	if _, err := h.em.Pay(s.ID, emulator.PayOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForAttempt(t, h.em)
	recvURL := httptest.NewServer(h.recv)
	defer recvURL.Close()
	if code, _ := h.helper("/_emulator/v1/webhooks/endpoint", url.Values{"url": {recvURL.URL}}, nil); code != 200 {
		t.Fatalf("changing endpoint: %d", code)
	}
	h.recv.waitForType(t, "checkout.session.completed", s.ID)
}

func waitForAttempt(t *testing.T, em *emulator.Emulator) {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, d := range em.Deliveries() {
			if len(d.Attempts) > 0 {
				return
			}
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("no delivery attempt within %s", waitLimit)
		}
	}
}

func TestWebhook_CloseAbortsDeliveryInFlight(t *testing.T) {
	started := make(chan struct{}, 1)
	blocking := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		started <- struct{}{}
		<-r.Context().Done()
	}))
	defer blocking.Close()
	em := emulator.New(emulator.Options{WebhookURL: blocking.URL, WebhookTimeout: time.Hour})
	srv := httptest.NewServer(em)
	defer srv.Close()
	sc := newStripeClient(srv, testKey, nil)
	prod, _ := sc.Products.New(&stripego.ProductParams{Name: stripego.String("p")})
	pr, _ := sc.Prices.New(&stripego.PriceParams{Product: stripego.String(prod.ID), UnitAmount: stripego.Int64(1), Currency: stripego.String("eur")})
	cu, _ := sc.Customers.New(&stripego.CustomerParams{})
	s, err := sc.CheckoutSessions.New(sessionParams(pr.ID, cu.ID, "r", em.Now().Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := em.Pay(s.ID, emulator.PayOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(waitLimit):
		t.Fatal("delivery never started")
	}
	closed := make(chan struct{})
	go func() {
		em.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(waitLimit):
		t.Fatal("Close did not return while a delivery was in flight")
	}
	// Closed emulators accept no more deliveries and Close is idempotent.
	em.Close()
}

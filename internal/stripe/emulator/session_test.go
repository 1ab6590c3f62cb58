package emulator_test

import (
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	stripego "github.com/stripe/stripe-go/v76"

	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

func TestSession_CreateReturnsClientSecretAndPriceAmount(t *testing.T) {
	h := newHarness(t)
	pr := h.catalog(1299)
	cu := h.customer()
	expires := h.em.Now().Add(45 * time.Minute).Truncate(time.Second)

	s, err := h.sc.CheckoutSessions.New(sessionParams(pr.ID, cu.ID, "ptv-abc12", expires))
	if err != nil {
		t.Fatalf("creating session: %v", err)
	}
	if !strings.HasPrefix(s.ID, "cs_test_") {
		t.Errorf("id %q lacks the cs_test_ prefix", s.ID)
	}
	if !strings.HasPrefix(s.ClientSecret, s.ID+"_secret_") {
		t.Errorf("client secret %q does not name its session %s", s.ClientSecret, s.ID)
	}
	if s.Status != stripego.CheckoutSessionStatusOpen || s.PaymentStatus != stripego.CheckoutSessionPaymentStatusUnpaid {
		t.Errorf("status %s/%s, want open/unpaid", s.Status, s.PaymentStatus)
	}
	if s.AmountTotal != 1299 || s.Currency != "eur" {
		t.Errorf("amount %d %s, want 1299 eur", s.AmountTotal, s.Currency)
	}
	if s.UIMode != "embedded" || s.Mode != "payment" || s.RedirectOnCompletion != "never" {
		t.Errorf("ui_mode/mode/redirect = %s/%s/%s", s.UIMode, s.Mode, s.RedirectOnCompletion)
	}
	if s.Customer == nil || s.Customer.ID != cu.ID || s.ClientReferenceID != "ptv-abc12" {
		t.Errorf("customer %v, client_reference_id %q", s.Customer, s.ClientReferenceID)
	}
	if s.ExpiresAt != expires.Unix() {
		t.Errorf("expires_at %d, want %d", s.ExpiresAt, expires.Unix())
	}
	if !reflect.DeepEqual(s.Metadata, purchaseMetadata) {
		t.Errorf("metadata %v, want %v", s.Metadata, purchaseMetadata)
	}

	got, err := h.sc.CheckoutSessions.Get(s.ID, nil)
	if err != nil {
		t.Fatalf("retrieving session: %v", err)
	}
	if got.ClientSecret != "" {
		t.Errorf("retrieve returned the client secret; only create does")
	}
	if got.Status != s.Status || got.AmountTotal != s.AmountTotal || !reflect.DeepEqual(got.Metadata, s.Metadata) {
		t.Errorf("retrieved session differs from created one: %+v", got)
	}
	// The browser holds only the client secret; it names the session.
	bySecret, err := h.em.GetSession(s.ClientSecret)
	if err != nil || bySecret.ID != s.ID {
		t.Errorf("GetSession(client secret) = %v, %v; want session %s", bySecret.ID, err, s.ID)
	}
}

func TestSession_PayDeliversSignedCompletedEventAndPaidCharge(t *testing.T) {
	h := newHarness(t)
	s := h.openSession()

	var paid map[string]any
	if code, body := h.helper("/_emulator/v1/checkout/sessions/"+s.ID+"/pay", nil, &paid); code != http.StatusOK {
		t.Fatalf("pay answered %d: %s", code, body)
	}
	if paid["status"] != "complete" || paid["payment_status"] != "paid" {
		t.Errorf("pay answered session %v/%v, want complete/paid", paid["status"], paid["payment_status"])
	}

	ev := h.recv.waitForType(t, "checkout.session.completed", s.ID)
	if ev.APIVersion != stripego.APIVersion || ev.Livemode || ev.PendingWebhooks != 1 {
		t.Errorf("event envelope api_version=%s livemode=%v pending_webhooks=%d", ev.APIVersion, ev.Livemode, ev.PendingWebhooks)
	}
	cs := decodeObject[stripego.CheckoutSession](t, ev)
	if cs.Status != "complete" || cs.PaymentStatus != "paid" {
		t.Errorf("event session %s/%s, want complete/paid", cs.Status, cs.PaymentStatus)
	}
	if !reflect.DeepEqual(cs.Metadata, purchaseMetadata) || cs.ClientReferenceID != "ptv-abc12" {
		t.Errorf("event session metadata %v ref %q", cs.Metadata, cs.ClientReferenceID)
	}
	if cs.PaymentIntent == nil || !strings.HasPrefix(cs.PaymentIntent.ID, "pi_") {
		t.Fatalf("event session payment_intent %v", cs.PaymentIntent)
	}
	if cs.ClientSecret != "" {
		t.Errorf("event carries the client secret")
	}

	pi := h.intent(cs.PaymentIntent.ID)
	if pi.Status != stripego.PaymentIntentStatusSucceeded || pi.Amount != 1000 || pi.Currency != "eur" {
		t.Errorf("payment intent %s %d %s", pi.Status, pi.Amount, pi.Currency)
	}
	if !reflect.DeepEqual(pi.Metadata, purchaseMetadata) {
		t.Errorf("payment intent metadata %v, want payment_intent_data.metadata", pi.Metadata)
	}
	if pi.LatestCharge == nil || !pi.LatestCharge.Paid || pi.LatestCharge.Amount != 1000 {
		t.Fatalf("latest charge not expanded or not paid: %+v", pi.LatestCharge)
	}
	if !reflect.DeepEqual(pi.LatestCharge.Metadata, purchaseMetadata) {
		t.Errorf("charge metadata %v", pi.LatestCharge.Metadata)
	}
	// Without expand, latest_charge is the id only.
	plain, err := h.sc.PaymentIntents.Get(pi.ID, nil)
	if err != nil {
		t.Fatalf("retrieving payment intent: %v", err)
	}
	if plain.LatestCharge == nil || plain.LatestCharge.ID != pi.LatestCharge.ID || plain.LatestCharge.Amount != 0 {
		t.Errorf("unexpanded latest_charge = %+v, want id %s only", plain.LatestCharge, pi.LatestCharge.ID)
	}
	ch, err := h.sc.Charges.Get(pi.LatestCharge.ID, nil)
	if err != nil || ch.PaymentIntent.ID != pi.ID || ch.Customer.ID != cs.Customer.ID {
		t.Errorf("charge %+v, %v", ch, err)
	}

	// Paying again is refused: the session is complete.
	code, body := h.helper("/_emulator/v1/checkout/sessions/"+s.ID+"/pay", nil, nil)
	if code != http.StatusBadRequest || !strings.Contains(string(body), "already complete") {
		t.Errorf("second pay answered %d %s, want 400 already complete", code, body)
	}
	h.recv.mu.Lock()
	ua, ct := h.recv.userAgent, h.recv.ctype
	h.recv.mu.Unlock()
	if ua != "Stripe/1.0 (+https://stripe.com/docs/webhooks)" || ct != "application/json; charset=utf-8" {
		t.Errorf("delivery headers User-Agent %q Content-Type %q", ua, ct)
	}
}

func TestSession_PayByClientSecret(t *testing.T) {
	h := newHarness(t)
	s := h.openSession()
	if code, body := h.helper("/_emulator/v1/checkout/sessions/"+s.ClientSecret+"/pay", nil, nil); code != http.StatusOK {
		t.Fatalf("pay by client secret answered %d: %s", code, body)
	}
	h.recv.waitForType(t, "checkout.session.completed", s.ID)
	// A forged secret for a real session id names nothing.
	code, _ := h.helper("/_emulator/v1/checkout/sessions/"+s.ID+"_secret_forged/pay", nil, nil)
	if code != http.StatusNotFound {
		t.Errorf("pay with a forged secret answered %d, want 404", code)
	}
}

func TestSession_PayAsync(t *testing.T) {
	for _, tc := range []struct {
		outcome       emulator.AsyncOutcome
		event         string
		paymentStatus string
		intentStatus  stripego.PaymentIntentStatus
		chargePaid    bool
	}{
		{emulator.AsyncSucceeded, "checkout.session.async_payment_succeeded", "paid", stripego.PaymentIntentStatusSucceeded, true},
		{emulator.AsyncFailed, "checkout.session.async_payment_failed", "unpaid", stripego.PaymentIntentStatusRequiresPaymentMethod, false},
	} {
		t.Run(string(tc.outcome), func(t *testing.T) {
			h := newHarness(t)
			s := h.openSession()
			code, body := h.helper("/_emulator/v1/checkout/sessions/"+s.ID+"/pay_async", url.Values{"outcome": {string(tc.outcome)}}, nil)
			if code != http.StatusOK {
				t.Fatalf("pay_async answered %d: %s", code, body)
			}
			evs := h.recv.waitFor(t, tc.event, func(evs []stripego.Event) bool { return len(evs) >= 2 })
			if evs[0].Type != "checkout.session.completed" || string(evs[1].Type) != tc.event {
				t.Fatalf("events %s, want completed then %s", eventTypes(evs), tc.event)
			}
			if first := decodeObject[stripego.CheckoutSession](t, evs[0]); first.Status != "complete" || first.PaymentStatus != "unpaid" {
				t.Errorf("completed event session %s/%s, want complete/unpaid", first.Status, first.PaymentStatus)
			}
			last := decodeObject[stripego.CheckoutSession](t, evs[1])
			if string(last.PaymentStatus) != tc.paymentStatus {
				t.Errorf("%s session payment_status %s, want %s", tc.event, last.PaymentStatus, tc.paymentStatus)
			}
			pi := h.intent(last.PaymentIntent.ID)
			if pi.Status != tc.intentStatus || pi.LatestCharge == nil || pi.LatestCharge.Paid != tc.chargePaid {
				t.Errorf("payment intent %s, charge %+v", pi.Status, pi.LatestCharge)
			}
		})
	}
}

func TestSession_PayAsyncPendingUntilSettled(t *testing.T) {
	h := newHarness(t)
	s := h.openSession()
	got, err := h.em.PayAsync(s.ID, emulator.AsyncPending, emulator.PayOptions{})
	if err != nil {
		t.Fatalf("PayAsync: %v", err)
	}
	if got.Status != "complete" || got.PaymentStatus != "unpaid" || got.ChargeID != "" {
		t.Fatalf("pending session %+v", got)
	}
	pi := h.intent(got.PaymentIntentID)
	if pi.Status != stripego.PaymentIntentStatusProcessing || pi.LatestCharge != nil {
		t.Errorf("processing intent %s charge %v", pi.Status, pi.LatestCharge)
	}
	code, body := h.helper("/_emulator/v1/checkout/sessions/"+s.ID+"/settle", url.Values{"outcome": {"succeeded"}}, nil)
	if code != http.StatusOK {
		t.Fatalf("settle answered %d: %s", code, body)
	}
	ev := h.recv.waitForType(t, "checkout.session.async_payment_succeeded", s.ID)
	if cs := decodeObject[stripego.CheckoutSession](t, ev); cs.PaymentStatus != "paid" {
		t.Errorf("settled session payment_status %s", cs.PaymentStatus)
	}
	if _, err := h.em.SettleAsync(s.ID, emulator.AsyncFailed, emulator.PayOptions{}); err == nil {
		t.Errorf("settling a settled payment succeeded")
	}
}

func TestSession_ExpireThroughAPI(t *testing.T) {
	h := newHarness(t)
	s := h.openSession()
	params := &stripego.CheckoutSessionExpireParams{}
	params.SetIdempotencyKey("expire-" + s.ID)
	got, err := h.sc.CheckoutSessions.Expire(s.ID, params)
	if err != nil {
		t.Fatalf("expiring: %v", err)
	}
	if got.Status != stripego.CheckoutSessionStatusExpired || got.PaymentStatus != "unpaid" {
		t.Errorf("expired session %s/%s", got.Status, got.PaymentStatus)
	}
	ev := h.recv.waitForType(t, "checkout.session.expired", s.ID)
	if ev.Request == nil || ev.Request.IdempotencyKey != "expire-"+s.ID || !strings.HasPrefix(ev.Request.ID, "req_") {
		t.Errorf("event request %+v, want the expire call's request id and idempotency key", ev.Request)
	}

	_, err = h.sc.CheckoutSessions.Expire(s.ID, nil)
	se := stripeErr(t, err)
	if se.HTTPStatusCode != http.StatusBadRequest || se.Type != stripego.ErrorTypeInvalidRequest {
		t.Errorf("second expire: %d %s %s", se.HTTPStatusCode, se.Type, se.Msg)
	}
	if _, err := h.em.Pay(s.ID, emulator.PayOptions{}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("paying an expired session: %v, want an expired error", err)
	}
}

func TestSession_ExpireRefusesCompleteSession(t *testing.T) {
	h := newHarness(t)
	s, _ := h.paidSession()
	_, err := h.sc.CheckoutSessions.Expire(s.ID, nil)
	se := stripeErr(t, err)
	if se.HTTPStatusCode != http.StatusBadRequest || !strings.Contains(se.Msg, "complete") {
		t.Errorf("expiring a complete session: %d %s", se.HTTPStatusCode, se.Msg)
	}
}

func TestSession_ExpiresLazilyWhenClockPassesExpiresAt(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	h := newHarness(t, func(o *emulator.Options) {
		o.Now = clock.Now
		o.ExpiryInterval = -1 // only lazy expiry, so the test controls when
	})
	s := h.openSession()

	clock.Advance(29 * time.Minute)
	got, err := h.sc.CheckoutSessions.Get(s.ID, nil)
	if err != nil || got.Status != "open" {
		t.Fatalf("before expires_at: %v, %v", got.Status, err)
	}
	clock.Advance(time.Minute)
	got, err = h.sc.CheckoutSessions.Get(s.ID, nil)
	if err != nil || got.Status != stripego.CheckoutSessionStatusExpired {
		t.Fatalf("at expires_at: status %v, %v; want expired", got.Status, err)
	}
	ev := h.recv.waitForType(t, "checkout.session.expired", s.ID)
	if ev.Request == nil || ev.Request.ID != "" {
		t.Errorf("automatic expiry event request %+v, want no request id", ev.Request)
	}
	if ev.Created != clock.Now().Unix() {
		t.Errorf("event created %d, want the injected clock's %d", ev.Created, clock.Now().Unix())
	}
}

func TestSession_ExpiresInBackgroundSweep(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	h := newHarness(t, func(o *emulator.Options) {
		o.Now = clock.Now
		o.ExpiryInterval = 5 * time.Millisecond
	})
	s := h.openSession()
	clock.Advance(31 * time.Minute)
	// No API call: the sweep alone must expire it and tell the endpoint.
	h.recv.waitForType(t, "checkout.session.expired", s.ID)
}

func TestSession_AdvanceClockHelperExpires(t *testing.T) {
	h := newHarness(t, func(o *emulator.Options) { o.ExpiryInterval = -1 })
	s := h.openSession()
	code, body := h.helper("/_emulator/v1/clock/advance", url.Values{"by": {"2h"}}, nil)
	if code != http.StatusOK {
		t.Fatalf("clock/advance answered %d: %s", code, body)
	}
	h.recv.waitForType(t, "checkout.session.expired", s.ID)
}

func TestSession_CreateRejectsWhatStripeRejects(t *testing.T) {
	h := newHarness(t)
	pr := h.catalog(500)
	cu := h.customer()
	inactive := h.catalog(700)
	if _, err := h.sc.Prices.Update(inactive.ID, &stripego.PriceParams{Active: stripego.Bool(false)}); err != nil {
		t.Fatalf("archiving price: %v", err)
	}
	now := h.em.Now()
	valid := func() *stripego.CheckoutSessionParams {
		return sessionParams(pr.ID, cu.ID, "ptv-x", now.Add(time.Hour))
	}
	for _, tc := range []struct {
		name   string
		mutate func(p *stripego.CheckoutSessionParams)
		status int
		code   stripego.ErrorCode
		param  string
	}{
		{"missing mode", func(p *stripego.CheckoutSessionParams) { p.Mode = nil }, 400, "parameter_missing", "mode"},
		{"subscription mode", func(p *stripego.CheckoutSessionParams) { p.Mode = stripego.String("subscription") }, 400, "", "mode"},
		{"hosted ui", func(p *stripego.CheckoutSessionParams) { p.UIMode = stripego.String("hosted") }, 400, "", "ui_mode"},
		{"success_url with embedded", func(p *stripego.CheckoutSessionParams) { p.SuccessURL = stripego.String("https://x.test/ok") }, 400, "", "success_url"},
		{"return_url with redirect never", func(p *stripego.CheckoutSessionParams) { p.ReturnURL = stripego.String("https://x.test/back") }, 400, "", "return_url"},
		{"redirect always without return_url", func(p *stripego.CheckoutSessionParams) { p.RedirectOnCompletion = stripego.String("always") }, 400, "parameter_missing", "return_url"},
		{"no line items", func(p *stripego.CheckoutSessionParams) { p.LineItems = nil }, 400, "parameter_missing", "line_items"},
		{"line item without quantity", func(p *stripego.CheckoutSessionParams) { p.LineItems[0].Quantity = nil }, 400, "parameter_missing", "line_items[0][quantity]"},
		{"unknown price", func(p *stripego.CheckoutSessionParams) { p.LineItems[0].Price = stripego.String("price_nope") }, 400, "resource_missing", "line_items[0][price]"},
		{"inactive price", func(p *stripego.CheckoutSessionParams) { p.LineItems[0].Price = stripego.String(inactive.ID) }, 400, "", "line_items[0][price]"},
		{"unknown customer", func(p *stripego.CheckoutSessionParams) { p.Customer = stripego.String("cus_nope") }, 400, "resource_missing", "customer"},
		{"expires in 29 minutes", func(p *stripego.CheckoutSessionParams) {
			p.ExpiresAt = stripego.Int64(now.Add(29 * time.Minute).Unix())
		}, 400, "", "expires_at"},
		{"expires in 25 hours", func(p *stripego.CheckoutSessionParams) { p.ExpiresAt = stripego.Int64(now.Add(25 * time.Hour).Unix()) }, 400, "", "expires_at"},
		{"metadata key too long", func(p *stripego.CheckoutSessionParams) {
			p.Metadata = map[string]string{strings.Repeat("k", 41): "v"}
		}, 400, "", "metadata[" + strings.Repeat("k", 41) + "]"},
		{"unknown parameter", func(p *stripego.CheckoutSessionParams) { p.AddExtra("colour", "blue") }, 400, "parameter_unknown", "colour"},
		{"unknown nested parameter", func(p *stripego.CheckoutSessionParams) { p.AddExtra("line_items[0][colour]", "blue") }, 400, "parameter_unknown", "line_items[0][colour]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := valid()
			tc.mutate(p)
			_, err := h.sc.CheckoutSessions.New(p)
			se := stripeErr(t, err)
			if se.HTTPStatusCode != tc.status || se.Type != stripego.ErrorTypeInvalidRequest || se.Code != tc.code || se.Param != tc.param {
				t.Errorf("got %d %s code=%q param=%q (%s); want %d invalid_request_error code=%q param=%q",
					se.HTTPStatusCode, se.Type, se.Code, se.Param, se.Msg, tc.status, tc.code, tc.param)
			}
			if se.Msg == "" || se.RequestID == "" {
				t.Errorf("error lacks message or request id: %+v", se)
			}
		})
	}
	if n := h.em.State().Counts["sessions"]; n != 0 {
		t.Errorf("rejected creates left %d sessions", n)
	}
	// The valid parameters do create a session (so each case failed for its
	// own reason).
	if _, err := h.sc.CheckoutSessions.New(valid()); err != nil {
		t.Fatalf("valid params: %v", err)
	}
}

func TestSession_ListFiltersByPaymentIntent(t *testing.T) {
	h := newHarness(t)
	s, pi := h.paidSession()
	h.openSession()
	p := &stripego.CheckoutSessionListParams{PaymentIntent: stripego.String(pi.ID)}
	it := h.sc.CheckoutSessions.List(p)
	var ids []string
	for it.Next() {
		ids = append(ids, it.CheckoutSession().ID)
	}
	if err := it.Err(); err != nil {
		t.Fatalf("listing: %v", err)
	}
	if len(ids) != 1 || ids[0] != s.ID {
		t.Errorf("sessions of %s = %v, want [%s]", pi.ID, ids, s.ID)
	}
}

func TestSession_ListRefusesFiltersItDoesNotModel(t *testing.T) {
	h := newHarness(t)
	it := h.sc.CheckoutSessions.List(&stripego.CheckoutSessionListParams{Subscription: stripego.String("sub_1")})
	for it.Next() {
		t.Errorf("listed %s", it.CheckoutSession().ID)
	}
	if se := stripeErr(t, it.Err()); se.Param != "subscription" {
		t.Errorf("error param %q: %s", se.Param, se.Msg)
	}
}

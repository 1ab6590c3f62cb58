package emulator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	stripego "github.com/stripe/stripe-go/v76"

	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

func TestIdempotency_ReplaysStoredResponseByteForByte(t *testing.T) {
	h := newHarness(t)
	newCustomer := func(email string) (*stripego.Customer, error) {
		p := &stripego.CustomerParams{Email: stripego.String(email), Metadata: map[string]string{"userId": "u1"}}
		p.SetIdempotencyKey("customer-uid-1:create_customer")
		return h.sc.Customers.New(p)
	}
	first, err := newCustomer("a@example.com")
	if err != nil {
		t.Fatalf("first create: %v", err)
	}
	second, err := newCustomer("a@example.com")
	if err != nil {
		t.Fatalf("replayed create: %v", err)
	}
	if second.ID != first.ID {
		t.Errorf("replay created a second customer: %s then %s", first.ID, second.ID)
	}
	if got := second.LastResponse.Header.Get("Idempotent-Replayed"); got != "true" {
		t.Errorf("Idempotent-Replayed = %q, want true", got)
	}
	if first.LastResponse.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("first answer marked as replayed")
	}
	if !bytes.Equal(first.LastResponse.RawJSON, second.LastResponse.RawJSON) {
		t.Errorf("replayed body differs:\n%s\n%s", first.LastResponse.RawJSON, second.LastResponse.RawJSON)
	}
	if n := h.em.State().Counts["customers"]; n != 1 {
		t.Errorf("%d customers exist, want 1", n)
	}

	_, err = newCustomer("b@example.com")
	se := stripeErr(t, err)
	if se.Type != stripego.ErrorTypeIdempotency || se.HTTPStatusCode != http.StatusBadRequest {
		t.Errorf("same key, other params: %d %s %s", se.HTTPStatusCode, se.Type, se.Msg)
	}
	var idem *stripego.IdempotencyError
	if !errors.As(err, &idem) {
		t.Errorf("error does not unwrap to *stripe.IdempotencyError: %T", se.Err)
	}
}

func TestIdempotency_SameKeyOnOtherEndpointIsRejected(t *testing.T) {
	h := newHarness(t)
	p := &stripego.ProductParams{Name: stripego.String("Video")}
	p.SetIdempotencyKey("shared-key")
	if _, err := h.sc.Products.New(p); err != nil {
		t.Fatalf("creating product: %v", err)
	}
	c := &stripego.CustomerParams{}
	c.SetIdempotencyKey("shared-key")
	_, err := h.sc.Customers.New(c)
	if se := stripeErr(t, err); se.Type != stripego.ErrorTypeIdempotency || !strings.Contains(se.Msg, "same endpoint") {
		t.Errorf("got %s: %s", se.Type, se.Msg)
	}
}

func TestIdempotency_ValidationErrorIsNotStored(t *testing.T) {
	h := newHarness(t)
	p := &stripego.ProductParams{}
	p.SetIdempotencyKey("product-uid:create")
	if _, err := h.sc.Products.New(p); err == nil {
		t.Fatalf("product without a name was created")
	}
	// Stripe does not store results of requests that failed validation: the
	// fixed request with the same key goes through.
	p.Name = stripego.String("Video")
	got, err := h.sc.Products.New(p)
	if err != nil || got.LastResponse.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("fixed request: %v, replayed=%q", err, got.LastResponse.Header.Get("Idempotent-Replayed"))
	}
}

func TestErrors_ResourceMissingDecodesIntoStripeError(t *testing.T) {
	h := newHarness(t)
	_, err := h.sc.CheckoutSessions.Get("cs_test_missing", nil)
	se := stripeErr(t, err)
	if se.HTTPStatusCode != http.StatusNotFound || se.Type != stripego.ErrorTypeInvalidRequest ||
		se.Code != stripego.ErrorCodeResourceMissing || se.Param != "id" ||
		se.Msg != "No such checkout.session: 'cs_test_missing'" {
		t.Errorf("got %+v", se)
	}
	if !strings.HasPrefix(se.RequestID, "req_") || se.DocURL == "" {
		t.Errorf("request id %q doc url %q", se.RequestID, se.DocURL)
	}
	var inv *stripego.InvalidRequestError
	if !errors.As(err, &inv) {
		t.Errorf("error does not unwrap to *stripe.InvalidRequestError")
	}
	for name, get := range map[string]func() error{
		"payment_intent": func() error { _, err := h.sc.PaymentIntents.Get("pi_missing", nil); return err },
		"charge":         func() error { _, err := h.sc.Charges.Get("ch_missing", nil); return err },
		"refund":         func() error { _, err := h.sc.Refunds.Get("re_missing", nil); return err },
		"customer":       func() error { _, err := h.sc.Customers.Get("cus_missing", nil); return err },
		"price":          func() error { _, err := h.sc.Prices.Get("price_missing", nil); return err },
		"event":          func() error { _, err := h.sc.Events.Get("evt_missing", nil); return err },
	} {
		if se := stripeErr(t, get()); se.Code != stripego.ErrorCodeResourceMissing || se.HTTPStatusCode != 404 {
			t.Errorf("%s: %d %s", name, se.HTTPStatusCode, se.Code)
		}
	}
}

func TestErrors_AuthenticationFailures(t *testing.T) {
	h := newHarness(t, func(o *emulator.Options) { o.APIKey = "sk_test_the_only_key" })
	for name, key := range map[string]string{"wrong key": "sk_test_another_key_1234", "live key": "sk_live_1234567890abcd"} {
		_, err := newStripeClient(h.srv, key, nil).Customers.New(&stripego.CustomerParams{})
		se := stripeErr(t, err)
		if se.HTTPStatusCode != http.StatusUnauthorized || se.Type != stripego.ErrorTypeInvalidRequest {
			t.Errorf("%s: %d %s", name, se.HTTPStatusCode, se.Type)
		}
		if strings.Contains(se.Msg, key) {
			t.Errorf("%s: error message echoes the key: %s", name, se.Msg)
		}
	}
	if _, err := newStripeClient(h.srv, "sk_test_the_only_key", nil).Customers.New(&stripego.CustomerParams{}); err != nil {
		t.Errorf("configured key refused: %v", err)
	}
	if code, _ := send(t, http.MethodPost, h.srv.URL+"/v1/customers", "application/x-www-form-urlencoded", "", nil); code != http.StatusUnauthorized {
		t.Errorf("no key: %d, want 401", code)
	}
}

func TestErrors_UnrecognizedURLIsStripeShaped(t *testing.T) {
	h := newHarness(t)
	for _, req := range []struct{ method, path string }{{"GET", "/v1/nope"}, {"DELETE", "/v1/customers/cus_1"}} {
		code, raw := send(t, req.method, h.srv.URL+req.path, "", "", http.Header{"Authorization": {"Bearer " + testKey}})
		var body struct {
			Error struct{ Type, Message string }
		}
		_ = json.Unmarshal(raw, &body)
		if code != 404 || body.Error.Type != "invalid_request_error" || !strings.Contains(body.Error.Message, "Unrecognized request URL") {
			t.Errorf("%s %s: %d %+v", req.method, req.path, code, body)
		}
	}
}

func TestCatalog_ProductAndPriceLifecycle(t *testing.T) {
	h := newHarness(t)
	prod, err := h.sc.Products.New(&stripego.ProductParams{
		Name: stripego.String("Channel 7"), Description: stripego.String("all videos"),
		Metadata: map[string]string{"payToViewProductId": "channel-7", "keep": "x"},
	})
	if err != nil {
		t.Fatalf("creating product: %v", err)
	}
	if !prod.Active || prod.Name != "Channel 7" || prod.Metadata["payToViewProductId"] != "channel-7" {
		t.Errorf("product %+v", prod)
	}
	pr, err := h.sc.Prices.New(&stripego.PriceParams{Product: stripego.String(prod.ID), UnitAmount: stripego.Int64(499), Currency: stripego.String("usd")})
	if err != nil {
		t.Fatalf("creating price: %v", err)
	}
	if pr.Type != stripego.PriceTypeOneTime || pr.UnitAmount != 499 || pr.Product.ID != prod.ID || !pr.Active {
		t.Errorf("price %+v", pr)
	}

	upd := &stripego.ProductParams{Name: stripego.String("Channel Seven"), Active: stripego.Bool(false)}
	upd.AddMetadata("keep", "")
	upd.AddMetadata("new", "y")
	got, err := h.sc.Products.Update(prod.ID, upd)
	if err != nil {
		t.Fatalf("updating product: %v", err)
	}
	if got.Active || got.Name != "Channel Seven" || got.Description != "all videos" {
		t.Errorf("updated product %+v", got)
	}
	if _, kept := got.Metadata["keep"]; kept || got.Metadata["new"] != "y" || got.Metadata["payToViewProductId"] != "channel-7" {
		t.Errorf("metadata after update %v: want keep unset, new added, others kept", got.Metadata)
	}

	archived, err := h.sc.Prices.Update(pr.ID, &stripego.PriceParams{Active: stripego.Bool(false)})
	if err != nil || archived.Active {
		t.Fatalf("archiving price: %v, active=%v", err, archived.Active)
	}
	fetched, err := h.sc.Prices.Get(pr.ID, nil)
	if err != nil || fetched.Active || fetched.UnitAmount != 499 {
		t.Errorf("fetched archived price %+v, %v", fetched, err)
	}
	_, err = h.sc.Prices.Update(pr.ID, &stripego.PriceParams{UnitAmount: stripego.Int64(1)})
	if se := stripeErr(t, err); se.Code != "parameter_unknown" {
		t.Errorf("changing a price's amount: %s %s", se.Code, se.Msg)
	}
	_, err = h.sc.Prices.New(&stripego.PriceParams{Product: stripego.String("prod_nope"), UnitAmount: stripego.Int64(1), Currency: stripego.String("usd")})
	if se := stripeErr(t, err); se.Code != stripego.ErrorCodeResourceMissing || se.Param != "product" {
		t.Errorf("price of a missing product: %s %s", se.Code, se.Param)
	}
}

func TestFaults_ServerErrorIsSavedUnderTheIdempotencyKey(t *testing.T) {
	h := newHarness(t)
	pr := h.catalog(100)
	cu := h.customer()
	if _, err := h.em.AddFault(emulator.Fault{Operation: "create_checkout_session", Status: 500, Count: 1}); err != nil {
		t.Fatal(err)
	}
	params := func(key string) *stripego.CheckoutSessionParams {
		p := sessionParams(pr.ID, cu.ID, "ptv-1", h.em.Now().Add(time.Hour))
		p.SetIdempotencyKey(key)
		return p
	}
	_, err := h.sc.CheckoutSessions.New(params("purchase-uid:create_checkout_session"))
	se := stripeErr(t, err)
	if se.HTTPStatusCode != 500 || se.Type != stripego.ErrorTypeAPI {
		t.Errorf("faulted create: %d %s", se.HTTPStatusCode, se.Type)
	}
	if len(h.em.Faults()) != 0 {
		t.Errorf("a count-1 fault is still installed: %+v", h.em.Faults())
	}
	// Like Stripe, the 500 is the key's answer from now on, although the
	// fault is used up.
	for i := 0; i < 2; i++ {
		_, err = h.sc.CheckoutSessions.New(params("purchase-uid:create_checkout_session"))
		se = stripeErr(t, err)
		if se.HTTPStatusCode != 500 || se.LastResponse.Header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("retry %d with the same key: %d, replayed %q; want the saved 500", i, se.HTTPStatusCode, se.LastResponse.Header.Get("Idempotent-Replayed"))
		}
	}
	if n := h.em.State().Counts["sessions"]; n != 0 {
		t.Errorf("a fault before processing created %d sessions", n)
	}
	s, err := h.sc.CheckoutSessions.New(params("purchase-uid:create_checkout_session#1"))
	if err != nil {
		t.Fatalf("a new key after the fault: %v", err)
	}
	if s.LastResponse.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("the new key was a replay")
	}
	if n := h.em.State().Counts["sessions"]; n != 1 {
		t.Errorf("%d sessions, want 1", n)
	}
}

func TestFaults_ServerErrorWithoutKeyIsNotSaved(t *testing.T) {
	h := newHarness(t)
	if _, err := h.em.AddFault(emulator.Fault{Operation: "create_customer", Status: 503, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.sc.Customers.New(&stripego.CustomerParams{}); stripeErr(t, err).HTTPStatusCode != 503 {
		t.Fatalf("faulted call: %v", err)
	}
	if _, err := h.sc.Customers.New(&stripego.CustomerParams{}); err != nil {
		t.Fatalf("second call: %v", err)
	}
	if n := h.em.State().Counts["customers"]; n != 1 {
		t.Errorf("%d customers, want 1", n)
	}
}

func TestFaults_ServerErrorAfterProcessingSavesTheErrorNotTheWork(t *testing.T) {
	h := newHarness(t)
	if _, err := h.em.AddFault(emulator.Fault{Operation: "create_customer", Status: 500, AfterProcessing: true, Count: 1}); err != nil {
		t.Fatal(err)
	}
	p := &stripego.CustomerParams{}
	p.SetIdempotencyKey("k-500-after")
	for i := 0; i < 2; i++ {
		_, err := h.sc.Customers.New(p)
		if se := stripeErr(t, err); se.HTTPStatusCode != 500 || (i > 0) != (se.LastResponse.Header.Get("Idempotent-Replayed") == "true") {
			t.Fatalf("call %d: %d, replayed %q", i, se.HTTPStatusCode, se.LastResponse.Header.Get("Idempotent-Replayed"))
		}
	}
	// Stripe did the work before failing: the customer exists although no
	// answer ever named it.
	if n := h.em.State().Counts["customers"]; n != 1 {
		t.Errorf("%d customers, want the 1 created before the failure", n)
	}
}

func TestFaults_RateLimitAndLockTimeoutAreNotSaved(t *testing.T) {
	h := newHarness(t)
	for _, f := range []emulator.Fault{
		{Operation: "create_customer", Status: 429, Count: 1},
		{Operation: "create_customer", Status: 429, Code: "lock_timeout", Count: 1},
	} {
		if _, err := h.em.AddFault(f); err != nil {
			t.Fatal(err)
		}
	}
	p := &stripego.CustomerParams{}
	p.SetIdempotencyKey("k-429")
	for i := 0; i < 2; i++ {
		if _, err := h.sc.Customers.New(p); stripeErr(t, err).HTTPStatusCode != 429 {
			t.Fatalf("call %d: %v, want 429", i, err)
		}
	}
	got, err := h.sc.Customers.New(p)
	if err != nil || got.LastResponse.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("the same key after the 429s: %v; want a first run", err)
	}
}

func TestFaults_ReplayIsNotFailedByAServerErrorFault(t *testing.T) {
	h := newHarness(t)
	p := &stripego.CustomerParams{}
	p.SetIdempotencyKey("k-replay")
	first, err := h.sc.Customers.New(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.em.AddFault(emulator.Fault{Operation: "create_customer", Status: 500, Count: 1}); err != nil {
		t.Fatal(err)
	}
	got, err := h.sc.Customers.New(p)
	if err != nil || got.ID != first.ID || got.LastResponse.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay under a 500 fault: %v; want customer %s replayed", err, first.ID)
	}
	if f := h.em.Faults(); len(f) != 1 || f[0].Count != 1 {
		t.Fatalf("faults %+v: a replay used the fault up", f)
	}
	if _, err := h.sc.Customers.New(&stripego.CustomerParams{}); stripeErr(t, err).HTTPStatusCode != 500 {
		t.Fatalf("the next request that runs: %v, want the 500", err)
	}
}

func TestFaults_RateLimitCarriesRetryAfter(t *testing.T) {
	h := newHarness(t)
	var flt emulator.Fault
	code, body := h.helper("/_emulator/v1/faults", map[string][]string{
		"operation": {"POST /v1/customers"}, "status": {"429"}, "retry_after": {"3"}, "count": {"2"},
	}, &flt)
	if code != http.StatusOK || flt.ID == "" {
		t.Fatalf("installing fault: %d %s", code, body)
	}
	for i := 0; i < 2; i++ {
		_, err := h.sc.Customers.New(&stripego.CustomerParams{})
		se := stripeErr(t, err)
		if se.HTTPStatusCode != http.StatusTooManyRequests || se.Code != stripego.ErrorCodeRateLimit {
			t.Errorf("attempt %d: %d %s", i, se.HTTPStatusCode, se.Code)
		}
		if got := se.LastResponse.Header.Get("Retry-After"); got != "3" {
			t.Errorf("Retry-After = %q, want 3", got)
		}
	}
	if _, err := h.sc.Customers.New(&stripego.CustomerParams{}); err != nil {
		t.Errorf("third call, fault used up: %v", err)
	}
	// Faults on other operations do not leak.
	if _, err := h.em.AddFault(emulator.Fault{Operation: "create_refund", Status: 503}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.sc.Customers.New(&stripego.CustomerParams{}); err != nil {
		t.Errorf("fault on create_refund hit create_customer: %v", err)
	}
	if code, body := send(t, http.MethodDelete, h.srv.URL+"/_emulator/v1/faults", "", "", nil); code != 200 {
		t.Fatalf("clearing faults: %d %s", code, body)
	}
	if len(h.em.Faults()) != 0 {
		t.Errorf("faults left after DELETE: %+v", h.em.Faults())
	}
}

func TestFaults_DelayTimesOutClientButRequestTookEffect(t *testing.T) {
	h := newHarness(t)
	if _, err := h.em.AddFault(emulator.Fault{Operation: "create_customer", DelayMS: 2000, Count: 1}); err != nil {
		t.Fatal(err)
	}
	impatient := newStripeClient(h.srv, testKey, &http.Client{Timeout: 300 * time.Millisecond})
	p := &stripego.CustomerParams{Email: stripego.String("slow@example.com")}
	p.SetIdempotencyKey("customer-uid-9:create_customer")
	if _, err := impatient.Customers.New(p); err == nil {
		t.Fatalf("the delayed call did not time out")
	}
	// Stripe created the customer although the client never saw it; the
	// retry with the same key gets that customer, not a second one. A retry
	// that overtakes the first request is told to come back (409), as
	// Stripe does.
	var got *stripego.Customer
	deadline := time.Now().Add(waitLimit)
	for {
		var err error
		got, err = h.sc.Customers.New(p)
		if err == nil {
			break
		}
		if se := stripeErr(t, err); se.HTTPStatusCode != http.StatusConflict || time.Now().After(deadline) {
			t.Fatalf("retry: %v", err)
		}
	}
	if got.LastResponse.Header.Get("Idempotent-Replayed") != "true" || got.Email != "slow@example.com" {
		t.Errorf("retry was not a replay of the timed-out create: %+v", got)
	}
	if n := h.em.State().Counts["customers"]; n != 1 {
		t.Errorf("%d customers, want 1", n)
	}
}

func TestFaults_ProxyAnswerAfterProcessingLeavesTheRealResultUnderTheKey(t *testing.T) {
	h := newHarness(t)
	var flt emulator.Fault
	code, body := h.helper("/_emulator/v1/faults", map[string][]string{
		"operation": {"POST /v1/customers"}, "status": {"502"}, "proxy": {"true"}, "after_processing": {"true"}, "count": {"1"},
	}, &flt)
	if code != http.StatusOK || !flt.Proxy || !flt.AfterProcessing {
		t.Fatalf("installing fault: %d %s", code, body)
	}
	p := &stripego.CustomerParams{}
	p.SetIdempotencyKey("k-after")
	_, err := h.sc.Customers.New(p)
	var se *stripego.Error
	if err == nil || errors.As(err, &se) || !strings.Contains(err.Error(), "502") {
		t.Fatalf("faulted call: %v (%T), want an unparsable 502 that is no Stripe error", err, err)
	}
	got, err := h.sc.Customers.New(p)
	if err != nil || got.LastResponse.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: %v", err)
	}
	if st := h.em.State(); st.Counts["customers"] != 1 || st.Customers[0].ID != got.ID {
		t.Errorf("state %+v, want the one customer %s", st.Customers, got.ID)
	}
}

func TestFaults_RejectsInvalidDefinitions(t *testing.T) {
	h := newHarness(t)
	for _, f := range []emulator.Fault{
		{Status: 500},
		{Operation: "*"},
		{Operation: "*", Status: 200},
		{Operation: "*", Status: 500, Rate: 2},
		{Operation: "*", DelayMS: 10, Proxy: true},
	} {
		if _, err := h.em.AddFault(f); err == nil {
			t.Errorf("fault %+v accepted", f)
		}
	}
	faults := h.srv.URL + "/_emulator/v1/faults"
	if code, _ := send(t, http.MethodPost, faults, "application/json", `{"operation":"*","status":500,"bogus":1}`, nil); code != http.StatusBadRequest {
		t.Errorf("unknown JSON field: %d, want 400", code)
	}
	if code, b := send(t, http.MethodPost, faults, "application/json", `{"operation":"get_checkout_session","delay_ms":10,"count":1}`, nil); code != http.StatusOK {
		t.Errorf("valid JSON fault: %d %s", code, b)
	}
}

func TestEvents_ListNewestFirstWithFiltersAndPaging(t *testing.T) {
	h := newHarness(t)
	var sessions []string
	for i := 0; i < 5; i++ {
		s, _ := h.paidSession()
		sessions = append(sessions, s.ID)
	}
	p := &stripego.EventListParams{Type: stripego.String("checkout.session.completed")}
	p.Limit = stripego.Int64(2)
	it := h.sc.Events.List(p)
	var got []string
	for it.Next() {
		ev := it.Event()
		if ev.Type != "checkout.session.completed" {
			t.Errorf("type filter let %s through", ev.Type)
		}
		got = append(got, ev.Data.Object["id"].(string))
	}
	if err := it.Err(); err != nil {
		t.Fatalf("listing: %v", err)
	}
	want := []string{sessions[4], sessions[3], sessions[2], sessions[1], sessions[0]}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("paged list %v, want newest first %v", got, want)
	}

	wild := &stripego.EventListParams{Type: stripego.String("checkout.session.*")}
	wild.Single = true
	it = h.sc.Events.List(wild)
	n := 0
	for it.Next() {
		n++
	}
	if n != 5 {
		t.Errorf("wildcard type matched %d events, want 5", n)
	}

	future := &stripego.EventListParams{CreatedRange: &stripego.RangeQueryParams{GreaterThan: h.em.Now().Unix() + 60}}
	it = h.sc.Events.List(future)
	if it.Next() {
		t.Errorf("created[gt] in the future matched %s", it.Event().ID)
	}

	last := h.em.State().Events
	ev, err := h.sc.Events.Get(last[len(last)-1].ID, nil)
	if err != nil || ev.Type != "checkout.session.completed" || ev.Data.Object["id"] != sessions[4] {
		t.Errorf("retrieving the last event: %v, %v", ev, err)
	}
}

func TestConcurrency_ParallelCreatesAndPays(t *testing.T) {
	h := newHarness(t, func(o *emulator.Options) { o.WebhookConcurrency = 4 })
	pr := h.catalog(250)
	const n = 40
	var wg sync.WaitGroup
	ids := make([]string, n)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cp := &stripego.CustomerParams{}
			cp.SetIdempotencyKey(fmt.Sprintf("customer-%d", i))
			cu, err := h.sc.Customers.New(cp)
			if err != nil {
				errs <- err
				return
			}
			ref := fmt.Sprintf("ptv-%d", i)
			sp := sessionParams(pr.ID, cu.ID, ref, h.em.Now().Add(time.Hour))
			sp.PaymentIntentData.Metadata = map[string]string{"payToViewPurchaseId": ref}
			sp.SetIdempotencyKey("purchase-uid-" + ref)
			s, err := h.sc.CheckoutSessions.New(sp)
			if err != nil {
				errs <- err
				return
			}
			// A retry of the same create replays; it never makes a
			// second session.
			if dup, err := h.sc.CheckoutSessions.New(sp); err == nil && dup.ID != s.ID {
				errs <- fmt.Errorf("duplicate create made session %s besides %s", dup.ID, s.ID)
				return
			}
			if _, err := h.em.Pay(s.ID, emulator.PayOptions{}); err != nil {
				errs <- err
				return
			}
			ids[i] = s.ID
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := h.em.State()
	if st.Counts["sessions"] != n || st.Counts["customers"] != n || st.Counts["paid_charges"] != n {
		t.Errorf("counts %v, want %d sessions, customers and paid charges", st.Counts, n)
	}
	for ref, sessions := range st.SessionsByClientReference {
		if len(sessions) != 1 {
			t.Errorf("%s has sessions %v", ref, sessions)
		}
	}
	byPurchase := st.PaidChargesByMetadata("payToViewPurchaseId")
	if len(byPurchase) != n {
		t.Errorf("paid charges of %d purchases, want %d", len(byPurchase), n)
	}
	for purchase, charges := range byPurchase {
		if len(charges) != 1 {
			t.Errorf("purchase %s paid %d times", purchase, len(charges))
		}
	}
	h.recv.waitFor(t, "all completed events", func(evs []stripego.Event) bool { return len(evs) == n })
	seen := map[string]bool{}
	for _, ev := range h.recv.snapshot() {
		seen[ev.Data.Object["id"].(string)] = true
	}
	for _, id := range ids {
		if !seen[id] {
			t.Errorf("no completed event for %s", id)
		}
	}
}

func TestStateEndpoint_ReportsSessionsAndDeliveries(t *testing.T) {
	h := newHarness(t)
	s, pi := h.paidSession()
	waitWebhooks(t, h.em)
	_, raw := send(t, http.MethodGet, h.srv.URL+"/_emulator/v1/state", "", "", nil)
	var st emulator.State
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("decoding state: %v", err)
	}
	if got := st.SessionsByClientReference["ptv-abc12"]; len(got) != 1 || got[0] != s.ID {
		t.Errorf("sessions by reference %v", st.SessionsByClientReference)
	}
	if got := st.ChargesByCustomer[s.Customer.ID]; len(got) != 1 || got[0] != pi.LatestCharge.ID {
		t.Errorf("charges by customer %v", st.ChargesByCustomer)
	}
	if st.Counts["deliveries_delivered"] != 1 || len(st.Deliveries) != 1 || st.Deliveries[0].EventType != "checkout.session.completed" {
		t.Errorf("deliveries %+v counts %v", st.Deliveries, st.Counts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := h.em.WaitForWebhooks(ctx); err != nil {
		t.Errorf("WaitForWebhooks with nothing pending: %v", err)
	}
}

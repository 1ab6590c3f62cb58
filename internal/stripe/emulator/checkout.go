package emulator

import (
	"container/heap"
	"encoding/json"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// Checkout Session states, as on the wire.
const (
	sessionOpen     = "open"
	sessionComplete = "complete"
	sessionExpired  = "expired"

	paymentPaid   = "paid"
	paymentUnpaid = "unpaid"
)

// Stripe's bounds for a Checkout Session's expires_at.
const (
	minSessionLifetime = 30 * time.Minute
	maxSessionLifetime = 24 * time.Hour
)

// createSession validates what the operator's flow depends on and what Stripe
// itself rejects for embedded, payment-mode sessions; everything else that
// stripe-go can send is accepted and ignored.
func (e *Emulator) createSession(c *call) ([]byte, *apiError) {
	f := c.form
	switch mode := f.str("mode"); mode {
	case "":
		return nil, missingParam("mode")
	case "payment":
	default:
		return nil, invalidRequest("mode", "The emulator supports mode=payment only; got %q.", mode)
	}
	if ui := f.str("ui_mode"); ui != "embedded" {
		return nil, invalidRequest("ui_mode", "The emulator supports embedded Checkout only (ui_mode=embedded); got ui_mode=%q.", ui)
	}
	for _, p := range []string{"success_url", "cancel_url"} {
		if f.str(p) != "" {
			return nil, invalidRequest(p, "You cannot pass `%s` when `ui_mode` is `embedded`.", p)
		}
	}
	redirect := f.str("redirect_on_completion")
	returnURL := f.str("return_url")
	switch redirect {
	case "", "always", "if_required", "never":
	default:
		return nil, invalidRequest("redirect_on_completion", "Invalid redirect_on_completion: must be one of always, if_required, or never.")
	}
	if redirect == "" {
		redirect = "always"
	}
	if redirect == "never" && returnURL != "" {
		return nil, invalidRequest("return_url", "You cannot pass `return_url` when `redirect_on_completion` is `never`.")
	}
	if redirect != "never" && returnURL == "" {
		return nil, invalidRequestCode("parameter_missing", "return_url",
			"Missing required param: return_url. It is required when `ui_mode` is `embedded` and `redirect_on_completion` is `%s`.", redirect)
	}
	if returnURL != "" {
		if u, err := url.Parse(returnURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, invalidRequestCode("url_invalid", "return_url", "Not a valid URL")
		}
	}
	if f.str("customer") != "" && f.str("customer_email") != "" {
		return nil, invalidRequest("customer_email", "You may only specify one of these parameters: customer, customer_email.")
	}
	if ref := f.str("client_reference_id"); utf8.RuneCountInString(ref) > 200 {
		return nil, invalidRequest("client_reference_id", "client_reference_id must be at most 200 characters.")
	}

	idx := f.indices("line_items")
	if len(idx) == 0 {
		return nil, missingParam("line_items")
	}
	items := make([]lineItem, 0, len(idx))
	for _, i := range idx {
		p := "line_items[" + itoa(int64(i)) + "]"
		if f.hasPrefix(p + "[price_data]") {
			return nil, invalidRequest(p+"[price_data]", "The emulator supports line items with a price only; price_data is not supported.")
		}
		pr := f.str(p + "[price]")
		if pr == "" {
			return nil, missingParam(p + "[price]")
		}
		q, set, err := f.int64(p + "[quantity]")
		if err != nil {
			return nil, err
		}
		if !set {
			return nil, invalidRequestCode("parameter_missing", p+"[quantity]", "Quantity is required. Add `quantity` to `%s`.", p)
		}
		if q < 1 || q > 999999 {
			return nil, invalidRequest(p+"[quantity]", "Quantity must be between 1 and 999999.")
		}
		items = append(items, lineItem{price: pr, quantity: q})
	}

	md, err := f.createMetadata("metadata")
	if err != nil {
		return nil, err
	}
	piMD, err := f.createMetadata("payment_intent_data[metadata]")
	if err != nil {
		return nil, err
	}
	expiresAt, expiresSet, err := f.int64("expires_at")
	if err != nil {
		return nil, err
	}

	now := e.lock()
	defer e.mu.Unlock()
	if expiresSet {
		at := time.Unix(expiresAt, 0)
		// Stripe compares against its own clock at creation; a one-second
		// grace keeps "exactly 30 minutes from now" valid across a tick.
		if at.Before(now.Add(minSessionLifetime - time.Second)) {
			return nil, invalidRequest("expires_at", "The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation.")
		}
		if at.After(now.Add(maxSessionLifetime)) {
			return nil, invalidRequest("expires_at", "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.")
		}
	} else {
		expiresAt = now.Add(maxSessionLifetime).Unix()
	}
	cus := f.str("customer")
	if cus != "" {
		if _, ok := e.customers[cus]; !ok {
			return nil, noSuch("customer", cus, "customer")
		}
	}
	var total int64
	currency := ""
	for n, it := range items {
		param := "line_items[" + itoa(int64(idx[n])) + "][price]"
		pr, ok := e.prices[it.price]
		if !ok {
			return nil, noSuch("price", it.price, param)
		}
		if !pr.Active {
			return nil, invalidRequest(param, "The price specified is inactive. This field only accepts active prices.")
		}
		if p, ok := e.products[pr.Product]; ok && !p.Active {
			return nil, invalidRequest(param, "The price specified is set to a product that is inactive. This field only accepts prices of active products.")
		}
		if currency != "" && pr.Currency != currency {
			return nil, invalidRequest(param, "All prices of a Checkout Session must have the same currency.")
		}
		currency = pr.Currency
		total += pr.UnitAmount * it.quantity
	}

	id := newID("cs_test_", 58)
	s := &checkoutSession{
		ID:                    id,
		Object:                "checkout.session",
		AmountSubtotal:        total,
		AmountTotal:           total,
		ClientReferenceID:     nullable(f.str("client_reference_id")),
		Created:               now.Unix(),
		Currency:              currency,
		Customer:              nullable(cus),
		CustomerEmail:         nullable(f.str("customer_email")),
		ExpiresAt:             expiresAt,
		Locale:                nullable(f.str("locale")),
		Metadata:              md,
		Mode:                  "payment",
		PaymentMethodTypes:    []string{"card"},
		PaymentStatus:         paymentUnpaid,
		RedirectOnCompletion:  redirect,
		ReturnURL:             nullable(returnURL),
		Status:                sessionOpen,
		UIMode:                "embedded",
		clientSecret:          id + "_secret_" + newID("", 24),
		paymentIntentMetadata: piMD,
		paymentIntentDesc:     f.str("payment_intent_data[description]"),
		lineItems:             items,
	}
	e.sessions[id] = s
	e.sessionList = append(e.sessionList, s)
	heap.Push(&e.expiry, s)
	// Stripe returns the client secret of an embedded session when it is
	// created; retrieves return null, so callers must keep it.
	out := *s
	out.ClientSecret = &s.clientSecret
	return e.render(&out, c.expand())
}

func (e *Emulator) getSession(c *call) ([]byte, *apiError) {
	return retrieve(e, c, "checkout.session", func() map[string]*checkoutSession { return e.sessions })
}

func (e *Emulator) listSessions(c *call) ([]byte, *apiError) {
	f := c.form
	// Filters the emulator does not model are refused rather than ignored,
	// so a caller never mistakes an unfiltered list for a filtered one.
	for _, unsupported := range []string{"customer_details", "payment_link", "subscription"} {
		if f.hasPrefix(unsupported) {
			return nil, invalidRequest(unsupported, "The emulator does not support filtering Checkout Sessions by %s.", unsupported)
		}
	}
	created, err := rangeFilter(f, "created")
	if err != nil {
		return nil, err
	}
	status := f.str("status")
	switch status {
	case "", sessionOpen, sessionComplete, sessionExpired:
	default:
		return nil, invalidRequest("status", "Invalid status: must be one of open, complete, or expired.")
	}
	cus, pi := f.str("customer"), f.str("payment_intent")
	e.lock()
	defer e.mu.Unlock()
	match := func(s *checkoutSession) bool {
		return created(s.Created) &&
			(status == "" || s.Status == status) &&
			(cus == "" || deref(s.Customer) == cus) &&
			(pi == "" || deref(s.PaymentIntent) == pi)
	}
	page, more, err := paginate(f, e.sessionList, func(s *checkoutSession) string { return s.ID }, match, "checkout.session")
	if err != nil {
		return nil, err
	}
	out := listPage{Object: "list", URL: "/v1/checkout/sessions", HasMore: more, Data: make([]json.RawMessage, 0, len(page))}
	for _, s := range page {
		b, err := e.render(s, stripListExpand(c.expand()))
		if err != nil {
			return nil, err
		}
		out.Data = append(out.Data, b)
	}
	return mustJSON(out), nil
}

func (e *Emulator) expireSession(c *call) ([]byte, *apiError) {
	e.lock()
	defer e.mu.Unlock()
	id := c.r.PathValue("id")
	s, ok := e.sessions[id]
	if !ok {
		return nil, noSuch("checkout.session", id, "id")
	}
	if s.Status != sessionOpen {
		return nil, invalidRequest("", "This Checkout Session has status %s and cannot be expired. Only Checkout Sessions with status open can be expired.", s.Status)
	}
	req := c.eventRequest()
	e.expireSessionLocked(s, &req)
	return e.render(s, c.expand())
}

func (e *Emulator) expireSessionLocked(s *checkoutSession, req *eventRequest) {
	s.Status = sessionExpired
	r := eventRequest{}
	if req != nil {
		r = *req
	}
	e.emitLocked("checkout.session.expired", s, r, nil, nil)
}

// openSessionLocked resolves a session id or its client secret (what the
// browser holds) to a session that can still be paid.
func (e *Emulator) openSessionLocked(idOrSecret string) (*checkoutSession, *apiError) {
	s := e.sessionByIDOrSecretLocked(idOrSecret)
	if s == nil {
		return nil, noSuch("checkout.session", idOrSecret, "id")
	}
	switch s.Status {
	case sessionOpen:
		return s, nil
	case sessionExpired:
		return nil, invalidRequestCode("checkout_session_expired", "", "Checkout Session %s has expired and can no longer be paid.", s.ID)
	default:
		return nil, invalidRequestCode("checkout_session_complete", "", "Checkout Session %s is already complete.", s.ID)
	}
}

func (e *Emulator) sessionByIDOrSecretLocked(v string) *checkoutSession {
	if s, ok := e.sessions[v]; ok {
		return s
	}
	// A client secret is "<session id>_secret_<random>".
	if id, _, ok := strings.Cut(v, "_secret_"); ok {
		if s, ok := e.sessions[id]; ok && subtleEqual(s.clientSecret, v) {
			return s
		}
	}
	return nil
}

// payLocked plays a customer paying with a card that succeeds at once.
func (e *Emulator) payLocked(s *checkoutSession, now time.Time, hook *hookMode) {
	pi := e.newIntentLocked(s, now, "succeeded")
	ch := e.newChargeLocked(pi, now, true)
	pi.AmountReceived = pi.Amount
	s.Status = sessionComplete
	s.PaymentStatus = paymentPaid
	s.PaymentIntent = &pi.ID
	e.emitLocked("charge.succeeded", ch, eventRequest{}, nil, hook)
	e.emitLocked("payment_intent.succeeded", pi, eventRequest{}, nil, hook)
	e.emitLocked("checkout.session.completed", s, eventRequest{}, nil, hook)
}

// payAsyncLocked plays a customer paying with a delayed method (bank
// debit): the session completes unpaid and the payment settles later.
func (e *Emulator) payAsyncLocked(s *checkoutSession, now time.Time, hook *hookMode) {
	pi := e.newIntentLocked(s, now, "processing")
	s.Status = sessionComplete
	s.PaymentStatus = paymentUnpaid
	s.PaymentIntent = &pi.ID
	e.emitLocked("payment_intent.processing", pi, eventRequest{}, nil, hook)
	e.emitLocked("checkout.session.completed", s, eventRequest{}, nil, hook)
}

// settleLocked ends a processing payment of a completed session.
func (e *Emulator) settleLocked(s *checkoutSession, succeeded bool, now time.Time, hook *hookMode) *apiError {
	pi := e.intents[deref(s.PaymentIntent)]
	if s.Status != sessionComplete || pi == nil || pi.Status != "processing" {
		return invalidRequest("", "Checkout Session %s has no asynchronous payment in progress.", s.ID)
	}
	if succeeded {
		ch := e.newChargeLocked(pi, now, true)
		pi.Status = "succeeded"
		pi.AmountReceived = pi.Amount
		s.PaymentStatus = paymentPaid
		e.emitLocked("charge.succeeded", ch, eventRequest{}, nil, hook)
		e.emitLocked("payment_intent.succeeded", pi, eventRequest{}, nil, hook)
		e.emitLocked("checkout.session.async_payment_succeeded", s, eventRequest{}, nil, hook)
		return nil
	}
	ch := e.newChargeLocked(pi, now, false)
	pi.Status = "requires_payment_method"
	pi.LastPaymentError = &lastPaymentError{Code: "payment_method_provider_decline", Message: "The payment was declined by the customer's bank.", Type: "card_error"}
	e.emitLocked("charge.failed", ch, eventRequest{}, nil, hook)
	e.emitLocked("payment_intent.payment_failed", pi, eventRequest{}, nil, hook)
	e.emitLocked("checkout.session.async_payment_failed", s, eventRequest{}, nil, hook)
	return nil
}

func (e *Emulator) newIntentLocked(s *checkoutSession, now time.Time, status string) *paymentIntent {
	id := newID("pi_", 24)
	pi := &paymentIntent{
		ID:                 id,
		Object:             "payment_intent",
		Amount:             s.AmountTotal,
		CaptureMethod:      "automatic",
		ClientSecret:       id + "_secret_" + newID("", 24),
		ConfirmationMethod: "automatic",
		Created:            now.Unix(),
		Currency:           s.Currency,
		Customer:           s.Customer,
		Description:        nullable(s.paymentIntentDesc),
		Metadata:           copyMap(s.paymentIntentMetadata),
		PaymentMethodTypes: []string{"card"},
		Status:             status,
	}
	e.intents[id] = pi
	return pi
}

func (e *Emulator) newChargeLocked(pi *paymentIntent, now time.Time, paid bool) *charge {
	ch := &charge{
		ID:            newID("ch_", 24),
		Object:        "charge",
		Amount:        pi.Amount,
		Created:       now.Unix(),
		Currency:      pi.Currency,
		Customer:      pi.Customer,
		Description:   pi.Description,
		Metadata:      copyMap(pi.Metadata),
		PaymentIntent: &pi.ID,
	}
	if paid {
		ch.AmountCaptured = pi.Amount
		ch.BalanceTransaction = nullable(newID("txn_", 24))
		ch.Captured = true
		ch.Paid = true
		ch.Status = "succeeded"
	} else {
		ch.Status = "failed"
		ch.FailureCode = nullable("payment_method_provider_decline")
		ch.FailureMessage = nullable("The payment was declined by the customer's bank.")
	}
	e.charges[ch.ID] = ch
	pi.LatestCharge = &ch.ID
	return ch
}

func (e *Emulator) getPaymentIntent(c *call) ([]byte, *apiError) {
	return retrieve(e, c, "payment_intent", func() map[string]*paymentIntent { return e.intents })
}

func (e *Emulator) getCharge(c *call) ([]byte, *apiError) {
	return retrieve(e, c, "charge", func() map[string]*charge { return e.charges })
}

package webhookserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/auth"
	"github.com/md-platform/paytoview-operator/internal/index"
	"github.com/md-platform/paytoview-operator/internal/lifecycle"
	"github.com/md-platform/paytoview-operator/internal/naming"
)

// Limits of the client API.
const (
	// maxCreateBody bounds the create request; the three fields fit in a
	// few hundred bytes.
	maxCreateBody = 64 << 10
	// maxEntityIDLen and entityIDPattern are the CRD's rules for entityId,
	// checked here so a bad id is a 400, not an apiserver rejection.
	maxEntityIDLen = 128
	// maxReturnURLLen is the CRD's limit for returnUrl.
	maxReturnURLLen = 2048
	// clientSecretLabel marks the Secrets the Purchase controller writes.
	clientSecretLabel = "paytoview.md-platform.io/client-secret"
	// clientSecretKey is the Secret's data key holding the session's client secret.
	clientSecretKey = "clientSecret"
	// sessionExpiryMargin keeps the API from handing out a session about to
	// expire under the user's fingers.
	sessionExpiryMargin = 2 * time.Minute
	// checkoutRetryAfter is the Retry-After of checkout_not_ready answers.
	checkoutRetryAfter = 2 * time.Second
)

var entityIDPattern = regexp.MustCompile(`^[A-Za-z0-9._~:=+/-]+$`)

// createResponse is the answer of a create: a checkout to mount, or
// hasAccess when the user already has access (success is then false, as the
// seed says).
type createResponse struct {
	Success          bool   `json:"success"`
	HasAccess        bool   `json:"hasAccess"`
	PurchaseID       string `json:"purchaseId"`
	ClientSecret     string `json:"clientSecret,omitempty"`
	StripeCustomerID string `json:"stripeCustomerId,omitempty"`
}

// createInput is a decoded, well-formed create request.
type createInput struct {
	ProductID string
	EntityID  string
	ReturnURL string
}

// createFields are the fields of the create request body.
var createFields = []string{"payToViewProductId", "entityId", "returnUrl"}

// decodeCreateRequest reads one JSON object of at most maxCreateBody bytes
// with exactly the contract's fields, each a non-empty string. Every failure
// is a 400 with a code saying which rule was broken.
func decodeCreateRequest(body io.Reader) (createInput, *apiError) {
	obj, apiErr := decodeObject(body, maxCreateBody, createFields)
	if apiErr != nil {
		return createInput{}, apiErr
	}
	values := make(map[string]string, len(createFields))
	var missing []string
	for _, f := range createFields {
		v, present, apiErr := stringField(obj, f)
		if apiErr != nil {
			return createInput{}, apiErr
		}
		if !present || v == "" {
			missing = append(missing, f)
		}
		values[f] = v
	}
	if len(missing) > 0 {
		return createInput{}, newError(http.StatusBadRequest, CodeMissingField, "missing or empty: "+strings.Join(missing, ", "))
	}
	in := createInput{ProductID: values["payToViewProductId"], EntityID: values["entityId"], ReturnURL: values["returnUrl"]}
	if err := validateEntityID(in.EntityID); err != nil {
		return createInput{}, err
	}
	if len(in.ReturnURL) > maxReturnURLLen {
		return createInput{}, newError(http.StatusBadRequest, CodeInvalidField, fmt.Sprintf("returnUrl is longer than %d characters", maxReturnURLLen))
	}
	return in, nil
}

// decodeObject reads exactly one JSON object of at most limit bytes whose
// keys are all in known, matched exactly (encoding/json alone would match
// keys case-insensitively and let a repeated key silently win; both are
// ways for two parsers to disagree about a request). It returns the raw
// value of each key present.
func decodeObject(body io.Reader, limit int64, known []string) (map[string]json.RawMessage, *apiError) {
	// Read it all first, so an oversize body is reported as such whatever
	// it holds.
	raw, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, newError(http.StatusBadRequest, CodeMalformedJSON, "could not read the body")
	}
	if int64(len(raw)) > limit {
		return nil, newError(http.StatusBadRequest, CodeBodyTooLarge, fmt.Sprintf("the body is larger than %d bytes", limit))
	}
	obj, err := scanObject(json.NewDecoder(bytes.NewReader(raw)), known)
	if err == nil {
		return obj, nil
	}
	var apiErr *apiError
	if errors.As(err, &apiErr) {
		return nil, apiErr
	}
	if errors.Is(err, io.EOF) {
		return nil, newError(http.StatusBadRequest, CodeMalformedJSON, "the body is empty or cut short; send one JSON object")
	}
	return nil, newError(http.StatusBadRequest, CodeMalformedJSON, "the body is not valid JSON")
}

func scanObject(dec *json.Decoder, known []string) (map[string]json.RawMessage, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, newError(http.StatusBadRequest, CodeMalformedJSON, "the body must be a JSON object")
	}
	obj := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, newError(http.StatusBadRequest, CodeMalformedJSON, "the body is not valid JSON")
		}
		if !slices.Contains(known, key) {
			return nil, newError(http.StatusBadRequest, CodeUnknownField, "unknown field "+strconv.Quote(sanitise(key, 80)))
		}
		if _, dup := obj[key]; dup {
			return nil, newError(http.StatusBadRequest, CodeMalformedJSON, "field "+strconv.Quote(key)+" is given twice")
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		obj[key] = raw
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	// Exactly one value: anything but whitespace after it is an error.
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			return nil, newError(http.StatusBadRequest, CodeMalformedJSON, "the body must hold exactly one JSON object")
		}
		return nil, err
	}
	return obj, nil
}

// stringField reads a string field of a decoded object; null counts as absent.
func stringField(obj map[string]json.RawMessage, name string) (value string, present bool, apiErr *apiError) {
	raw, ok := obj[name]
	if !ok || string(raw) == "null" {
		return "", false, nil
	}
	if err := json.Unmarshal(raw, &value); err != nil {
		return "", false, newError(http.StatusBadRequest, CodeInvalidField, name+" must be a string")
	}
	return value, true, nil
}

// sanitise makes a client-supplied string safe to echo in a message: valid
// UTF-8, no control characters, at most max bytes.
func sanitise(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, ""))
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func validateEntityID(id string) *apiError {
	const field = "entityId"
	if id == "" {
		return newError(http.StatusBadRequest, CodeMissingField, field+" is required")
	}
	if len(id) > maxEntityIDLen || !entityIDPattern.MatchString(id) {
		return newError(http.StatusBadRequest, CodeInvalidField,
			fmt.Sprintf("%s must be 1 to %d characters of A-Z a-z 0-9 . _ ~ : = + / -", field, maxEntityIDLen))
	}
	return nil
}

// validReturnURL accepts an absolute https URL (http only for a loopback
// host) whose origin is one of the allowed ones. The checks are the ones an
// open redirect exploits: userinfo (https://good@evil), backslashes that
// browsers read as slashes, schemes other than http(s), mismatched hosts.
func (s *Server) validReturnURL(raw string) *apiError {
	bad := func(why string) *apiError {
		return newError(http.StatusUnprocessableEntity, CodeInvalidReturnURL, "returnUrl "+why)
	}
	if strings.ContainsAny(raw, "\\ \t\r\n") {
		return bad("must not contain spaces or backslashes")
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Opaque != "" || u.Host == "" {
		return bad("must be an absolute URL")
	}
	if u.User != nil {
		return bad("must not contain user information")
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	default:
		return bad("must use https")
	}
	if !s.returnOrigins[originOf(u)] {
		return bad("must be under one of the site's allowed origins")
	}
	return nil
}

// authenticate answers 401 when the request has no valid bearer token.
// Reasons from the authenticator are safe to return; tokens never appear in
// answers or logs.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (auth.Principal, bool) {
	p, err := s.opts.Auth.Authenticate(r)
	if err == nil {
		return p, true
	}
	log := logr.FromContextOrDiscard(r.Context())
	e := newError(http.StatusUnauthorized, CodeUnauthorized, "a valid bearer token is required")
	e.header = http.Header{}
	var tokErr *auth.TokenError
	switch {
	case errors.Is(err, auth.ErrMissingToken):
		e.header.Set("WWW-Authenticate", `Bearer realm="paytoview"`)
	case errors.As(err, &tokErr):
		e.message = "invalid bearer token: " + tokErr.Reason
		e.header.Set("WWW-Authenticate", `Bearer realm="paytoview", error="invalid_token"`)
		log.V(1).Info("rejected bearer token", "reason", tokErr.Reason)
	default:
		e.header.Set("WWW-Authenticate", `Bearer realm="paytoview", error="invalid_token"`)
		log.Info("could not verify bearer token", "error", err.Error())
	}
	writeError(w, e)
	return auth.Principal{}, false
}

// hasAccess is the one access rule of the project (lifecycle.Access).
func hasAccess(p *v1alpha1.Purchase, now time.Time) bool {
	ok, _ := lifecycle.Access(p, now)
	return ok
}

// phaseOf treats a Purchase the controller has not seen yet as Pending.
func phaseOf(p *v1alpha1.Purchase) v1alpha1.PurchasePhase {
	if p.Status.Phase == "" {
		return v1alpha1.PurchasePending
	}
	return p.Status.Phase
}

// listByUserEntity reads a user's purchases of one entity from the cache.
// The objects are the cache's own: read only.
func (s *Server) listByUserEntity(ctx context.Context, userID, entityID string) ([]v1alpha1.Purchase, error) {
	var list v1alpha1.PurchaseList
	err := s.opts.Client.List(ctx, &list, client.InNamespace(s.opts.Namespace),
		client.MatchingFields{index.PurchaseByUserEntity: index.UserEntityKey(userID, entityID)},
		client.UnsafeDisableDeepCopy)
	if err != nil {
		return nil, fmt.Errorf("listing Purchases of user and entity from the cache: %w", err)
	}
	return list.Items, nil
}

// listByUser reads all of a user's purchases from the cache (read only).
func (s *Server) listByUser(ctx context.Context, userID string) ([]v1alpha1.Purchase, error) {
	var list v1alpha1.PurchaseList
	err := s.opts.Client.List(ctx, &list, client.InNamespace(s.opts.Namespace),
		client.MatchingFields{index.PurchaseByUser: userID}, client.UnsafeDisableDeepCopy)
	if err != nil {
		return nil, fmt.Errorf("listing Purchases of user from the cache: %w", err)
	}
	return list.Items, nil
}

// bestAccess is the purchase granting access that lasts longest (lifetime
// beats any date), or nil.
func bestAccess(items []v1alpha1.Purchase, now time.Time) *v1alpha1.Purchase {
	var best *v1alpha1.Purchase
	for i := range items {
		p := &items[i]
		if !hasAccess(p, now) {
			continue
		}
		if best == nil || lastsLonger(p, best) {
			best = p
		}
	}
	return best
}

func lastsLonger(a, b *v1alpha1.Purchase) bool {
	switch {
	case b.Status.ExpiresAt == nil:
		return false
	case a.Status.ExpiresAt == nil:
		return true
	default:
		return a.Status.ExpiresAt.After(b.Status.ExpiresAt.Time)
	}
}

// createPurchase serves POST /client/v1/pay-to-view/purchases.
func (s *Server) createPurchase(w http.ResponseWriter, r *http.Request) {
	principal, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	log := logr.FromContextOrDiscard(ctx)
	in, apiErr := decodeCreateRequest(r.Body)
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	if apiErr := s.validReturnURL(in.ReturnURL); apiErr != nil {
		writeError(w, apiErr)
		return
	}

	// Access is per entity, whatever product sold it: someone who has
	// access is told so even if this product is gone.
	existing, err := s.listByUserEntity(ctx, principal.UserID, in.EntityID)
	if err != nil {
		writeError(w, unavailableError(log, err, "could not read purchases"))
		return
	}
	if p := bestAccess(existing, s.opts.Clock.Now()); p != nil {
		purchasesCreated.WithLabelValues("has_access").Inc()
		writeJSON(w, http.StatusOK, createResponse{Success: false, HasAccess: true, PurchaseID: p.Name})
		return
	}
	// Likewise a payment in flight for the entity, whatever product.
	if p := processingPurchase(existing); p != nil {
		purchasesCreated.WithLabelValues("payment_processing").Inc()
		writeError(w, paymentProcessingError(p))
		return
	}

	product, apiErr := s.sellableProduct(ctx, in)
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}

	// Concurrent identical requests (double click, two tabs) on this
	// replica share one outcome, so they yield one purchase. Across
	// replicas two requests may each create one: both are Pending for the
	// same user and entity, the user pays at most one checkout (the frontend
	// mounts one), and when one completes the Purchase controller cancels
	// the other and expires its session, so nobody pays twice. A retry after
	// either answer finds the existing purchase through the reuse rule.
	key := principal.UserID + "\x00" + in.EntityID + "\x00" + product.Name
	ch := s.creates.DoChan(key, func() (out any, _ error) {
		// singleflight re-panics a panic of DoChan's function in a fresh
		// goroutine, which would take the process down: answer 500 instead,
		// as the recovery middleware would.
		defer func() {
			if v := recover(); v != nil {
				out = failed(internalError(log, fmt.Errorf("panic: %v", v), "creating purchase panicked", "stack", string(debug.Stack())))
			}
		}()
		// Detached from the first caller: if that client goes away, the
		// others sharing this call still get their answer.
		workCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.CreateTimeout)
		defer cancel()
		return s.reuseOrCreate(workCtx, principal.UserID, in, product), nil
	})
	select {
	case res := <-ch:
		res.Val.(createOutcome).write(w)
	case <-ctx.Done():
		// The client went away; the shared call carries on for the others.
	}
}

// createOutcome is a create's answer, shared by every caller of one
// singleflight call.
type createOutcome struct {
	status int
	body   createResponse
	err    *apiError
}

func (o createOutcome) write(w http.ResponseWriter) {
	if o.err != nil {
		writeError(w, o.err)
		return
	}
	writeJSON(w, o.status, o.body)
}

func failed(err *apiError) createOutcome { return createOutcome{err: err} }

// sellableProduct finds the Product in the cache and checks it can be sold
// for the entity.
func (s *Server) sellableProduct(ctx context.Context, in createInput) (*v1alpha1.Product, *apiError) {
	notFound := newError(http.StatusNotFound, CodeProductNotFound, "no such pay-to-view product")
	// A name that cannot exist is not looked up.
	if len(in.ProductID) > 63 || len(validation.IsDNS1123Subdomain(in.ProductID)) > 0 {
		return nil, notFound
	}
	var product v1alpha1.Product
	if err := s.opts.Client.Get(ctx, client.ObjectKey{Namespace: s.opts.Namespace, Name: in.ProductID}, &product); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, notFound
		}
		return nil, unavailableError(logr.FromContextOrDiscard(ctx), err, "could not read product", "product", in.ProductID)
	}
	if why := unsellable(&product); why != "" {
		return nil, newError(http.StatusConflict, CodeProductUnavailable, why)
	}
	if len(product.Spec.EntityIDs) > 0 && !slices.Contains(product.Spec.EntityIDs, in.EntityID) {
		return nil, newError(http.StatusUnprocessableEntity, CodeEntityNotAllowed, "this product does not sell access to this entity")
	}
	return &product, nil
}

// unsellable says why a Product cannot be sold now, or "" if it can: it must
// be active, Ready, and its Stripe price known (the price snapshot is taken
// from status, what Stripe really charges).
func unsellable(p *v1alpha1.Product) string {
	switch {
	case p.DeletionTimestamp != nil:
		return "this product is being deleted"
	case p.Spec.Active != nil && !*p.Spec.Active:
		return "this product is no longer for sale"
	case !meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.ConditionReady):
		return "this product is not ready for sale yet"
	case p.Status.ObservedGeneration != p.Generation:
		// The spec changed (a new price, say) and the status still names
		// the Stripe price the controller is about to archive: a purchase
		// snapshotting it now would fail at checkout.
		return "this product is being updated; try again in a moment"
	case p.Status.StripePriceID == "" || p.Status.Price == nil:
		return "this product has no Stripe price yet"
	}
	return ""
}

// reuseOrCreate hands out a recent Pending purchase of the same product if
// there is one, else creates a Purchase, then waits for its checkout.
func (s *Server) reuseOrCreate(ctx context.Context, userID string, in createInput, product *v1alpha1.Product) createOutcome {
	log := logr.FromContextOrDiscard(ctx)
	now := s.opts.Clock.Now()
	existing, err := s.listByUserEntity(ctx, userID, in.EntityID)
	if err != nil {
		return failed(unavailableError(log, err, "could not read purchases"))
	}
	// A call that waited behind another may find the purchase it shared
	// completed meanwhile.
	if p := bestAccess(existing, now); p != nil {
		purchasesCreated.WithLabelValues("has_access").Inc()
		return createOutcome{status: http.StatusOK, body: createResponse{HasAccess: true, PurchaseID: p.Name}}
	}
	if p := processingPurchase(existing); p != nil {
		purchasesCreated.WithLabelValues("payment_processing").Inc()
		return failed(paymentProcessingError(p))
	}
	if p := s.reusable(existing, product, now); p != nil {
		purchasesCreated.WithLabelValues("reused").Inc()
		log.V(1).Info("reusing pending purchase", "purchase", p.Name)
		return s.waitForCheckout(ctx, userID, p.Name)
	}

	if apiErr := s.checkCreateLimits(ctx, userID, now); apiErr != nil {
		return failed(apiErr)
	}
	name, err := s.createPurchaseObject(ctx, userID, in, product)
	if err != nil {
		return failed(unavailableError(log, err, "could not create purchase"))
	}
	purchasesCreated.WithLabelValues("created").Inc()
	log.Info("created purchase", "purchase", name, "product", product.Name)
	return s.waitForCheckout(ctx, userID, name)
}

// reusable is the newest Pending purchase of the same product and Stripe
// price, younger than PendingReuseWindow, whose checkout session is still
// open (or not created yet: then the wait continues where an earlier request
// timed out). Reusing it keeps one checkout per attempt, not one per click.
// A session the buyer completed with a delayed payment method is not open:
// handing out its client secret again would show a finished checkout.
func (s *Server) reusable(items []v1alpha1.Purchase, product *v1alpha1.Product, now time.Time) *v1alpha1.Purchase {
	var best *v1alpha1.Purchase
	for i := range items {
		p := &items[i]
		if phaseOf(p) != v1alpha1.PurchasePending || p.DeletionTimestamp != nil || paymentProcessing(p) {
			continue
		}
		if p.Spec.ProductRef != product.Name || p.Spec.StripePriceID != product.Status.StripePriceID {
			continue
		}
		if now.Sub(p.CreationTimestamp.Time) >= s.opts.PendingReuseWindow {
			continue
		}
		if exp := p.Status.CheckoutSessionExpiresAt; exp != nil && !now.Add(sessionExpiryMargin).Before(exp.Time) {
			continue
		}
		if best == nil || p.CreationTimestamp.After(best.CreationTimestamp.Time) {
			best = p
		}
	}
	return best
}

// paymentProcessing is whether the buyer finished the purchase's checkout
// with a delayed payment method (bank debit, ...) and Stripe has not
// confirmed the payment yet: the purchase stays Pending, but its session is
// complete and money may still arrive.
func paymentProcessing(p *v1alpha1.Purchase) bool {
	if phaseOf(p) != v1alpha1.PurchasePending {
		return false
	}
	c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady)
	return c != nil && c.Reason == lifecycle.ReasonPaymentProcessing
}

// processingPurchase is the newest of items whose payment is being
// confirmed, or nil. Whatever its product or age, no new checkout is started
// for the entity meanwhile: the user would pay twice.
func processingPurchase(items []v1alpha1.Purchase) *v1alpha1.Purchase {
	var newest *v1alpha1.Purchase
	for i := range items {
		p := &items[i]
		if paymentProcessing(p) && (newest == nil || p.CreationTimestamp.After(newest.CreationTimestamp.Time)) {
			newest = p
		}
	}
	return newest
}

// paymentProcessingError answers a create while p's payment is in flight.
func paymentProcessingError(p *v1alpha1.Purchase) *apiError {
	return newError(http.StatusConflict, CodePaymentProcessing,
		"the payment of this purchase is being confirmed; poll the purchase for the outcome instead of paying again").
		withPurchase(p.Name)
}

// checkCreateLimits enforces the per-user abuse limits before anything is
// created: the Stripe API quota is shared by all users.
func (s *Server) checkCreateLimits(ctx context.Context, userID string, now time.Time) *apiError {
	all, err := s.listByUser(ctx, userID)
	if err != nil {
		return unavailableError(logr.FromContextOrDiscard(ctx), err, "could not read purchases")
	}
	pending := 0
	for i := range all {
		if phaseOf(&all[i]) == v1alpha1.PurchasePending && all[i].DeletionTimestamp == nil {
			pending++
		}
	}
	if pending >= s.opts.MaxPendingPerUser {
		purchasesCreated.WithLabelValues("too_many_pending").Inc()
		return newError(http.StatusTooManyRequests, CodeTooManyPending,
			fmt.Sprintf("you have %d unpaid purchases open; pay or wait for one to expire", pending)).
			withRetryAfter(time.Minute)
	}
	if ok, wait := s.createRate.allow(userID, now); !ok {
		purchasesCreated.WithLabelValues("rate_limited").Inc()
		return newError(http.StatusTooManyRequests, CodeRateLimited, "too many purchases started; retry later").withRetryAfter(wait)
	}
	return nil
}

// createPurchaseObject creates the Purchase as the contract with the
// Purchase controller says, drawing a new name if one is taken.
func (s *Server) createPurchaseObject(ctx context.Context, userID string, in createInput, product *v1alpha1.Product) (string, error) {
	var days *int32
	if product.Spec.AccessDurationDays != nil {
		d := *product.Spec.AccessDurationDays
		days = &d
	}
	const attempts = 5
	for range attempts {
		p := &v1alpha1.Purchase{
			ObjectMeta: metav1.ObjectMeta{
				Name:      naming.NewPurchaseName(),
				Namespace: s.opts.Namespace,
				Labels:    naming.PurchaseLabels(userID, in.EntityID, product.Name),
				// The Purchase controller's finalizer (it expires the
				// checkout session on deletion), set here so that adding it
				// costs no write of its own.
				Finalizers: []string{v1alpha1.PurchaseFinalizer},
			},
			Spec: v1alpha1.PurchaseSpec{
				ProductRef:         product.Name,
				UserID:             userID,
				EntityID:           in.EntityID,
				EntityType:         product.Spec.EntityType,
				ReturnURL:          in.ReturnURL,
				Price:              *product.Status.Price,
				StripePriceID:      product.Status.StripePriceID,
				AccessDurationDays: days,
			},
		}
		err := s.opts.Client.Create(ctx, p)
		if err == nil {
			return p.Name, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return "", fmt.Errorf("creating Purchase for product %s: %w", product.Name, err)
		}
	}
	return "", fmt.Errorf("creating Purchase for product %s: %d random names were all taken", product.Name, attempts)
}

// checkoutSettled is true once waiting on a Purchase can end: its session
// is ready, or it left Pending.
func checkoutSettled(p *v1alpha1.Purchase) bool {
	if phaseOf(p) != v1alpha1.PurchasePending || !p.DeletionTimestamp.IsZero() {
		return true
	}
	return p.Status.CheckoutSessionID != "" && meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.ConditionReady)
}

// waitForCheckout waits through the cache until the Purchase controller has
// the checkout session ready, and answers with it.
func (s *Server) waitForCheckout(ctx context.Context, userID, name string) createOutcome {
	log := logr.FromContextOrDiscard(ctx).WithValues("purchase", name)
	notReady := newError(http.StatusServiceUnavailable, CodeCheckoutNotReady,
		"the checkout is being prepared; retry the same request shortly").
		withRetryAfter(checkoutRetryAfter).withPurchase(name)

	p, err := s.waiter.wait(ctx, name, checkoutSettled)
	switch {
	case err == nil:
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		log.Info("checkout session not ready in time", "timeout", s.opts.CreateTimeout)
		return failed(notReady)
	case errors.Is(err, errPurchaseDeleted):
		log.Info("purchase deleted while waiting for its checkout")
		return failed(checkoutEndedError())
	default:
		return failed(unavailableError(log, err, "could not wait for checkout session"))
	}

	switch phaseOf(p) {
	case v1alpha1.PurchasePending:
		if !p.DeletionTimestamp.IsZero() {
			// Being deleted: the controller expires its session.
			log.Info("purchase is being deleted while waiting for its checkout")
			return failed(checkoutEndedError())
		}
		// The buyer may have finished this checkout (delayed payment)
		// since the purchase was picked for reuse.
		if paymentProcessing(p) {
			return failed(paymentProcessingError(p))
		}
		secret, apiErr := s.readClientSecret(ctx, p)
		if apiErr != nil {
			return failed(apiErr)
		}
		return createOutcome{status: http.StatusOK, body: createResponse{
			Success: true, PurchaseID: p.Name, ClientSecret: secret, StripeCustomerID: p.Status.StripeCustomerID,
		}}
	case v1alpha1.PurchaseFailed:
		msg := "Stripe refused to create the checkout session"
		if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Message != "" {
			msg = c.Message
		}
		return failed(newError(http.StatusBadGateway, CodeStripeError, msg).withPurchase(p.Name))
	}
	// Completed (paid meanwhile), Canceled (superseded) or Refunded: tell
	// the user about access if there is any; otherwise a retry starts over.
	if hasAccess(p, s.opts.Clock.Now()) {
		return createOutcome{status: http.StatusOK, body: createResponse{HasAccess: true, PurchaseID: p.Name}}
	}
	if existing, err := s.listByUserEntity(ctx, userID, p.Spec.EntityID); err == nil {
		if best := bestAccess(existing, s.opts.Clock.Now()); best != nil {
			return createOutcome{status: http.StatusOK, body: createResponse{HasAccess: true, PurchaseID: best.Name}}
		}
	}
	log.Info("checkout ended while waiting for it", "phase", phaseOf(p))
	return failed(checkoutEndedError())
}

// checkoutEndedError answers a create whose purchase was deleted or ended
// unpaid while the request waited. It names no purchase: there is none to
// use, and the next request starts a new one.
func checkoutEndedError() *apiError {
	return newError(http.StatusConflict, CodeCheckoutEnded, "this checkout ended before it could be used; retry to start a new one")
}

// readClientSecret returns the client secret of p's recorded checkout
// session from the Secret the Purchase controller writes. The Secret is read
// from the cache, which holds the client secret Secrets, and from the
// apiserver when the cached one is missing or is not (yet) the recorded
// session's: a Secret names its session in an annotation, and one naming
// another session (a create that lost a race with a newer one) is never
// handed out. Secrets written before the annotation existed are recognised
// by the client secret, which Stripe starts with the session id, or, read
// from the apiserver, taken as they are.
func (s *Server) readClientSecret(ctx context.Context, p *v1alpha1.Purchase) (string, *apiError) {
	log := logr.FromContextOrDiscard(ctx).WithValues("purchase", p.Name)
	notReady := newError(http.StatusServiceUnavailable, CodeCheckoutNotReady, "the checkout is being prepared; retry the same request shortly").
		withRetryAfter(checkoutRetryAfter).withPurchase(p.Name)
	session := p.Status.CheckoutSessionID
	forSession := func(sec *corev1.Secret) (matches, known bool) {
		if id, ok := sec.Annotations[v1alpha1.AnnotationCheckoutSession]; ok {
			return id == session, true
		}
		return strings.HasPrefix(string(sec.Data[clientSecretKey]), session+"_secret_"), false
	}
	var secret corev1.Secret
	key := client.ObjectKey{Namespace: p.Namespace, Name: p.Name}
	err := s.opts.Client.Get(ctx, key, &secret)
	if matches, _ := forSession(&secret); err != nil || session == "" || !matches {
		err = s.opts.APIReader.Get(ctx, key, &secret)
		if err == nil {
			if matches, known := forSession(&secret); known && !matches {
				log.Info("client secret Secret is for another checkout session", "session", session)
				return "", notReady
			}
		}
	}
	if apierrors.IsNotFound(err) {
		log.Error(err, "purchase is Ready but its client secret is missing")
		return "", notReady
	}
	if err != nil {
		return "", unavailableError(log, err, "could not read client secret")
	}
	// Only a Secret the controller wrote for this very Purchase counts.
	if secret.Labels[clientSecretLabel] != "true" || !metav1.IsControlledBy(&secret, p) {
		return "", internalError(log, errors.New("secret is not the Purchase's client secret"), "refusing client secret")
	}
	cs := string(secret.Data[clientSecretKey])
	if cs == "" {
		return "", internalError(log, errors.New("secret has no clientSecret"), "refusing client secret")
	}
	return cs, nil
}

// purchaseItem is one purchase in the client API.
type purchaseItem struct {
	PurchaseID         string     `json:"purchaseId"`
	PayToViewProductID string     `json:"payToViewProductId"`
	EntityID           string     `json:"entityId"`
	EntityType         int        `json:"entityType"`
	Status             string     `json:"status"`
	Amount             int64      `json:"amount"`
	Currency           string     `json:"currency"`
	CreatedAt          *time.Time `json:"createdAt"`
	CompletedAt        *time.Time `json:"completedAt"`
	ExpiresAt          *time.Time `json:"expiresAt"`
	RefundedAt         *time.Time `json:"refundedAt"`
	HasAccess          bool       `json:"hasAccess"`
}

// purchasePage is a page of purchases. NextCursor continues the listing
// after the page's last item; it is absent on the last page.
type purchasePage[T any] struct {
	Items      []T    `json:"items"`
	Page       int    `json:"page"`
	PageSize   int    `json:"pageSize"`
	TotalCount int    `json:"totalCount"`
	NextCursor string `json:"nextCursor,omitempty"`
}

func utcTime(t *metav1.Time) *time.Time {
	if t == nil || t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func itemOf(p *v1alpha1.Purchase, now time.Time) purchaseItem {
	return purchaseItem{
		PurchaseID:         p.Name,
		PayToViewProductID: p.Spec.ProductRef,
		EntityID:           p.Spec.EntityID,
		EntityType:         naming.EntityTypeCode(p.Spec.EntityType),
		Status:             string(phaseOf(p)),
		Amount:             p.Spec.Price.Amount,
		Currency:           p.Spec.Price.Currency,
		CreatedAt:          utcTime(&p.CreationTimestamp),
		CompletedAt:        utcTime(p.Status.CompletedAt),
		ExpiresAt:          utcTime(p.Status.ExpiresAt),
		RefundedAt:         utcTime(p.Status.RefundedAt),
		HasAccess:          hasAccess(p, now),
	}
}

// Page size rules of the list endpoints.
const (
	defaultPageSize = 10
	maxPageSize     = 100
)

// listQuery is the paging of a list request: a page number, or a cursor
// handed out with an earlier page.
type listQuery struct {
	// page is 1-based; 0 when the request has a cursor.
	page     int
	pageSize int
	// after is the last item the client has seen, from the cursor.
	after *listKey
}

// listKey is a purchase's place in the newest-first order of the lists.
type listKey struct {
	created time.Time
	name    string
}

func keyOf(p *v1alpha1.Purchase) listKey {
	return listKey{created: p.CreationTimestamp.Time, name: p.Name}
}

// compareNewestFirst orders list keys newest first; names break ties.
func compareNewestFirst(a, b listKey) int {
	if c := b.created.Compare(a.created); c != 0 {
		return c
	}
	return strings.Compare(b.name, a.name)
}

// maxCursorLen bounds the cursor parameter before it is decoded; cursors
// the API hands out are well under it.
const maxCursorLen = 128

// encodeCursor is the opaque cursor of the listing after k.
func encodeCursor(k listKey) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(k.created.UnixNano(), 10) + ":" + k.name))
}

// decodeCursor reads a cursor encodeCursor made; anything else is a 400.
func decodeCursor(c string) (listKey, *apiError) {
	bad := newError(http.StatusBadRequest, CodeInvalidField, "cursor is not one the API handed out; start again without it")
	if c == "" || len(c) > maxCursorLen {
		return listKey{}, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return listKey{}, bad
	}
	nanos, name, ok := strings.Cut(string(raw), ":")
	if !ok || !validPurchaseID(name) {
		return listKey{}, bad
	}
	n, err := strconv.ParseInt(nanos, 10, 64)
	if err != nil {
		return listKey{}, bad
	}
	k := listKey{created: time.Unix(0, n).UTC(), name: name}
	// Only the one spelling the API hands out: no second encoding of a key.
	if encodeCursor(k) != c {
		return listKey{}, bad
	}
	return k, nil
}

// parseListQuery reads the paging of a list request: page and pageSize as
// parsePaging does, or cursor (a nextCursor of an earlier page) and
// pageSize. A cursor with a page is a 400.
func parseListQuery(q url.Values) (listQuery, *apiError) {
	page, pageSize, apiErr := parsePaging(q)
	if apiErr != nil {
		return listQuery{}, apiErr
	}
	cursor, apiErr := singleParam(q, "cursor")
	if apiErr != nil {
		return listQuery{}, apiErr
	}
	if _, given := q["cursor"]; !given {
		return listQuery{page: page, pageSize: pageSize}, nil
	}
	if _, given := q["page"]; given {
		return listQuery{}, newError(http.StatusBadRequest, CodeInvalidField, "give either page or cursor, not both")
	}
	after, apiErr := decodeCursor(cursor)
	if apiErr != nil {
		return listQuery{}, apiErr
	}
	return listQuery{pageSize: pageSize, after: &after}, nil
}

// paginate cuts the page lq asks for out of items sorted newest first, and
// says how to continue after it. A cursor continues after the item it
// names, whatever was created or deleted meanwhile: purchases created since
// are newer and never show up, so no item is listed twice or skipped, as
// they would be by page numbers over a list that grew at its head.
func paginate(items []*v1alpha1.Purchase, lq listQuery) (sel []*v1alpha1.Purchase, nextCursor string) {
	start := (lq.page - 1) * lq.pageSize
	if lq.after != nil {
		start, _ = slices.BinarySearchFunc(items, *lq.after, func(p *v1alpha1.Purchase, k listKey) int {
			if compareNewestFirst(keyOf(p), k) <= 0 {
				return -1
			}
			return 1
		})
	}
	if start >= len(items) {
		return items[:0], ""
	}
	end := min(start+lq.pageSize, len(items))
	if end < len(items) {
		nextCursor = encodeCursor(keyOf(items[end-1]))
	}
	return items[start:end], nextCursor
}

// parsePaging reads page (>= 1, default 1) and pageSize (1..100, default
// 10). A repeated, non-numeric or out-of-range value is a 400.
func parsePaging(q url.Values) (page, pageSize int, apiErr *apiError) {
	page, apiErr = intParam(q, "page", 1, 1, 1<<30)
	if apiErr != nil {
		return 0, 0, apiErr
	}
	pageSize, apiErr = intParam(q, "pageSize", defaultPageSize, 1, maxPageSize)
	return page, pageSize, apiErr
}

func intParam(q url.Values, name string, def, lo, hi int) (int, *apiError) {
	vs, ok := q[name]
	if !ok {
		return def, nil
	}
	bad := newError(http.StatusBadRequest, CodeInvalidField, fmt.Sprintf("%s must be an integer from %d to %d", name, lo, hi))
	if len(vs) != 1 || len(vs[0]) == 0 || len(vs[0]) > 10 {
		return 0, bad
	}
	for _, c := range vs[0] {
		if c < '0' || c > '9' {
			return 0, bad
		}
	}
	n, err := strconv.Atoi(vs[0])
	if err != nil || n < lo || n > hi {
		return 0, bad
	}
	return n, nil
}

// singleParam reads a query parameter given at most once.
func singleParam(q url.Values, name string) (string, *apiError) {
	vs := q[name]
	switch len(vs) {
	case 0:
		return "", nil
	case 1:
		return vs[0], nil
	}
	return "", newError(http.StatusBadRequest, CodeInvalidField, name+" must be given once")
}

// newestFirst orders purchases by creation time, newest first; names break
// ties so pages are stable.
func newestFirst(items []*v1alpha1.Purchase) {
	slices.SortFunc(items, func(a, b *v1alpha1.Purchase) int {
		return compareNewestFirst(keyOf(a), keyOf(b))
	})
}

// listPurchases serves GET /client/v1/pay-to-view/purchases: the caller's
// purchases, newest first, from the cache's user index.
func (s *Server) listPurchases(w http.ResponseWriter, r *http.Request) {
	principal, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	lq, apiErr := parseListQuery(r.URL.Query())
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	all, err := s.listByUser(r.Context(), principal.UserID)
	if err != nil {
		writeError(w, unavailableError(logr.FromContextOrDiscard(r.Context()), err, "could not read purchases"))
		return
	}
	writeJSON(w, http.StatusOK, s.clientPage(all, lq))
}

func (s *Server) clientPage(all []v1alpha1.Purchase, lq listQuery) purchasePage[purchaseItem] {
	ptrs := make([]*v1alpha1.Purchase, len(all))
	for i := range all {
		ptrs[i] = &all[i]
	}
	newestFirst(ptrs)
	now := s.opts.Clock.Now()
	sel, next := paginate(ptrs, lq)
	items := make([]purchaseItem, len(sel))
	for i, p := range sel {
		items[i] = itemOf(p, now)
	}
	return purchasePage[purchaseItem]{Items: items, Page: lq.page, PageSize: lq.pageSize, TotalCount: len(all), NextCursor: next}
}

// validPurchaseID is whether id could be a Purchase name at all.
func validPurchaseID(id string) bool {
	return strings.HasPrefix(id, naming.PurchasePrefix) && len(id) <= 63 && len(validation.IsDNS1123Label(id)) == 0
}

// getPurchase serves GET /client/v1/pay-to-view/purchases/{id}. Someone
// else's purchase is a 404 exactly like a missing one, so ids leak nothing.
// Polling a Pending purchase asks the controller to re-check its session.
func (s *Server) getPurchase(w http.ResponseWriter, r *http.Request) {
	principal, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	id := r.PathValue("id")
	notFound := newError(http.StatusNotFound, CodePurchaseNotFound, "no such purchase")
	if !validPurchaseID(id) {
		writeError(w, notFound)
		return
	}
	var p v1alpha1.Purchase
	err := s.opts.Client.Get(ctx, client.ObjectKey{Namespace: s.opts.Namespace, Name: id}, &p)
	if apierrors.IsNotFound(err) {
		writeError(w, notFound)
		return
	}
	if err != nil {
		writeError(w, unavailableError(logr.FromContextOrDiscard(ctx), err, "could not read purchase"))
		return
	}
	if p.Spec.UserID != principal.UserID {
		writeError(w, notFound)
		return
	}
	s.maybeRequestRecheck(ctx, &p)
	writeJSON(w, http.StatusOK, itemOf(&p, s.opts.Clock.Now()))
}

// maybeRequestRecheck asks the Purchase controller to re-read the session of
// a Pending purchase from Stripe now, so a user who paid sees Completed even
// when the webhook is late or lost (Stripe's advice for return pages). At
// most one request per purchase per RecheckInterval, and none while the
// controller checked recently; a failure is logged, never the client's
// problem.
func (s *Server) maybeRequestRecheck(ctx context.Context, p *v1alpha1.Purchase) {
	now := s.opts.Clock.Now()
	if phaseOf(p) != v1alpha1.PurchasePending || p.Status.CheckoutSessionID == "" ||
		now.Sub(p.CreationTimestamp.Time) < s.opts.RecheckAfter {
		return
	}
	if last := p.Status.LastSessionCheckAt; last != nil && now.Sub(last.Time) < s.opts.RecheckInterval {
		return
	}
	if v, ok := p.Annotations[v1alpha1.AnnotationRecheckRequested]; ok {
		if t, err := time.Parse(time.RFC3339, v); err == nil && now.Sub(t) < s.opts.RecheckInterval {
			return
		}
	}
	if !s.rechecks.take(p.Name, now) {
		return
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		v1alpha1.AnnotationRecheckRequested: now.UTC().Format(time.RFC3339),
	}}})
	target := &v1alpha1.Purchase{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}}
	if err := s.opts.Client.Patch(ctx, target, client.RawPatch(types.MergePatchType, patch)); err != nil && !apierrors.IsNotFound(err) {
		logr.FromContextOrDiscard(ctx).Error(err, "could not request a session recheck", "purchase", p.Name)
		return
	}
	logr.FromContextOrDiscard(ctx).V(1).Info("requested session recheck", "purchase", p.Name)
}

// accessResponse answers GET /client/v1/pay-to-view/access.
type accessResponse struct {
	HasAccess  bool       `json:"hasAccess"`
	PurchaseID *string    `json:"purchaseId"`
	ExpiresAt  *time.Time `json:"expiresAt"`
}

// getAccess serves GET /client/v1/pay-to-view/access?entityId=…
func (s *Server) getAccess(w http.ResponseWriter, r *http.Request) {
	principal, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	entityID, apiErr := singleParam(r.URL.Query(), "entityId")
	if apiErr == nil {
		apiErr = validateEntityID(entityID)
	}
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	items, err := s.listByUserEntity(r.Context(), principal.UserID, entityID)
	if err != nil {
		writeError(w, unavailableError(logr.FromContextOrDiscard(r.Context()), err, "could not read purchases"))
		return
	}
	resp := accessResponse{}
	if best := bestAccess(items, s.opts.Clock.Now()); best != nil {
		name := best.Name
		resp = accessResponse{HasAccess: true, PurchaseID: &name, ExpiresAt: utcTime(best.Status.ExpiresAt)}
	}
	writeJSON(w, http.StatusOK, resp)
}

// checkAccess serves GET /client/v1/pay-to-view/access/check, the
// forward-auth endpoint of ingresses (nginx auth_request, Traefik
// ForwardAuth, Envoy ext_authz): 204 when the token's user has access to the
// entity (query entityId, else the EntityIDHeader header), 401 without a
// valid token, 403 otherwise. It answers nothing else on purpose: nginx
// turns any other status of an auth subrequest into a 500 for the viewer,
// so a missing or malformed entity id (an ingress misconfiguration or a
// crafted URL) is a 403 too, after the token is checked. Served from the
// cache only.
func (s *Server) checkAccess(w http.ResponseWriter, r *http.Request) {
	principal, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	entityID, apiErr := singleParam(q, "entityId")
	if apiErr == nil {
		if _, given := q["entityId"]; !given {
			entityID = r.Header.Get(s.opts.EntityIDHeader)
		}
		apiErr = validateEntityID(entityID)
	}
	if apiErr != nil {
		writeError(w, newError(http.StatusForbidden, CodeNoAccess, "no access: "+apiErr.message))
		return
	}
	items, err := s.listByUserEntity(r.Context(), principal.UserID, entityID)
	if err != nil {
		writeError(w, unavailableError(logr.FromContextOrDiscard(r.Context()), err, "could not read purchases"))
		return
	}
	if bestAccess(items, s.opts.Clock.Now()) == nil {
		writeError(w, newError(http.StatusForbidden, CodeNoAccess, "no purchase grants access to this entity"))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

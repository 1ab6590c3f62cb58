package webhookserver

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/go-logr/logr"
)

// Error codes of the API. They are part of the contract with the frontend:
// clients switch on them, so they never change; messages are for humans and
// may.
const (
	// CodeMalformedJSON: the body is not one JSON object.
	CodeMalformedJSON = "malformed_json"
	// CodeUnknownField: the body has a field the endpoint does not take.
	CodeUnknownField = "unknown_field"
	// CodeMissingField: a required field is absent or empty.
	CodeMissingField = "missing_field"
	// CodeInvalidField: a field or query parameter has a value out of range
	// or of the wrong form.
	CodeInvalidField = "invalid_field"
	// CodeBodyTooLarge: the body is larger than the endpoint accepts.
	CodeBodyTooLarge = "body_too_large"
	// CodeUnauthorized: no bearer token, or an invalid or expired one.
	CodeUnauthorized = "unauthorized"
	// CodeForbidden: a valid token without the admin role on an admin route.
	CodeForbidden = "forbidden"
	// CodeNoAccess: the access check found no purchase granting access.
	CodeNoAccess = "no_access"
	// CodeNotFound: no such route.
	CodeNotFound = "not_found"
	// CodeMethodNotAllowed: the route exists for other methods only.
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeProductNotFound: no Product with the payToViewProductId.
	CodeProductNotFound = "product_not_found"
	// CodeProductUnavailable: the Product exists but cannot be sold now
	// (inactive, or its Stripe price is not ready).
	CodeProductUnavailable = "product_unavailable"
	// CodeEntityNotAllowed: the Product is limited to other entities.
	CodeEntityNotAllowed = "entity_not_allowed"
	// CodeInvalidReturnURL: returnUrl is not https or not under an allowed origin.
	CodeInvalidReturnURL = "invalid_return_url"
	// CodePurchaseNotFound: no such purchase, or not the caller's.
	CodePurchaseNotFound = "purchase_not_found"
	// CodeNotRefundable: the purchase was never paid, so there is nothing to refund.
	CodeNotRefundable = "not_refundable"
	// CodeRefundFailed: Stripe refused the refund or the refund failed; the
	// message says why. The operator does not retry it: handle the refund
	// in the Stripe dashboard.
	CodeRefundFailed = "refund_failed"
	// CodeRateLimited: too many purchases created by this user too quickly.
	CodeRateLimited = "rate_limited"
	// CodeTooManyPending: the user has too many unpaid purchases open.
	CodeTooManyPending = "too_many_pending_purchases"
	// CodeStripeError: Stripe refused to create the checkout session.
	CodeStripeError = "stripe_error"
	// CodeCheckoutNotReady: the checkout session is not ready yet; retry the
	// same request (it reuses the purchase).
	CodeCheckoutNotReady = "checkout_not_ready"
	// CodeCheckoutEnded: the purchase a create waited on was deleted or
	// ended unpaid (e.g. canceled) before its checkout could be used; the
	// next identical request starts a new one. No purchaseId.
	CodeCheckoutEnded = "checkout_ended"
	// CodePaymentProcessing: the user finished the checkout of a purchase of
	// this entity with a delayed payment method and Stripe has not
	// confirmed the payment yet; purchaseId names that purchase. No new
	// checkout is started until it succeeds or fails.
	CodePaymentProcessing = "payment_processing"
	// CodeUnavailable: the server cannot serve the request now (cache not
	// synced, apiserver unreachable); retry later.
	CodeUnavailable = "unavailable"
	// CodeInternal: a bug; the request id in the logs tells what happened.
	CodeInternal = "internal_error"
	// CodeCORSOriginNotAllowed: a CORS preflight from an origin not configured.
	CodeCORSOriginNotAllowed = "cors_origin_not_allowed"
	// CodeInvalidSignature: a Stripe webhook failed signature verification.
	CodeInvalidSignature = "invalid_signature"
)

// errorBody is the JSON of every error answer: {"success":false,"code","message"}.
type errorBody struct {
	Success    bool   `json:"success"`
	Code       string `json:"code"`
	Message    string `json:"message"`
	PurchaseID string `json:"purchaseId,omitempty"`
}

// apiError is an error a handler answers with.
type apiError struct {
	status     int
	code       string
	message    string
	purchaseID string
	retryAfter time.Duration
	header     http.Header
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func newError(status int, code, message string) *apiError {
	return &apiError{status: status, code: code, message: message}
}

func (e *apiError) withRetryAfter(d time.Duration) *apiError {
	e.retryAfter = d
	return e
}

func (e *apiError) withPurchase(id string) *apiError {
	e.purchaseID = id
	return e
}

// writeError answers with err's status and JSON body.
func writeError(w http.ResponseWriter, err *apiError) {
	for k, vs := range err.header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	if err.retryAfter > 0 {
		w.Header().Set("Retry-After", retryAfterSeconds(err.retryAfter))
	}
	writeJSON(w, err.status, errorBody{Code: err.code, Message: err.message, PurchaseID: err.purchaseID})
}

// retryAfterSeconds renders a delay as whole seconds, rounded up and at
// least 1, as Retry-After wants.
func retryAfterSeconds(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10)
}

// writeJSON answers with status and v as JSON. Encoding errors of our own
// response types cannot happen; a write error means the client went away.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"success":false,"code":"internal_error","message":"encoding the response failed"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// internalError logs err (which may carry details no client should see) and
// returns the generic 500 answer.
func internalError(log logr.Logger, err error, msg string, keysAndValues ...any) *apiError {
	log.Error(err, msg, keysAndValues...)
	return newError(http.StatusInternalServerError, CodeInternal, "internal error; quote the X-Request-Id header when reporting it")
}

// unavailableError logs err and returns a 503 the client may retry.
func unavailableError(log logr.Logger, err error, msg string, keysAndValues ...any) *apiError {
	log.Error(err, msg, keysAndValues...)
	return newError(http.StatusServiceUnavailable, CodeUnavailable, "the service is temporarily unavailable; retry shortly").withRetryAfter(time.Second)
}

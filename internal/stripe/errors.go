package stripe

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
)

// ErrorKind tells a caller what to do about a failed Stripe call.
type ErrorKind string

// Error kinds.
const (
	// ErrorRetryable means the same call (same idempotency key) may succeed
	// later: network failures, timeouts, 409, 429, 5xx, lock timeouts.
	ErrorRetryable ErrorKind = "retryable"
	// ErrorTerminal means Stripe rejected the request itself (invalid
	// request, card, authentication or permission error, missing resource);
	// repeating it gives the same answer.
	ErrorTerminal ErrorKind = "terminal"
	// ErrorIdempotencyMismatch means the idempotency key was first used with
	// different parameters. The first request's object may exist; the
	// caller must reconcile with Stripe rather than retry blindly.
	ErrorIdempotencyMismatch ErrorKind = "idempotency_mismatch"
)

// Error is a failed Stripe call, classified. It wraps the stripe-go error (or
// the network/context error) so errors.As still reaches *stripego.Error. It
// never carries the secret key.
type Error struct {
	// Op is the client operation, e.g. "create_checkout_session".
	Op   string
	Kind ErrorKind
	// HTTPStatus is 0 when no response was received.
	HTTPStatus int
	// Type and Code are Stripe's error type and code, e.g.
	// "invalid_request_error" and "resource_missing".
	Type    string
	Code    string
	Param   string
	Message string
	// RequestID is Stripe's Request-Id, for support tickets.
	RequestID string
	// RetryAfter is the server's Retry-After hint; 0 when absent.
	RetryAfter time.Duration
	Err        error

	// keySpent is set when Stripe saved this answer under the request's
	// idempotency key (see IsKeySpent).
	keySpent bool
}

// Error describes the failure on one line, without secrets.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "stripe %s: %s error", e.Op, e.Kind)
	if e.HTTPStatus != 0 {
		fmt.Fprintf(&b, " (status %d", e.HTTPStatus)
		if e.Type != "" {
			fmt.Fprintf(&b, ", %s", e.Type)
		}
		if e.Code != "" {
			fmt.Fprintf(&b, "/%s", e.Code)
		}
		if e.RequestID != "" {
			fmt.Fprintf(&b, ", request %s", e.RequestID)
		}
		b.WriteString(")")
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	return b.String()
}

// Unwrap returns the underlying stripe-go, network or context error.
func (e *Error) Unwrap() error { return e.Err }

// secretPattern matches Stripe secret and restricted keys, full or masked,
// so a key that an API message echoes back never reaches a log.
var secretPattern = regexp.MustCompile(`\b(sk|rk)_(test|live)_[A-Za-z0-9*]+`)

// redact removes the configured key and anything shaped like a Stripe
// secret key from s.
func redact(s, key string) string {
	if key != "" {
		s = strings.ReplaceAll(s, key, "[REDACTED]")
	}
	return secretPattern.ReplaceAllString(s, "[REDACTED]")
}

// newError classifies err, returned by stripe-go for operation op. key is
// the client's secret key, removed from every message.
func newError(op string, err error, key string) *Error {
	e := &Error{Op: op, Kind: ErrorRetryable, Err: err}
	var se *stripego.Error
	if !errors.As(err, &se) {
		// No Stripe answer: the network, a timeout, or an unparsable body
		// (e.g. an HTML 502 from a proxy). The same idempotency key makes
		// a retry safe.
		e.Message = redact(err.Error(), key)
		return e
	}
	se.Msg = redact(se.Msg, key)
	e.HTTPStatus = se.HTTPStatusCode
	e.Type = string(se.Type)
	e.Code = string(se.Code)
	e.Param = se.Param
	e.Message = se.Msg
	e.RequestID = se.RequestID
	var header http.Header
	if se.LastResponse != nil {
		header = se.LastResponse.Header
		if e.RequestID == "" {
			e.RequestID = se.LastResponse.RequestID
		}
	}
	e.RetryAfter = parseRetryAfter(header.Get("Retry-After"), time.Now())
	e.Kind = classifyStripe(se, header.Get("Stripe-Should-Retry"))
	e.keySpent = keySaved(se, header.Get("Stripe-Should-Retry"))
	return e
}

// keySaved reports whether Stripe saved this error answer under the
// request's idempotency key. Stripe saves the answer of every request whose
// execution began, a 500 included, and replays it for 24 hours; it saves
// nothing for a request that failed validation, was rate limited (429) or
// conflicted with a concurrent request with the same key (409). A 5xx in
// Stripe's own error shape is therefore saved, unless Stripe says a retry
// may succeed (Stripe-Should-Retry: true), which a saved answer never could.
func keySaved(se *stripego.Error, shouldRetry string) bool {
	return se.HTTPStatusCode >= http.StatusInternalServerError && shouldRetry != "true"
}

// classifyStripe decides what an API error means for the caller.
func classifyStripe(se *stripego.Error, shouldRetry string) ErrorKind {
	switch {
	case se.HTTPStatusCode == http.StatusConflict:
		// A concurrent request with the same idempotency key is still
		// running; Stripe answers 409 and the retry will replay its result.
		return ErrorRetryable
	case se.Type == stripego.ErrorTypeIdempotency:
		return ErrorIdempotencyMismatch
	case shouldRetry == "true":
		return ErrorRetryable
	case shouldRetry == "false":
		return ErrorTerminal
	case se.Code == stripego.ErrorCodeLockTimeout,
		se.HTTPStatusCode == http.StatusTooManyRequests,
		se.HTTPStatusCode >= http.StatusInternalServerError,
		se.Type == stripego.ErrorTypeAPI:
		return ErrorRetryable
	default:
		return ErrorTerminal
	}
}

// parseRetryAfter reads a Retry-After value in seconds or as an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// asError finds the classified error in err's chain. A bare stripe-go or
// context error (not produced by Client) is classified on the fly, so the
// helpers below work on any error a Stripe call can return.
func asError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var se *stripego.Error
	if errors.As(err, &se) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return newError("", err, "")
	}
	return nil
}

// IsRetryable reports whether repeating the call (with the same idempotency
// key) may succeed: network errors, timeouts, 409, 429, 5xx, lock_timeout.
func IsRetryable(err error) bool {
	e := asError(err)
	return e != nil && e.Kind == ErrorRetryable
}

// IsTerminal reports whether Stripe rejected the call in a way retrying
// cannot fix: invalid request, card, authentication or permission errors,
// missing resources, idempotency mismatches.
func IsTerminal(err error) bool {
	e := asError(err)
	return e != nil && (e.Kind == ErrorTerminal || e.Kind == ErrorIdempotencyMismatch)
}

// IsNotFound reports whether the Stripe object does not exist
// (resource_missing).
func IsNotFound(err error) bool {
	e := asError(err)
	return e != nil && (e.Code == string(stripego.ErrorCodeResourceMissing) ||
		(e.HTTPStatus == http.StatusNotFound && e.Kind == ErrorTerminal))
}

// IsKeySpent reports whether err is an answer Stripe saved under the
// request's idempotency key: a server error (5xx) in Stripe's error shape.
// Stripe replays it to every retry with the same key for 24 hours, so such
// a create can only succeed with a new key (see AttemptOperation). The
// error is also retryable. Network errors, timeouts, an unparsable answer
// (a proxy's 502 page), 409 and 429 do not spend the key: the outcome is
// unknown or nothing ran, and the same key must be retried so that Stripe
// replays whatever it did.
func IsKeySpent(err error) bool {
	e := asError(err)
	return e != nil && e.keySpent
}

// IsIdempotencyMismatch reports whether the idempotency key was reused with
// different parameters.
func IsIdempotencyMismatch(err error) bool {
	e := asError(err)
	return e != nil && e.Kind == ErrorIdempotencyMismatch
}

// RetryAfter returns Stripe's Retry-After hint, or 0 if there is none.
func RetryAfter(err error) time.Duration {
	if e := asError(err); e != nil {
		return e.RetryAfter
	}
	return 0
}

// UserMessage returns a message that is safe to show to a user or an admin:
// Stripe's own human-readable message when there is one, otherwise a
// generic one. It never contains keys or internal details.
func UserMessage(err error) string {
	e := asError(err)
	switch {
	case err == nil:
		return ""
	case e != nil && e.Message != "" && (e.HTTPStatus != 0 || e.Kind != ErrorRetryable):
		// Stripe's answer, or our own input check; network errors are
		// excluded because their text names hosts and URLs.
		return e.Message
	case e != nil && e.Kind == ErrorRetryable:
		return "the payment provider is temporarily unavailable, please try again"
	default:
		return "the payment provider rejected the request"
	}
}

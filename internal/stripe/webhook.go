package stripe

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"
)

// SignatureHeader is the HTTP header Stripe signs webhooks in.
const SignatureHeader = "Stripe-Signature"

// DefaultTolerance is how far a webhook's signed timestamp may be from now,
// in either direction, as Stripe's libraries default to.
const DefaultTolerance = webhook.DefaultTolerance

// Reasons a webhook fails verification, in VerifyError.Reason. They are
// stable: metrics and logs use them as labels.
const (
	ReasonMissingHeader             = "missing_header"
	ReasonMalformedHeader           = "malformed_header"
	ReasonNoValidSignature          = "no_valid_signature"
	ReasonTimestampOutsideTolerance = "timestamp_outside_tolerance"
	ReasonAPIVersionMismatch        = "api_version_mismatch"
	ReasonMalformedPayload          = "malformed_payload"
)

// VerifyError says which check a webhook failed. It never contains the
// signing secrets.
type VerifyError struct {
	// Reason is one of the Reason* constants.
	Reason string
	// Detail explains the failure for logs, e.g. the timestamp's skew.
	Detail string
	// Err is the underlying stripe-go error, if any.
	Err error
}

// Error names the failed check and its detail.
func (e *VerifyError) Error() string {
	if e.Detail == "" {
		return "stripe webhook rejected: " + e.Reason
	}
	return "stripe webhook rejected: " + e.Reason + ": " + e.Detail
}

// Unwrap returns the underlying stripe-go error, if any.
func (e *VerifyError) Unwrap() error { return e.Err }

// VerifierOptions tunes a Verifier.
type VerifierOptions struct {
	// Tolerance bounds the signed timestamp's distance from now, past or
	// future. Default 300s.
	Tolerance time.Duration
	// AllowAPIVersionMismatch accepts events rendered for another API
	// version than stripe-go's (2023-10-16). Leave false: such objects may
	// decode wrongly. The endpoint should be created with the right version.
	AllowAPIVersionMismatch bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verifier checks Stripe-Signature headers against one or more endpoint
// secrets. Several secrets make rotation possible: during Stripe's overlap
// both the old and the new secret are accepted. It is safe for concurrent use.
type Verifier struct {
	secrets   []string
	tolerance time.Duration
	allowAPI  bool
	now       func() time.Time
}

// NewVerifier builds a Verifier. It fails when no secret is given or one is
// empty.
func NewVerifier(secrets []string, opts VerifierOptions) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, errors.New("stripe webhook: at least one signing secret is required (set STRIPE_WEBHOOK_SECRETS)")
	}
	clean := make([]string, 0, len(secrets))
	for i, s := range secrets {
		s = strings.TrimSpace(s)
		if s == "" {
			return nil, fmt.Errorf("stripe webhook: signing secret #%d is empty", i+1)
		}
		clean = append(clean, s)
	}
	if opts.Tolerance < 0 {
		return nil, fmt.Errorf("stripe webhook: tolerance %s is negative", opts.Tolerance)
	}
	v := &Verifier{secrets: clean, tolerance: opts.Tolerance, allowAPI: opts.AllowAPIVersionMismatch, now: opts.Now}
	if v.tolerance == 0 {
		v.tolerance = DefaultTolerance
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// Verify checks payload (the raw request body, unmodified) against header
// (the Stripe-Signature value) and returns the event. Checks, in order: the
// header is present and well-formed; a v1 signature matches one of the
// secrets; the payload is a Stripe event; the signed timestamp is within the
// tolerance (too old means a replay, too new a skewed or forged clock); the
// event's API version is stripe-go's. Failures are *VerifyError.
func (v *Verifier) Verify(payload []byte, header string) (stripego.Event, error) {
	if strings.TrimSpace(header) == "" {
		return stripego.Event{}, &VerifyError{Reason: ReasonMissingHeader, Detail: "no " + SignatureHeader + " header"}
	}
	signedAt, err := parseSignedAt(header)
	if err != nil {
		return stripego.Event{}, err
	}

	var ev stripego.Event
	matched := false
	for _, secret := range v.secrets {
		// Tolerance is checked below with our clock, in both directions;
		// stripe-go only rejects old timestamps against the wall clock.
		ev, err = webhook.ConstructEventWithOptions(payload, header, secret, webhook.ConstructEventOptions{
			IgnoreTolerance:          true,
			IgnoreAPIVersionMismatch: true,
		})
		if errors.Is(err, webhook.ErrNoValidSignature) {
			continue
		}
		matched = true
		break
	}
	switch {
	case !matched:
		return stripego.Event{}, &VerifyError{Reason: ReasonNoValidSignature,
			Detail: fmt.Sprintf("no v1 signature matches any of %d secret(s)", len(v.secrets)), Err: webhook.ErrNoValidSignature}
	case errors.Is(err, webhook.ErrInvalidHeader) || errors.Is(err, webhook.ErrNotSigned):
		return stripego.Event{}, &VerifyError{Reason: ReasonMalformedHeader, Detail: err.Error(), Err: err}
	case err != nil:
		// The signature matched, so the body is Stripe's but not JSON.
		return stripego.Event{}, &VerifyError{Reason: ReasonMalformedPayload, Detail: "body is not a JSON event", Err: err}
	case ev.ID == "" || ev.Type == "" || ev.Data == nil:
		return stripego.Event{}, &VerifyError{Reason: ReasonMalformedPayload, Detail: "event lacks id, type or data"}
	}

	now := v.now()
	if skew := now.Sub(signedAt); skew > v.tolerance {
		return stripego.Event{}, &VerifyError{Reason: ReasonTimestampOutsideTolerance,
			Detail: fmt.Sprintf("signed %s ago, tolerance %s", skew.Truncate(time.Second), v.tolerance)}
	} else if -skew > v.tolerance {
		return stripego.Event{}, &VerifyError{Reason: ReasonTimestampOutsideTolerance,
			Detail: fmt.Sprintf("signed %s in the future, tolerance %s", (-skew).Truncate(time.Second), v.tolerance)}
	}

	if !v.allowAPI && ev.APIVersion != stripego.APIVersion {
		return stripego.Event{}, &VerifyError{Reason: ReasonAPIVersionMismatch,
			Detail: fmt.Sprintf("event API version %q, want %q: create the webhook endpoint with API version %s", ev.APIVersion, stripego.APIVersion, stripego.APIVersion)}
	}
	return ev, nil
}

// parseSignedAt checks the header's shape ("t=<unix>,v1=<hex>[,v1=...]")
// and returns its timestamp, so a garbled header is reported as such rather
// than as a bad signature.
func parseSignedAt(header string) (time.Time, error) {
	var signedAt time.Time
	haveT, haveV1 := false, false
	for _, pair := range strings.Split(header, ",") {
		k, val, ok := strings.Cut(pair, "=")
		if !ok {
			return time.Time{}, &VerifyError{Reason: ReasonMalformedHeader, Detail: "element without '='"}
		}
		switch k {
		case "t":
			sec, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return time.Time{}, &VerifyError{Reason: ReasonMalformedHeader, Detail: "timestamp is not an integer"}
			}
			signedAt, haveT = time.Unix(sec, 0), true
		case "v1":
			haveV1 = true
		}
	}
	switch {
	case !haveT:
		return time.Time{}, &VerifyError{Reason: ReasonMalformedHeader, Detail: "no t= timestamp"}
	case !haveV1:
		return time.Time{}, &VerifyError{Reason: ReasonMalformedHeader, Detail: "no v1= signature"}
	}
	return signedAt, nil
}

// SignPayload returns the Stripe-Signature header value for payload signed
// with secret at t (now when zero), exactly as Stripe computes it. For
// tests, the emulator and tools.
func SignPayload(payload []byte, secret string, t time.Time) string {
	return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{
		Payload:   payload,
		Secret:    secret,
		Timestamp: t,
		Scheme:    "v1",
	}).Header
}

package stripe

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"
)

const (
	testSecret    = "whsec_current_0123456789"
	testOldSecret = "whsec_previous_9876543210"
)

var testNow = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

func eventPayload(apiVersion string) []byte {
	return []byte(fmt.Sprintf(`{
  "id": "evt_1",
  "object": "event",
  "api_version": %q,
  "created": %d,
  "type": "checkout.session.completed",
  "data": {"object": {"id": "cs_test_1", "object": "checkout.session", "status": "complete",
    "payment_status": "paid", "payment_intent": "pi_1", "customer": "cus_1",
    "client_reference_id": "ptv-abc", "metadata": {"payToViewPurchaseId": "ptv-abc"}}}
}`, apiVersion, testNow.Unix()))
}

// signature returns the hex v1 signature of payload at t.
func signature(payload []byte, secret string, t time.Time) string {
	return hex.EncodeToString(webhook.ComputeSignature(t, payload, secret))
}

func TestVerifier_Verify(t *testing.T) {
	payload := eventPayload(stripego.APIVersion)
	otherVersion := eventPayload("2020-08-27")
	tampered := []byte(strings.Replace(string(payload), `"paid"`, `"unpaid"`, 1))

	tests := []struct {
		name       string
		secrets    []string
		opts       VerifierOptions
		payload    []byte
		header     string
		wantReason string // "" means the event is accepted
	}{
		{
			name:    "valid signature is accepted",
			secrets: []string{testSecret},
			payload: payload,
			header:  SignPayload(payload, testSecret, testNow),
		},
		{
			name:       "tampered body is rejected",
			secrets:    []string{testSecret},
			payload:    tampered,
			header:     SignPayload(payload, testSecret, testNow),
			wantReason: ReasonNoValidSignature,
		},
		{
			name:       "wrong secret is rejected",
			secrets:    []string{testSecret},
			payload:    payload,
			header:     SignPayload(payload, "whsec_someone_else", testNow),
			wantReason: ReasonNoValidSignature,
		},
		{
			name:    "second (rotated) secret is accepted",
			secrets: []string{testSecret, testOldSecret},
			payload: payload,
			header:  SignPayload(payload, testOldSecret, testNow),
		},
		{
			name:    "one valid v1 among several is accepted",
			secrets: []string{testSecret},
			payload: payload,
			header: fmt.Sprintf("t=%d,v1=%s,v1=%s,v0=%s,v1=zz-not-hex", testNow.Unix(),
				signature(payload, "whsec_other", testNow), signature(payload, testSecret, testNow),
				signature(payload, "whsec_legacy", testNow)),
		},
		{
			name:    "several v1 none valid is rejected",
			secrets: []string{testSecret},
			payload: payload,
			header: fmt.Sprintf("t=%d,v1=%s,v1=%s", testNow.Unix(),
				signature(payload, "whsec_a", testNow), signature(payload, "whsec_b", testNow)),
			wantReason: ReasonNoValidSignature,
		},
		{
			name:       "signature over another timestamp is rejected",
			secrets:    []string{testSecret},
			payload:    payload,
			header:     fmt.Sprintf("t=%d,v1=%s", testNow.Unix(), signature(payload, testSecret, testNow.Add(-time.Second))),
			wantReason: ReasonNoValidSignature,
		},
		{
			name:       "stale timestamp is rejected",
			secrets:    []string{testSecret},
			payload:    payload,
			header:     SignPayload(payload, testSecret, testNow.Add(-301*time.Second)),
			wantReason: ReasonTimestampOutsideTolerance,
		},
		{
			name:    "timestamp at the tolerance edge is accepted",
			secrets: []string{testSecret},
			payload: payload,
			header:  SignPayload(payload, testSecret, testNow.Add(-300*time.Second)),
		},
		{
			name:       "future timestamp is rejected",
			secrets:    []string{testSecret},
			payload:    payload,
			header:     SignPayload(payload, testSecret, testNow.Add(301*time.Second)),
			wantReason: ReasonTimestampOutsideTolerance,
		},
		{
			name:    "custom tolerance accepts an older timestamp",
			secrets: []string{testSecret},
			opts:    VerifierOptions{Tolerance: 10 * time.Minute},
			payload: payload,
			header:  SignPayload(payload, testSecret, testNow.Add(-9*time.Minute)),
		},
		{
			name:       "missing header is rejected",
			secrets:    []string{testSecret},
			payload:    payload,
			header:     "",
			wantReason: ReasonMissingHeader,
		},
		{
			name:       "garbled header is rejected",
			secrets:    []string{testSecret},
			payload:    payload,
			header:     "this is not a signature",
			wantReason: ReasonMalformedHeader,
		},
		{
			name:       "header without timestamp is rejected",
			secrets:    []string{testSecret},
			payload:    payload,
			header:     "v1=" + signature(payload, testSecret, testNow),
			wantReason: ReasonMalformedHeader,
		},
		{
			name:       "header with a non-numeric timestamp is rejected",
			secrets:    []string{testSecret},
			payload:    payload,
			header:     "t=yesterday,v1=" + signature(payload, testSecret, testNow),
			wantReason: ReasonMalformedHeader,
		},
		{
			name:       "header without v1 signature is rejected",
			secrets:    []string{testSecret},
			payload:    payload,
			header:     fmt.Sprintf("t=%d,v0=%s", testNow.Unix(), signature(payload, testSecret, testNow)),
			wantReason: ReasonMalformedHeader,
		},
		{
			name:       "API version mismatch is rejected by default",
			secrets:    []string{testSecret},
			payload:    otherVersion,
			header:     SignPayload(otherVersion, testSecret, testNow),
			wantReason: ReasonAPIVersionMismatch,
		},
		{
			name:    "API version mismatch is accepted when allowed",
			secrets: []string{testSecret},
			opts:    VerifierOptions{AllowAPIVersionMismatch: true},
			payload: otherVersion,
			header:  SignPayload(otherVersion, testSecret, testNow),
		},
		{
			name:       "signed body that is not JSON is rejected",
			secrets:    []string{testSecret},
			payload:    []byte("<html>hello</html>"),
			header:     SignPayload([]byte("<html>hello</html>"), testSecret, testNow),
			wantReason: ReasonMalformedPayload,
		},
		{
			name:       "signed JSON that is not an event is rejected",
			secrets:    []string{testSecret},
			payload:    []byte(`{"hello":"world"}`),
			header:     SignPayload([]byte(`{"hello":"world"}`), testSecret, testNow),
			wantReason: ReasonMalformedPayload,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			opts.Now = func() time.Time { return testNow }
			v, err := NewVerifier(tt.secrets, opts)
			if err != nil {
				t.Fatalf("NewVerifier: %v", err)
			}
			ev, err := v.Verify(tt.payload, tt.header)
			if tt.wantReason == "" {
				if err != nil {
					t.Fatalf("Verify: unexpected error %v", err)
				}
				if ev.ID != "evt_1" || ev.Type != "checkout.session.completed" {
					t.Fatalf("Verify returned event %q of type %q", ev.ID, ev.Type)
				}
				return
			}
			var verr *VerifyError
			if !errors.As(err, &verr) {
				t.Fatalf("Verify error = %v, want *VerifyError with reason %s", err, tt.wantReason)
			}
			if verr.Reason != tt.wantReason {
				t.Fatalf("reason = %s (%v), want %s", verr.Reason, err, tt.wantReason)
			}
			if !strings.Contains(err.Error(), tt.wantReason) {
				t.Fatalf("message %q does not name the failed check %s", err, tt.wantReason)
			}
			for _, s := range tt.secrets {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("message %q leaks a signing secret", err)
				}
			}
		})
	}
}

func TestVerifier_FutureAndPastMessagesSayWhich(t *testing.T) {
	payload := eventPayload(stripego.APIVersion)
	v, err := NewVerifier([]string{testSecret}, VerifierOptions{Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(payload, SignPayload(payload, testSecret, testNow.Add(time.Hour)))
	if err == nil || !strings.Contains(err.Error(), "in the future") {
		t.Fatalf("future timestamp error = %v, want it to say 'in the future'", err)
	}
	_, err = v.Verify(payload, SignPayload(payload, testSecret, testNow.Add(-time.Hour)))
	if err == nil || !strings.Contains(err.Error(), "ago") {
		t.Fatalf("stale timestamp error = %v, want it to say how long ago", err)
	}
}

func TestNewVerifier_RejectsBadConfiguration(t *testing.T) {
	tests := []struct {
		name    string
		secrets []string
		opts    VerifierOptions
	}{
		{"no secrets", nil, VerifierOptions{}},
		{"an empty secret", []string{testSecret, " "}, VerifierOptions{}},
		{"negative tolerance", []string{testSecret}, VerifierOptions{Tolerance: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if v, err := NewVerifier(tt.secrets, tt.opts); err == nil {
				t.Fatalf("NewVerifier = %v, want an error", v)
			}
		})
	}
}

func TestSignPayload_MatchesStripeFormat(t *testing.T) {
	payload := eventPayload(stripego.APIVersion)
	header := SignPayload(payload, testSecret, testNow)
	want := fmt.Sprintf("t=%d,v1=%s", testNow.Unix(), signature(payload, testSecret, testNow))
	if header != want {
		t.Fatalf("SignPayload = %q, want %q", header, want)
	}
	// stripe-go's own verifier accepts it too.
	if err := webhook.ValidatePayloadIgnoringTolerance(payload, header, testSecret); err != nil {
		t.Fatalf("stripe-go rejects our signature: %v", err)
	}
}

func BenchmarkVerifier_Verify(b *testing.B) {
	payload := eventPayload(stripego.APIVersion)
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("secrets=%d", n), func(b *testing.B) {
			secrets := []string{testSecret, testOldSecret}[:n]
			// Signed with the last secret: the worst case during rotation.
			header := SignPayload(payload, secrets[n-1], testNow)
			v, err := NewVerifier(secrets, VerifierOptions{Now: func() time.Time { return testNow }})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				if _, err := v.Verify(payload, header); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

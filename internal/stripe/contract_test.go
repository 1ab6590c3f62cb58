//go:build contract

package stripe_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/md-platform/paytoview-operator/internal/stripe"
)

// stripeMockKey is a made-up test key: stripe-mock checks only its shape
// (sk_test_ followed by letters and digits).
const stripeMockKey = "sk_test_contractmock123"

// startStripeMock runs the stripe-mock binary named by STRIPE_MOCK_BIN on a
// free port, with the Stripe-Version check on, and returns its base URL.
func startStripeMock(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("STRIPE_MOCK_BIN")
	if bin == "" {
		t.Fatal("STRIPE_MOCK_BIN is not set: run `make test-contract`, which installs stripe-mock v0.180.0 into bin/ and sets it")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("STRIPE_MOCK_BIN=%s: %v (run `make test-contract` to install it)", bin, err)
	}
	cmd := exec.Command(bin, "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0", "-strict-version-check")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting stripe-mock: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	listening := regexp.MustCompile(`Listening for HTTP at address: (\S+)`)
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
				break
			}
		}
		// Keep draining so stripe-mock never blocks on a full pipe.
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case a := <-addr:
		return "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatal("stripe-mock did not report its HTTP address within 30s")
		return ""
	}
}

func TestClientCases_AgainstStripeMock(t *testing.T) {
	base := startStripeMock(t)
	c, err := stripe.New(stripe.Config{SecretKey: stripeMockKey, APIBase: base})
	if err != nil {
		t.Fatal(err)
	}
	runClientCases(t, contractTarget{
		client: c,
		pay: func(t *testing.T, sessionID string) string {
			// Nobody pays at stripe-mock; any PaymentIntent id returns its fixture.
			return "pi_contract_fixture"
		},
	})
}

func TestClient_RetrySendsSameIdempotencyKey_StripeMock(t *testing.T) {
	testRetrySendsSameKey(t, startStripeMock(t), stripeMockKey)
}

// TestStripeMock_RejectsBadParameters proves the contract run can fail: the
// exact session request the client builds passes, and the same request with
// one invalid value is refused by stripe-mock's OpenAPI validation.
func TestStripeMock_RejectsBadParameters(t *testing.T) {
	base := startStripeMock(t)
	api := &client.API{}
	backend := stripego.GetBackendWithConfig(stripego.APIBackend, &stripego.BackendConfig{
		URL:               stripego.String(base),
		MaxNetworkRetries: stripego.Int64(0),
		LeveledLogger:     &stripego.LeveledLogger{Level: stripego.LevelNull},
	})
	api.Init(stripeMockKey, &stripego.Backends{API: backend, Connect: backend, Uploads: backend})

	st := &contractState{customerID: "cus_contract", priceID: "price_contract", expiresAt: time.Now().Add(time.Hour)}
	valid := stripe.CheckoutSessionParamsForTest(sessionParams(st, contractPurchaseUID, "ptv-negative"))
	valid.Context = context.Background()
	if _, err := api.CheckoutSessions.New(valid); err != nil {
		t.Fatalf("the client's own session request is rejected: %v", err)
	}

	tests := []struct {
		name   string
		mutate func(p *stripego.CheckoutSessionParams)
		// want is a part of stripe-mock's message naming the problem.
		want string
	}{
		{"unknown ui_mode", func(p *stripego.CheckoutSessionParams) { p.UIMode = stripego.String("sideways") }, "ui_mode"},
		{"unknown redirect_on_completion", func(p *stripego.CheckoutSessionParams) {
			p.RedirectOnCompletion = stripego.String("sometimes")
		}, "redirect_on_completion"},
		{"unknown mode", func(p *stripego.CheckoutSessionParams) { p.Mode = stripego.String("donation") }, "mode"},
		{"unknown parameter", func(p *stripego.CheckoutSessionParams) { p.AddExtra("payment_intent_metadata[x]", "y") }, "additional properties are not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := stripe.CheckoutSessionParamsForTest(sessionParams(st, contractPurchaseUID, "ptv-negative"))
			p.Context = context.Background()
			tt.mutate(p)
			_, err := api.CheckoutSessions.New(p)
			var se *stripego.Error
			if !errors.As(err, &se) {
				t.Fatalf("stripe-mock accepted the request (err %v), want a rejection about %s", err, tt.want)
			}
			if se.HTTPStatusCode != 400 || se.Type != stripego.ErrorTypeInvalidRequest || !strings.Contains(se.Msg, tt.want) {
				t.Fatalf("error = %d %s %q, want a 400 invalid_request_error about %s", se.HTTPStatusCode, se.Type, se.Msg, tt.want)
			}
			if !stripe.IsTerminal(err) || stripe.IsRetryable(err) {
				t.Fatalf("a validation error must classify as terminal: %v", err)
			}
		})
	}
}

package stripe_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	stripego "github.com/stripe/stripe-go/v76"

	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

const emulatorKey = "sk_test_emulator_contract_0123456789"

// startEmulator runs an emulator on a real socket and a client pointed at it.
func startEmulator(t *testing.T, opts emulator.Options, mutate ...func(*stripe.Config)) (*emulator.Emulator, *httptest.Server, *stripe.Client) {
	t.Helper()
	em := emulator.New(opts)
	srv := httptest.NewServer(em)
	t.Cleanup(func() {
		srv.Close()
		em.Close()
	})
	cfg := stripe.Config{SecretKey: emulatorKey, APIBase: srv.URL}
	for _, m := range mutate {
		m(&cfg)
	}
	c, err := stripe.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return em, srv, c
}

func TestClientCases_AgainstEmulator(t *testing.T) {
	em, _, c := startEmulator(t, emulator.Options{})
	runClientCases(t, contractTarget{
		client:   c,
		stateful: true,
		pay: func(t *testing.T, sessionID string) string {
			s, err := em.Pay(sessionID, emulator.PayOptions{})
			if err != nil {
				t.Fatalf("paying %s: %v", sessionID, err)
			}
			requirePrefix(t, "payment intent", s.PaymentIntentID, "pi_")
			return s.PaymentIntentID
		},
	})
}

func TestClient_RetrySendsSameIdempotencyKey_Emulator(t *testing.T) {
	_, srv, _ := startEmulator(t, emulator.Options{})
	testRetrySendsSameKey(t, srv.URL, emulatorKey)
}

// emulatorFixture creates a customer and a price on the emulator.
func emulatorFixture(t *testing.T, c *stripe.Client) *contractState {
	t.Helper()
	ctx := context.Background()
	st := &contractState{expiresAt: time.Now().Add(time.Hour).Truncate(time.Second)}
	cus, err := c.CreateCustomer(ctx, stripe.CreateCustomerParams{OwnerUID: "fixture-customer", UserID: "auth0|fixture"})
	requireNoError(t, "CreateCustomer", err)
	prod, err := c.CreateProduct(ctx, stripe.CreateProductParams{OwnerUID: "fixture-product", Name: "Fixture"})
	requireNoError(t, "CreateProduct", err)
	price, err := c.CreatePrice(ctx, stripe.CreatePriceParams{OwnerUID: "fixture-product", Generation: 1, ProductID: prod.ID, Amount: 250, Currency: "usd"})
	requireNoError(t, "CreatePrice", err)
	st.customerID, st.productID, st.priceID = cus.ID, prod.ID, price.ID
	return st
}

func TestClient_ErrorClassesFromEmulator(t *testing.T) {
	em, srv, c := startEmulator(t, emulator.Options{})
	st := emulatorFixture(t, c)
	ctx := context.Background()

	t.Run("unknown session is not found", func(t *testing.T) {
		_, err := c.GetCheckoutSession(ctx, "cs_test_doesnotexist")
		if !stripe.IsNotFound(err) || !stripe.IsTerminal(err) || stripe.IsRetryable(err) {
			t.Fatalf("error = %v, want terminal not-found", err)
		}
	})

	t.Run("reusing a key with other parameters is an idempotency mismatch", func(t *testing.T) {
		p := sessionParams(st, "mismatch-purchase", "ptv-mismatch")
		_, err := c.CreateCheckoutSession(ctx, p)
		requireNoError(t, "CreateCheckoutSession", err)
		p.Metadata.EntityID = "another-video"
		_, err = c.CreateCheckoutSession(ctx, p)
		if !stripe.IsIdempotencyMismatch(err) || !stripe.IsTerminal(err) {
			t.Fatalf("error = %v, want an idempotency mismatch", err)
		}
	})

	t.Run("a bad price is terminal with Stripe's message", func(t *testing.T) {
		p := sessionParams(st, "bad-price-purchase", "ptv-bad-price")
		p.PriceID = "price_doesnotexist"
		_, err := c.CreateCheckoutSession(ctx, p)
		if !stripe.IsTerminal(err) || stripe.IsRetryable(err) {
			t.Fatalf("error = %v, want terminal", err)
		}
		if msg := stripe.UserMessage(err); !strings.Contains(msg, "price_doesnotexist") {
			t.Fatalf("UserMessage = %q, want Stripe's message naming the price", msg)
		}
	})

	t.Run("a 503 spends the key and the next attempt's key succeeds", func(t *testing.T) {
		if _, err := em.AddFault(emulator.Fault{Operation: stripe.OpCreateCustomer, Status: 503, Count: 1}); err != nil {
			t.Fatal(err)
		}
		p := stripe.CreateCustomerParams{OwnerUID: "flaky-customer", UserID: "auth0|flaky"}
		for i := 0; i < 2; i++ {
			// The second call is Stripe's replay of the saved 503.
			_, err := c.CreateCustomer(ctx, p)
			if !stripe.IsRetryable(err) || !stripe.IsKeySpent(err) {
				t.Fatalf("call %d: error = %v, want retryable with the key spent", i, err)
			}
		}
		p.Attempt = 1
		cus, err := c.CreateCustomer(ctx, p)
		requireNoError(t, "CreateCustomer with the next attempt's key", err)
		requirePrefix(t, "customer", cus.ID, "cus_")
	})

	t.Run("a second full refund of a charge is refused", func(t *testing.T) {
		sess, err := c.CreateCheckoutSession(ctx, sessionParams(st, "refunded-twice", "ptv-refunded-twice"))
		requireNoError(t, "CreateCheckoutSession", err)
		paid, err := em.Pay(sess.ID, emulator.PayOptions{})
		requireNoError(t, "Pay", err)
		_, err = c.CreateRefund(ctx, stripe.CreateRefundParams{OwnerUID: "refunded-twice", PaymentIntentID: paid.PaymentIntentID})
		requireNoError(t, "CreateRefund", err)
		// A new key (the next attempt after a 5xx) cannot refund it again.
		_, err = c.CreateRefund(ctx, stripe.CreateRefundParams{OwnerUID: "refunded-twice", Attempt: 1, PaymentIntentID: paid.PaymentIntentID})
		var se *stripe.Error
		if !stripe.IsTerminal(err) || !errors.As(err, &se) || se.Code != "charge_already_refunded" {
			t.Fatalf("second refund: %v, want terminal charge_already_refunded", err)
		}
		n := 0
		for _, re := range em.State().Refunds {
			if re.PaymentIntentID == paid.PaymentIntentID {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d refunds of %s, want 1", n, paid.PaymentIntentID)
		}
	})

	t.Run("429 is retryable with Retry-After", func(t *testing.T) {
		if _, err := em.AddFault(emulator.Fault{Operation: stripe.OpGetPrice, Status: 429, RetryAfter: 3, Count: 1}); err != nil {
			t.Fatal(err)
		}
		_, err := c.GetPrice(ctx, st.priceID)
		if !stripe.IsRetryable(err) || stripe.RetryAfter(err) != 3*time.Second {
			t.Fatalf("error = %v (retry after %s), want retryable after 3s", err, stripe.RetryAfter(err))
		}
	})

	t.Run("lock_timeout is retryable", func(t *testing.T) {
		if _, err := em.AddFault(emulator.Fault{Operation: stripe.OpCreateRefund, Status: 400, Code: "lock_timeout", Count: 1}); err != nil {
			t.Fatal(err)
		}
		_, err := c.CreateRefund(ctx, stripe.CreateRefundParams{OwnerUID: "lock-purchase", PaymentIntentID: "pi_whatever"})
		if !stripe.IsRetryable(err) {
			t.Fatalf("error = %v, want retryable", err)
		}
	})

	t.Run("a timed-out create is retryable and its retry returns the object Stripe made", func(t *testing.T) {
		slow, err := stripe.New(stripe.Config{SecretKey: emulatorKey, APIBase: srv.URL, Timeout: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := em.AddFault(emulator.Fault{Operation: stripe.OpCreateCheckoutSession, DelayMS: 400, Count: 1}); err != nil {
			t.Fatal(err)
		}
		p := sessionParams(st, "slow-purchase", "ptv-slow")
		_, err = slow.CreateCheckoutSession(ctx, p)
		if !stripe.IsRetryable(err) {
			t.Fatalf("error = %v, want a retryable timeout", err)
		}
		s, err := c.CreateCheckoutSession(ctx, p)
		requireNoError(t, "CreateCheckoutSession retry", err)
		if n := len(em.State().SessionsByClientReference["ptv-slow"]); n != 1 {
			t.Fatalf("purchase has %d sessions after a timeout and a retry, want exactly 1 (got %s)", n, s.ID)
		}
	})

	t.Run("an unknown key fails terminally without showing the key", func(t *testing.T) {
		const liveKey = "sk_live_notaccepted_by_the_emulator_42"
		bad, err := stripe.New(stripe.Config{SecretKey: liveKey, APIBase: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		_, err = bad.GetPrice(ctx, st.priceID)
		if !stripe.IsTerminal(err) {
			t.Fatalf("error = %v, want terminal", err)
		}
		for _, s := range []string{err.Error(), stripe.UserMessage(err), fmt.Sprintf("%+v", err)} {
			if strings.Contains(s, liveKey) || strings.Contains(s, "notaccepted") {
				t.Fatalf("error text leaks the key: %s", s)
			}
		}
	})
}

// webhookSink receives the emulator's deliveries, verifies them with
// Verifier and hands the events to the test.
type webhookSink struct {
	mu     sync.Mutex
	events map[string][]stripego.Event
	failed []error
	notify chan struct{}
}

func newWebhookSink(t *testing.T, v *stripe.Verifier) (*webhookSink, *httptest.Server) {
	sink := &webhookSink{events: map[string][]stripego.Event{}, notify: make(chan struct{}, 100)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		ev, err := v.Verify(body, r.Header.Get(stripe.SignatureHeader))
		sink.mu.Lock()
		if err != nil {
			sink.failed = append(sink.failed, err)
		} else {
			sink.events[string(ev.Type)] = append(sink.events[string(ev.Type)], ev)
		}
		sink.mu.Unlock()
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		select {
		case sink.notify <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(srv.Close)
	return sink, srv
}

// await waits, with a deadline, until an event of type typ arrived.
func (s *webhookSink) await(t *testing.T, typ string) stripego.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		evs, failed := s.events[typ], s.failed
		s.mu.Unlock()
		if len(failed) > 0 {
			t.Fatalf("a delivery failed verification: %v", failed[0])
		}
		if len(evs) > 0 {
			return evs[len(evs)-1]
		}
		select {
		case <-s.notify:
		case <-deadline:
			t.Fatalf("no %s event within 10s", typ)
		}
	}
}

func TestWebhooks_EmulatorDeliveriesVerifyAndDecode(t *testing.T) {
	const secret = "whsec_emulator_contract_secret"
	v, err := stripe.NewVerifier([]string{"whsec_rotated_new_one", secret}, stripe.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sink, hookSrv := newWebhookSink(t, v)
	em, _, c := startEmulator(t, emulator.Options{WebhookSecret: secret, WebhookURL: hookSrv.URL})
	st := emulatorFixture(t, c)
	ctx := context.Background()

	params := sessionParams(st, "hook-purchase", "ptv-hooks")
	created, err := c.CreateCheckoutSession(ctx, params)
	requireNoError(t, "CreateCheckoutSession", err)
	if _, err := em.Pay(created.ID, emulator.PayOptions{}); err != nil {
		t.Fatal(err)
	}

	completed, err := stripe.SessionFromEvent(sink.await(t, stripe.EventCheckoutSessionCompleted))
	requireNoError(t, "SessionFromEvent", err)
	if completed.ID != created.ID || completed.Status != stripe.SessionComplete || completed.PaymentStatus != stripe.PaymentPaid {
		t.Fatalf("completed session = %+v", completed)
	}
	requirePrefix(t, "payment intent", completed.PaymentIntentID, "pi_")
	md, err := stripe.ParsePurchaseMetadata(completed.Metadata)
	if err != nil || md != params.Metadata {
		t.Fatalf("metadata from the webhook = %+v (%v), want %+v", md, err, params.Metadata)
	}

	refund, err := c.CreateRefund(ctx, stripe.CreateRefundParams{OwnerUID: "hook-purchase", PaymentIntentID: completed.PaymentIntentID,
		Metadata: map[string]string{stripe.MetaPurchaseID: "ptv-hooks"}})
	requireNoError(t, "CreateRefund", err)
	charge, err := stripe.ChargeFromEvent(sink.await(t, stripe.EventChargeRefunded))
	requireNoError(t, "ChargeFromEvent", err)
	if charge.PaymentIntentID != completed.PaymentIntentID || charge.AmountRefunded != 250 || !charge.Refunded {
		t.Fatalf("refunded charge = %+v", charge)
	}
	if charge.Metadata[stripe.MetaPurchaseID] != "ptv-hooks" {
		t.Fatalf("charge metadata %v lacks the purchase id (payment_intent_data.metadata)", charge.Metadata)
	}

	if _, err := em.FailRefund(refund.ID); err != nil {
		t.Fatal(err)
	}
	updated, err := stripe.RefundFromEvent(sink.await(t, stripe.EventChargeRefundUpdated))
	requireNoError(t, "RefundFromEvent", err)
	if updated.ID != refund.ID || updated.Status != stripe.RefundFailed || updated.PaymentIntentID != completed.PaymentIntentID {
		t.Fatalf("updated refund = %+v", updated)
	}

	// A dispute on a second, paid purchase.
	other, err := c.CreateCheckoutSession(ctx, sessionParams(st, "dispute-purchase", "ptv-dispute"))
	requireNoError(t, "CreateCheckoutSession", err)
	paid, err := em.Pay(other.ID, emulator.PayOptions{})
	requireNoError(t, "Pay", err)
	if _, err := em.Dispute(paid.PaymentIntentID, "lost"); err != nil {
		t.Fatal(err)
	}
	opened, err := stripe.DisputeFromEvent(sink.await(t, stripe.EventChargeDisputeCreated))
	requireNoError(t, "DisputeFromEvent", err)
	closed, err := stripe.DisputeFromEvent(sink.await(t, stripe.EventChargeDisputeClosed))
	requireNoError(t, "DisputeFromEvent", err)
	if opened.PaymentIntentID != paid.PaymentIntentID || closed.ID != opened.ID || closed.Status != "lost" {
		t.Fatalf("dispute opened %+v closed %+v", opened, closed)
	}

	// Expiry arrives as checkout.session.expired.
	open, err := c.CreateCheckoutSession(ctx, sessionParams(st, "expiring-purchase", "ptv-expiring"))
	requireNoError(t, "CreateCheckoutSession", err)
	_, err = c.ExpireCheckoutSession(ctx, open.ID)
	requireNoError(t, "ExpireCheckoutSession", err)
	expired, err := stripe.SessionFromEvent(sink.await(t, stripe.EventCheckoutSessionExpired))
	requireNoError(t, "SessionFromEvent", err)
	if expired.ID != open.ID || expired.Status != stripe.SessionExpired {
		t.Fatalf("expired session = %+v", expired)
	}
}

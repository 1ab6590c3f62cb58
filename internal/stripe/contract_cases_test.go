package stripe_test

import (
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	stripego "github.com/stripe/stripe-go/v76"

	"github.com/md-platform/paytoview-operator/internal/stripe"
)

// This file holds the client cases shared by the contract test against
// stripe-mock (contract_test.go, build tag "contract") and the test against
// the emulator (emulator_contract_test.go). stripe-mock validates every
// request against Stripe's OpenAPI spec for 2023-10-16 but is stateless
// (responses are fixtures), so the cases assert only what both promise;
// stateful assertions run when the target is stateful.

// contractTarget is a Stripe-compatible server the cases run against.
type contractTarget struct {
	client *stripe.Client
	// stateful targets remember objects: ids round-trip, statuses change.
	stateful bool
	// pay plays the buyer paying an open session and returns the session's
	// PaymentIntent id. stripe-mock has no buyer; it returns a fixture id.
	pay func(t *testing.T, sessionID string) string
}

// contractState carries ids from one case to the next.
type contractState struct {
	expiresAt       time.Time
	customerID      string
	productID       string
	priceID         string
	sessionID       string
	paidSessionID   string
	paymentIntentID string
	refundID        string
}

// clientCase is one client call with realistic parameters.
type clientCase struct {
	name string
	run  func(t *testing.T, ctx context.Context, tg contractTarget, st *contractState)
}

const (
	contractPurchaseUID     = "8a4d2c1e-1111-4c3b-9e2f-5d6c7b8a9f01"
	contractPaidPurchaseUID = "8a4d2c1e-2222-4c3b-9e2f-5d6c7b8a9f02"
	contractProductUID      = "3f1e2d3c-3333-4b5a-8c7d-6e5f4a3b2c13"
	contractCustomerUID     = "7e6d5c4b-4444-4a39-8b27-1c0d9e8f7a64"
)

func sessionParams(st *contractState, ownerUID, purchaseID string) stripe.CreateSessionParams {
	return stripe.CreateSessionParams{
		OwnerUID:   ownerUID,
		CustomerID: st.customerID,
		PriceID:    st.priceID,
		ReturnURL:  "https://video.example.com/purchase/complete",
		ExpiresAt:  st.expiresAt,
		Metadata: stripe.PurchaseMetadata{
			PurchaseID: purchaseID,
			ProductID:  "gold-video",
			UserID:     "auth0|user-42",
			EntityType: 1,
			EntityID:   "vid_9f8e7d",
		},
	}
}

func requirePrefix(t *testing.T, what, id, prefix string) {
	t.Helper()
	if !strings.HasPrefix(id, prefix) {
		t.Fatalf("%s id %q does not start with %q", what, id, prefix)
	}
}

func requireNoError(t *testing.T, op string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
}

// clientCases calls every client method, in an order where later calls use
// the ids of earlier ones.
func clientCases() []clientCase {
	return []clientCase{
		{"CreateCustomer", func(t *testing.T, ctx context.Context, tg contractTarget, st *contractState) {
			c, err := tg.client.CreateCustomer(ctx, stripe.CreateCustomerParams{
				OwnerUID: contractCustomerUID, UserID: "auth0|user-42", Email: "viewer@example.com",
			})
			requireNoError(t, "CreateCustomer", err)
			requirePrefix(t, "customer", c.ID, "cus_")
			st.customerID = c.ID
		}},
		{"CreateProduct", func(t *testing.T, ctx context.Context, tg contractTarget, st *contractState) {
			p, err := tg.client.CreateProduct(ctx, stripe.CreateProductParams{
				OwnerUID: contractProductUID, Name: "Gold video", Description: "Lifetime access to one video",
				Metadata: map[string]string{stripe.MetaProductID: "gold-video"},
			})
			requireNoError(t, "CreateProduct", err)
			requirePrefix(t, "product", p.ID, "prod_")
			if tg.stateful && !p.Active {
				t.Errorf("new product is not active")
			}
			st.productID = p.ID
		}},
		{"CreatePrice", func(t *testing.T, ctx context.Context, tg contractTarget, st *contractState) {
			p, err := tg.client.CreatePrice(ctx, stripe.CreatePriceParams{
				OwnerUID: contractProductUID, Generation: 1, ProductID: st.productID, Amount: 499, Currency: "EUR",
				Metadata: map[string]string{stripe.MetaProductID: "gold-video", "generation": "1"},
			})
			requireNoError(t, "CreatePrice", err)
			requirePrefix(t, "price", p.ID, "price_")
			if tg.stateful {
				want := stripe.Price{ID: p.ID, ProductID: st.productID, Active: true, Type: "one_time", UnitAmount: 499, Currency: "eur"}
				if p != want {
					t.Errorf("price = %+v, want %+v", p, want)
				}
			}
			st.priceID = p.ID
		}},
		{"GetPrice", func(t *testing.T, ctx context.Context, tg contractTarget, st *contractState) {
			p, err := tg.client.GetPrice(ctx, st.priceID)
			requireNoError(t, "GetPrice", err)
			requirePrefix(t, "price", p.ID, "price_")
			if tg.stateful && (p.ID != st.priceID || p.UnitAmount != 499 || !p.Active) {
				t.Errorf("price = %+v, want the created one", p)
			}
		}},
		{"CreateCheckoutSession", func(t *testing.T, ctx context.Context, tg contractTarget, st *contractState) {
			params := sessionParams(st, contractPurchaseUID, "ptv-open-1")
			s, err := tg.client.CreateCheckoutSession(ctx, params)
			requireNoError(t, "CreateCheckoutSession", err)
			requirePrefix(t, "checkout session", s.ID, "cs_")
			st.sessionID = s.ID
			if !tg.stateful {
				return
			}
			if !strings.HasPrefix(s.ClientSecret, s.ID+"_secret_") || len(s.ClientSecret) <= len(s.ID+"_secret_") {
				t.Errorf("client secret %q is not shaped <session id>_secret_<random>", s.ClientSecret)
			}
			if s.Status != stripe.SessionOpen || s.PaymentStatus != stripe.PaymentUnpaid {
				t.Errorf("status %s/%s, want open/unpaid", s.Status, s.PaymentStatus)
			}
			if s.CustomerID != st.customerID || s.ClientReferenceID != "ptv-open-1" {
				t.Errorf("customer %q reference %q", s.CustomerID, s.ClientReferenceID)
			}
			if !s.ExpiresAt.Equal(st.expiresAt) {
				t.Errorf("expires_at %s, want %s", s.ExpiresAt, st.expiresAt)
			}
			if s.AmountTotal != 499 || s.Currency != "eur" {
				t.Errorf("amount %d %s, want 499 eur", s.AmountTotal, s.Currency)
			}
			if !maps.Equal(s.Metadata, params.Metadata.Map()) {
				t.Errorf("metadata %v, want %v", s.Metadata, params.Metadata.Map())
			}
		}},
		{"CreateCheckoutSession retried with the same owner", func(t *testing.T, ctx context.Context, tg contractTarget, st *contractState) {
			s, err := tg.client.CreateCheckoutSession(ctx, sessionParams(st, contractPurchaseUID, "ptv-open-1"))
			requireNoError(t, "CreateCheckoutSession (retry)", err)
			requirePrefix(t, "checkout session", s.ID, "cs_")
			if tg.stateful && s.ID != st.sessionID {
				t.Errorf("retry created session %s, want the first one %s", s.ID, st.sessionID)
			}
		}},
		{"GetCheckoutSession", func(t *testing.T, ctx context.Context, tg contractTarget, st *contractState) {
			s, err := tg.client.GetCheckoutSession(ctx, st.sessionID)
			requireNoError(t, "GetCheckoutSession", err)
			requirePrefix(t, "checkout session", s.ID, "cs_")
			if tg.stateful {
				want := sessionParams(st, contractPurchaseUID, "ptv-open-1").Metadata.Map()
				if s.ID != st.sessionID || s.Status != stripe.SessionOpen || !maps.Equal(s.Metadata, want) {
					t.Errorf("session = %+v, want the open one with metadata %v", s, want)
				}
			}
		}},
		{"ExpireCheckoutSession", func(t *testing.T, ctx context.Context, tg contractTarget, st *contractState) {
			s, err := tg.client.ExpireCheckoutSession(ctx, st.sessionID)
			requireNoError(t, "ExpireCheckoutSession", err)
			requirePrefix(t, "checkout session", s.ID, "cs_")
			if !tg.stateful {
				return
			}
			if s.Status != stripe.SessionExpired {
				t.Errorf("status after expire = %s, want expired", s.Status)
			}
			again, err := tg.client.GetCheckoutSession(ctx, st.sessionID)
			requireNoError(t, "GetCheckoutSession after expire", err)
			if again.Status != stripe.SessionExpired {
				t.Errorf("retrieved status after expire = %s, want expired", again.Status)
			}
			// An expired session cannot be expired again: terminal.
			_, err = tg.client.ExpireCheckoutSession(ctx, st.sessionID)
			if !stripe.IsTerminal(err) {
				t.Errorf("expiring an expired session: %v, want a terminal error", err)
			}
		}},
		{"CreateCheckoutSession for a purchase that gets paid", func(t *testing.T, ctx context.Context, tg contractTarget, st *contractState) {
			s, err := tg.client.CreateCheckoutSession(ctx, sessionParams(st, contractPaidPurchaseUID, "ptv-paid-2"))
			requireNoError(t, "CreateCheckoutSession", err)
			requirePrefix(t, "checkout session", s.ID, "cs_")
			if tg.stateful && s.ID == st.sessionID {
				t.Fatalf("another purchase got the same session %s", s.ID)
			}
			st.paidSessionID = s.ID
			st.paymentIntentID = tg.pay(t, s.ID)
			if !tg.stateful {
				return
			}
			paid, err := tg.client.GetCheckoutSession(ctx, s.ID)
			requireNoError(t, "GetCheckoutSession after paying", err)
			if paid.Status != stripe.SessionComplete || paid.PaymentStatus != stripe.PaymentPaid || paid.PaymentIntentID != st.paymentIntentID {
				t.Errorf("paid session = %+v, want complete/paid with intent %s", paid, st.paymentIntentID)
			}
		}},
		{"GetPaymentIntent", func(t *testing.T, ctx context.Context, tg contractTarget, st *contractState) {
			pi, err := tg.client.GetPaymentIntent(ctx, st.paymentIntentID)
			requireNoError(t, "GetPaymentIntent", err)
			requirePrefix(t, "payment intent", pi.ID, "pi_")
			if !tg.stateful {
				return
			}
			want := sessionParams(st, contractPaidPurchaseUID, "ptv-paid-2").Metadata.Map()
			if pi.ID != st.paymentIntentID || pi.Status != "succeeded" || pi.Amount != 499 || !maps.Equal(pi.Metadata, want) {
				t.Errorf("payment intent = %+v, want succeeded, 499, metadata %v", pi, want)
			}
			if pi.LatestCharge == nil {
				t.Fatalf("latest charge not expanded")
			}
			requirePrefix(t, "charge", pi.LatestCharge.ID, "ch_")
			if pi.LatestCharge.Amount != 499 || pi.LatestCharge.PaymentIntentID != pi.ID || !maps.Equal(pi.LatestCharge.Metadata, want) {
				t.Errorf("latest charge = %+v", *pi.LatestCharge)
			}
		}},
		{"CreateRefund", func(t *testing.T, ctx context.Context, tg contractTarget, st *contractState) {
			md := map[string]string{stripe.MetaPurchaseID: "ptv-paid-2", "requestedBy": "admin-7", "reason": "customer asked"}
			r, err := tg.client.CreateRefund(ctx, stripe.CreateRefundParams{
				OwnerUID: contractPaidPurchaseUID, PaymentIntentID: st.paymentIntentID, Metadata: md,
			})
			requireNoError(t, "CreateRefund", err)
			requirePrefix(t, "refund", r.ID, "re_")
			st.refundID = r.ID
			if !tg.stateful {
				return
			}
			if r.PaymentIntentID != st.paymentIntentID || r.Amount != 499 || !maps.Equal(r.Metadata, md) {
				t.Errorf("refund = %+v, want a full refund of %s with metadata %v", r, st.paymentIntentID, md)
			}
			if r.Status != stripe.RefundSucceeded && r.Status != stripe.RefundPending {
				t.Errorf("refund status %s", r.Status)
			}
			// The same purchase asking again refunds nothing more.
			again, err := tg.client.CreateRefund(ctx, stripe.CreateRefundParams{
				OwnerUID: contractPaidPurchaseUID, PaymentIntentID: st.paymentIntentID, Metadata: md,
			})
			requireNoError(t, "CreateRefund (retry)", err)
			if again.ID != r.ID {
				t.Errorf("retried refund created %s, want the first one %s", again.ID, r.ID)
			}
		}},
		{"GetRefund", func(t *testing.T, ctx context.Context, tg contractTarget, st *contractState) {
			r, err := tg.client.GetRefund(ctx, st.refundID)
			requireNoError(t, "GetRefund", err)
			requirePrefix(t, "refund", r.ID, "re_")
			if tg.stateful && (r.ID != st.refundID || r.PaymentIntentID != st.paymentIntentID) {
				t.Errorf("refund = %+v", r)
			}
		}},
		{"UpdateProduct renames", func(t *testing.T, ctx context.Context, tg contractTarget, st *contractState) {
			p, err := tg.client.UpdateProduct(ctx, st.productID, stripe.UpdateProductParams{
				Name: stripego.String("Gold video (HD)"), Description: stripego.String("Lifetime access, HD"),
			})
			requireNoError(t, "UpdateProduct", err)
			requirePrefix(t, "product", p.ID, "prod_")
			if tg.stateful && (p.ID != st.productID || !p.Active) {
				t.Errorf("product = %+v, want the same active product", p)
			}
		}},
		{"ArchivePrice", func(t *testing.T, ctx context.Context, tg contractTarget, st *contractState) {
			p, err := tg.client.ArchivePrice(ctx, st.priceID)
			requireNoError(t, "ArchivePrice", err)
			requirePrefix(t, "price", p.ID, "price_")
			if tg.stateful && (p.ID != st.priceID || p.Active) {
				t.Errorf("price = %+v, want it inactive", p)
			}
		}},
		{"UpdateProduct archives", func(t *testing.T, ctx context.Context, tg contractTarget, st *contractState) {
			p, err := tg.client.UpdateProduct(ctx, st.productID, stripe.UpdateProductParams{Active: stripego.Bool(false)})
			requireNoError(t, "UpdateProduct", err)
			requirePrefix(t, "product", p.ID, "prod_")
			if tg.stateful && p.Active {
				t.Errorf("product still active after archiving")
			}
		}},
	}
}

// runClientCases runs every case in order against tg, each as a subtest;
// it stops at the first failure, since later cases need earlier ids.
func runClientCases(t *testing.T, tg contractTarget) {
	st := &contractState{expiresAt: time.Now().Add(time.Hour).Truncate(time.Second)}
	for _, tc := range clientCases() {
		ok := t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tc.run(t, ctx, tg, st)
		})
		if !ok {
			t.Fatalf("case %q failed; later cases depend on it", tc.name)
		}
	}
}

// keyRecorder is a reverse proxy in front of a Stripe-compatible server that
// records the Idempotency-Key of every POST and answers the first
// failFirst POSTs itself with a 503, as a flaky network path would.
type keyRecorder struct {
	*httptest.Server
	mu        sync.Mutex
	keys      []string
	failFirst int
}

func newKeyRecorder(t *testing.T, target string, failFirst int) *keyRecorder {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	kr := &keyRecorder{failFirst: failFirst}
	kr.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			kr.mu.Lock()
			kr.keys = append(kr.keys, r.Header.Get("Idempotency-Key"))
			fail := len(kr.keys) <= kr.failFirst
			kr.mu.Unlock()
			if fail {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(`{"error":{"type":"api_error","message":"upstream unavailable"}}`))
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(kr.Close)
	return kr
}

func (kr *keyRecorder) recorded() []string {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	return append([]string(nil), kr.keys...)
}

// testRetrySendsSameKey creates a customer through a proxy that fails the
// first attempt: stripe-go's retry and a later caller retry must carry the
// same key as the first attempt.
func testRetrySendsSameKey(t *testing.T, base, key string) {
	kr := newKeyRecorder(t, base, 1)
	c, err := stripe.New(stripe.Config{SecretKey: key, APIBase: kr.URL, MaxNetworkRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	params := stripe.CreateCustomerParams{OwnerUID: "5d4c3b2a-9999-4e8f-a1b2-c3d4e5f6a7b8", UserID: "auth0|retry"}
	first, err := c.CreateCustomer(context.Background(), params)
	requireNoError(t, "CreateCustomer through a flaky path", err)
	second, err := c.CreateCustomer(context.Background(), params)
	requireNoError(t, "CreateCustomer retried by the caller", err)

	keys := kr.recorded()
	want := stripe.IdempotencyKey(params.OwnerUID, stripe.OpCreateCustomer)
	if len(keys) != 3 {
		t.Fatalf("proxy saw %d POSTs (%v), want 3: failed attempt, stripe-go retry, caller retry", len(keys), keys)
	}
	for i, k := range keys {
		if k != want {
			t.Errorf("POST %d carried Idempotency-Key %q, want %q", i, k, want)
		}
	}
	requirePrefix(t, "customer", first.ID, "cus_")
	requirePrefix(t, "customer", second.ID, "cus_")
}

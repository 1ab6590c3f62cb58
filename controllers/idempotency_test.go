package controllers

import (
	"strconv"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/lifecycle"
	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

// Stripe saves the answer of a create under its idempotency key, a 500
// included, and replays it for 24 hours. These tests give a create one 500
// (before or after Stripe did the work) and check that the object still gets
// its Stripe counterpart, through a new key, with at most one copy in use.

// serverErrorCases are the two kinds of 500: Stripe failed before doing
// anything, or after creating the object.
var serverErrorCases = []struct {
	name      string
	processed bool
}{
	{"nothing created", false},
	{"created, then failed", true},
}

func startCustomerController(t *testing.T, ns string, sc CustomerStripe) (stop func()) {
	t.Helper()
	_, stop = startManager(t, ns, func(mgr ctrl.Manager) error {
		return (&CustomerReconciler{
			Client:   mgr.GetClient(),
			Stripe:   sc,
			Recorder: mgr.GetEventRecorder("paytoview-operator"),
		}).SetupWithManager(mgr)
	})
	return stop
}

func waitCustomerReady(t *testing.T, c *v1alpha1.Customer) {
	t.Helper()
	eventually(t, waitTimeout, func() bool {
		getObject(t, c)
		ready := conditionReady(c.Status.Conditions)
		return ready.Status == metav1.ConditionTrue && ready.Reason == CustomerReasonCreated
	}, "Customer %s did not become Ready", c.Name)
}

func TestCustomer_ServerErrorMovesTheCreateToANewKey(t *testing.T) {
	for _, tc := range serverErrorCases {
		t.Run(tc.name, func(t *testing.T) {
			ns := testEnv.Namespace(t)
			em, sc := newEmulatedStripe(t)
			if _, err := em.AddFault(emulator.Fault{Operation: stripe.OpCreateCustomer, Status: 500, AfterProcessing: tc.processed, Count: 1}); err != nil {
				t.Fatal(err)
			}
			startCustomerController(t, ns, sc)
			c := newTestCustomer(ns, "auth0|server-error", "")
			createObject(t, c)
			waitCustomerReady(t, c)

			if c.Status.CreateAttempt != 1 {
				t.Errorf("createAttempt = %d, want 1 (one 500)", c.Status.CreateAttempt)
			}
			want := 1
			if tc.processed {
				// The 500's customer is an orphan nobody names.
				want = 2
			}
			if n := len(em.State().Customers); n != want {
				t.Fatalf("%d Stripe customers, want %d", n, want)
			}
			// The recorded customer is the answer of the second key; the
			// first key still answers its 500.
			params := stripe.CreateCustomerParams{OwnerUID: string(c.UID) + "@" + strconv.FormatInt(c.Generation, 10), UserID: c.Spec.UserID}
			if _, err := sc.CreateCustomer(testContext(t), params); !stripe.IsKeySpent(err) {
				t.Errorf("the first key answers %v, want its saved 500", err)
			}
			params.Attempt = 1
			if cus, err := sc.CreateCustomer(testContext(t), params); err != nil || cus.ID != c.Status.StripeCustomerID {
				t.Errorf("the second key answers %+v, %v; want the recorded customer %s", cus, err, c.Status.StripeCustomerID)
			}
		})
	}
}

func TestCustomer_RestartReusesTheKeyOfTheRecordedAttempt(t *testing.T) {
	ns := testEnv.Namespace(t)
	em, sc := newEmulatedStripe(t)
	// A previous operator got a 500, recorded attempt 1, sent the create
	// with attempt 1's key and died before it recorded the answer.
	c := newTestCustomer(ns, "auth0|crashed", "")
	createObject(t, c)
	base := c.DeepCopy()
	c.Status.CreateAttempt = 1
	if err := testEnv.Client.Status().Patch(testContext(t), c, client.MergeFrom(base)); err != nil {
		t.Fatalf("recording the attempt: %v", err)
	}
	sent, err := sc.CreateCustomer(testContext(t), stripe.CreateCustomerParams{
		OwnerUID: string(c.UID) + "@" + strconv.FormatInt(c.Generation, 10), Attempt: 1, UserID: c.Spec.UserID,
	})
	if err != nil {
		t.Fatal(err)
	}

	startCustomerController(t, ns, sc)
	waitCustomerReady(t, c)
	if c.Status.StripeCustomerID != sent.ID || c.Status.CreateAttempt != 1 {
		t.Fatalf("status names %s (attempt %d), want the customer %s the lost create made (attempt 1)",
			c.Status.StripeCustomerID, c.Status.CreateAttempt, sent.ID)
	}
	if n := len(em.State().Customers); n != 1 {
		t.Fatalf("%d Stripe customers, want 1", n)
	}
}

func TestPurchase_SessionCreateAfterAServerErrorUsesANewKey(t *testing.T) {
	for _, tc := range serverErrorCases {
		t.Run(tc.name, func(t *testing.T) {
			h := startPurchaseHarness(t, harnessOptions{})
			if _, err := h.em.AddFault(emulator.Fault{Operation: stripe.OpCreateCheckoutSession, Status: 500, AfterProcessing: tc.processed, Count: 1}); err != nil {
				t.Fatal(err)
			}
			p := h.waitOpen(h.newPurchase("user-1", "video-1"))

			sessions := h.sessionsOf(p)
			want := 1
			if tc.processed {
				want = 2
			}
			if len(sessions) != want {
				t.Fatalf("%d sessions in Stripe, want %d", len(sessions), want)
			}
			recorded := false
			for _, s := range sessions {
				recorded = recorded || s.ID == p.Status.CheckoutSessionID
				if s.Status != "open" || s.PaymentStatus != "unpaid" {
					t.Errorf("session %s is %s/%s, want open and unpaid", s.ID, s.Status, s.PaymentStatus)
				}
			}
			if !recorded {
				t.Fatalf("status names session %s, which Stripe does not hold", p.Status.CheckoutSessionID)
			}
			// The buyer only ever gets the recorded session's client
			// secret: the other session's was in the answer that was a 500.
			sec, ok := h.secret(p)
			if !ok || !strings.HasPrefix(string(sec.Data[ClientSecretKey]), p.Status.CheckoutSessionID+"_secret_") {
				t.Fatalf("the Secret does not hold the client secret of session %s", p.Status.CheckoutSessionID)
			}
			h.pay(p, emulator.WebhookDeliver)
			h.waitAccess(p, metav1.ConditionTrue, lifecycle.ReasonPaid)
			if paid := h.em.State().PaidChargesByMetadata(stripe.MetaPurchaseID)[p.Name]; len(paid) != 1 {
				t.Fatalf("%d paid charges for the purchase, want 1", len(paid))
			}
		})
	}
}

func TestPurchase_RefundAfterAServerErrorUsesANewKeyAndRefundsOnce(t *testing.T) {
	for _, tc := range serverErrorCases {
		t.Run(tc.name, func(t *testing.T) {
			h := startPurchaseHarness(t, harnessOptions{})
			p := h.waitOpen(h.newPurchase("user-1", "video-1"))
			paid := h.pay(p, emulator.WebhookDeliver)
			h.waitPhase(p, v1alpha1.PurchaseCompleted)
			if _, err := h.em.AddFault(emulator.Fault{Operation: stripe.OpCreateRefund, Status: 500, AfterProcessing: tc.processed, Count: 1}); err != nil {
				t.Fatal(err)
			}
			h.requestRefund(p, "", "admin-7")
			p = h.waitFor(p, "Refunded with the refund recorded", func(p *v1alpha1.Purchase) bool {
				if p.Status.Phase != v1alpha1.PurchaseRefunded || lifecycle.ChargeCheckRequested(p) {
					return false
				}
				if tc.processed {
					// The 500's refund is the one: its charge.refunded
					// may refund the purchase before the next key is
					// even recorded, or the next key is refused
					// (charge_already_refunded) and the charge read
					// decides. Its id is never learnt either way.
					return p.Status.RefundAttempt <= 1
				}
				return p.Status.RefundAttempt == 1 && p.Status.StripeRefundStatus == string(stripe.RefundSucceeded)
			})
			h.waitWebhooks()
			p = h.get(p)

			var refunds []emulator.Refund
			for _, re := range h.em.State().Refunds {
				if re.PaymentIntentID == paid.PaymentIntentID {
					refunds = append(refunds, re)
				}
			}
			if len(refunds) != 1 || refunds[0].Status != "succeeded" || refunds[0].Amount != 500 {
				t.Fatalf("refunds of the payment: %+v, want one succeeded refund of 500", refunds)
			}
			if p.Status.AmountRefunded != 500 || !hasCondition(p, v1alpha1.ConditionAccess, metav1.ConditionFalse, lifecycle.ReasonRefunded) ||
				lifecycle.ChargeCheckRequested(p) {
				t.Fatalf("after the refund: %s", describeStatus(&p))
			}
			if !tc.processed && p.Status.StripeRefundID != refunds[0].ID {
				t.Errorf("stripeRefundId %q, want %s", p.Status.StripeRefundID, refunds[0].ID)
			}
		})
	}
}

func TestPurchase_RestartReusesTheKeyOfTheRecordedRefundAttempt(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	p := h.waitOpen(h.newPurchase("user-1", "video-1"))
	paid := h.pay(p, emulator.WebhookDeliver)
	h.waitPhase(p, v1alpha1.PurchaseCompleted)
	h.waitWebhooks()

	// A previous operator got a 500, recorded attempt 1, sent the refund
	// with attempt 1's key and died before it recorded the answer. The
	// refund's webhooks are held, so only the operator's own create can
	// learn its id.
	h.stop()
	h.em.HoldWebhooks()
	cur := h.get(p)
	base := cur.DeepCopy()
	cur.Status.RefundAttempt = 1
	if err := testEnv.Client.Status().Patch(testContext(t), cur, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		t.Fatalf("recording the attempt: %v", err)
	}
	h.requestRefund(p, "", "admin-7")
	sent, err := h.stripe.CreateRefund(testContext(t), stripe.CreateRefundParams{
		OwnerUID: string(p.UID), Attempt: 1, PaymentIntentID: paid.PaymentIntentID,
		Metadata: map[string]string{stripe.MetaPurchaseID: p.Name, refundMetaRequestedBy: "admin-7"},
	})
	if err != nil {
		t.Fatal(err)
	}

	h.start()
	p = h.waitFor(p, "the lost refund recorded", func(p *v1alpha1.Purchase) bool { return p.Status.StripeRefundID != "" })
	if p.Status.StripeRefundID != sent.ID || p.Status.RefundAttempt != 1 || p.Status.Phase != v1alpha1.PurchaseRefunded {
		t.Fatalf("status %s; want refund %s (the lost create's) at attempt 1, Refunded", describeStatus(&p), sent.ID)
	}
	if _, err := h.em.ReleaseWebhooks(emulator.ReleaseInOrder); err != nil {
		t.Fatal(err)
	}
	h.waitWebhooks()
	if n := len(h.em.State().Refunds); n != 1 {
		t.Fatalf("%d refunds, want 1", n)
	}
}

func TestProduct_ServerErrorsMoveTheCreatesToNewKeys(t *testing.T) {
	for _, tc := range serverErrorCases {
		t.Run(tc.name, func(t *testing.T) {
			h := startProductController(t, nil)
			for _, op := range []string{stripe.OpCreateProduct, stripe.OpCreatePrice} {
				if _, err := h.em.AddFault(emulator.Fault{Operation: op, Status: 500, AfterProcessing: tc.processed, Count: 1}); err != nil {
					t.Fatal(err)
				}
			}
			p := newTestProduct(h.ns, "server-errors", "")
			createObject(t, p)
			waitReady(t, p, metav1.ConditionTrue, ProductReasonPriceReady)
			if p.Status.ProductCreateAttempt != 1 || p.Status.PriceCreateAttempt != 1 {
				t.Errorf("attempts: product %d, price %d; want 1 and 1", p.Status.ProductCreateAttempt, p.Status.PriceCreateAttempt)
			}
			st := h.em.State()
			want := 1
			if tc.processed {
				want = 2
			}
			if len(st.Products) != want || len(st.Prices) != want {
				t.Fatalf("%d products and %d prices in Stripe, want %d of each", len(st.Products), len(st.Prices), want)
			}
			// Purchases are sold the recorded price of the recorded
			// product; an orphan is named nowhere.
			pr := h.price(t, p.Status.StripePriceID)
			if !pr.Active || pr.ProductID != p.Status.StripeProductID || p.Annotations[annotationManagedStripePrice] != pr.ID {
				t.Errorf("recorded price %+v; status %s/%s", pr, p.Status.StripeProductID, p.Status.StripePriceID)
			}
		})
	}
}

// stop stops the manager (the operator is down) until start.
func (h *purchaseHarness) stop() {
	h.t.Helper()
	h.mu.Lock()
	stop := h.stopMgr
	h.mu.Unlock()
	stop()
}

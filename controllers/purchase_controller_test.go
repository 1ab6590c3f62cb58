package controllers

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/lifecycle"
	"github.com/md-platform/paytoview-operator/internal/naming"
	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

func TestPurchase_CheckoutPayCompleteAndExpire(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	completedBefore := testutil.ToFloat64(purchaseTransitions.WithLabelValues("Pending", "Completed"))
	readyBefore := histogramSamples(t, purchaseSessionReady)

	p := h.newPurchase("user-1", "video-1")
	p = h.waitOpen(p)

	// The session exists in Stripe with the contract's metadata, the
	// client secret is in the Secret and nowhere in status.
	if !strings.HasPrefix(p.Status.StripeCustomerID, "cus_") || !strings.HasPrefix(p.Status.CheckoutSessionID, "cs_") {
		t.Fatalf("status lacks Stripe ids: %s", describeStatus(&p))
	}
	if p.Status.CheckoutSessionExpiresAt == nil || p.Status.CheckoutSessionExpiresAt.Sub(h.clock.Now()) < DefaultSessionTTL-time.Minute {
		t.Fatalf("checkoutSessionExpiresAt = %v, want about %s ahead", p.Status.CheckoutSessionExpiresAt, DefaultSessionTTL)
	}
	if !controllerutil.ContainsFinalizer(p, v1alpha1.PurchaseFinalizer) {
		t.Fatalf("finalizer missing: %v", p.Finalizers)
	}
	sessions := h.sessionsOf(p)
	if len(sessions) != 1 {
		t.Fatalf("emulator has %d sessions for the purchase, want 1", len(sessions))
	}
	sess := sessions[0]
	wantMeta := map[string]string{
		stripe.MetaPurchaseID: p.Name, stripe.MetaProductID: "video-product", stripe.MetaUserID: "user-1",
		stripe.MetaEntityType: "1", stripe.MetaEntityID: "video-1",
	}
	for k, v := range wantMeta {
		if sess.Metadata[k] != v || sess.PaymentIntentMetadata[k] != v {
			t.Errorf("metadata %s: session %q, payment intent %q; want %q", k, sess.Metadata[k], sess.PaymentIntentMetadata[k], v)
		}
	}
	if sess.CustomerID != p.Status.StripeCustomerID || !sess.ExpiresAt.Equal(p.Status.CheckoutSessionExpiresAt.Time) {
		t.Errorf("session customer %s expires %v; status says %s, %v", sess.CustomerID, sess.ExpiresAt, p.Status.StripeCustomerID, p.Status.CheckoutSessionExpiresAt)
	}
	sec, ok := h.secret(p)
	if !ok {
		t.Fatal("Ready=True but no client secret Secret")
	}
	clientSecret := string(sec.Data[ClientSecretKey])
	if !strings.HasPrefix(clientSecret, p.Status.CheckoutSessionID+"_secret_") {
		t.Errorf("client secret %q does not belong to session %s", clientSecret, p.Status.CheckoutSessionID)
	}
	if sec.Labels[LabelClientSecret] != "true" || !metav1.IsControlledBy(sec, p) {
		t.Errorf("Secret labels %v owners %v", sec.Labels, sec.OwnerReferences)
	}
	status, _ := json.Marshal(p.Status)
	if strings.Contains(string(status), clientSecret) {
		t.Error("the client secret is in status")
	}
	for _, e := range h.events.all() {
		if strings.Contains(e.Note, clientSecret) {
			t.Errorf("the client secret is in an Event: %+v", e)
		}
	}
	cus := &v1alpha1.Customer{}
	cus.Namespace, cus.Name = h.ns, naming.CustomerName("user-1")
	getObject(t, cus)
	if cus.Spec.UserID != "user-1" || cus.Status.StripeCustomerID != p.Status.StripeCustomerID {
		t.Errorf("Customer %s: %+v", cus.Name, cus.Status)
	}
	if got := histogramSamples(t, purchaseSessionReady); got != readyBefore+1 {
		t.Errorf("session-ready histogram has %d samples, want %d (one more for this session)", got, readyBefore+1)
	}

	paid := h.pay(p, emulator.WebhookDeliver)
	p = h.waitPhase(p, v1alpha1.PurchaseCompleted)
	if p.Status.ExternalTransactionID != paid.PaymentIntentID || p.Status.CompletedAt == nil {
		t.Fatalf("completion not recorded: %s", describeStatus(&p))
	}
	if want := p.Status.CompletedAt.Add(30 * 24 * time.Hour); p.Status.ExpiresAt == nil || !p.Status.ExpiresAt.Time.Equal(want) {
		t.Fatalf("expiresAt = %v, want %v", p.Status.ExpiresAt, want)
	}
	if !hasCondition(p, v1alpha1.ConditionAccess, metav1.ConditionTrue, lifecycle.ReasonPaid) {
		t.Fatalf("Access = %+v", condition(p, v1alpha1.ConditionAccess))
	}
	eventually(t, waitTimeout, func() bool { _, ok := h.secret(p); return !ok }, "the client secret Secret is deleted once paid")
	h.waitEvent(p, "Normal", lifecycle.EventCompleted)
	eventually(t, waitTimeout, func() bool {
		return testutil.ToFloat64(purchaseTransitions.WithLabelValues("Pending", "Completed")) >= completedBefore+1
	}, "the transitions counter counts Pending→Completed")

	// A day before expiry access holds; at expiry it ends, phase stays.
	h.advance(29 * 24 * time.Hour)
	h.poke(p)
	h.barrier() // the reconcile the poke asked for has run
	if p = h.get(p); !hasCondition(p, v1alpha1.ConditionAccess, metav1.ConditionTrue, lifecycle.ReasonPaid) {
		t.Fatalf("access ended early: %+v", condition(p, v1alpha1.ConditionAccess))
	}
	h.advance(24*time.Hour + time.Second)
	h.poke(p)
	p = h.waitAccess(p, metav1.ConditionFalse, lifecycle.ReasonExpired)
	if p.Status.Phase != v1alpha1.PurchaseCompleted {
		t.Fatalf("phase = %s after expiry, want Completed", p.Status.Phase)
	}
	h.waitEvent(p, "Normal", lifecycle.EventAccessExpired)
}

func TestPurchase_LifetimeAccessNeverExpires(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	p := h.waitOpen(h.newPurchase("user-1", "video-1", func(p *v1alpha1.Purchase) { p.Spec.AccessDurationDays = nil }))
	h.pay(p, emulator.WebhookDeliver)
	p = h.waitAccess(p, metav1.ConditionTrue, lifecycle.ReasonPaid)
	if p.Status.ExpiresAt != nil {
		t.Fatalf("lifetime purchase has expiresAt %v", p.Status.ExpiresAt)
	}
	h.advance(50 * 365 * 24 * time.Hour)
	before := h.get(p).ResourceVersion
	h.poke(p)
	eventually(t, waitTimeout, func() bool { return h.get(p).ResourceVersion != before }, "recheck annotation stored")
	// The reconcile that follows the poke must leave access alone; give
	// it a chance by waiting for an unrelated purchase to be processed
	// after it (the controller handles one key at a time in order).
	q := h.waitOpen(h.newPurchase("user-2", "video-2"))
	_ = q
	if p = h.get(p); !hasCondition(p, v1alpha1.ConditionAccess, metav1.ConditionTrue, lifecycle.ReasonPaid) {
		t.Fatalf("lifetime access ended: %+v", condition(p, v1alpha1.ConditionAccess))
	}
}

func TestPurchase_AdminRefund(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	p := h.waitOpen(h.newPurchase("user-1", "video-1"))
	h.pay(p, emulator.WebhookDeliver)
	p = h.waitPhase(p, v1alpha1.PurchaseCompleted)

	h.requestRefund(p, "customer complaint", "admin-7")
	// The charge.refunded webhook may record the refund first; the
	// operator's refund id follows.
	p = h.waitFor(p, "Refunded with the operator's refund id", func(p *v1alpha1.Purchase) bool {
		return p.Status.Phase == v1alpha1.PurchaseRefunded && p.Status.StripeRefundID != ""
	})
	if p.Status.AmountRefunded != 500 || p.Status.RefundedAt == nil || !strings.HasPrefix(p.Status.StripeRefundID, "re_") {
		t.Fatalf("refund not recorded: %s", describeStatus(&p))
	}
	if !hasCondition(p, v1alpha1.ConditionAccess, metav1.ConditionFalse, lifecycle.ReasonRefunded) ||
		!hasCondition(p, v1alpha1.ConditionRefunded, metav1.ConditionTrue, lifecycle.ReasonRefunded) {
		t.Fatalf("conditions after refund: %s", describeStatus(&p))
	}
	h.waitWebhooks()
	refunds := h.em.State().Refunds
	if len(refunds) != 1 || refunds[0].ID != p.Status.StripeRefundID || refunds[0].Amount != 500 ||
		refunds[0].Metadata[stripe.MetaPurchaseID] != p.Name || refunds[0].Metadata["requestedBy"] != "admin-7" ||
		refunds[0].Metadata["reason"] != "customer complaint" {
		t.Fatalf("emulator refunds: %+v", refunds)
	}
	// A restart re-reconciles everything: still one refund.
	h.restart()
	h.poke(p)
	h.barrier() // the reconcile after the restart has run
	if n := len(h.em.State().Refunds); n != 1 {
		t.Fatalf("%d refunds after restart, want 1", n)
	}
	if n := h.countEvents(p, eventReasonRefundRequested); n != 1 {
		t.Fatalf("%d RefundRequested events, want 1", n)
	}
}

func TestPurchase_PartialRefundKeepsAccess(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	p := h.waitOpen(h.newPurchase("user-1", "video-1"))
	paid := h.pay(p, emulator.WebhookDeliver)
	h.waitPhase(p, v1alpha1.PurchaseCompleted)

	// Support refunds 2 of 5 dollars in the Stripe dashboard.
	h.stripeForm("/v1/refunds", map[string][]string{"payment_intent": {paid.PaymentIntentID}, "amount": {"200"}})
	p = h.waitFor(p, "amountRefunded 200", func(p *v1alpha1.Purchase) bool { return p.Status.AmountRefunded == 200 })
	if p.Status.Phase != v1alpha1.PurchaseCompleted || !hasCondition(p, v1alpha1.ConditionAccess, metav1.ConditionTrue, lifecycle.ReasonPaid) ||
		!hasCondition(p, v1alpha1.ConditionRefunded, metav1.ConditionFalse, lifecycle.ReasonPartiallyRefunded) {
		t.Fatalf("after a partial refund: %s", describeStatus(&p))
	}
	// The rest refunded later: a full refund.
	h.stripeForm("/v1/refunds", map[string][]string{"payment_intent": {paid.PaymentIntentID}})
	p = h.waitPhase(p, v1alpha1.PurchaseRefunded)
	if p.Status.AmountRefunded != 500 || !hasCondition(p, v1alpha1.ConditionAccess, metav1.ConditionFalse, lifecycle.ReasonRefunded) {
		t.Fatalf("after refunding the rest: %s", describeStatus(&p))
	}
}

func TestPurchase_FailedRefundKeepsAccess(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	p := h.waitOpen(h.newPurchase("user-1", "video-1"))
	h.pay(p, emulator.WebhookDeliver)
	h.waitPhase(p, v1alpha1.PurchaseCompleted)

	if err := h.em.FailNextRefund(emulator.RefundFails); err != nil {
		t.Fatal(err)
	}
	h.requestRefund(p, "", "support-1")
	p = h.waitFor(p, "Refunded=False RefundFailed", func(p *v1alpha1.Purchase) bool {
		return hasCondition(p, v1alpha1.ConditionRefunded, metav1.ConditionFalse, lifecycle.ReasonRefundFailed)
	})
	if p.Status.Phase != v1alpha1.PurchaseCompleted || !hasCondition(p, v1alpha1.ConditionAccess, metav1.ConditionTrue, lifecycle.ReasonPaid) {
		t.Fatalf("a failed refund must keep the purchase and access: %s", describeStatus(&p))
	}
	h.waitEvent(p, "Warning", lifecycle.ReasonRefundFailed)
	h.waitWebhooks()
	if n := len(h.em.State().Refunds); n != 1 {
		t.Fatalf("%d refunds, want 1 (no automatic second attempt)", n)
	}
}

func TestPurchase_RefundOfUnpaidPurchaseIsRefused(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	p := h.waitOpen(h.newPurchase("user-1", "video-1"))
	h.requestRefund(p, "", "admin-7")
	p = h.waitFor(p, "Refunded=False NotRefundable", func(p *v1alpha1.Purchase) bool {
		return hasCondition(p, v1alpha1.ConditionRefunded, metav1.ConditionFalse, lifecycle.ReasonNotRefundable)
	})
	if p.Status.Phase != v1alpha1.PurchasePending || len(h.em.State().Refunds) != 0 {
		t.Fatalf("refund of a pending purchase: %s, refunds %v", describeStatus(&p), h.em.State().Refunds)
	}
}

func TestPurchase_Disputes(t *testing.T) {
	for _, tc := range []struct {
		outcome string
		access  metav1.ConditionStatus
		reason  string
	}{
		{"won", metav1.ConditionTrue, lifecycle.ReasonPaid},
		{"lost", metav1.ConditionFalse, lifecycle.ReasonDisputeLost},
	} {
		t.Run(tc.outcome, func(t *testing.T) {
			h := startPurchaseHarness(t, harnessOptions{})
			p := h.waitOpen(h.newPurchase("user-1", "video-1"))
			paid := h.pay(p, emulator.WebhookDeliver)
			h.waitPhase(p, v1alpha1.PurchaseCompleted)

			d, err := h.em.Dispute(paid.PaymentIntentID, "")
			if err != nil {
				t.Fatal(err)
			}
			h.waitAccess(p, metav1.ConditionFalse, lifecycle.ReasonDisputed)
			h.waitEvent(p, "Warning", lifecycle.ReasonDisputed)
			if _, err := h.em.CloseDispute(d.ID, tc.outcome); err != nil {
				t.Fatal(err)
			}
			p = h.waitAccess(p, tc.access, tc.reason)
			if p.Status.Phase != v1alpha1.PurchaseCompleted || p.Status.Dispute == nil || p.Status.Dispute.Status != tc.outcome {
				t.Fatalf("after dispute %s: %s dispute %+v", tc.outcome, describeStatus(&p), p.Status.Dispute)
			}
		})
	}
}

func TestPurchase_AsyncPayments(t *testing.T) {
	t.Run("succeeded", func(t *testing.T) {
		h := startPurchaseHarness(t, harnessOptions{})
		p := h.waitOpen(h.newPurchase("user-1", "video-1"))
		if _, err := h.em.PayAsync(p.Status.CheckoutSessionID, emulator.AsyncPending, emulator.PayOptions{}); err != nil {
			t.Fatal(err)
		}
		p = h.waitFor(p, "Ready=True PaymentProcessing", func(p *v1alpha1.Purchase) bool {
			return hasCondition(p, v1alpha1.ConditionReady, metav1.ConditionTrue, lifecycle.ReasonPaymentProcessing)
		})
		if p.Status.Phase != v1alpha1.PurchasePending || hasCondition(p, v1alpha1.ConditionAccess, metav1.ConditionTrue, lifecycle.ReasonPaid) {
			t.Fatalf("processing payment: %s", describeStatus(&p))
		}
		if _, err := h.em.SettleAsync(p.Status.CheckoutSessionID, emulator.AsyncSucceeded, emulator.PayOptions{}); err != nil {
			t.Fatal(err)
		}
		h.waitAccess(h.waitPhase(p, v1alpha1.PurchaseCompleted), metav1.ConditionTrue, lifecycle.ReasonPaid)
	})
	t.Run("failed", func(t *testing.T) {
		h := startPurchaseHarness(t, harnessOptions{})
		p := h.waitOpen(h.newPurchase("user-1", "video-1"))
		if _, err := h.em.PayAsync(p.Status.CheckoutSessionID, emulator.AsyncFailed, emulator.PayOptions{}); err != nil {
			t.Fatal(err)
		}
		p = h.waitPhase(p, v1alpha1.PurchaseFailed)
		if !hasCondition(p, v1alpha1.ConditionReady, metav1.ConditionFalse, lifecycle.ReasonPaymentFailed) ||
			!hasCondition(p, v1alpha1.ConditionAccess, metav1.ConditionFalse, lifecycle.ReasonNotPaid) {
			t.Fatalf("failed async payment: %s", describeStatus(&p))
		}
		h.waitEvent(p, "Warning", lifecycle.EventFailed)
	})
}

func TestPurchase_SessionExpiryCancels(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	p := h.waitOpen(h.newPurchase("user-1", "video-1"))
	h.advance(DefaultSessionTTL + sessionCreateWindow + time.Second)
	// The emulator expires the session on its clock and sends
	// checkout.session.expired.
	p = h.waitPhase(p, v1alpha1.PurchaseCanceled)
	if !hasCondition(p, v1alpha1.ConditionReady, metav1.ConditionFalse, lifecycle.ReasonSessionExpired) {
		t.Fatalf("canceled purchase: %s", describeStatus(&p))
	}
	eventually(t, waitTimeout, func() bool { _, ok := h.secret(p); return !ok }, "the client secret Secret is deleted once canceled")
}

func TestPurchase_StripeRejectionFailsThePurchase(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	p := h.newPurchase("user-1", "video-1", func(p *v1alpha1.Purchase) { p.Spec.StripePriceID = "price_doesnotexist" })
	p = h.waitPhase(p, v1alpha1.PurchaseFailed)
	ready := condition(p, v1alpha1.ConditionReady)
	if ready.Status != metav1.ConditionFalse || ready.Reason != lifecycle.ReasonStripeRejected || !strings.Contains(ready.Message, "price_doesnotexist") {
		t.Fatalf("Ready = %+v, want StripeRejected with Stripe's message", ready)
	}
	if strings.Contains(ready.Message, purchaseTestKey) {
		t.Fatal("the Stripe key is in the condition message")
	}
	h.waitEvent(p, "Warning", lifecycle.EventFailed)
	if _, ok := h.secret(p); ok {
		t.Fatal("a Secret exists for a purchase without a session")
	}
}

func TestPurchase_StripeOutageThenRecovery(t *testing.T) {
	cases := []struct {
		name  string
		fault emulator.Fault
	}{
		{"500s", emulator.Fault{Operation: stripe.OpCreateCheckoutSession, Status: 500}},
		{"429 with Retry-After", emulator.Fault{Operation: stripe.OpCreateCheckoutSession, Status: 429, RetryAfter: 1}},
		{"timeouts after Stripe created the session", emulator.Fault{Operation: stripe.OpCreateCheckoutSession, DelayMS: 1500}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := startPurchaseHarness(t, harnessOptions{stripeTimeout: time.Second})
			if _, err := h.em.AddFault(tc.fault); err != nil {
				t.Fatal(err)
			}
			p := h.newPurchase("user-1", "video-1")
			p = h.waitFor(p, "Ready=False StripeUnavailable", func(p *v1alpha1.Purchase) bool {
				return hasCondition(p, v1alpha1.ConditionReady, metav1.ConditionFalse, lifecycle.ReasonStripeUnavailable)
			})
			if p.Status.Phase != v1alpha1.PurchasePending {
				t.Fatalf("phase during the outage = %s", p.Status.Phase)
			}
			if _, ok := h.secret(p); ok {
				t.Fatal("a client secret Secret exists during the outage")
			}
			h.em.ClearFaults()
			p = h.waitOpen(p)
			if n := len(h.sessionsOf(p)); n != 1 {
				t.Fatalf("%d sessions in Stripe, want 1", n)
			}
		})
	}
}

func TestPurchase_CrashBetweenStripeCreateAndStatusWrite(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	h.faulty.mu.Lock()
	h.faulty.loseCreateAnswers = 1
	h.faulty.mu.Unlock()
	p := h.newPurchase("user-1", "video-1")
	eventually(t, waitTimeout, func() bool { c, _, _ := h.faulty.counts(); return c >= 1 }, "the session create was attempted")
	// The operator dies with Stripe's answer lost, and comes back.
	h.restart()
	p = h.waitOpen(p)
	creates, _, _ := h.faulty.counts()
	if creates < 2 {
		t.Fatalf("create called %d times; the retry did not happen", creates)
	}
	st := h.em.State()
	if n := len(st.SessionsByClientReference[p.Name]); n != 1 {
		t.Fatalf("%d sessions for the purchase in Stripe, want exactly 1", n)
	}
	if n := len(st.Customers); n != 1 {
		t.Fatalf("%d customers in Stripe, want exactly 1", n)
	}
	if st.SessionsByClientReference[p.Name][0] != p.Status.CheckoutSessionID {
		t.Fatalf("status names session %s, Stripe has %v", p.Status.CheckoutSessionID, st.SessionsByClientReference[p.Name])
	}
	sec, ok := h.secret(p)
	if !ok || !strings.HasPrefix(string(sec.Data[ClientSecretKey]), p.Status.CheckoutSessionID+"_secret_") {
		t.Fatalf("client secret Secret after the crash: %v", sec)
	}
	// A second purchase of the same user reuses the Customer.
	q := h.waitOpen(h.newPurchase("user-1", "video-2"))
	if q.Status.StripeCustomerID != p.Status.StripeCustomerID || len(h.em.State().Customers) != 1 {
		t.Fatalf("second purchase got customer %s (first %s)", q.Status.StripeCustomerID, p.Status.StripeCustomerID)
	}
}

func TestPurchase_DeletedSecretIsRestored(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	p := h.waitOpen(h.newPurchase("user-1", "video-1"))
	sec, _ := h.secret(p)
	want := string(sec.Data[ClientSecretKey])
	if err := testEnv.Client.Delete(testContext(t), sec); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitTimeout, func() bool {
		s, ok := h.secret(p)
		return ok && s.UID != sec.UID && string(s.Data[ClientSecretKey]) == want
	}, "the Secret is written again with the same client secret")
	if n := len(h.sessionsOf(p)); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
}

func TestPurchase_DeletingPendingPurchaseExpiresItsSession(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{})
	p := h.waitOpen(h.newPurchase("user-1", "video-1"))
	if err := testEnv.Client.Delete(testContext(t), p); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitTimeout, func() bool {
		err := testEnv.Client.Get(testContext(t), types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, &v1alpha1.Purchase{})
		return err != nil
	}, "the purchase is gone")
	s, err := h.em.GetSession(p.Status.CheckoutSessionID)
	if err != nil || s.Status != "expired" {
		t.Fatalf("session after deletion: %+v, %v", s, err)
	}
}

func TestPurchase_DeletionGivesUpOnStripeAfterTimeout(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{tweak: func(r *PurchaseReconciler) { r.DeletionTimeout = time.Minute }})
	p := h.waitOpen(h.newPurchase("user-1", "video-1"))
	if _, err := h.em.AddFault(emulator.Fault{Operation: stripe.OpExpireCheckoutSession, Status: 503}); err != nil {
		t.Fatal(err)
	}
	if err := testEnv.Client.Delete(testContext(t), p); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitTimeout, func() bool { _, _, e := h.faulty.counts(); return e >= 1 }, "expiry attempted")
	if got := h.get(p); got.DeletionTimestamp.IsZero() || !controllerutil.ContainsFinalizer(got, v1alpha1.PurchaseFinalizer) {
		t.Fatal("the purchase was let go while Stripe was down and the timeout had not passed")
	}
	h.advance(2 * time.Minute)
	h.poke(p)
	eventually(t, waitTimeout, func() bool {
		err := testEnv.Client.Get(testContext(t), types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, &v1alpha1.Purchase{})
		return err != nil
	}, "the purchase is let go after the timeout")
	h.waitEvent(p, "Warning", eventReasonSessionExpireAbandoned)
}

func TestPurchase_RetentionDeletesEndedPurchasesOnly(t *testing.T) {
	h := startPurchaseHarness(t, harnessOptions{tweak: func(r *PurchaseReconciler) { r.RetentionTerminal = time.Hour }})
	canceled := h.waitOpen(h.newPurchase("user-1", "video-1"))
	completed := h.waitOpen(h.newPurchase("user-2", "video-1"))
	h.pay(completed, emulator.WebhookDeliver)
	h.waitPhase(completed, v1alpha1.PurchaseCompleted)
	h.advance(DefaultSessionTTL + sessionCreateWindow + time.Second)
	h.waitPhase(canceled, v1alpha1.PurchaseCanceled)

	h.advance(30 * time.Minute)
	h.poke(canceled)
	h.barrier() // the reconcile the poke asked for has run
	if err := testEnv.Client.Get(testContext(t), types.NamespacedName{Namespace: h.ns, Name: canceled.Name}, &v1alpha1.Purchase{}); err != nil {
		t.Fatalf("the canceled purchase is gone before its retention period ended: %v", err)
	}
	h.advance(31 * time.Minute)
	h.poke(canceled)
	h.poke(completed)
	eventually(t, waitTimeout, func() bool {
		err := testEnv.Client.Get(testContext(t), types.NamespacedName{Namespace: h.ns, Name: canceled.Name}, &v1alpha1.Purchase{})
		return err != nil
	}, "the canceled purchase is deleted after the retention period")
	h.waitEvent(canceled, "Normal", eventReasonRetentionExpired)
	h.barrier() // the completed purchase's reconcile has run too
	if got := h.get(completed); got.Status.Phase != v1alpha1.PurchaseCompleted {
		t.Fatalf("completed purchase: %s", got.Status.Phase)
	}
}

// histogramSamples is how many observations h has recorded.
func histogramSamples(t *testing.T, h prometheus.Histogram) uint64 {
	t.Helper()
	m := &dto.Metric{}
	if err := h.Write(m); err != nil {
		t.Fatalf("reading histogram: %v", err)
	}
	return m.GetHistogram().GetSampleCount()
}

//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

const (
	// Sample Products of config/samples.
	videoProduct   = "video-7-days"
	channelProduct = "channel-lifetime"
	// completeTimeout bounds how long a paid purchase may take to show
	// Completed through a webhook or healing; generous for a loaded
	// 2-core machine, never a measurement.
	completeTimeout = 2 * time.Minute
)

// buyAndPay creates a purchase, pays it with the webhook delivered and
// waits until the API shows it Completed.
func (s *system) buyAndPay(t *testing.T, token, product, entity string) createResult {
	t.Helper()
	c := s.createCheckout(t, token, product, entity)
	s.pay(t, c.ClientSecret, "deliver")
	s.waitStatus(t, token, c.PurchaseID, "Completed", completeTimeout)
	return c
}

// testSeedFlow walks the six steps of the frontend contract.
func testSeedFlow(t *testing.T, s *system) {
	const user, entity = "e2e-seed-user", "vid-seed-1"
	tok := s.userToken(t, user)

	// Step 1: the frontend creates a purchase and gets a client secret.
	c := s.createCheckout(t, tok, videoProduct, entity)
	p := s.purchase(t, c.PurchaseID)
	if p.Spec.ProductRef != videoProduct || p.Spec.UserID != user || p.Spec.EntityID != entity ||
		p.Spec.EntityType != v1alpha1.EntityTypeVideo || p.Spec.Price != (v1alpha1.Price{Amount: 499, Currency: "usd"}) ||
		p.Spec.AccessDurationDays == nil || *p.Spec.AccessDurationDays != 7 || p.Spec.ReturnURL != returnURL {
		t.Fatalf("Purchase spec %+v does not snapshot the request and the Product", p.Spec)
	}
	if p.Status.Phase != v1alpha1.PurchasePending || p.Status.CheckoutSessionID == "" || p.Status.StripeCustomerID != c.StripeCustomerID {
		t.Fatalf("Purchase status after create: %+v (answer's customer %s)", p.Status, c.StripeCustomerID)
	}
	item, ok := s.listed(t, tok, c.PurchaseID)
	if !ok || item.Status != "Pending" || item.HasAccess || item.Amount != 499 || item.Currency != "usd" ||
		item.EntityType != 1 || item.EntityID != entity || item.PayToViewProductID != videoProduct {
		t.Fatalf("list after create: %+v (listed %v)", item, ok)
	}

	// Step 2: the embedded checkout mounts the session of the client secret,
	// which carries the seed's metadata.
	sess := s.emulatorSessionOf(t, c.ClientSecret)
	want := map[string]string{"payToViewPurchaseId": c.PurchaseID, "payToViewProductId": videoProduct,
		"userId": user, "entityType": "1", "entityId": entity}
	for k, v := range want {
		if sess.Metadata[k] != v {
			t.Errorf("session metadata %s = %q, want %q", k, sess.Metadata[k], v)
		}
	}
	if sess.ID != p.Status.CheckoutSessionID || sess.Status != "open" || sess.AmountTotal != 499 || sess.Currency != "usd" {
		t.Fatalf("session %+v, want the open 4.99 USD session %s", sess, p.Status.CheckoutSessionID)
	}

	// Step 3: the user pays.
	s.pay(t, c.ClientSecret, "deliver")

	// Steps 4-5: Stripe's signed webhook completes the purchase.
	eventually(t, completeTimeout, "the list to show the purchase Completed", func() (bool, string) {
		item, _ = s.listed(t, tok, c.PurchaseID)
		return item.Status == "Completed" && item.HasAccess, "status " + item.Status
	})
	// The receiver accepted the signed event (the emulator records the
	// answer just after the receiver has written it).
	eventually(t, 30*time.Second, "the signed checkout.session.completed to be accepted", func() (bool, string) {
		ds := deliveriesOf(s.stripeState(t), "checkout.session.completed", sess.ID)
		return len(ds) > 0 && ds[0].Status == "delivered" && len(ds[0].Attempts) > 0 &&
			ds[0].Attempts[len(ds[0].Attempts)-1].StatusCode/100 == 2, describeDeliveries(ds)
	})
	paid := sessionByID(t, s.stripeState(t), sess.ID)
	p = s.purchase(t, c.PurchaseID)
	if p.Status.Phase != v1alpha1.PurchaseCompleted || p.Status.ExternalTransactionID != paid.PaymentIntentID ||
		p.Status.CompletedAt == nil || p.Status.ExpiresAt == nil {
		t.Fatalf("Completed status %+v, want the PaymentIntent %s, completedAt and expiresAt", p.Status, paid.PaymentIntentID)
	}
	if got := p.Status.ExpiresAt.Sub(p.Status.CompletedAt.Time); got != 7*24*time.Hour {
		t.Errorf("access lasts %s, want the Product's 7 days", got)
	}
	if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionAccess); c == nil || c.Status != metav1.ConditionTrue || c.Reason != "Paid" {
		t.Errorf("Access condition %+v, want True/Paid", c)
	}
	if item.ExpiresAt == nil || !item.ExpiresAt.Equal(p.Status.ExpiresAt.Time) || item.CompletedAt == nil {
		t.Errorf("list shows completedAt %v expiresAt %v, Purchase has expiresAt %v", item.CompletedAt, item.ExpiresAt, p.Status.ExpiresAt)
	}

	// Step 6: the user has access to the entity; nobody else does.
	// Each replica answers from its own cache, which may trail the one
	// that showed Completed by a moment.
	eventually(t, 30*time.Second, "the buyer's access after paying", func() (bool, string) {
		return s.access(t, tok, entity), "no access"
	})
	if s.access(t, s.userToken(t, "e2e-seed-other-user"), entity) {
		t.Error("another user has access to the entity someone else bought")
	}
}

// testForgedWebhook: events that do not carry a valid, fresh signature of
// the endpoint's secret are refused and never complete a purchase: one
// signed with another secret, one without a signature, and a genuine
// signature replayed after the tolerance.
func testForgedWebhook(t *testing.T, s *system) {
	const user, entity = "e2e-forger", "vid-forged-1"
	c := s.createCheckout(t, s.userToken(t, user), videoProduct, entity)
	sessionID := s.purchase(t, c.PurchaseID).Status.CheckoutSessionID
	payload, err := json.Marshal(map[string]any{
		"id": "evt_forged_" + c.PurchaseID, "object": "event", "api_version": emulator.APIVersion,
		"type": "checkout.session.completed", "created": time.Now().Unix(), "livemode": false,
		"data": map[string]any{"object": map[string]any{
			"id": sessionID, "object": "checkout.session", "mode": "payment", "status": "complete",
			"payment_status": "paid", "payment_intent": "pi_forged", "client_reference_id": c.PurchaseID,
			"amount_total": 499, "currency": "usd",
			"metadata": map[string]string{"payToViewPurchaseId": c.PurchaseID, "payToViewProductId": videoProduct,
				"userId": user, "entityType": "1", "entityId": entity},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, signature := range map[string]string{
		"another secret":    emulator.SignatureHeader(payload, "whsec_"+strings.Repeat("0", 48), time.Now()),
		"no signature":      "",
		"replayed too late": emulator.SignatureHeader(payload, s.webhookSecret, time.Now().Add(-10*time.Minute)),
	} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.apiURL+webhookPath, bytes.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		if signature != "" {
			req.Header.Set("Stripe-Signature", signature)
		}
		resp, err := s.http.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"invalid_signature"`) {
			t.Errorf("%s: %d %s, want 400 invalid_signature", name, resp.StatusCode, body)
		}
	}
	if p := s.purchase(t, c.PurchaseID); p.Status.Phase != v1alpha1.PurchasePending || p.Status.ExternalTransactionID != "" {
		t.Fatalf("a forged event changed the purchase: phase %s, PaymentIntent %q", p.Status.Phase, p.Status.ExternalTransactionID)
	}
}

// testHasAccessShortCircuit: a user with access who buys again is told so
// and nothing is created, in Kubernetes or in Stripe.
func testHasAccessShortCircuit(t *testing.T, s *system) {
	const user, entity = "e2e-access-user", "chan-access-1"
	tok := s.userToken(t, user)
	c := s.buyAndPay(t, tok, channelProduct, entity)
	item, _ := s.listed(t, tok, c.PurchaseID)
	if !item.HasAccess || item.ExpiresAt != nil || item.EntityType != 2 {
		t.Fatalf("lifetime channel purchase listed as %+v, want access with no expiresAt", item)
	}
	sessionsBefore := len(sessionsOf(s.stripeState(t), user))
	purchasesBefore := len(s.purchasesOf(t, user))

	status, again := s.create(t, tok, channelProduct, entity)
	if status != http.StatusOK || again.Success || !again.HasAccess || again.PurchaseID != c.PurchaseID || again.ClientSecret != "" {
		t.Fatalf("create with access: %d %+v, want success:false hasAccess:true for %s", status, again, c.PurchaseID)
	}
	if n := len(sessionsOf(s.stripeState(t), user)); n != sessionsBefore {
		t.Errorf("Stripe has %d sessions for the user, had %d: the short-circuit called Stripe", n, sessionsBefore)
	}
	if n := len(s.purchasesOf(t, user)); n != purchasesBefore {
		t.Errorf("%d Purchases for the user, had %d", n, purchasesBefore)
	}
}

// testReuseWithinWindow: creating again within the reuse window answers the
// same purchase and client secret; Stripe holds one session.
func testReuseWithinWindow(t *testing.T, s *system) {
	const user = "e2e-reuse-user"
	tok := s.userToken(t, user)
	first := s.createCheckout(t, tok, videoProduct, "vid-reuse-1")
	second := s.createCheckout(t, tok, videoProduct, "vid-reuse-1")
	if second.PurchaseID != first.PurchaseID || second.ClientSecret != first.ClientSecret {
		t.Fatalf("second create answered purchase %s, want the pending %s with the same client secret", second.PurchaseID, first.PurchaseID)
	}
	if n := len(sessionsOf(s.stripeState(t), user)); n != 1 {
		t.Errorf("Stripe has %d sessions for the user, want 1", n)
	}
	if n := len(s.purchasesOf(t, user)); n != 1 {
		t.Errorf("%d Purchases for the user, want 1", n)
	}
	// Reuse is per entity: another video is another purchase.
	other := s.createCheckout(t, tok, videoProduct, "vid-reuse-2")
	if other.PurchaseID == first.PurchaseID {
		t.Fatal("a purchase of another entity reused the first one")
	}
}

// testAdminRefund: an admin refunds a paid purchase; Stripe refunds the
// PaymentIntent once and the user loses access.
func testAdminRefund(t *testing.T, s *system) {
	const user, entity = "e2e-refund-user", "vid-refund-1"
	tok := s.userToken(t, user)
	c := s.buyAndPay(t, tok, videoProduct, entity)
	pi := s.purchase(t, c.PurchaseID).Status.ExternalTransactionID
	refundURL := s.apiURL + "/admin/v1/pay-to-view/purchases/" + c.PurchaseID + "/refund"
	body := map[string]string{"reason": "e2e: the customer asked"}

	if r := s.do(t, http.MethodPost, refundURL, tok, body); r.status != http.StatusForbidden {
		t.Fatalf("a user refunding: %d %s, want 403", r.status, r.body)
	}
	r := s.do(t, http.MethodPost, refundURL, s.adminToken(t), body)
	if r.status != http.StatusOK && r.status != http.StatusAccepted {
		t.Fatalf("admin refund: %d %s", r.status, r.body)
	}
	item := s.waitStatus(t, tok, c.PurchaseID, "Refunded", completeTimeout)
	if item.HasAccess || item.RefundedAt == nil {
		t.Errorf("refunded purchase listed as %+v", item)
	}
	// Each replica answers from its own cache, which may trail the one
	// that showed Refunded by a moment.
	eventually(t, 30*time.Second, "the user's access to end after the refund", func() (bool, string) {
		return !s.access(t, tok, entity), "the user still has access"
	})
	// charge.refunded may mark the purchase Refunded before the controller
	// has recorded the id of the refund it created; it records it after.
	var p *v1alpha1.Purchase
	eventually(t, 30*time.Second, "the refund id on the Purchase", func() (bool, string) {
		p = s.purchase(t, c.PurchaseID)
		return p.Status.StripeRefundID != "", "no status.stripeRefundId"
	})
	if p.Status.AmountRefunded != 499 || p.Spec.Refund == nil || !p.Spec.Refund.Requested || p.Spec.Refund.RequestedBy != "e2e-support-admin" {
		t.Errorf("refunded Purchase: spec.refund %+v, status %+v", p.Spec.Refund, p.Status)
	}

	// Refunding again is idempotent: answered Refunded, never refunded twice.
	if r := s.do(t, http.MethodPost, refundURL, s.adminToken(t), body); r.status != http.StatusOK || !strings.Contains(string(r.body), `"Refunded"`) {
		t.Errorf("repeated refund: %d %s", r.status, r.body)
	}
	st := s.stripeState(t)
	var refunds []emulator.Refund
	for _, rf := range st.Refunds {
		if rf.PaymentIntentID == pi {
			refunds = append(refunds, rf)
		}
	}
	if len(refunds) != 1 || refunds[0].Status != "succeeded" || refunds[0].Amount != 499 || refunds[0].ID != p.Status.StripeRefundID {
		t.Fatalf("Stripe refunds of %s: %+v, want one succeeded refund of 499 (%s)", pi, refunds, p.Status.StripeRefundID)
	}
	for _, ch := range st.Charges {
		if ch.PaymentIntentID == pi && (!ch.Refunded || ch.AmountRefunded != 499) {
			t.Errorf("charge %s: refunded %v, amount_refunded %d", ch.ID, ch.Refunded, ch.AmountRefunded)
		}
	}
}

// testLostWebhookHealed: Stripe never delivers checkout.session.completed;
// the return page polling the purchase makes the operator re-read the
// session, and the purchase completes anyway.
func testLostWebhookHealed(t *testing.T, s *system) {
	const user, entity = "e2e-lost-webhook-user", "vid-lost-1"
	tok := s.userToken(t, user)
	c := s.createCheckout(t, tok, videoProduct, entity)
	sess := s.pay(t, c.ClientSecret, "drop")

	item := s.waitStatus(t, tok, c.PurchaseID, "Completed", completeTimeout)
	if !item.HasAccess {
		t.Errorf("healed purchase listed without access: %+v", item)
	}
	st := s.stripeState(t)
	ds := deliveriesOf(st, "checkout.session.completed", sess.ID)
	if len(ds) == 0 {
		t.Fatal("the emulator recorded no checkout.session.completed delivery")
	}
	for _, d := range ds {
		if d.Status != "dropped" || len(d.Attempts) != 0 {
			t.Fatalf("the webhook was not lost, so nothing was healed: %s", describeDeliveries(ds))
		}
	}
	p := s.purchase(t, c.PurchaseID)
	if p.Status.ExternalTransactionID != sessionByID(t, st, sess.ID).PaymentIntentID || p.Status.LastSessionCheckAt == nil {
		t.Errorf("healed Purchase status %+v", p.Status)
	}
	// It was the poll that healed it, not the controller's own schedule:
	// the API asked for a re-check, and the purchase completed before the
	// schedule's first read (one minute after creation).
	if _, ok := p.Annotations[v1alpha1.AnnotationRecheckRequested]; !ok {
		t.Errorf("polling the Pending purchase did not ask for a re-check: annotations %v", p.Annotations)
	}
	if p.Status.CompletedAt == nil || !p.Status.CompletedAt.Before(&metav1.Time{Time: p.CreationTimestamp.Add(time.Minute)}) {
		t.Errorf("completed at %v, not before the first scheduled re-read at %s: the poll did not heal it",
			p.Status.CompletedAt, p.CreationTimestamp.Add(time.Minute))
	}
}

// testPriceChange: changing a Product's price makes a new Stripe price that
// new purchases are charged; a purchase made before keeps its snapshot.
func testPriceChange(t *testing.T, s *system) {
	const name, user = "e2e-price-change", "e2e-price-user"
	prod := &v1alpha1.Product{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.ns},
		Spec: v1alpha1.ProductSpec{
			DisplayName: "E2E article pass", EntityType: v1alpha1.EntityTypeContent,
			Price: &v1alpha1.Price{Amount: 300, Currency: "eur"}, AccessDurationDays: ptr.To[int32](30), Active: ptr.To(true),
		},
	}
	if err := s.cluster.client.Create(t.Context(), prod); err != nil {
		t.Fatalf("creating Product %s: %v", name, err)
	}
	prod = s.waitProductReady(t, name, func(p *v1alpha1.Product) bool { return p.Status.Price != nil && p.Status.Price.Amount == 300 })
	oldPrice := prod.Status.StripePriceID
	tok := s.userToken(t, user)
	old := s.buyAndPay(t, tok, name, "content-price-1")

	patch := client.MergeFrom(prod.DeepCopy())
	prod.Spec.Price = &v1alpha1.Price{Amount: 450, Currency: "eur"}
	if err := s.cluster.client.Patch(t.Context(), prod, patch); err != nil {
		t.Fatalf("changing the price of %s: %v", name, err)
	}
	prod = s.waitProductReady(t, name, func(p *v1alpha1.Product) bool {
		return p.Status.Price != nil && p.Status.Price.Amount == 450 && p.Status.StripePriceID != oldPrice
	})
	newPrice := prod.Status.StripePriceID
	st := s.stripeState(t)
	for _, pr := range st.Prices {
		switch pr.ID {
		case oldPrice:
			if pr.Active {
				t.Errorf("old Stripe price %s is still active", oldPrice)
			}
		case newPrice:
			if !pr.Active || pr.UnitAmount != 450 || pr.Currency != "eur" {
				t.Errorf("new Stripe price %+v, want an active 4.50 EUR", pr)
			}
		}
	}

	nc := s.createCheckout(t, tok, name, "content-price-2")
	if np := s.purchase(t, nc.PurchaseID); np.Spec.Price.Amount != 450 || np.Spec.StripePriceID != newPrice {
		t.Fatalf("new Purchase sells %+v with price %s, want 450 with %s", np.Spec.Price, np.Spec.StripePriceID, newPrice)
	}
	if sess := s.emulatorSessionOf(t, nc.ClientSecret); sess.AmountTotal != 450 {
		t.Fatalf("new checkout charges %d, want 450", sess.AmountTotal)
	}
	s.pay(t, nc.ClientSecret, "deliver")
	s.waitStatus(t, tok, nc.PurchaseID, "Completed", completeTimeout)

	op := s.purchase(t, old.PurchaseID)
	if op.Spec.Price.Amount != 300 || op.Spec.StripePriceID != oldPrice || op.Status.Phase != v1alpha1.PurchaseCompleted {
		t.Errorf("the earlier Purchase now has price %+v (%s), phase %s; want its 300 snapshot (%s), Completed",
			op.Spec.Price, op.Spec.StripePriceID, op.Status.Phase, oldPrice)
	}
	charged := s.stripeState(t).PaidChargesByMetadata("payToViewPurchaseId")
	for id, want := range map[string]int64{old.PurchaseID: 300, nc.PurchaseID: 450} {
		if cs := charged[id]; len(cs) != 1 || cs[0].Amount != want {
			t.Errorf("purchase %s charged %+v, want once %d", id, cs, want)
		}
	}
	if item, _ := s.listed(t, tok, old.PurchaseID); item.Amount != 300 || !item.HasAccess {
		t.Errorf("earlier purchase listed as %+v", item)
	}
}

// testLeaderKilled: the replica leading the controllers dies (SIGKILL, no
// Lease release) while purchases are Pending; they still complete, one by
// its webhook reaching the surviving replica, one (webhook lost) by the
// controllers the survivor now leads.
func testLeaderKilled(t *testing.T, s *system) {
	const user = "e2e-failover-user"
	tok := s.userToken(t, user)
	viaWebhook := s.createCheckout(t, tok, videoProduct, "vid-failover-a")
	viaHealing := s.createCheckout(t, tok, videoProduct, "vid-failover-b")

	leader, holder := s.leader(t)
	t.Logf("killing %s, the leader (Lease holder %s)", leader.name, holder)
	leader.kill()

	s.pay(t, viaWebhook.ClientSecret, "deliver")
	s.pay(t, viaHealing.ClientSecret, "drop")
	s.waitStatus(t, tok, viaWebhook.PurchaseID, "Completed", completeTimeout)
	s.waitStatus(t, tok, viaHealing.PurchaseID, "Completed", completeTimeout)

	newLeader, newHolder := s.leader(t)
	if newLeader == leader || newHolder == holder {
		t.Fatalf("leadership did not move: %s (%s) leads, killed %s (%s)", newLeader.name, newHolder, leader.name, holder)
	}
	t.Logf("%s leads now (Lease holder %s)", newLeader.name, newHolder)
	// The new leader also serves new purchases.
	s.createCheckout(t, tok, videoProduct, "vid-failover-c")
}

// testAPIServerRestart: the user pays while kube-apiserver is down, so the
// webhook cannot be recorded; once it is back the purchase completes and
// the system takes new purchases. Local control plane only.
func testAPIServerRestart(t *testing.T, s *system) {
	const user = "e2e-apiserver-user"
	tok := s.userToken(t, user)
	c := s.createCheckout(t, tok, videoProduct, "vid-restart-1")

	var sess emulatorSession
	s.cluster.restartAPIServer(t, func() {
		sess = s.pay(t, c.ClientSecret, "deliver")
		eventually(t, time.Minute, "Stripe to try the webhook", func() (bool, string) {
			ds := deliveriesOf(s.stripeState(t), "checkout.session.completed", sess.ID)
			return len(ds) > 0 && len(ds[0].Attempts) > 0, describeDeliveries(ds)
		})
		t.Logf("while kube-apiserver was down: %s", describeDeliveries(deliveriesOf(s.stripeState(t), "checkout.session.completed", sess.ID)))
	})
	// A leader that could not renew its Lease while the apiserver was away
	// exits; the kubelet would start it again.
	if restarted := s.restartExitedReplicas(t); len(restarted) > 0 {
		t.Logf("restarted after the apiserver outage: %v", restarted)
	}

	s.waitStatus(t, tok, c.PurchaseID, "Completed", completeTimeout)
	p := s.purchase(t, c.PurchaseID)
	if want := sessionByID(t, s.stripeState(t), sess.ID).PaymentIntentID; p.Status.ExternalTransactionID != want {
		t.Errorf("Purchase records PaymentIntent %q, Stripe has %q", p.Status.ExternalTransactionID, want)
	}
	s.buyAndPay(t, tok, videoProduct, "vid-restart-2")
}

// testMoneyAccountedFor looks at every charge Stripe holds: no purchase was
// paid twice, and every payment is a Completed purchase of that amount, or
// a Refunded one refunded in full.
func testMoneyAccountedFor(t *testing.T, s *system) {
	st := s.stripeState(t)
	charged := st.PaidChargesByMetadata("payToViewPurchaseId")
	if len(charged) == 0 {
		t.Fatal("Stripe holds no paid charge: the scenarios paid nothing")
	}
	for id, charges := range charged {
		if len(charges) != 1 {
			t.Errorf("purchase %s was paid %d times: %+v", id, len(charges), charges)
			continue
		}
		ch := charges[0]
		p := s.purchase(t, id)
		switch ch.AmountRefunded {
		case ch.Amount:
			if p.Status.Phase != v1alpha1.PurchaseRefunded {
				t.Errorf("purchase %s was refunded in Stripe but is %s", id, p.Status.Phase)
			}
		case 0:
			if p.Status.Phase != v1alpha1.PurchaseCompleted || p.Status.ExternalTransactionID != ch.PaymentIntentID || p.Spec.Price.Amount != ch.Amount {
				t.Errorf("purchase %s was paid %d (%s) but is %s with %s, price %d", id, ch.Amount, ch.PaymentIntentID,
					p.Status.Phase, p.Status.ExternalTransactionID, p.Spec.Price.Amount)
			}
		default:
			t.Errorf("purchase %s: charge %s partly refunded (%d of %d)", id, ch.ID, ch.AmountRefunded, ch.Amount)
		}
	}
	var list v1alpha1.PurchaseList
	if err := s.cluster.client.List(t.Context(), &list, client.InNamespace(s.ns)); err != nil {
		t.Fatal(err)
	}
	for _, p := range list.Items {
		paid := p.Status.Phase == v1alpha1.PurchaseCompleted || p.Status.Phase == v1alpha1.PurchaseRefunded
		if paid && len(charged[p.Name]) != 1 {
			t.Errorf("purchase %s is %s but Stripe holds %d paid charges for it", p.Name, p.Status.Phase, len(charged[p.Name]))
		}
	}
}

package webhookserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	stripego "github.com/stripe/stripe-go/v76"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

// Webhook tests send events the test builds and signs itself to a server
// without Purchase controller, so each outcome is the receiver's alone; the
// end-to-end ones at the bottom let the emulator deliver.

func randomID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// eventJSON is a Stripe event of typ carrying obj, created at created.
func eventJSON(t testing.TB, typ string, obj map[string]any, created time.Time) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"id": randomID("evt_test_"), "object": "event", "api_version": stripego.APIVersion,
		"created": created.Unix(), "livemode": false, "pending_webhooks": 1, "type": typ,
		"data": map[string]any{"object": obj},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// deliver posts payload signed at signedAt with the emulator's secret.
func (h *harness) deliver(payload []byte, signedAt time.Time) response {
	h.t.Helper()
	return h.request(http.MethodPost, webhookPath, "", payload,
		stripe.SignatureHeader, stripe.SignPayload(payload, h.em.WebhookSecret(), signedAt))
}

func (h *harness) deliverNow(typ string, obj map[string]any) response {
	h.t.Helper()
	return h.deliver(eventJSON(h.t, typ, obj, time.Now()), time.Now())
}

func expectOutcome(t testing.TB, r response, outcome string) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("webhook: %d %s, want 200 %s", r.status, r.body, outcome)
	}
	if got := r.json(t)["outcome"]; got != outcome {
		t.Fatalf("webhook outcome %v, want %s", got, outcome)
	}
}

func metadataOf(p *v1alpha1.Purchase) map[string]any {
	return map[string]any{
		stripe.MetaPurchaseID: p.Name, stripe.MetaProductID: p.Spec.ProductRef, stripe.MetaUserID: p.Spec.UserID,
		stripe.MetaEntityType: "1", stripe.MetaEntityID: p.Spec.EntityID,
	}
}

// paidSession is the checkout.session.completed object of p, paid by pi.
func paidSession(p *v1alpha1.Purchase, pi string) map[string]any {
	return map[string]any{
		"id": p.Status.CheckoutSessionID, "object": "checkout.session", "mode": "payment",
		"status": "complete", "payment_status": "paid", "payment_intent": pi,
		"client_reference_id": p.Name, "customer": p.Status.StripeCustomerID,
		"amount_total": p.Spec.Price.Amount, "currency": p.Spec.Price.Currency,
		"metadata": metadataOf(p),
	}
}

func refundedCharge(p *v1alpha1.Purchase, pi string) map[string]any {
	return map[string]any{
		"id": randomID("ch_"), "object": "charge", "payment_intent": pi, "amount": p.Spec.Price.Amount,
		"amount_refunded": p.Spec.Price.Amount, "refunded": true, "currency": p.Spec.Price.Currency,
		"paid": true, "metadata": metadataOf(p),
	}
}

func dispute(pi, status string) map[string]any {
	return map[string]any{"id": "dp_" + pi, "object": "dispute", "charge": "ch_" + pi, "payment_intent": pi,
		"status": status, "amount": 499, "currency": "usd"}
}

func counter(typ, outcome string) float64 {
	return testutil.ToFloat64(webhookEvents.WithLabelValues(typ, outcome))
}

func TestWebhook_VerificationFailuresChangeNothing(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true})
	p := h.seed("alice", "vid-1", "movie", pendingStatus())
	payload := eventJSON(t, "checkout.session.completed", paidSession(p, "pi_1"), time.Now())
	otherVersion := []byte(strings.Replace(string(payload), stripego.APIVersion, "2020-08-27", 1))
	now := time.Now()
	tests := []struct {
		name   string
		header string
		body   []byte
		reason string
	}{
		{"bad signature", stripe.SignPayload(payload, "whsec_not_the_secret", now), payload, stripe.ReasonNoValidSignature},
		{"stale signature (replay)", stripe.SignPayload(payload, h.em.WebhookSecret(), now.Add(-10*time.Minute)), payload, stripe.ReasonTimestampOutsideTolerance},
		{"signature from the future", stripe.SignPayload(payload, h.em.WebhookSecret(), now.Add(10*time.Minute)), payload, stripe.ReasonTimestampOutsideTolerance},
		{"missing header", "", payload, stripe.ReasonMissingHeader},
		{"malformed header", "t=abc,v1=zz", payload, stripe.ReasonMalformedHeader},
		{"tampered body", stripe.SignPayload(payload, h.em.WebhookSecret(), now),
			[]byte(strings.Replace(string(payload), `"pi_1"`, `"pi_2"`, 1)), stripe.ReasonNoValidSignature},
		{"re-serialised body", stripe.SignPayload(payload, h.em.WebhookSecret(), now),
			append([]byte(" "), payload...), stripe.ReasonNoValidSignature},
		{"event for another API version", stripe.SignPayload(otherVersion, h.em.WebhookSecret(), now),
			otherVersion, stripe.ReasonAPIVersionMismatch},
		{"signed body that is no event", stripe.SignPayload([]byte("not json"), h.em.WebhookSecret(), now),
			[]byte("not json"), stripe.ReasonMalformedPayload},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := testutil.ToFloat64(webhookVerifyFailures.WithLabelValues(tt.reason))
			var headers []string
			if tt.header != "" {
				headers = []string{stripe.SignatureHeader, tt.header}
			}
			r := h.request(http.MethodPost, webhookPath, "", tt.body, headers...)
			m := r.expectError(t, http.StatusBadRequest, CodeInvalidSignature)
			if !strings.Contains(m["message"].(string), tt.reason) {
				t.Errorf("message %q does not say %s", m["message"], tt.reason)
			}
			if got := testutil.ToFloat64(webhookVerifyFailures.WithLabelValues(tt.reason)); got != before+1 {
				t.Errorf("verification failures{reason=%s} went %v -> %v", tt.reason, before, got)
			}
		})
	}
	if got := h.purchase(p.Name); got.ResourceVersion != p.ResourceVersion {
		t.Fatalf("a rejected webhook changed the purchase: %+v", got.Status)
	}

	// The same event, correctly signed, is applied: the tests above failed
	// for their reason alone.
	expectOutcome(t, h.deliver(payload, time.Now()), outcomeApplied)
	h.waitPhase(p.Name, v1alpha1.PurchaseCompleted)
}

func TestWebhook_RejectsOversizeBodiesWith413(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true})
	before := testutil.ToFloat64(webhookVerifyFailures.WithLabelValues("body_too_large"))
	for _, size := range []int{maxWebhookBody + 1, 10 << 20} {
		body := strings.Repeat("x", size)
		r := h.request(http.MethodPost, webhookPath, "", body, stripe.SignatureHeader,
			stripe.SignPayload([]byte(body), h.em.WebhookSecret(), time.Now()))
		r.expectError(t, http.StatusRequestEntityTooLarge, CodeBodyTooLarge)
	}
	if got := testutil.ToFloat64(webhookVerifyFailures.WithLabelValues("body_too_large")); got != before+2 {
		t.Fatalf("body_too_large failures went %v -> %v", before, got)
	}
	// Exactly 1 MiB is read (and then fails verification, not the size check).
	body := strings.Repeat("x", maxWebhookBody)
	h.request(http.MethodPost, webhookPath, "", body, stripe.SignatureHeader,
		stripe.SignPayload([]byte(body), h.em.WebhookSecret(), time.Now())).
		expectError(t, http.StatusBadRequest, CodeInvalidSignature)
}

func TestWebhook_CompletesAPurchaseOnceAndDuplicatesAreNoOps(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true})
	p := h.seed("alice", "vid-1", "movie", pendingStatus())
	payload := eventJSON(t, "checkout.session.completed", paidSession(p, "pi_1"), time.Now())
	applied, dup := counter("checkout.session.completed", outcomeApplied), counter("checkout.session.completed", outcomeDuplicate)

	expectOutcome(t, h.deliver(payload, time.Now()), outcomeApplied)
	done := h.purchase(p.Name)
	if done.Status.Phase != v1alpha1.PurchaseCompleted || done.Status.ExternalTransactionID != "pi_1" || done.Status.CompletedAt == nil {
		t.Fatalf("status after completion: %+v", done.Status)
	}
	if ev := recordedEvents(h.recorder); !containsEvent(ev, "Completed") {
		t.Fatalf("no Completed event among %v", ev)
	}
	// Stripe delivers again (same event, new signature): nothing changes.
	for range 3 {
		expectOutcome(t, h.deliver(payload, time.Now()), outcomeDuplicate)
	}
	if again := h.purchase(p.Name); again.ResourceVersion != done.ResourceVersion {
		t.Fatal("a duplicate delivery wrote the purchase")
	}
	if ev := recordedEvents(h.recorder); len(ev) != 0 {
		t.Fatalf("duplicates recorded events %v", ev)
	}
	if a, d := counter("checkout.session.completed", outcomeApplied)-applied, counter("checkout.session.completed", outcomeDuplicate)-dup; a != 1 || d != 3 {
		t.Fatalf("metrics: %v applied, %v duplicate; want 1 and 3", a, d)
	}
}

func TestWebhook_OutOfOrderDeliveriesEndInTheRightState(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true})

	// The refund overtakes the payment: Refunded, and the late payment
	// event does not resurrect access.
	p := h.seed("alice", "vid-1", "movie", pendingStatus())
	expectOutcome(t, h.deliverNow("charge.refunded", refundedCharge(p, "pi_1")), outcomeApplied)
	expectOutcome(t, h.deliverNow("checkout.session.completed", paidSession(p, "pi_1")), outcomeApplied)
	got := h.waitPhase(p.Name, v1alpha1.PurchaseRefunded)
	if got.Status.RefundedAt == nil || got.Status.ExternalTransactionID != "pi_1" {
		t.Fatalf("status %+v", got.Status)
	}
	expectOutcome(t, h.deliverNow("charge.refunded", refundedCharge(p, "pi_1")), outcomeDuplicate)

	// The dispute overtakes the payment: it names only a PaymentIntent no
	// purchase has yet, so Stripe is asked to deliver it again, and then it
	// applies.
	q := h.seed("alice", "vid-2", "movie", pendingStatus())
	r := h.deliverNow("charge.dispute.created", dispute("pi_2", "needs_response"))
	r.expectError(t, http.StatusServiceUnavailable, CodeUnavailable)
	if q2 := h.purchase(q.Name); q2.ResourceVersion != q.ResourceVersion {
		t.Fatal("the early dispute changed the purchase")
	}
	expectOutcome(t, h.deliverNow("checkout.session.completed", paidSession(q, "pi_2")), outcomeApplied)
	h.waitPhase(q.Name, v1alpha1.PurchaseCompleted)
	eventually(t, func() bool {
		var list v1alpha1.PurchaseList
		err := h.mgr.GetClient().List(h.ctx, &list, client.InNamespace(h.ns), client.MatchingFields{"status.externalTransactionId": "pi_2"})
		return err == nil && len(list.Items) == 1
	}, "PaymentIntent never indexed")
	expectOutcome(t, h.deliverNow("charge.dispute.created", dispute("pi_2", "needs_response")), outcomeApplied)
	tok := token(t, "alice", false)
	eventually(t, func() bool {
		return h.request(http.MethodGet, "/client/v1/pay-to-view/access/check?entityId=vid-2", tok, nil).status == http.StatusForbidden
	}, "access not suspended by the dispute")
	// The close arrives twice; the second is a duplicate. Access is back.
	expectOutcome(t, h.deliverNow("charge.dispute.closed", dispute("pi_2", "won")), outcomeApplied)
	expectOutcome(t, h.deliverNow("charge.dispute.closed", dispute("pi_2", "won")), outcomeDuplicate)
	// A late created event for the closed dispute changes nothing.
	expectOutcome(t, h.deliverNow("charge.dispute.created", dispute("pi_2", "needs_response")), outcomeDuplicate)
	eventually(t, func() bool {
		return h.request(http.MethodGet, "/client/v1/pay-to-view/access/check?entityId=vid-2", tok, nil).status == http.StatusNoContent
	}, "access not restored after the dispute was won")

	// A dispute of a payment that is not ours, old enough not to be a race,
	// is acknowledged.
	old := eventJSON(t, "charge.dispute.created", dispute("pi_elsewhere", "needs_response"), time.Now().Add(-time.Hour))
	expectOutcome(t, h.deliver(old, time.Now()), outcomeUnknownPurchase)
}

func TestWebhook_UnrelatedAndUnknownEventsAreAcknowledged(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true})
	p := h.seed("alice", "vid-1", "movie", pendingStatus())

	expectOutcome(t, h.deliverNow("customer.created", map[string]any{"id": "cus_1", "object": "customer"}), outcomeIgnored)

	ghost := p.DeepCopy()
	ghost.Name = "ptv-doesnotexist"
	expectOutcome(t, h.deliverNow("checkout.session.completed", paidSession(ghost, "pi_1")), outcomeUnknownPurchase)

	// Someone else's user id on our purchase id: refused, nothing changes.
	forged := paidSession(p, "pi_1")
	forged["metadata"].(map[string]any)[stripe.MetaUserID] = "mallory"
	expectOutcome(t, h.deliverNow("checkout.session.completed", forged), outcomeUnrelated)

	// Another integration's session on the same Stripe account.
	foreign := map[string]any{"id": "cs_test_foreign", "object": "checkout.session", "status": "complete",
		"payment_status": "paid", "payment_intent": "pi_foreign", "metadata": map[string]any{"orderId": "42"}}
	expectOutcome(t, h.deliverNow("checkout.session.completed", foreign), outcomeUnrelated)
	bad := paidSession(p, "pi_1")
	bad["metadata"].(map[string]any)[stripe.MetaPurchaseID] = "../../etc"
	expectOutcome(t, h.deliverNow("checkout.session.completed", bad), outcomeUnrelated)

	// The right type with the wrong object: signed, so acknowledged, but
	// counted as invalid.
	expectOutcome(t, h.deliverNow("checkout.session.completed", map[string]any{"id": "ch_1", "object": "charge"}), outcomeInvalid)

	if got := h.purchase(p.Name); got.ResourceVersion != p.ResourceVersion {
		t.Fatalf("unrelated events changed the purchase: %+v", got.Status)
	}
}

// noWatch lets the interceptor wrap the manager's client, which has no Watch.
type noWatch struct{ client.Client }

func (noWatch) Watch(context.Context, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
	return nil, errors.New("watch is not supported")
}

func TestWebhook_StoreFailuresAre5xxAndConflictsAreRetried(t *testing.T) {
	var failWrites, conflicts atomic.Int32
	h := newHarness(t, harnessConfig{noPurchaseController: true, client: func(c client.Client) client.Client {
		return interceptor.NewClient(noWatch{c}, interceptor.Funcs{
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
				if failWrites.Load() > 0 {
					return apierrors.NewServiceUnavailable("etcd is away")
				}
				if conflicts.Add(-1) >= 0 {
					return apierrors.NewConflict(schema.GroupResource{Group: v1alpha1.GroupVersion.Group, Resource: "purchases"}, obj.GetName(), errors.New("changed"))
				}
				return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
			},
		})
	}})
	p := h.seed("alice", "vid-1", "movie", pendingStatus())
	payload := eventJSON(t, "checkout.session.completed", paidSession(p, "pi_1"), time.Now())

	failWrites.Store(1)
	h.deliver(payload, time.Now()).expectError(t, http.StatusServiceUnavailable, CodeUnavailable)
	if got := h.purchase(p.Name); got.Status.Phase != v1alpha1.PurchasePending {
		t.Fatalf("phase %s after a failed write", got.Status.Phase)
	}

	// Stripe delivers again; this time two conflicting writers get in first.
	failWrites.Store(0)
	conflicts.Store(2)
	expectOutcome(t, h.deliver(payload, time.Now()), outcomeApplied)
	if got := h.purchase(p.Name); got.Status.Phase != v1alpha1.PurchaseCompleted {
		t.Fatalf("phase %s after the redelivery", got.Status.Phase)
	}
}

func TestWebhook_RealDeliveriesDuplicatedAndReordered(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	h.product("movie", nil)
	id, cs := h.createOK("alice", "movie", "vid-1")

	// Every event is delivered twice, and the batch in reverse order: the
	// dispute reaches the API before the payment.
	if _, err := h.em.AddWebhookFault(emulator.WebhookFault{Mode: emulator.WebhookDuplicate}); err != nil {
		t.Fatal(err)
	}
	h.em.HoldWebhooks()
	sess, err := h.em.Pay(cs, emulator.PayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.em.Dispute(sess.PaymentIntentID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := h.em.ReleaseWebhooks(emulator.ReleaseReverse); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(h.ctx, waitTimeout)
	defer cancel()
	if err := h.em.WaitForWebhooks(ctx); err != nil {
		t.Fatalf("webhooks never settled: %v", err)
	}
	p := h.waitPhase(id, v1alpha1.PurchaseCompleted)
	eventually(t, func() bool {
		p = h.purchase(id)
		return p.Status.Dispute != nil
	}, "the dispute was lost")
	for _, d := range h.em.Deliveries() {
		if d.Status != emulator.DeliverySucceeded {
			t.Errorf("delivery %+v did not end in success", d)
		}
	}
	tok := token(t, "alice", false)
	eventually(t, func() bool {
		return h.request(http.MethodGet, "/client/v1/pay-to-view/access/check?entityId=vid-1", tok, nil).status == http.StatusForbidden
	}, "access not suspended by the dispute")
	if paid := h.em.State().PaidChargesByMetadata(stripe.MetaPurchaseID)[id]; len(paid) != 1 {
		t.Fatalf("%d paid charges for the purchase", len(paid))
	}
}

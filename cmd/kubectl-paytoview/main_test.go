package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/naming"
	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newPurchase creates a purchase and sets its status as the operator would.
func newPurchase(t *testing.T, ns, name, user, entity string, status v1alpha1.PurchaseStatus) *v1alpha1.Purchase {
	t.Helper()
	p := &v1alpha1.Purchase{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: naming.PurchaseLabels(user, entity, "video-7day")},
		Spec: v1alpha1.PurchaseSpec{
			ProductRef: "video-7day", UserID: user, EntityID: entity, EntityType: v1alpha1.EntityTypeVideo,
			ReturnURL: "https://example.com/done", Price: v1alpha1.Price{Amount: 499, Currency: "usd"},
			StripePriceID: "price_1", AccessDurationDays: ptr.To[int32](7),
		},
	}
	if err := env.Client.Create(testCtx(t), p); err != nil {
		t.Fatalf("creating purchase: %v", err)
	}
	p.Status = status
	if err := env.Client.Status().Update(testCtx(t), p); err != nil {
		t.Fatalf("setting purchase status: %v", err)
	}
	return p
}

func runIn(t *testing.T, ns string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(testCtx(t), args, &out, func(string) (client.Client, string, error) { return env.Client, ns, nil })
	return out.String(), err
}

func TestPurchases_ListsOnlyThatUsersPurchasesNewestFirst(t *testing.T) {
	ns := env.Namespace(t)
	newPurchase(t, ns, "ptv-aaaaaaaaa1", "auth0|alice", "vid_1", v1alpha1.PurchaseStatus{Phase: v1alpha1.PurchaseCompleted})
	newPurchase(t, ns, "ptv-aaaaaaaaa2", "auth0|alice", "vid_2", v1alpha1.PurchaseStatus{Phase: v1alpha1.PurchasePending})
	newPurchase(t, ns, "ptv-bbbbbbbbb1", "bob", "vid_1", v1alpha1.PurchaseStatus{Phase: v1alpha1.PurchaseCompleted})

	out, err := runIn(t, ns, "purchases", "--user", "auth0|alice")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "ptv-bbbbbbbbb1") {
		t.Errorf("alice's list shows bob's purchase:\n%s", out)
	}
	for _, want := range []string{"ptv-aaaaaaaaa1", "ptv-aaaaaaaaa2", "Completed", "Pending"} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}

	out, err = runIn(t, ns, "purchases", "--user", "auth0|alice", "--entity", "vid_2")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "ptv-aaaaaaaaa1") || !strings.Contains(out, "ptv-aaaaaaaaa2") {
		t.Errorf("--entity vid_2 should keep only ptv-aaaaaaaaa2:\n%s", out)
	}
}

func TestDescribe_TellsTheStoryWithConditionsAndEvents(t *testing.T) {
	ns := env.Namespace(t)
	now := metav1.Now()
	p := newPurchase(t, ns, "ptv-ccccccccc1", "carol", "vid_9", v1alpha1.PurchaseStatus{
		Phase: v1alpha1.PurchaseCompleted, CheckoutSessionID: "cs_test_1", ExternalTransactionID: "pi_1",
		CompletedAt: &now,
		Conditions: []metav1.Condition{{Type: v1alpha1.ConditionAccess, Status: metav1.ConditionTrue,
			Reason: "Paid", Message: "paid by pi_1", LastTransitionTime: now}},
	})
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "ptv-ccccccccc1.1", Namespace: ns},
		InvolvedObject: corev1.ObjectReference{Kind: "Purchase", Name: p.Name, Namespace: ns, UID: p.UID},
		Type:           corev1.EventTypeNormal, Reason: "Completed", Message: "payment confirmed",
		FirstTimestamp: now, LastTimestamp: now,
	}
	if err := env.Client.Create(testCtx(t), ev); err != nil {
		t.Fatal(err)
	}
	out, err := runIn(t, ns, "describe", p.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Phase:", "Completed", "cs_test_1", "pi_1", "Access", "Paid", "payment confirmed", "7 days"} {
		if !strings.Contains(out, want) {
			t.Errorf("describe lacks %q:\n%s", want, out)
		}
	}
}

func TestRefund_OnlyCompletedPurchasesAndOnlyOnce(t *testing.T) {
	ns := env.Namespace(t)
	pending := newPurchase(t, ns, "ptv-ddddddddd1", "dave", "vid_1", v1alpha1.PurchaseStatus{Phase: v1alpha1.PurchasePending})
	if _, err := runIn(t, ns, "refund", pending.Name, "--reason", "test"); err == nil || !strings.Contains(err.Error(), "only Completed") {
		t.Fatalf("refund of a Pending purchase: err = %v, want a refusal", err)
	}
	done := newPurchase(t, ns, "ptv-ddddddddd2", "dave", "vid_2", v1alpha1.PurchaseStatus{Phase: v1alpha1.PurchaseCompleted})
	if _, err := runIn(t, ns, "refund", "--reason", "double charge", "--by", "support-1", done.Name); err != nil {
		t.Fatalf("refund: %v", err)
	}
	var got v1alpha1.Purchase
	if err := env.Client.Get(testCtx(t), client.ObjectKeyFromObject(done), &got); err != nil {
		t.Fatal(err)
	}
	if r := got.Spec.Refund; r == nil || !r.Requested || r.Reason != "double charge" || r.RequestedBy != "support-1" {
		t.Fatalf("spec.refund = %+v, want requested by support-1 for 'double charge'", r)
	}
	out, err := runIn(t, ns, "refund", done.Name, "--reason", "again")
	if err != nil || !strings.Contains(out, "already requested") {
		t.Fatalf("second refund: out=%q err=%v, want 'already requested'", out, err)
	}
}

func TestSendWebhook_DeliversAnEventOurVerifierAccepts(t *testing.T) {
	ns := env.Namespace(t)
	p := newPurchase(t, ns, "ptv-eeeeeeeee1", "erin", "vid_5", v1alpha1.PurchaseStatus{
		Phase: v1alpha1.PurchasePending, CheckoutSessionID: "cs_test_abc", StripeCustomerID: "cus_1",
	})
	const secret = "whsec_plugin_test"
	verifier, err := stripe.NewVerifier([]string{secret}, stripe.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan stripe.Session, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ev, err := verifier.Verify(body, r.Header.Get("Stripe-Signature"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s, err := stripe.SessionFromEvent(ev)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- s
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	if _, err := runIn(t, ns, "send-webhook", "--url", srv.URL, "--secret", secret,
		"--purchase", p.Name, "--type", "checkout.session.completed"); err != nil {
		t.Fatalf("send-webhook: %v", err)
	}
	s := <-got
	if s.ID != "cs_test_abc" || s.Status != stripe.SessionComplete || s.PaymentStatus != stripe.PaymentPaid {
		t.Errorf("session = %+v, want cs_test_abc complete/paid", s)
	}
	if s.Metadata[stripe.MetaPurchaseID] != p.Name || s.Metadata[stripe.MetaUserID] != "erin" || s.Metadata[stripe.MetaEntityType] != "1" {
		t.Errorf("metadata = %v, want the purchase's", s.Metadata)
	}

	if _, err := runIn(t, ns, "send-webhook", "--url", srv.URL, "--secret", "whsec_wrong",
		"--purchase", p.Name, "--type", "checkout.session.completed"); err == nil {
		t.Error("a webhook signed with the wrong secret was reported as delivered")
	}
}

func TestRun_UsageErrors(t *testing.T) {
	cases := [][]string{
		{},
		{"nope"},
		{"purchases"},
		{"describe"},
		{"refund", "ptv-x"},
		{"send-webhook", "--url", "http://x"},
		{"send-webhook", "--url", "http://x", "--secret", "whsec_1", "--purchase", "ptv-x"},
	}
	for _, args := range cases {
		if _, err := runIn(t, "default", args...); err == nil {
			t.Errorf("run(%q) succeeded, want a usage error", args)
		}
	}
}

package webhookserver

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/lifecycle"
	"github.com/md-platform/paytoview-operator/internal/naming"
	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

// End-to-end tests: the API, the real Product, Customer and Purchase
// controllers, envtest and the Stripe emulator delivering signed webhooks to
// the API's socket.

func TestCreatePurchase_ReturnsACheckoutAndSnapshotsTheProduct(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	prod := h.product("movie", func(p *v1alpha1.Product) { p.Spec.AccessDurationDays = ptr.To[int32](30) })

	id, cs := h.createOK("alice", "movie", "vid-1")

	p := h.purchase(id)
	want := v1alpha1.PurchaseSpec{
		ProductRef: "movie", UserID: "alice", EntityID: "vid-1", EntityType: v1alpha1.EntityTypeVideo,
		ReturnURL: "https://shop.example.com/purchase/complete", Price: *prod.Status.Price,
		StripePriceID: prod.Status.StripePriceID, AccessDurationDays: ptr.To[int32](30),
	}
	if p.Spec.ProductRef != want.ProductRef || p.Spec.UserID != want.UserID || p.Spec.EntityID != want.EntityID ||
		p.Spec.EntityType != want.EntityType || p.Spec.ReturnURL != want.ReturnURL || p.Spec.Price != want.Price ||
		p.Spec.StripePriceID != want.StripePriceID || *p.Spec.AccessDurationDays != 30 || p.Spec.Refund != nil {
		t.Fatalf("spec %+v, want %+v", p.Spec, want)
	}
	for k, v := range naming.PurchaseLabels("alice", "vid-1", "movie") {
		if p.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, p.Labels[k], v)
		}
	}
	// The client secret is the session's, and the customer is the user's.
	sessions := h.em.State().Sessions
	if len(sessions) != 1 {
		t.Fatalf("%d sessions, want 1", len(sessions))
	}
	got, err := h.em.GetSession(cs)
	if err != nil || got.ID != p.Status.CheckoutSessionID {
		t.Fatalf("client secret belongs to session %q (%v), purchase has %q", got.ID, err, p.Status.CheckoutSessionID)
	}
	if got.Metadata[stripe.MetaPurchaseID] != id || got.Metadata[stripe.MetaUserID] != "alice" {
		t.Fatalf("session metadata %v", got.Metadata)
	}
	list, page := listItems(t, h.request(http.MethodGet, purchasesPath, token(t, "alice", false), nil))
	if len(list) != 1 || page["totalCount"] != float64(1) || list[0]["status"] != "Pending" || list[0]["hasAccess"] != false {
		t.Fatalf("list after create: %v", list)
	}
}

func TestCreatePurchase_ReusesARecentPendingPurchase(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	h.product("movie", nil)
	id1, cs1 := h.createOK("alice", "movie", "vid-1")
	id2, cs2 := h.createOK("alice", "movie", "vid-1")
	if id1 != id2 || cs1 != cs2 {
		t.Fatalf("second create gave %s/%s, want the same purchase %s and client secret", id2, cs2[:10], id1)
	}
	if n := h.sessions(); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
	// Another entity or another user is another purchase.
	if id, _ := h.createOK("alice", "movie", "vid-2"); id == id1 {
		t.Fatal("other entity reused the purchase")
	}
	if id, _ := h.createOK("bob", "movie", "vid-1"); id == id1 {
		t.Fatal("other user reused the purchase")
	}

	// Past the reuse window, a new purchase (and session) is made.
	h.clock.Advance(DefaultPendingReuseWindow + time.Second)
	id3, cs3 := h.createOK("alice", "movie", "vid-1")
	if id3 == id1 || cs3 == cs1 {
		t.Fatalf("purchase reused after the window: %s", id3)
	}
	if n := h.sessions(); n != 4 {
		t.Fatalf("%d sessions, want 4", n)
	}
}

func TestCreatePurchase_ConcurrentDuplicatesYieldOnePurchase(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	h.product("movie", nil)
	const n = 12
	tok := token(t, "alice", false)
	var wg sync.WaitGroup
	answers := make([]response, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = h.request(http.MethodPost, purchasesPath, tok, createReq("movie", "vid-1"))
		}()
	}
	wg.Wait()
	ids := map[any]bool{}
	for _, a := range answers {
		if a.status != http.StatusOK {
			t.Fatalf("concurrent create: %d %s", a.status, a.body)
		}
		ids[a.json(t)["purchaseId"]] = true
	}
	if len(ids) != 1 {
		t.Fatalf("%d different purchases for one double click: %v", len(ids), ids)
	}
	if got := len(h.purchases()); got != 1 {
		t.Fatalf("%d Purchases, want 1", got)
	}
	if got := h.sessions(); got != 1 {
		t.Fatalf("%d sessions, want 1", got)
	}
}

func TestCreatePurchase_AfterPayingTheUserHasAccessAndStripeIsNotCalled(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	h.product("movie", nil)
	id, cs := h.createOK("alice", "movie", "vid-1")
	p := h.pay(id, cs)
	if p.Status.ExternalTransactionID == "" || p.Status.CompletedAt == nil || p.Status.ExpiresAt != nil {
		t.Fatalf("completed status %+v", p.Status)
	}
	sessions := h.sessions()

	r := h.create("alice", "movie", "vid-1")
	if m := r.json(t); r.status != http.StatusOK || m["success"] != false || m["hasAccess"] != true || m["purchaseId"] != id {
		t.Fatalf("create after paying: %d %s", r.status, r.body)
	}
	if got := h.sessions(); got != sessions {
		t.Fatalf("Stripe was called: %d sessions, want %d", got, sessions)
	}
	tok := token(t, "alice", false)
	if r := h.request(http.MethodGet, "/client/v1/pay-to-view/access/check?entityId=vid-1", tok, nil); r.status != http.StatusNoContent {
		t.Fatalf("forward-auth after paying: %d", r.status)
	}
	r = h.request(http.MethodGet, purchasesPath+"/"+id, tok, nil)
	if m := r.json(t); m["status"] != "Completed" || m["hasAccess"] != true || m["completedAt"] == nil {
		t.Fatalf("get after paying: %s", r.body)
	}
}

func TestCreatePurchase_DelayedPaymentInFlightBlocksAnotherCheckout(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	h.product("movie", nil)
	h.product("movie-hd", nil)
	id, cs := h.createOK("alice", "movie", "vid-1")
	// The buyer finishes checkout with a bank debit: the session is
	// complete, the money not there yet.
	if _, err := h.em.PayAsync(cs, emulator.AsyncPending, emulator.PayOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool {
		var p v1alpha1.Purchase
		err := h.mgr.GetClient().Get(h.ctx, client.ObjectKey{Namespace: h.ns, Name: id}, &p)
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady)
		return err == nil && p.Status.Phase == v1alpha1.PurchasePending && c != nil && c.Reason == lifecycle.ReasonPaymentProcessing
	}, "purchase %s never showed the processing payment", id)
	sessions := h.sessions()

	refused := func(when string) {
		t.Helper()
		// Any product of the entity: the user would pay for it twice.
		for _, product := range []string{"movie", "movie-hd"} {
			r := h.create("alice", product, "vid-1")
			m := r.expectError(t, http.StatusConflict, CodePaymentProcessing)
			if m["purchaseId"] != id || m["clientSecret"] != nil {
				t.Fatalf("%s, %s: %s, want purchaseId %s and no client secret", when, product, r.body, id)
			}
		}
		if n := len(h.purchases()); n != 1 {
			t.Fatalf("%s: %d purchases, want only %s", when, n, id)
		}
		if n := h.sessions(); n != sessions {
			t.Fatalf("%s: Stripe was called: %d sessions, want %d", when, n, sessions)
		}
	}
	refused("within the reuse window")
	h.clock.Advance(DefaultPendingReuseWindow + time.Second)
	refused("after the reuse window")

	// Other entities are not held up.
	if other, _ := h.createOK("alice", "movie", "vid-2"); other == id {
		t.Fatal("another entity got the processing purchase")
	}

	// Once the payment succeeds, the user has access.
	if _, err := h.em.SettleAsync(cs, emulator.AsyncSucceeded, emulator.PayOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitPhase(id, v1alpha1.PurchaseCompleted)
	r := h.create("alice", "movie", "vid-1")
	if m := r.json(t); r.status != http.StatusOK || m["hasAccess"] != true || m["purchaseId"] != id {
		t.Fatalf("create after the payment succeeded: %d %s", r.status, r.body)
	}
}

func TestCreatePurchase_ExpiredAccessAllowsANewPurchase(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	h.product("rental", func(p *v1alpha1.Product) { p.Spec.AccessDurationDays = ptr.To[int32](2) })
	id, cs := h.createOK("alice", "rental", "vid-1")
	h.pay(id, cs)

	h.clock.Advance(72 * time.Hour)
	tok := token(t, "alice", false)
	h.request(http.MethodGet, "/client/v1/pay-to-view/access/check?entityId=vid-1", tok, nil).
		expectError(t, http.StatusForbidden, CodeNoAccess)
	id2, _ := h.createOK("alice", "rental", "vid-1")
	if id2 == id {
		t.Fatal("the expired purchase was handed out again")
	}
}

func TestCreatePurchase_StripeRejectionIs502WithStripesMessage(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	h.product("movie", nil)
	if _, err := h.em.AddFault(emulator.Fault{Operation: "create_checkout_session", Status: http.StatusBadRequest,
		Code: "parameter_invalid_empty", Message: "The currency is not supported for this account."}); err != nil {
		t.Fatal(err)
	}
	r := h.create("alice", "movie", "vid-1")
	m := r.expectError(t, http.StatusBadGateway, CodeStripeError)
	if !strings.Contains(m["message"].(string), "currency is not supported") {
		t.Fatalf("message %q is not Stripe's", m["message"])
	}
	if strings.Contains(string(r.body), "sk_test") {
		t.Fatalf("answer leaks the key: %s", r.body)
	}
	if id, _ := m["purchaseId"].(string); id == "" || h.purchase(id).Status.Phase != v1alpha1.PurchaseFailed {
		t.Fatalf("purchase %v is not Failed", m["purchaseId"])
	}
	// A Failed purchase is not reused: once Stripe accepts, a retry works.
	h.em.ClearFaults()
	h.createOK("alice", "movie", "vid-1")
}

func TestCreatePurchase_StripeOutageAnswers503AndTheRetryGetsTheSamePurchase(t *testing.T) {
	h := newHarness(t, harnessConfig{options: func(o *Options) { o.CreateTimeout = time.Second }})
	h.product("movie", nil)
	if _, err := h.em.AddFault(emulator.Fault{Operation: "create_checkout_session", Status: http.StatusInternalServerError}); err != nil {
		t.Fatal(err)
	}
	m := h.create("alice", "movie", "vid-1").expectError(t, http.StatusServiceUnavailable, CodeCheckoutNotReady)
	id := m["purchaseId"].(string)

	h.em.ClearFaults()
	var got string
	eventually(t, func() bool {
		r := h.create("alice", "movie", "vid-1")
		if r.status != http.StatusOK {
			return false
		}
		got, _ = r.json(t)["purchaseId"].(string)
		return true
	}, "create never succeeded after the outage")
	if got != id {
		t.Fatalf("retry got purchase %s, want the one from the 503, %s", got, id)
	}
	if n := len(h.purchases()); n != 1 {
		t.Fatalf("%d purchases, want 1", n)
	}
}

func TestGetPurchase_PollingHealsALostWebhook(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	h.product("movie", nil)
	id, cs := h.createOK("alice", "movie", "vid-1")
	if _, err := h.em.Pay(cs, emulator.PayOptions{Webhook: emulator.WebhookDrop}); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Minute)
	tok := token(t, "alice", false)
	eventually(t, func() bool {
		r := h.request(http.MethodGet, purchasesPath+"/"+id, tok, nil)
		return r.status == http.StatusOK && r.json(t)["status"] == "Completed"
	}, "the user who paid never saw Completed")
}

func TestRefund_RefundsOnceAndIsIdempotent(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	h.product("movie", nil)
	id, cs := h.createOK("alice", "movie", "vid-1")
	h.pay(id, cs)
	admin := token(t, "support-1", true)
	path := "/admin/v1/pay-to-view/purchases/" + id + "/refund"

	r := h.request(http.MethodPost, path, admin, `{"reason":"customer asked"}`)
	if m := r.json(t); r.status != http.StatusOK || m["success"] != true || m["purchaseId"] != id || m["status"] != "Refunded" {
		t.Fatalf("refund: %d %s", r.status, r.body)
	}
	p := h.purchase(id)
	if p.Spec.Refund == nil || !p.Spec.Refund.Requested || p.Spec.Refund.Reason != "customer asked" || p.Spec.Refund.RequestedBy != "support-1" {
		t.Fatalf("refund request %+v", p.Spec.Refund)
	}
	if got := recordedEvents(h.recorder); !containsEvent(got, "RefundRequested") {
		t.Fatalf("no RefundRequested event among %v", got)
	}
	// Again, with or without a body: same answer, no second refund.
	for _, body := range []any{nil, `{}`, `{"reason":"again"}`} {
		r := h.request(http.MethodPost, path, admin, body)
		if m := r.json(t); r.status != http.StatusOK || m["status"] != "Refunded" {
			t.Fatalf("repeated refund: %d %s", r.status, r.body)
		}
	}
	if n := len(h.em.State().Refunds); n != 1 {
		t.Fatalf("%d Stripe refunds, want 1", n)
	}
	if p := h.purchase(id); p.Spec.Refund.Reason != "customer asked" {
		t.Fatalf("repeated request changed the reason to %q", p.Spec.Refund.Reason)
	}
	tok := token(t, "alice", false)
	h.request(http.MethodGet, "/client/v1/pay-to-view/access/check?entityId=vid-1", tok, nil).
		expectError(t, http.StatusForbidden, CodeNoAccess)
}

func TestRefund_NotRefundableUnknownAndPending(t *testing.T) {
	h := newHarness(t, harnessConfig{options: func(o *Options) { o.RefundTimeout = time.Second }})
	h.product("movie", nil)
	admin := token(t, "support-1", true)
	pending, _ := h.createOK("alice", "movie", "vid-1")
	h.request(http.MethodPost, "/admin/v1/pay-to-view/purchases/"+pending+"/refund", admin, nil).
		expectError(t, http.StatusConflict, CodeNotRefundable)
	if h.purchase(pending).Spec.Refund != nil {
		t.Fatal("refund recorded on a Pending purchase")
	}
	h.request(http.MethodPost, "/admin/v1/pay-to-view/purchases/ptv-zzzzzzzzzz/refund", admin, nil).
		expectError(t, http.StatusNotFound, CodePurchaseNotFound)
	h.request(http.MethodPost, "/admin/v1/pay-to-view/purchases/"+pending+"/refund", admin, `{"reason":"x","amount":5}`).
		expectError(t, http.StatusBadRequest, CodeUnknownField)
	h.request(http.MethodPost, "/admin/v1/pay-to-view/purchases/"+pending+"/refund", admin, `{"reason":"`+strings.Repeat("x", 501)+`"}`).
		expectError(t, http.StatusBadRequest, CodeInvalidField)

	// Stripe is down: the refund waits, and the answer is 202 with the
	// current status.
	id, cs := h.createOK("alice", "movie", "vid-2")
	h.pay(id, cs)
	if _, err := h.em.AddFault(emulator.Fault{Operation: "create_refund", Status: http.StatusInternalServerError}); err != nil {
		t.Fatal(err)
	}
	r := h.request(http.MethodPost, "/admin/v1/pay-to-view/purchases/"+id+"/refund", admin, nil)
	if m := r.json(t); r.status != http.StatusAccepted || m["status"] != "Completed" || m["purchaseId"] != id {
		t.Fatalf("pending refund: %d %s", r.status, r.body)
	}
	if h.purchase(id).Spec.Refund == nil {
		t.Fatal("refund not recorded")
	}
}

func TestRefund_StripeRefusalIs502WithStripesReason(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	h.product("movie", nil)
	id, cs := h.createOK("alice", "movie", "vid-1")
	h.pay(id, cs)
	if _, err := h.em.AddFault(emulator.Fault{Operation: "create_refund", Status: http.StatusBadRequest,
		Code: "charge_disputed", Message: "This charge has been charged back; it cannot be refunded."}); err != nil {
		t.Fatal(err)
	}
	admin := token(t, "support-1", true)
	path := "/admin/v1/pay-to-view/purchases/" + id + "/refund"
	// The first answer comes from the wait, the second from the status
	// already stored: both say what Stripe said, not "in progress".
	for _, attempt := range []string{"first", "repeated"} {
		r := h.request(http.MethodPost, path, admin, nil)
		m := r.expectError(t, http.StatusBadGateway, CodeRefundFailed)
		if msg, _ := m["message"].(string); !strings.Contains(msg, "charged back") || m["purchaseId"] != id {
			t.Fatalf("%s request: %s, want Stripe's reason and purchaseId %s", attempt, r.body, id)
		}
		if strings.Contains(string(r.body), "sk_test") {
			t.Fatalf("answer leaks the key: %s", r.body)
		}
	}
	if p := h.purchase(id); p.Status.Phase != v1alpha1.PurchaseCompleted {
		t.Fatalf("phase %s after a refused refund, want Completed", p.Status.Phase)
	}
	if n := len(h.em.State().Refunds); n != 0 {
		t.Fatalf("%d Stripe refunds, want none", n)
	}
}

func TestAdminList_FiltersForSupportStaff(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	h.product("movie", nil)
	paid, cs := h.createOK("alice", "movie", "vid-1")
	h.pay(paid, cs)
	open, _ := h.createOK("alice", "movie", "vid-2")
	bobs, _ := h.createOK("bob", "movie", "vid-1")
	admin := token(t, "support-1", true)
	ids := func(query string) []string {
		t.Helper()
		items, _ := listItems(t, h.request(http.MethodGet, "/admin/v1/pay-to-view/purchases?"+query, admin, nil))
		var out []string
		for _, it := range items {
			out = append(out, it["purchaseId"].(string))
			if it["userId"] == nil || it["userId"] == "" {
				t.Errorf("admin item without userId: %v", it)
			}
		}
		return out
	}
	same := func(got []string, want ...string) bool {
		if len(got) != len(want) {
			return false
		}
		for _, w := range want {
			found := false
			for _, g := range got {
				found = found || g == w
			}
			if !found {
				return false
			}
		}
		return true
	}
	for query, want := range map[string][]string{
		"":                               {paid, open, bobs},
		"userId=alice":                   {paid, open},
		"userId=alice&entityId=vid-1":    {paid},
		"entityId=vid-1":                 {paid, bobs},
		"status=Pending":                 {open, bobs},
		"status=Completed&userId=alice":  {paid},
		"userId=carol":                   {},
		"entityId=vid-1&status=Refunded": {},
	} {
		if got := ids(query); !same(got, want...) {
			t.Errorf("%q: got %v, want %v", query, got, want)
		}
	}
	for _, q := range []string{"status=Paid", "entityId=a%20b", "pageSize=500", "userId=a&userId=b"} {
		h.request(http.MethodGet, "/admin/v1/pay-to-view/purchases?"+q, admin, nil).expectError(t, http.StatusBadRequest, CodeInvalidField)
	}
}

func containsEvent(events []string, reason string) bool {
	for _, e := range events {
		if strings.Contains(e, " "+reason+" ") {
			return true
		}
	}
	return false
}

// recordedEvents drains the events recorded so far, each as
// "<type> <reason> <note>".
func recordedEvents(r *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-r.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// A client secret Secret naming another checkout session than the one the
// Purchase records (a create that lost a race with a newer one wrote it
// last) is never handed out: the buyer is told to retry until the Secret is
// the recorded session's again.
func TestCreatePurchase_NeverHandsOutAnotherSessionsClientSecret(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	h.product("movie", nil)
	id, cs := h.createOK("alice", "movie", "vid-1")
	p := h.purchase(id)
	if !strings.HasPrefix(cs, p.Status.CheckoutSessionID+"_secret_") {
		t.Fatalf("client secret %q is not session %s's", cs, p.Status.CheckoutSessionID)
	}
	var sec corev1.Secret
	if err := env.Client.Get(h.ctx, client.ObjectKeyFromObject(p), &sec); err != nil {
		t.Fatal(err)
	}
	if got := sec.Annotations[v1alpha1.AnnotationCheckoutSession]; got != p.Status.CheckoutSessionID {
		t.Fatalf("Secret names session %q, want %q", got, p.Status.CheckoutSessionID)
	}

	sec.Annotations[v1alpha1.AnnotationCheckoutSession] = "cs_test_another"
	sec.Data["clientSecret"] = []byte("cs_test_another_secret_x")
	if err := env.Client.Update(h.ctx, &sec); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool {
		var cached corev1.Secret
		return h.mgr.GetClient().Get(h.ctx, client.ObjectKeyFromObject(&sec), &cached) == nil &&
			cached.Annotations[v1alpha1.AnnotationCheckoutSession] == "cs_test_another"
	}, "the cache never saw the changed Secret")
	r := h.create("alice", "movie", "vid-1") // reuses the pending purchase
	r.expectError(t, http.StatusServiceUnavailable, CodeCheckoutNotReady)
	if strings.Contains(string(r.body), "another") {
		t.Fatalf("answer leaks the other session's secret: %s", r.body)
	}

	sec.Annotations[v1alpha1.AnnotationCheckoutSession] = p.Status.CheckoutSessionID
	sec.Data["clientSecret"] = []byte(cs)
	if err := env.Client.Update(h.ctx, &sec); err != nil {
		t.Fatal(err)
	}
	if again, cs2 := h.createOK("alice", "movie", "vid-1"); again != id || cs2 != cs {
		t.Fatalf("create answered %s %s, want the reused %s %s", again, cs2, id, cs)
	}
}

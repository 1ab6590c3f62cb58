package webhookserver

import (
	"bytes"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/auth"
	"github.com/md-platform/paytoview-operator/internal/lifecycle"
)

// Tests of the client API that need no Purchase controller: the purchases
// they read are put in place by the test.

func TestAuth_ClientRoutesRequireAValidToken(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true})
	expired, err := auth.MintHS256(testSecret, "alice", nil, -time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := auth.MintHS256(bytes.Repeat([]byte("x"), 40), "alice", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	routes := []struct{ method, path string }{
		{http.MethodPost, purchasesPath},
		{http.MethodGet, purchasesPath},
		{http.MethodGet, purchasesPath + "/ptv-0000000000"},
		{http.MethodGet, "/client/v1/pay-to-view/access?entityId=vid-1"},
		{http.MethodGet, "/client/v1/pay-to-view/access/check?entityId=vid-1"},
		{http.MethodPost, "/admin/v1/pay-to-view/purchases/ptv-0000000000/refund"},
		{http.MethodGet, "/admin/v1/pay-to-view/purchases"},
	}
	tokens := map[string]string{"no token": "", "garbage": "not.a.jwt", "expired": expired, "signed with another key": otherKey}
	for _, rt := range routes {
		for name, tok := range tokens {
			var body any
			if rt.method == http.MethodPost && rt.path == purchasesPath {
				body = createReq("p", "vid-1")
			}
			r := h.request(rt.method, rt.path, tok, body)
			r.expectError(t, http.StatusUnauthorized, CodeUnauthorized)
			if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s with %s: WWW-Authenticate = %q", rt.method, rt.path, name, r.header.Get("WWW-Authenticate"))
			}
		}
	}
	// A basic-auth header is no bearer token either.
	r := h.request(http.MethodGet, purchasesPath, "", nil, "Authorization", "Basic YWxpY2U6cHc=")
	r.expectError(t, http.StatusUnauthorized, CodeUnauthorized)
}

func TestAuth_AdminRoutesRefuseNonAdmins(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true})
	tok := token(t, "alice", false)
	h.request(http.MethodPost, "/admin/v1/pay-to-view/purchases/ptv-0000000000/refund", tok, nil).
		expectError(t, http.StatusForbidden, CodeForbidden)
	h.request(http.MethodGet, "/admin/v1/pay-to-view/purchases", tok, nil).
		expectError(t, http.StatusForbidden, CodeForbidden)
}

func TestCreatePurchase_RejectsMalformedRequestsWith400(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true})
	tok := token(t, "alice", false)
	tests := map[string]struct {
		body string
		code string
	}{
		"malformed JSON":  {`{"payToViewProductId":`, CodeMalformedJSON},
		"unknown field":   {`{"payToViewProductId":"p","entityId":"e","returnUrl":"https://shop.example.com/x","price":1}`, CodeUnknownField},
		"missing field":   {`{"payToViewProductId":"p","entityId":"e"}`, CodeMissingField},
		"wrong type":      {`{"payToViewProductId":"p","entityId":7,"returnUrl":"https://shop.example.com/x"}`, CodeInvalidField},
		"bad entity id":   {`{"payToViewProductId":"p","entityId":"<script>","returnUrl":"https://shop.example.com/x"}`, CodeInvalidField},
		"over 64 KiB":     {`{"payToViewProductId":"` + strings.Repeat("p", 70<<10) + `"}`, CodeBodyTooLarge},
		"10 MiB":          {strings.Repeat(" ", 10<<20), CodeBodyTooLarge},
		"empty":           {``, CodeMalformedJSON},
		"two JSON values": {`{} {}`, CodeMalformedJSON},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			h.request(http.MethodPost, purchasesPath, tok, tt.body).expectError(t, http.StatusBadRequest, tt.code)
		})
	}
	if n := len(h.purchases()); n != 0 {
		t.Fatalf("%d purchases created by bad requests", n)
	}
}

func TestCreatePurchase_ProductErrors(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true})
	h.product("only-some", func(p *v1alpha1.Product) { p.Spec.EntityIDs = []string{"vid-1", "vid-2"} })
	h.product("retired", nil)
	var retired v1alpha1.Product
	if err := env.Client.Get(h.ctx, client.ObjectKey{Namespace: h.ns, Name: "retired"}, &retired); err != nil {
		t.Fatal(err)
	}
	retired.Spec.Active = ptr.To(false)
	if err := env.Client.Update(h.ctx, &retired); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool {
		var c v1alpha1.Product
		return h.mgr.GetClient().Get(h.ctx, client.ObjectKeyFromObject(&retired), &c) == nil && c.Spec.Active != nil && !*c.Spec.Active
	}, "inactive product never reached the cache")
	// A Stripe price that does not exist: the Product never becomes Ready.
	notReady := &v1alpha1.Product{
		ObjectMeta: metav1.ObjectMeta{Name: "not-ready", Namespace: h.ns},
		Spec: v1alpha1.ProductSpec{DisplayName: "Broken", EntityType: v1alpha1.EntityTypeVideo,
			StripePriceRef: "price_doesnotexist"},
	}
	if err := env.Client.Create(h.ctx, notReady); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool {
		var c v1alpha1.Product
		return h.mgr.GetClient().Get(h.ctx, client.ObjectKeyFromObject(notReady), &c) == nil
	}, "product never reached the cache")

	h.create("alice", "no-such-product", "vid-1").expectError(t, http.StatusNotFound, CodeProductNotFound)
	h.create("alice", "Not_A_Valid_Name", "vid-1").expectError(t, http.StatusNotFound, CodeProductNotFound)
	h.create("alice", "retired", "vid-1").expectError(t, http.StatusConflict, CodeProductUnavailable)
	h.create("alice", "not-ready", "vid-1").expectError(t, http.StatusConflict, CodeProductUnavailable)
	h.create("alice", "only-some", "vid-3").expectError(t, http.StatusUnprocessableEntity, CodeEntityNotAllowed)

	tok := token(t, "alice", false)
	for _, u := range []string{"http://shop.example.com/x", "https://evil.example.com/x", "https://shop.example.com@evil.example.com/",
		"javascript:alert(1)", "/relative"} {
		body := createReq("only-some", "vid-1")
		body["returnUrl"] = u
		h.request(http.MethodPost, purchasesPath, tok, body).expectError(t, http.StatusUnprocessableEntity, CodeInvalidReturnURL)
	}
	// Only the Purchase controller calls Stripe, and only for a Purchase:
	// none created means no checkout session either (without the
	// controller here, counting sessions would prove nothing).
	if n := len(h.purchases()); n != 0 {
		t.Fatalf("%d purchases created by refused requests", n)
	}
}

func TestCreatePurchase_HasAccessShortCircuits(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true})
	h.product("movie", nil)
	paid := h.seed("alice", "vid-1", "movie", completedStatus(time.Now().Add(-time.Hour), 30))

	r := h.create("alice", "movie", "vid-1")
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	m := r.json(t)
	if m["success"] != false || m["hasAccess"] != true || m["purchaseId"] != paid.Name {
		t.Fatalf("got %s, want success=false hasAccess=true purchaseId=%s", r.body, paid.Name)
	}
	if _, ok := m["clientSecret"]; ok {
		t.Fatalf("clientSecret in a hasAccess answer: %s", r.body)
	}
	// Access is per entity, whichever product: even an unknown product id.
	if m := h.create("alice", "no-such-product", "vid-1").json(t); m["hasAccess"] != true {
		t.Fatalf("access not reported for another product id: %v", m)
	}
	// No new Purchase means Stripe was not called: only the Purchase
	// controller (proven end to end in
	// TestCreatePurchase_AfterPayingTheUserHasAccessAndStripeIsNotCalled)
	// creates sessions.
	if n := len(h.purchases()); n != 1 {
		t.Fatalf("%d purchases, want only the paid one", n)
	}
}

func TestCreatePurchase_TimeoutAnswers503AndRetryReusesThePurchase(t *testing.T) {
	// Nobody creates the checkout session, so every wait times out.
	h := newHarness(t, harnessConfig{noPurchaseController: true, options: func(o *Options) { o.CreateTimeout = 500 * time.Millisecond }})
	h.product("movie", nil)

	r := h.create("alice", "movie", "vid-1")
	m := r.expectError(t, http.StatusServiceUnavailable, CodeCheckoutNotReady)
	id, _ := m["purchaseId"].(string)
	if !strings.HasPrefix(id, "ptv-") {
		t.Fatalf("no purchaseId in %s", r.body)
	}
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("Retry-After = %q", r.header.Get("Retry-After"))
	}
	p := h.purchase(id)
	if p.Spec.UserID != "alice" || p.Spec.EntityID != "vid-1" || p.Spec.ProductRef != "movie" {
		t.Fatalf("purchase spec %+v", p.Spec)
	}
	h.waitCached(p)

	r = h.create("alice", "movie", "vid-1")
	if m := r.expectError(t, http.StatusServiceUnavailable, CodeCheckoutNotReady); m["purchaseId"] != id {
		t.Fatalf("retry answered with purchase %v, want the same %s", m["purchaseId"], id)
	}
	if n := len(h.purchases()); n != 1 {
		t.Fatalf("%d purchases after a retry, want 1", n)
	}
	if n := h.srv.waiter.waiting(); n != 0 {
		t.Fatalf("%d waits left behind", n)
	}
}

// startWaitingCreate sends a create that waits for its checkout (nobody
// prepares it) and returns it with the Purchase it created.
func startWaitingCreate(h *harness, user, product, entity string) (pending, *v1alpha1.Purchase) {
	h.t.Helper()
	call := h.requestAsync(http.MethodPost, purchasesPath, token(h.t, user, false), createReq(product, entity))
	eventually(h.t, func() bool { return h.srv.waiter.waiting() == 1 }, "create never started waiting")
	items := h.purchases()
	if len(items) != 1 {
		h.t.Fatalf("%d purchases, want the one being created", len(items))
	}
	return call, &items[0]
}

func TestCreatePurchase_WaitEndsWith409WhenTheCheckoutIsPaidWithADelayedMethod(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true, options: func(o *Options) { o.CreateTimeout = waitTimeout }})
	h.product("movie", nil)
	call, p := startWaitingCreate(h, "alice", "movie", "vid-1")

	// Meanwhile the session was opened and completed with a bank debit
	// (another replica handed it out): it must not be handed out again.
	st := pendingStatus()
	st.Conditions[0].Reason = lifecycle.ReasonPaymentProcessing
	p.Status = *st
	h.setStatus(p)

	r := call.answer(t)
	if m := r.expectError(t, http.StatusConflict, CodePaymentProcessing); m["purchaseId"] != p.Name {
		t.Fatalf("answer %s, want purchaseId %s", r.body, p.Name)
	}
}

func TestCreatePurchase_CheckoutEndedWhileWaitingIs409(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true, options: func(o *Options) { o.CreateTimeout = waitTimeout }})
	h.product("movie", nil)
	ended := func(r response) {
		t.Helper()
		if m := r.expectError(t, http.StatusConflict, CodeCheckoutEnded); m["purchaseId"] != nil {
			t.Fatalf("answer %s names a purchase that cannot be used", r.body)
		}
	}

	// Canceled (e.g. superseded) without access.
	call, p := startWaitingCreate(h, "alice", "movie", "vid-1")
	p.Status = v1alpha1.PurchaseStatus{Phase: v1alpha1.PurchaseCanceled}
	h.setStatus(p)
	ended(call.answer(t))

	// Deleted. The API creates purchases with the controller's finalizer;
	// with no controller here, the test lets go of it as the controller would.
	var latest v1alpha1.Purchase
	if err := env.Client.Get(h.ctx, client.ObjectKeyFromObject(p), &latest); err != nil {
		t.Fatal(err)
	}
	if len(latest.Finalizers) != 1 || latest.Finalizers[0] != v1alpha1.PurchaseFinalizer {
		t.Fatalf("created purchase has finalizers %v, want [%s]", latest.Finalizers, v1alpha1.PurchaseFinalizer)
	}
	if err := env.Client.Delete(h.ctx, p); err != nil {
		t.Fatal(err)
	}
	base := latest.DeepCopy()
	latest.Finalizers = nil
	if err := env.Client.Patch(h.ctx, &latest, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return len(h.purchases()) == 0 }, "purchase never went away")
	eventually(t, func() bool {
		var list v1alpha1.PurchaseList
		return h.mgr.GetClient().List(h.ctx, &list, client.InNamespace(h.ns)) == nil && len(list.Items) == 0
	}, "the cache still holds the deleted purchase")
	call, p = startWaitingCreate(h, "alice", "movie", "vid-1")
	if err := env.Client.Delete(h.ctx, p); err != nil {
		t.Fatal(err)
	}
	ended(call.answer(t))
}

func TestCreatePurchase_CapsPendingPurchasesPerUser(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true, options: func(o *Options) { o.MaxPendingPerUser = 2 }})
	h.product("movie", nil)
	h.seed("alice", "vid-1", "movie", pendingStatus())
	h.seed("alice", "vid-2", "movie", nil) // not seen by the controller yet: Pending too
	r := h.create("alice", "movie", "vid-3")
	r.expectError(t, http.StatusTooManyRequests, CodeTooManyPending)
	if r.header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	if n := len(h.purchases()); n != 2 {
		t.Fatalf("%d purchases, want the 2 seeded", n)
	}
}

func TestCreatePurchase_RateLimitsEachUser(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true, options: func(o *Options) {
		o.CreateRate = 1.0 / 3600 // one an hour
		o.CreateBurst = 1
		o.CreateTimeout = 200 * time.Millisecond
	}})
	h.product("movie", nil)
	h.create("alice", "movie", "vid-1").expectError(t, http.StatusServiceUnavailable, CodeCheckoutNotReady)
	r := h.create("alice", "movie", "vid-2")
	r.expectError(t, http.StatusTooManyRequests, CodeRateLimited)
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 || s > 3600 {
		t.Fatalf("Retry-After = %q, want 1..3600 seconds", r.header.Get("Retry-After"))
	}
	// Other users are not affected.
	h.create("bob", "movie", "vid-2").expectError(t, http.StatusServiceUnavailable, CodeCheckoutNotReady)
	// Once the advertised time has passed, alice may buy again.
	h.clock.Advance(time.Hour)
	h.create("alice", "movie", "vid-2").expectError(t, http.StatusServiceUnavailable, CodeCheckoutNotReady)
	if n := len(h.purchases()); n != 3 {
		t.Fatalf("%d purchases, want 3", n)
	}
}

// listItems decodes a list answer.
func listItems(t *testing.T, r response) (items []map[string]any, page map[string]any) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	page = r.json(t)
	raw, ok := page["items"].([]any)
	if !ok {
		t.Fatalf("no items array: %s", r.body)
	}
	for _, it := range raw {
		items = append(items, it.(map[string]any))
	}
	return items, page
}

func TestListPurchases_PagesTheCallersPurchasesNewestFirst(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true})
	now := time.Now()
	var mine []*v1alpha1.Purchase
	for i := range 5 {
		var st *v1alpha1.PurchaseStatus
		if i == 2 {
			st = completedStatus(now.Add(-time.Hour), 0)
		}
		mine = append(mine, h.seed("alice", "vid-"+strconv.Itoa(i), "movie", st))
	}
	h.seed("bob", "vid-0", "movie", completedStatus(now, 0))

	// The expected order: creation time, newest first, then name.
	want := slices.Clone(mine)
	slices.SortFunc(want, func(a, b *v1alpha1.Purchase) int {
		if c := b.CreationTimestamp.Compare(a.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(b.Name, a.Name)
	})
	tok := token(t, "alice", false)
	var got []string
	for page := 1; page <= 3; page++ {
		items, meta := listItems(t, h.request(http.MethodGet, purchasesPath+"?page="+strconv.Itoa(page)+"&pageSize=2", tok, nil))
		if meta["totalCount"] != float64(5) || meta["page"] != float64(page) || meta["pageSize"] != float64(2) {
			t.Fatalf("page %d meta: %v", page, meta)
		}
		for _, it := range items {
			got = append(got, it["purchaseId"].(string))
		}
	}
	var wantIDs []string
	for _, p := range want {
		wantIDs = append(wantIDs, p.Name)
	}
	if !slices.Equal(got, wantIDs) {
		t.Fatalf("order %v, want %v", got, wantIDs)
	}
	items, _ := listItems(t, h.request(http.MethodGet, purchasesPath+"?page=9", tok, nil))
	if len(items) != 0 {
		t.Fatalf("page past the end has %d items", len(items))
	}

	// The completed one, field by field.
	items, _ = listItems(t, h.request(http.MethodGet, purchasesPath+"?pageSize=100", tok, nil))
	var done map[string]any
	for _, it := range items {
		if it["purchaseId"] == mine[2].Name {
			done = it
		}
	}
	if done == nil {
		t.Fatal("completed purchase not listed")
	}
	for k, v := range map[string]any{
		"payToViewProductId": "movie", "entityId": "vid-2", "entityType": float64(1), "status": "Completed",
		"amount": float64(499), "currency": "usd", "hasAccess": true, "expiresAt": nil, "refundedAt": nil,
	} {
		if done[k] != v {
			t.Errorf("%s = %v, want %v", k, done[k], v)
		}
	}
	for _, k := range []string{"createdAt", "completedAt"} {
		s, _ := done[k].(string)
		ts, err := time.Parse(time.RFC3339, s)
		if err != nil || !strings.HasSuffix(s, "Z") || ts.IsZero() {
			t.Errorf("%s = %q, want an RFC 3339 UTC time", k, s)
		}
	}
	for _, it := range items {
		if it["purchaseId"] != mine[2].Name && (it["status"] != "Pending" || it["hasAccess"] != false || it["completedAt"] != nil) {
			t.Errorf("unpaid purchase listed as %v", it)
		}
	}
	// Bob sees only his.
	items, meta := listItems(t, h.request(http.MethodGet, purchasesPath, token(t, "bob", false), nil))
	if len(items) != 1 || meta["totalCount"] != float64(1) {
		t.Fatalf("bob sees %d items (total %v)", len(items), meta["totalCount"])
	}
}

func TestListPurchases_RejectsBadPaging(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true})
	tok := token(t, "alice", false)
	for _, q := range []string{"page=0", "page=-1", "page=x", "pageSize=0", "pageSize=101", "pageSize=1e2", "page=1&page=2"} {
		h.request(http.MethodGet, purchasesPath+"?"+q, tok, nil).expectError(t, http.StatusBadRequest, CodeInvalidField)
	}
	items, meta := listItems(t, h.request(http.MethodGet, purchasesPath, tok, nil))
	if len(items) != 0 || meta["page"] != float64(1) || meta["pageSize"] != float64(10) || meta["totalCount"] != float64(0) {
		t.Fatalf("defaults: %v", meta)
	}
}

func TestGetPurchase_SomeoneElsesIsNotFound(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true})
	bobs := h.seed("bob", "vid-1", "movie", completedStatus(time.Now(), 0))
	alices := h.seed("alice", "vid-1", "movie", completedStatus(time.Now(), 0))
	tok := token(t, "alice", false)

	r := h.request(http.MethodGet, purchasesPath+"/"+alices.Name, tok, nil)
	if r.status != http.StatusOK || r.json(t)["purchaseId"] != alices.Name || r.json(t)["hasAccess"] != true {
		t.Fatalf("own purchase: %d %s", r.status, r.body)
	}
	other := h.request(http.MethodGet, purchasesPath+"/"+bobs.Name, tok, nil)
	other.expectError(t, http.StatusNotFound, CodePurchaseNotFound)
	missing := h.request(http.MethodGet, purchasesPath+"/ptv-zzzzzzzzzz", tok, nil)
	missing.expectError(t, http.StatusNotFound, CodePurchaseNotFound)
	if !bytes.Equal(other.body, missing.body) {
		t.Fatalf("someone else's purchase answers %s, a missing one %s: they must not differ", other.body, missing.body)
	}
	for _, id := range []string{"..%2F..%2Fsecrets", "ptv-%00", "PTV-ABC", "ptv-" + strings.Repeat("a", 80), "ptv-ä"} {
		h.request(http.MethodGet, purchasesPath+"/"+id, tok, nil).expectError(t, http.StatusNotFound, CodePurchaseNotFound)
	}
}

func TestGetPurchase_PollingAPendingPurchaseRequestsARecheck(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true, options: func(o *Options) {
		o.RecheckAfter = 5 * time.Second
		o.RecheckInterval = 15 * time.Second
	}})
	p := h.seed("alice", "vid-1", "movie", pendingStatus())
	tok := token(t, "alice", false)
	get := func() {
		t.Helper()
		r := h.request(http.MethodGet, purchasesPath+"/"+p.Name, tok, nil)
		if r.status != http.StatusOK || r.json(t)["status"] != "Pending" {
			t.Fatalf("get: %d %s", r.status, r.body)
		}
	}
	annotation := func() string { return h.purchase(p.Name).Annotations[v1alpha1.AnnotationRecheckRequested] }

	// Too young: the controller just created the session.
	get()
	if a := annotation(); a != "" {
		t.Fatalf("recheck requested for a purchase a second old: %s", a)
	}

	h.clock.Advance(10 * time.Second)
	get()
	first := annotation()
	at, err := time.Parse(time.RFC3339, first)
	if err != nil || at.Sub(h.clock.Now()) > time.Second || h.clock.Now().Sub(at) > 2*time.Second {
		t.Fatalf("recheck annotation %q, want about %s", first, h.clock.Now().UTC().Format(time.RFC3339))
	}
	eventually(t, func() bool {
		var c v1alpha1.Purchase
		return h.mgr.GetClient().Get(h.ctx, client.ObjectKeyFromObject(p), &c) == nil && c.Annotations[v1alpha1.AnnotationRecheckRequested] == first
	}, "annotation never reached the cache")

	// Polling again within the interval asks nothing new.
	h.clock.Advance(5 * time.Second)
	get()
	get()
	if a := annotation(); a != first {
		t.Fatalf("recheck requested again within the interval: %s, then %s", first, a)
	}

	// After the interval it asks again.
	h.clock.Advance(15 * time.Second)
	get()
	if a := annotation(); a == first || a == "" {
		t.Fatalf("no new recheck after the interval: %q", a)
	}

	// A Completed purchase is never rechecked.
	done := h.seed("alice", "vid-2", "movie", completedStatus(time.Now(), 0))
	h.clock.Advance(time.Hour)
	h.request(http.MethodGet, purchasesPath+"/"+done.Name, tok, nil)
	if a := h.purchase(done.Name).Annotations[v1alpha1.AnnotationRecheckRequested]; a != "" {
		t.Fatalf("recheck requested for a Completed purchase: %s", a)
	}
}

func TestAccess_ReportsTheLongestAccess(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true})
	now := time.Now()
	h.seed("alice", "vid-1", "movie", completedStatus(now.Add(-time.Hour), 7))
	lifetime := h.seed("alice", "vid-1", "movie", completedStatus(now.Add(-2*time.Hour), 0))
	expired := h.seed("alice", "vid-2", "movie", completedStatus(now.Add(-48*time.Hour), 1))
	tok := token(t, "alice", false)

	r := h.request(http.MethodGet, "/client/v1/pay-to-view/access?entityId=vid-1", tok, nil)
	if m := r.json(t); r.status != http.StatusOK || m["hasAccess"] != true || m["purchaseId"] != lifetime.Name || m["expiresAt"] != nil {
		t.Fatalf("vid-1: %d %s, want the lifetime purchase %s", r.status, r.body, lifetime.Name)
	}
	r = h.request(http.MethodGet, "/client/v1/pay-to-view/access?entityId=vid-2", tok, nil)
	if m := r.json(t); m["hasAccess"] != false || m["purchaseId"] != nil || m["expiresAt"] != nil {
		t.Fatalf("vid-2 (expired %s): %s", expired.Name, r.body)
	}
	if m := h.request(http.MethodGet, "/client/v1/pay-to-view/access?entityId=vid-1", token(t, "bob", false), nil).json(t); m["hasAccess"] != false {
		t.Fatalf("bob has alice's access: %v", m)
	}
	h.request(http.MethodGet, "/client/v1/pay-to-view/access", tok, nil).expectError(t, http.StatusBadRequest, CodeMissingField)
	h.request(http.MethodGet, "/client/v1/pay-to-view/access?entityId=a%20b", tok, nil).expectError(t, http.StatusBadRequest, CodeInvalidField)
	h.request(http.MethodGet, "/client/v1/pay-to-view/access?entityId=a&entityId=b", tok, nil).expectError(t, http.StatusBadRequest, CodeInvalidField)
}

func TestAccessCheck_ForwardAuth(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true})
	h.seed("alice", "vid-1", "movie", completedStatus(time.Now(), 1))
	h.seed("alice", "vid-2", "movie", completedStatus(time.Now().Add(-72*time.Hour), 1))
	alice, bob := token(t, "alice", false), token(t, "bob", false)
	const check = "/client/v1/pay-to-view/access/check"

	if r := h.request(http.MethodGet, check+"?entityId=vid-1", alice, nil); r.status != http.StatusNoContent || len(r.body) != 0 {
		t.Fatalf("access: %d %s, want 204 without body", r.status, r.body)
	}
	h.request(http.MethodGet, check+"?entityId=vid-2", alice, nil).expectError(t, http.StatusForbidden, CodeNoAccess)
	h.request(http.MethodGet, check+"?entityId=vid-1", bob, nil).expectError(t, http.StatusForbidden, CodeNoAccess)
	h.request(http.MethodGet, check+"?entityId=vid-1", "", nil).expectError(t, http.StatusUnauthorized, CodeUnauthorized)

	// From the header, as an ingress sends it.
	if r := h.request(http.MethodGet, check, alice, nil, "X-Entity-Id", "vid-1"); r.status != http.StatusNoContent {
		t.Fatalf("header: %d %s", r.status, r.body)
	}
	h.request(http.MethodGet, check, alice, nil, "X-Entity-Id", "vid-2").expectError(t, http.StatusForbidden, CodeNoAccess)
	// The query wins over the header.
	h.request(http.MethodGet, check+"?entityId=vid-2", alice, nil, "X-Entity-Id", "vid-1").expectError(t, http.StatusForbidden, CodeNoAccess)

	// Only 204, 401 and 403: nginx turns any other answer of an auth
	// subrequest into a 500. The token is checked first, so no token is a
	// 401 even without an entity id, and a bad entity id is a 403.
	for name, tt := range map[string]struct {
		query   string
		headers []string
	}{
		"no entity id":      {},
		"empty header":      {headers: []string{"X-Entity-Id", ""}},
		"malformed header":  {headers: []string{"X-Entity-Id", "vid 1;drop"}},
		"too long":          {headers: []string{"X-Entity-Id", strings.Repeat("v", 129)}},
		"malformed query":   {query: "?entityId=a%20b"},
		"query given twice": {query: "?entityId=vid-1&entityId=vid-1"},
	} {
		t.Run(name, func(t *testing.T) {
			path := check + tt.query
			h.request(http.MethodGet, path, alice, nil, tt.headers...).expectError(t, http.StatusForbidden, CodeNoAccess)
			h.request(http.MethodGet, path, "", nil, tt.headers...).expectError(t, http.StatusUnauthorized, CodeUnauthorized)
			h.request(http.MethodGet, path, "not.a.jwt", nil, tt.headers...).expectError(t, http.StatusUnauthorized, CodeUnauthorized)
		})
	}
}

func TestAccessCheck_EntityHeaderIsConfigurable(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true, options: func(o *Options) { o.EntityIDHeader = "X-Original-Entity" }})
	h.seed("alice", "vid-1", "movie", completedStatus(time.Now(), 0))
	if r := h.request(http.MethodGet, "/client/v1/pay-to-view/access/check", token(t, "alice", false), nil, "X-Original-Entity", "vid-1"); r.status != http.StatusNoContent {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

func TestUnsellable_OnlyAReadyActiveUpToDateProductWithAPriceSells(t *testing.T) {
	ready := func() *v1alpha1.Product {
		return &v1alpha1.Product{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Generation: 2},
			Spec:       v1alpha1.ProductSpec{Active: ptr.To(true)},
			Status: v1alpha1.ProductStatus{
				StripePriceID: "price_1", Price: &v1alpha1.Price{Amount: 499, Currency: "usd"}, ObservedGeneration: 2,
				Conditions: []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "PriceReady"}},
			},
		}
	}
	cases := []struct {
		name   string
		mutate func(*v1alpha1.Product)
		want   string
	}{
		{"sellable", func(*v1alpha1.Product) {}, ""},
		{"inactive", func(p *v1alpha1.Product) { p.Spec.Active = ptr.To(false) }, "no longer for sale"},
		{"not ready", func(p *v1alpha1.Product) { p.Status.Conditions[0].Status = metav1.ConditionFalse }, "not ready"},
		{"spec changed, not yet reconciled", func(p *v1alpha1.Product) { p.Generation = 3 }, "being updated"},
		{"no price yet", func(p *v1alpha1.Product) { p.Status.StripePriceID = "" }, "no Stripe price"},
		{"being deleted", func(p *v1alpha1.Product) { p.DeletionTimestamp = ptr.To(metav1.Now()) }, "being deleted"},
	}
	for _, c := range cases {
		p := ready()
		c.mutate(p)
		got := unsellable(p)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: unsellable = %q, want %q", c.name, got, c.want)
		}
	}
}

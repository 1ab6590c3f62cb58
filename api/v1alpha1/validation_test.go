package v1alpha1_test

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func validProduct(ns string) *v1alpha1.Product {
	return &v1alpha1.Product{
		ObjectMeta: metav1.ObjectMeta{Name: "video-7day", Namespace: ns},
		Spec: v1alpha1.ProductSpec{
			DisplayName:        "One video, 7 days",
			EntityType:         v1alpha1.EntityTypeVideo,
			Price:              &v1alpha1.Price{Amount: 499, Currency: "usd"},
			AccessDurationDays: ptr.To[int32](7),
		},
	}
}

func validPurchase(ns string) *v1alpha1.Purchase {
	return &v1alpha1.Purchase{
		ObjectMeta: metav1.ObjectMeta{Name: "ptv-abcdefghij", Namespace: ns},
		Spec: v1alpha1.PurchaseSpec{
			ProductRef:         "video-7day",
			UserID:             "auth0|5f7c8ec7c33c6c004bbafe82",
			EntityID:           "vid_8Hq2",
			EntityType:         v1alpha1.EntityTypeVideo,
			ReturnURL:          "https://example.com/purchase/complete",
			Price:              v1alpha1.Price{Amount: 499, Currency: "usd"},
			StripePriceID:      "price_1Abc",
			AccessDurationDays: ptr.To[int32](7),
		},
	}
}

// expectRejected asserts that err is an apiserver rejection mentioning every
// fragment (the field path and the reason), so a user reading it knows what
// to fix.
func expectRejected(t *testing.T, err error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("the apiserver accepted the object; want a rejection mentioning %q", fragments)
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("rejection %q does not mention %q", err.Error(), f)
		}
	}
}

func TestProduct_ValidFormsAreAccepted(t *testing.T) {
	ns := env.Namespace(t)
	p := validProduct(ns)
	if err := env.Client.Create(ctx(t), p); err != nil {
		t.Fatalf("creating a product with a price: %v", err)
	}
	if p.Spec.Active == nil || !*p.Spec.Active {
		t.Errorf("spec.active defaulted to %v, want true", p.Spec.Active)
	}
	ref := validProduct(ns)
	ref.Name = "channel-lifetime"
	ref.Spec.Price = nil
	ref.Spec.StripePriceRef = "price_1NbYfE2eZvKYlo2C"
	ref.Spec.AccessDurationDays = nil
	ref.Spec.EntityType = v1alpha1.EntityTypeChannel
	ref.Spec.EntityIDs = []string{"ch_1", "ch_2"}
	if err := env.Client.Create(ctx(t), ref); err != nil {
		t.Fatalf("creating a product with a stripePriceRef: %v", err)
	}
}

func TestProduct_InvalidSpecsAreRejectedWithTheField(t *testing.T) {
	cases := []struct {
		name      string
		mutate    func(*v1alpha1.Product)
		fragments []string
	}{
		{"both price forms", func(p *v1alpha1.Product) { p.Spec.StripePriceRef = "price_1X" },
			[]string{"spec", "exactly one of spec.price or spec.stripePriceRef"}},
		{"no price", func(p *v1alpha1.Product) { p.Spec.Price = nil },
			[]string{"spec", "exactly one of spec.price or spec.stripePriceRef"}},
		{"upper-case currency", func(p *v1alpha1.Product) { p.Spec.Price.Currency = "USD" },
			[]string{"spec.price.currency", "should match"}},
		{"four-letter currency", func(p *v1alpha1.Product) { p.Spec.Price.Currency = "usdt" },
			[]string{"spec.price.currency"}},
		{"negative amount", func(p *v1alpha1.Product) { p.Spec.Price.Amount = -100 },
			[]string{"spec.price.amount", "greater than or equal to 1"}},
		{"zero amount", func(p *v1alpha1.Product) { p.Spec.Price.Amount = 0 },
			[]string{"spec.price.amount"}},
		{"amount over Stripe's limit", func(p *v1alpha1.Product) { p.Spec.Price.Amount = 100000000 },
			[]string{"spec.price.amount", "less than or equal to 99999999"}},
		{"unknown entity type", func(p *v1alpha1.Product) { p.Spec.EntityType = "Podcast" },
			[]string{"spec.entityType", "Unsupported value"}},
		{"zero access days", func(p *v1alpha1.Product) { p.Spec.AccessDurationDays = ptr.To[int32](0) },
			[]string{"spec.accessDurationDays"}},
		{"empty display name", func(p *v1alpha1.Product) { p.Spec.DisplayName = "" },
			[]string{"spec.displayName"}},
		{"malformed price ref", func(p *v1alpha1.Product) { p.Spec.Price = nil; p.Spec.StripePriceRef = "prod_123" },
			[]string{"spec.stripePriceRef"}},
		{"entity id with a space", func(p *v1alpha1.Product) { p.Spec.EntityIDs = []string{"a b"} },
			[]string{"spec.entityIds[0]"}},
		{"name too long for a label", func(p *v1alpha1.Product) { p.Name = strings.Repeat("p", 64) },
			[]string{"at most 63 characters"}},
	}
	ns := env.Namespace(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := validProduct(ns)
			c.mutate(p)
			expectRejected(t, env.Client.Create(ctx(t), p), c.fragments...)
		})
	}
}

func TestPurchase_InvalidSpecsAreRejectedWithTheField(t *testing.T) {
	cases := []struct {
		name      string
		mutate    func(*v1alpha1.Purchase)
		fragments []string
	}{
		{"returnUrl not a URL", func(p *v1alpha1.Purchase) { p.Spec.ReturnURL = "not a url" },
			[]string{"spec.returnUrl", "absolute https URL"}},
		{"javascript: returnUrl", func(p *v1alpha1.Purchase) { p.Spec.ReturnURL = "javascript:alert(1)" },
			[]string{"spec.returnUrl", "absolute https URL"}},
		{"plain http returnUrl", func(p *v1alpha1.Purchase) { p.Spec.ReturnURL = "http://example.com/done" },
			[]string{"spec.returnUrl"}},
		{"relative returnUrl", func(p *v1alpha1.Purchase) { p.Spec.ReturnURL = "/purchase/complete" },
			[]string{"spec.returnUrl"}},
		{"oversize userId", func(p *v1alpha1.Purchase) { p.Spec.UserID = strings.Repeat("u", 256) },
			[]string{"spec.userId", "may not be more than 255"}},
		{"oversize entityId", func(p *v1alpha1.Purchase) { p.Spec.EntityID = strings.Repeat("e", 129) },
			[]string{"spec.entityId", "may not be more than 128"}},
		{"control character in entityId", func(p *v1alpha1.Purchase) { p.Spec.EntityID = "vid\x00x" },
			[]string{"spec.entityId"}},
		{"unicode in userId", func(p *v1alpha1.Purchase) { p.Spec.UserID = "usér" },
			[]string{"spec.userId", "should match"}},
		{"bad entity type", func(p *v1alpha1.Purchase) { p.Spec.EntityType = "video" },
			[]string{"spec.entityType"}},
		{"bad currency", func(p *v1alpha1.Purchase) { p.Spec.Price.Currency = "EUR" },
			[]string{"spec.price.currency"}},
		{"negative amount", func(p *v1alpha1.Purchase) { p.Spec.Price.Amount = -1 },
			[]string{"spec.price.amount"}},
		{"refund not requested", func(p *v1alpha1.Purchase) { p.Spec.Refund = &v1alpha1.RefundRequest{Requested: false} },
			[]string{"spec.refund.requested", "must be true"}},
		{"missing price id", func(p *v1alpha1.Purchase) { p.Spec.StripePriceID = "" },
			[]string{"spec.stripePriceId"}},
	}
	ns := env.Namespace(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := validPurchase(ns)
			c.mutate(p)
			expectRejected(t, env.Client.Create(ctx(t), p), c.fragments...)
		})
	}
}

func TestPurchase_LocalhostHTTPReturnURLIsAccepted(t *testing.T) {
	ns := env.Namespace(t)
	for i, u := range []string{"http://localhost:3000/done", "http://127.0.0.1/done", "http://[::1]:8080/x"} {
		p := validPurchase(ns)
		p.Name = p.Name[:len(p.Name)-1] + string(rune('a'+i))
		p.Spec.ReturnURL = u
		if err := env.Client.Create(ctx(t), p); err != nil {
			t.Errorf("returnUrl %q rejected: %v", u, err)
		}
	}
}

func TestPurchase_SpecIsImmutableExceptRefund(t *testing.T) {
	ns := env.Namespace(t)
	p := validPurchase(ns)
	if err := env.Client.Create(ctx(t), p); err != nil {
		t.Fatalf("creating purchase: %v", err)
	}
	mutations := map[string]func(*v1alpha1.Purchase){
		"entityId":           func(p *v1alpha1.Purchase) { p.Spec.EntityID = "vid_other" },
		"userId":             func(p *v1alpha1.Purchase) { p.Spec.UserID = "someone-else" },
		"price":              func(p *v1alpha1.Purchase) { p.Spec.Price.Amount = 1 },
		"stripePriceId":      func(p *v1alpha1.Purchase) { p.Spec.StripePriceID = "price_other" },
		"accessDurationDays": func(p *v1alpha1.Purchase) { p.Spec.AccessDurationDays = ptr.To[int32](30) },
		"lifetime":           func(p *v1alpha1.Purchase) { p.Spec.AccessDurationDays = nil },
		"returnUrl":          func(p *v1alpha1.Purchase) { p.Spec.ReturnURL = "https://evil.example/x" },
	}
	for field, mutate := range mutations {
		t.Run(field, func(t *testing.T) {
			changed := p.DeepCopy()
			mutate(changed)
			expectRejected(t, env.Client.Update(ctx(t), changed), "spec is immutable after creation")
		})
	}

	// A refund may be requested once...
	refunded := p.DeepCopy()
	refunded.Spec.Refund = &v1alpha1.RefundRequest{Requested: true, Reason: "duplicate", RequestedBy: "admin-1"}
	if err := env.Client.Update(ctx(t), refunded); err != nil {
		t.Fatalf("requesting a refund: %v", err)
	}
	// ...and then neither changed nor withdrawn.
	changedReason := refunded.DeepCopy()
	changedReason.Spec.Refund.Reason = "other"
	expectRejected(t, env.Client.Update(ctx(t), changedReason), "spec.refund cannot be changed or withdrawn")
	withdrawn := refunded.DeepCopy()
	withdrawn.Spec.Refund = nil
	expectRejected(t, env.Client.Update(ctx(t), withdrawn), "spec.refund cannot be changed or withdrawn")
}

func TestCustomer_UserIDIsImmutableAndEmailChecked(t *testing.T) {
	ns := env.Namespace(t)
	c := &v1alpha1.Customer{
		ObjectMeta: metav1.ObjectMeta{Name: "user-1", Namespace: ns},
		Spec:       v1alpha1.CustomerSpec{UserID: "dev-user-1", Email: "dev@example.com"},
	}
	if err := env.Client.Create(ctx(t), c); err != nil {
		t.Fatalf("creating customer: %v", err)
	}
	changed := c.DeepCopy()
	changed.Spec.UserID = "dev-user-2"
	expectRejected(t, env.Client.Update(ctx(t), changed), "spec.userId", "userId is immutable")

	bad := &v1alpha1.Customer{
		ObjectMeta: metav1.ObjectMeta{Name: "user-2", Namespace: ns},
		Spec:       v1alpha1.CustomerSpec{UserID: "dev-user-2", Email: "not-an-email"},
	}
	expectRejected(t, env.Client.Create(ctx(t), bad), "spec.email")
}

func TestStatus_IsASubresource(t *testing.T) {
	ns := env.Namespace(t)
	p := validPurchase(ns)
	if err := env.Client.Create(ctx(t), p); err != nil {
		t.Fatalf("creating purchase: %v", err)
	}
	// A status written through the main resource is dropped...
	p.Status.Phase = v1alpha1.PurchaseCompleted
	if err := env.Client.Update(ctx(t), p); err != nil {
		t.Fatalf("updating purchase: %v", err)
	}
	var got v1alpha1.Purchase
	if err := env.Client.Get(ctx(t), client.ObjectKeyFromObject(p), &got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != "" {
		t.Fatalf("status.phase = %q after a main-resource update, want it ignored", got.Status.Phase)
	}
	// ...and accepted through /status, with the phase enum enforced.
	got.Status.Phase = "Paid"
	expectRejected(t, env.Client.Status().Update(ctx(t), &got), "status.phase")
	got.Status.Phase = v1alpha1.PurchasePending
	if err := env.Client.Status().Update(ctx(t), &got); err != nil {
		t.Fatalf("updating status: %v", err)
	}
}

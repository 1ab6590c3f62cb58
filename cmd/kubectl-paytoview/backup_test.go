package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/lifecycle"
	"github.com/md-platform/paytoview-operator/internal/testenv"
)

func TestBackupRestore_IntoAFreshControlPlaneKeepsStatusAndAccess(t *testing.T) {
	ns := env.Namespace(t)
	ctx := testCtx(t)
	now := metav1.NewTime(time.Now().UTC().Truncate(time.Second))
	later := metav1.NewTime(now.Add(7 * 24 * time.Hour))

	product := &v1alpha1.Product{
		ObjectMeta: metav1.ObjectMeta{Name: "video-7-days", Namespace: ns},
		Spec: v1alpha1.ProductSpec{DisplayName: "7 days", EntityType: v1alpha1.EntityTypeVideo,
			Price: &v1alpha1.Price{Amount: 499, Currency: "usd"}, AccessDurationDays: ptr.To[int32](7)},
	}
	mustCreateWithStatus(t, product, func() {
		product.Status = v1alpha1.ProductStatus{StripeProductID: "prod_1", StripePriceID: "price_1",
			Price: &v1alpha1.Price{Amount: 499, Currency: "usd"}, ObservedGeneration: 1,
			Conditions: []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "PriceReady", Message: "ok", LastTransitionTime: now}}}
	})
	customer := &v1alpha1.Customer{ObjectMeta: metav1.ObjectMeta{Name: "user-abc", Namespace: ns}, Spec: v1alpha1.CustomerSpec{UserID: "alice"}}
	mustCreateWithStatus(t, customer, func() { customer.Status = v1alpha1.CustomerStatus{StripeCustomerID: "cus_1"} })
	paid := newPurchase(t, ns, "ptv-bbbbbbbbb9", "alice", "vid_1", v1alpha1.PurchaseStatus{
		Phase: v1alpha1.PurchaseCompleted, StripeCustomerID: "cus_1", CheckoutSessionID: "cs_1",
		ExternalTransactionID: "pi_1", CompletedAt: &now, ExpiresAt: &later,
		Conditions: []metav1.Condition{{Type: v1alpha1.ConditionAccess, Status: metav1.ConditionTrue, Reason: "Paid", Message: "paid", LastTransitionTime: now}},
	})
	refunded := newPurchase(t, ns, "ptv-bbbbbbbbc9", "alice", "vid_2", v1alpha1.PurchaseStatus{
		Phase: v1alpha1.PurchaseRefunded, ExternalTransactionID: "pi_2", CompletedAt: &now, RefundedAt: &now,
		AmountRefunded: 499, StripeRefundID: "re_1", StripeRefundStatus: "succeeded",
	})

	var saved bytes.Buffer
	if _, err := runWith(t, env.Client, ns, &saved, "backup"); err != nil {
		t.Fatalf("backup: %v", err)
	}
	file := t.TempDir() + "/backup.yaml"
	if err := writeFile(file, saved.Bytes()); err != nil {
		t.Fatal(err)
	}

	fresh, err := testenv.Start()
	if err != nil {
		t.Fatalf("starting a fresh control plane: %v", err)
	}
	defer func() { _ = fresh.Stop() }()
	target := "restored"
	if err := fresh.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: target}}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := runWith(t, fresh.Client, target, &out, "restore", "-f", file); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if !strings.Contains(out.String(), "restored 4 objects") {
		t.Errorf("restore said %q, want 4 objects restored", out.String())
	}

	for _, want := range []*v1alpha1.Purchase{paid, refunded} {
		var got v1alpha1.Purchase
		if err := fresh.Client.Get(ctx, client.ObjectKey{Namespace: target, Name: want.Name}, &got); err != nil {
			t.Fatalf("restored purchase %s: %v", want.Name, err)
		}
		if !equality.Semantic.DeepEqual(got.Status, want.Status) {
			t.Errorf("purchase %s status after restore:\n got %+v\nwant %+v", want.Name, got.Status, want.Status)
		}
		if !equality.Semantic.DeepEqual(got.Spec, want.Spec) || !equality.Semantic.DeepEqual(got.Labels, want.Labels) {
			t.Errorf("purchase %s spec or labels changed by the restore", want.Name)
		}
		wantAccess, _ := lifecycle.Access(want, time.Now())
		gotAccess, _ := lifecycle.Access(&got, time.Now())
		if gotAccess != wantAccess {
			t.Errorf("purchase %s grants access %v after restore, %v before", want.Name, gotAccess, wantAccess)
		}
	}
	var gotProduct v1alpha1.Product
	if err := fresh.Client.Get(ctx, client.ObjectKey{Namespace: target, Name: product.Name}, &gotProduct); err != nil {
		t.Fatal(err)
	}
	if gotProduct.Status.StripePriceID != "price_1" {
		t.Errorf("restored product status %+v", gotProduct.Status)
	}
	var gotCustomer v1alpha1.Customer
	if err := fresh.Client.Get(ctx, client.ObjectKey{Namespace: target, Name: customer.Name}, &gotCustomer); err != nil {
		t.Fatal(err)
	}
	if gotCustomer.Status.StripeCustomerID != "cus_1" {
		t.Errorf("restored customer status %+v: a lost Stripe customer id would create a second customer", gotCustomer.Status)
	}

	// Restoring again changes nothing.
	out.Reset()
	if _, err := runWith(t, fresh.Client, target, &out, "restore", "-f", file); err != nil {
		t.Fatalf("second restore: %v", err)
	}
	if !strings.Contains(out.String(), "restored 0 objects") || !strings.Contains(out.String(), "4 already existed") {
		t.Errorf("second restore said %q, want nothing restored and 4 left alone", out.String())
	}
}

func TestRestore_RejectsWhatIsNotABackup(t *testing.T) {
	for name, content := range map[string]string{
		"not yaml":           "{{{",
		"no items":           "apiVersion: v1\nkind: List\n",
		"foreign object":     "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: x}\n",
		"item not an object": "apiVersion: v1\nkind: List\nitems:\n- 42\n",
	} {
		file := t.TempDir() + "/b.yaml"
		if err := writeFile(file, []byte(content)); err != nil {
			t.Fatal(err)
		}
		if _, err := runWith(t, env.Client, "default", &bytes.Buffer{}, "restore", "-f", file); err == nil {
			t.Errorf("%s: restore accepted it", name)
		}
	}
}

func mustCreateWithStatus(t *testing.T, obj client.Object, setStatus func()) {
	t.Helper()
	if err := env.Client.Create(testCtx(t), obj); err != nil {
		t.Fatalf("creating %s: %v", obj.GetName(), err)
	}
	setStatus()
	if err := env.Client.Status().Update(testCtx(t), obj); err != nil {
		t.Fatalf("setting status of %s: %v", obj.GetName(), err)
	}
}

func runWith(t *testing.T, c client.Client, ns string, out *bytes.Buffer, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := run(ctx, args, out, func(string) (client.Client, string, error) { return c, ns, nil })
	return out.String(), err
}

func writeFile(path string, data []byte) error {
	return os.WriteFile(path, data, 0o600)
}

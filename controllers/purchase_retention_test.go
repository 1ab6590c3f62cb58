package controllers

import (
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/lifecycle"
	"github.com/md-platform/paytoview-operator/internal/naming"
)

func TestPurchase_RetentionDoesNotDeleteAPurchaseChangedSinceItWasRead(t *testing.T) {
	ctx := testContext(t)
	ns := testEnv.Namespace(t)
	p := &v1alpha1.Purchase{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: naming.NewPurchaseName(), Labels: naming.PurchaseLabels("user-1", "video-1", "video-product")},
		Spec: v1alpha1.PurchaseSpec{
			ProductRef: "video-product", UserID: "user-1", EntityID: "video-1", EntityType: v1alpha1.EntityTypeVideo,
			ReturnURL: "https://example.com/r", Price: v1alpha1.Price{Amount: 500, Currency: "usd"},
			StripePriceID: "price_1", AccessDurationDays: ptr.To[int32](30),
		},
	}
	createObject(t, p)
	ended := time.Now().Add(-2 * time.Hour)
	base := p.DeepCopy()
	p.Status.Phase = v1alpha1.PurchasePending
	p.Status.CheckoutSessionID = "cs_test_1"
	lifecycle.Cancel(p, lifecycle.ReasonSessionExpired, "expired", ended)
	p.Status.ObservedGeneration = p.Generation
	if err := testEnv.Client.Status().Patch(ctx, p, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	stale := p.DeepCopy() // what the reconciler read

	// Meanwhile a webhook on another replica records that it was paid.
	paid := p.DeepCopy()
	paid.Status.Phase = v1alpha1.PurchaseCompleted
	if err := testEnv.Client.Status().Patch(ctx, paid, client.MergeFromWithOptions(p, client.MergeFromWithOptimisticLock{})); err != nil {
		t.Fatal(err)
	}

	r := &PurchaseReconciler{Client: testEnv.Client, Recorder: &eventLog{}, RetentionTerminal: time.Hour}
	s := &purchaseScope{p: stale, base: stale.DeepCopy(), now: time.Now()}
	_, err := r.reconcileRetention(ctx, s)
	if !apierrors.IsConflict(err) {
		t.Fatalf("reconcileRetention = %v, want a conflict", err)
	}
	got := &v1alpha1.Purchase{}
	if err := testEnv.Client.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
		t.Fatalf("the purchase paid meanwhile was deleted: %v", err)
	}
	if got.Status.Phase != v1alpha1.PurchaseCompleted || s.deleted {
		t.Fatalf("phase %s, deleted %v", got.Status.Phase, s.deleted)
	}
}

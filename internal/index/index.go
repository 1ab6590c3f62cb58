// Package index registers the cache field indexes the API, the webhook
// receiver and the controllers look Purchases up by, so that no lookup lists
// every Purchase and filters in a loop.
package index

import (
	"context"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
)

// Field index names on Purchase.
const (
	// PurchaseByUser indexes spec.userId.
	PurchaseByUser = "spec.userId"
	// PurchaseByUserEntity indexes spec.userId and spec.entityId together;
	// build the value with UserEntityKey.
	PurchaseByUserEntity = "spec.userId+entityId"
	// PurchaseByPaymentIntent indexes status.externalTransactionId.
	PurchaseByPaymentIntent = "status.externalTransactionId"
	// PurchaseByCheckoutSession indexes status.checkoutSessionId.
	PurchaseByCheckoutSession = "status.checkoutSessionId"
)

// UserEntityKey is the PurchaseByUserEntity value for a user and an entity.
// The separator cannot occur in either id (the CRD's patterns forbid it).
func UserEntityKey(userID, entityID string) string {
	return userID + "\x00" + entityID
}

// Setup registers every index on the manager's field indexer. Call it once,
// before the manager starts.
func Setup(ctx context.Context, indexer client.FieldIndexer) error {
	indexes := []struct {
		field   string
		extract func(*v1alpha1.Purchase) string
	}{
		{PurchaseByUser, func(p *v1alpha1.Purchase) string { return p.Spec.UserID }},
		{PurchaseByUserEntity, func(p *v1alpha1.Purchase) string {
			return UserEntityKey(p.Spec.UserID, p.Spec.EntityID)
		}},
		{PurchaseByPaymentIntent, func(p *v1alpha1.Purchase) string { return p.Status.ExternalTransactionID }},
		{PurchaseByCheckoutSession, func(p *v1alpha1.Purchase) string { return p.Status.CheckoutSessionID }},
	}
	for _, ix := range indexes {
		extract := ix.extract
		err := indexer.IndexField(ctx, &v1alpha1.Purchase{}, ix.field, func(o client.Object) []string {
			p, ok := o.(*v1alpha1.Purchase)
			if !ok {
				return nil
			}
			if v := extract(p); v != "" {
				return []string{v}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("indexing Purchases by %s: %w", ix.field, err)
		}
	}
	return nil
}

// Package naming derives resource names, label values and Stripe metadata
// codes from the ids the API receives.
package naming

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
)

// PurchasePrefix starts every Purchase name (the API's purchaseId).
const PurchasePrefix = "ptv-"

const purchaseIDAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// purchaseIDLength random characters give 36^10 ≈ 3.7e15 ids.
const purchaseIDLength = 10

// NewPurchaseName returns a fresh random Purchase name such as ptv-7k2m9x4q1z.
// Callers that hit AlreadyExists on create simply draw another.
func NewPurchaseName() string {
	var b [purchaseIDLength]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand never fails on supported platforms (Go 1.24+ panics itself).
		panic(fmt.Sprintf("reading random bytes: %v", err))
	}
	out := make([]byte, purchaseIDLength)
	for i, c := range b {
		// 256 % 36 = 4, so the first 4 letters are drawn with probability
		// 8/256 instead of 7/256: a negligible bias for an identifier.
		out[i] = purchaseIDAlphabet[int(c)%len(purchaseIDAlphabet)]
	}
	return PurchasePrefix + string(out)
}

// Hash returns a label-safe, fixed-length digest of an opaque id: 40 lower-case
// hex characters (160 bits of SHA-256), so it fits a label value and collisions
// are out of reach.
func Hash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:20])
}

// CustomerName is the name of the Customer resource of a user: stable for the
// same id, different for different ids, and a valid DNS label whatever
// characters the id has.
func CustomerName(userID string) string {
	return "user-" + Hash(userID)
}

// EntityTypeCode maps an EntityType to the number the seed's entityType
// metadata uses: Video=1, Channel=2, Content=3. Unknown types map to 0.
func EntityTypeCode(t v1alpha1.EntityType) int {
	switch t {
	case v1alpha1.EntityTypeVideo:
		return 1
	case v1alpha1.EntityTypeChannel:
		return 2
	case v1alpha1.EntityTypeContent:
		return 3
	}
	return 0
}

// EntityTypeFromCode is the inverse of EntityTypeCode; ok is false for codes
// outside 1..3.
func EntityTypeFromCode(code int) (t v1alpha1.EntityType, ok bool) {
	switch code {
	case 1:
		return v1alpha1.EntityTypeVideo, true
	case 2:
		return v1alpha1.EntityTypeChannel, true
	case 3:
		return v1alpha1.EntityTypeContent, true
	}
	return "", false
}

// PurchaseLabels are the labels every Purchase carries, for kubectl selectors.
func PurchaseLabels(userID, entityID, product string) map[string]string {
	return map[string]string{
		v1alpha1.LabelUser:    Hash(userID),
		v1alpha1.LabelEntity:  Hash(entityID),
		v1alpha1.LabelProduct: product,
	}
}

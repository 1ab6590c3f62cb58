package stripe

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// maxIdempotencyKeyLen is Stripe's limit on Idempotency-Key.
const maxIdempotencyKeyLen = 255

// IdempotencyKey derives the Idempotency-Key of a create call from the UID of
// the Kubernetes object that owns the Stripe object and the operation (plus,
// for prices, the generation: "create_price:3"). The same inputs always give
// the same key, so a retry after a crash replays the first result instead of
// creating a second customer, session, refund or price. Stripe keeps keys for
// 24 hours. A UID is not personal data, so it may appear in Stripe's logs.
func IdempotencyKey(ownerUID, operation string) string {
	key := "paytoview:" + ownerUID + ":" + operation
	if len(key) <= maxIdempotencyKeyLen && !strings.ContainsAny(key, " \t\r\n") {
		return key
	}
	// Real UIDs are 36 characters; anything longer or odd is hashed so the
	// key stays valid and still deterministic.
	sum := sha256.Sum256([]byte(ownerUID))
	return "paytoview:sha256-" + hex.EncodeToString(sum[:]) + ":" + truncate(operation, 64)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

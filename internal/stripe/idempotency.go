package stripe

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
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

// AttemptOperation is the operation part of an idempotency key for the
// attempt-th key of a create: op itself for attempt 0 (the key every create
// starts with), "op#<attempt>" after that. Callers move to the next attempt
// only after Stripe answered the previous one with an error it saved under
// the key (IsKeySpent), and only once that move is recorded, so a restart
// never sends a new key for a request whose outcome is unknown.
func AttemptOperation(op string, attempt int32) string {
	if attempt <= 0 {
		return op
	}
	return op + "#" + strconv.FormatInt(int64(attempt), 10)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

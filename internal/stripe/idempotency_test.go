package stripe

import (
	"strings"
	"testing"
)

func TestIdempotencyKey_IsDeterministicAndDistinct(t *testing.T) {
	const uid = "6b1c3a52-8f4e-4c1e-9a55-0d2f1e7c9b10"
	if a, b := IdempotencyKey(uid, OpCreateCheckoutSession), IdempotencyKey(uid, OpCreateCheckoutSession); a != b {
		t.Fatalf("same inputs gave %q and %q", a, b)
	}
	if got, want := IdempotencyKey(uid, OpCreateCheckoutSession), "paytoview:"+uid+":create_checkout_session"; got != want {
		t.Fatalf("key = %q, want %q", got, want)
	}
	// The first attempt keeps the key created before attempts existed.
	if got, want := IdempotencyKey(uid, AttemptOperation(OpCreateRefund, 0)), IdempotencyKey(uid, OpCreateRefund); got != want {
		t.Fatalf("attempt 0 key = %q, want %q", got, want)
	}

	keys := map[string]string{}
	for _, in := range []struct{ uid, op string }{
		{uid, OpCreateCustomer},
		{uid, OpCreateCheckoutSession},
		{uid, OpCreateRefund},
		{uid, AttemptOperation(OpCreateRefund, 1)},
		{uid, AttemptOperation(OpCreateRefund, 2)},
		{uid, OpCreateProduct},
		{uid, OpCreatePrice + ":1"},
		{uid, OpCreatePrice + ":2"},
		{"0f9e8d7c-6b5a-4433-8221-100fedcba987", OpCreateCheckoutSession},
		{strings.Repeat("x", 300), OpCreateCheckoutSession},
		{strings.Repeat("x", 301), OpCreateCheckoutSession},
	} {
		k := IdempotencyKey(in.uid, in.op)
		if prev, dup := keys[k]; dup {
			t.Errorf("%s/%s and %s share key %q", in.uid, in.op, prev, k)
		}
		keys[k] = in.uid + "/" + in.op
		if len(k) > maxIdempotencyKeyLen {
			t.Errorf("key for %d-char uid is %d chars, Stripe allows %d", len(in.uid), len(k), maxIdempotencyKeyLen)
		}
	}
}

func TestIdempotencyKey_LongOrOddUIDStaysValidAndStable(t *testing.T) {
	for _, uid := range []string{strings.Repeat("u", 1000), "has spaces in it"} {
		a, b := IdempotencyKey(uid, OpCreateRefund), IdempotencyKey(uid, OpCreateRefund)
		if a != b {
			t.Fatalf("unstable key for %q", uid)
		}
		if len(a) > maxIdempotencyKeyLen || strings.ContainsAny(a, " \t\n") {
			t.Fatalf("invalid key %q", a)
		}
		if !strings.HasSuffix(a, ":"+OpCreateRefund) {
			t.Fatalf("key %q lost its operation", a)
		}
	}
}

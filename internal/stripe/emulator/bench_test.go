package emulator_test

import (
	"strconv"
	"testing"
	"time"

	stripego "github.com/stripe/stripe-go/v76"

	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

// BenchmarkCreateCheckoutSession measures one session create through the
// real stripe-go client over loopback: the Stripe share of the operator's
// "physical limit" for a purchase.
func BenchmarkCreateCheckoutSession(b *testing.B) {
	h := newHarness(b)
	pr := h.catalog(1000)
	cu := h.customer()
	expires := h.em.Now().Add(time.Hour)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p := sessionParams(pr.ID, cu.ID, "ptv-"+strconv.Itoa(i), expires)
		p.SetIdempotencyKey("bench-" + strconv.Itoa(i))
		if _, err := h.sc.CheckoutSessions.New(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetCheckoutSession measures a session retrieve, what healing does.
func BenchmarkGetCheckoutSession(b *testing.B) {
	h := newHarness(b)
	s := h.openSession()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.sc.CheckoutSessions.Get(s.ID, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPayAndDeliver measures paying a session and delivering its signed
// checkout.session.completed to a verifying endpoint.
func BenchmarkPayAndDeliver(b *testing.B) {
	h := newHarness(b)
	pr := h.catalog(1000)
	cu := h.customer()
	expires := h.em.Now().Add(time.Hour)
	ids := make([]string, b.N)
	for i := range ids {
		s, err := h.sc.CheckoutSessions.New(sessionParams(pr.ID, cu.ID, "ptv", expires))
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = s.ID
	}
	b.ReportAllocs()
	b.ResetTimer()
	for _, id := range ids {
		if _, err := h.em.Pay(id, emulator.PayOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	h.recv.waitFor(b, "all deliveries", func(evs []stripego.Event) bool { return len(evs) == b.N })
}

package webhookserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/stripe"
)

// benchPurchases is n purchases of one user, created a second apart, every
// third one paid.
func benchPurchases(n int) []v1alpha1.Purchase {
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	out := make([]v1alpha1.Purchase, n)
	for i := range out {
		created := base.Add(time.Duration(i) * time.Second)
		p := v1alpha1.Purchase{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ptv-%010d", i), Namespace: "bench", CreationTimestamp: metav1.Time{Time: created}},
			Spec: v1alpha1.PurchaseSpec{ProductRef: "movie", UserID: "alice", EntityID: "vid-" + strconv.Itoa(i),
				EntityType: v1alpha1.EntityTypeVideo, Price: v1alpha1.Price{Amount: 499, Currency: "usd"}},
			Status: v1alpha1.PurchaseStatus{Phase: v1alpha1.PurchasePending},
		}
		if i%3 == 0 {
			p.Status = *completedStatus(created, 30)
		}
		out[i] = p
	}
	return out
}

// BenchmarkListPurchases measures what GET /client/v1/pay-to-view/purchases
// does after the cache lookup: order a user's purchases newest first, cut a
// page, compute access and encode the JSON.
func BenchmarkListPurchases(b *testing.B) {
	s := &Server{opts: Options{Clock: clock.RealClock{}}}
	for _, n := range []int{10, 1000, 10000} {
		all := benchPurchases(n)
		for _, pageSize := range []int{10, 100} {
			b.Run(fmt.Sprintf("purchases=%d/pageSize=%d", n, pageSize), func(b *testing.B) {
				b.ReportAllocs()
				var size int
				for b.Loop() {
					out, err := json.Marshal(s.clientPage(all, listQuery{page: 1, pageSize: pageSize}))
					if err != nil {
						b.Fatal(err)
					}
					size = len(out)
				}
				b.ReportMetric(float64(size), "bytes/page")
			})
		}
	}
}

// BenchmarkEncodePage is the JSON encoding of one page alone.
func BenchmarkEncodePage(b *testing.B) {
	s := &Server{opts: Options{Clock: clock.RealClock{}}}
	page := s.clientPage(benchPurchases(100), listQuery{page: 1, pageSize: 100})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(page); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAccessCheck measures the forward-auth endpoint through the whole
// handler (middleware, JWT verification, cache index lookup, access rule)
// with the user's purchases among others' in a real manager cache.
func BenchmarkAccessCheck(b *testing.B) {
	h := newHarness(b, harnessConfig{noPurchaseController: true, quiet: true})
	now := time.Now()
	h.seed("alice", "vid-1", "movie", completedStatus(now, 30))
	for i := range 20 {
		h.seed("alice", "vid-other-"+strconv.Itoa(i), "movie", completedStatus(now.Add(-time.Duration(i)*time.Minute), 30))
	}
	for i := range 200 {
		h.seed("user-"+strconv.Itoa(i), "vid-1", "movie", completedStatus(now.Add(-time.Duration(i)*time.Second), 30))
	}
	handler := h.srv.Handler()
	tok := "Bearer " + token(b, "alice", false)
	run := func(b *testing.B, entity string, want int) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req := httptest.NewRequest(http.MethodGet, "/client/v1/pay-to-view/access/check?entityId="+entity, nil)
				req.Header.Set("Authorization", tok)
				rec := httptest.NewRecorder()
				handler.ServeHTTP(rec, req)
				if rec.Code != want {
					b.Errorf("status %d, want %d", rec.Code, want)
					return
				}
			}
		})
	}
	b.Run("granted", func(b *testing.B) { run(b, "vid-1", http.StatusNoContent) })
	b.Run("denied", func(b *testing.B) { run(b, "vid-2", http.StatusForbidden) })
}

// BenchmarkStripeWebhook_Duplicate measures a redelivered event end to end
// through the handler: body read, signature verification, uncached read of
// the purchase from the apiserver, the lifecycle rule, no write.
func BenchmarkStripeWebhook_Duplicate(b *testing.B) {
	h := newHarness(b, harnessConfig{noPurchaseController: true, quiet: true})
	p := h.seed("alice", "vid-1", "movie", completedStatus(time.Now(), 0))
	payload := eventJSON(b, "checkout.session.completed", paidSession(p, p.Status.ExternalTransactionID), time.Now())
	handler := h.srv.Handler()
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, webhookPath, bytes.NewReader(payload))
		req.Header.Set(stripe.SignatureHeader, stripe.SignPayload(payload, h.em.WebhookSecret(), time.Now()))
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkDecodeCreateRequest is the strict decoder on a typical body.
func BenchmarkDecodeCreateRequest(b *testing.B) {
	body := []byte(`{"payToViewProductId":"movie-night","entityId":"vid_8f3a2c","returnUrl":"https://shop.example.com/purchase/complete?x=1"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeCreateRequest(bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
}

package webhookserver

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/index"
	"github.com/md-platform/paytoview-operator/internal/naming"
	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/internal/testenv"
)

// createDecodeCodes are the codes a 400 of the create decoder may carry.
var createDecodeCodes = map[string]bool{
	CodeMalformedJSON: true, CodeUnknownField: true, CodeMissingField: true, CodeInvalidField: true, CodeBodyTooLarge: true,
}

// FuzzDecodeCreateRequest: the decoder never panics, rejects with a 400 and
// a known code, and what it accepts is well formed and decodes the same way
// again once re-encoded. Seeds: testdata/fuzz/FuzzDecodeCreateRequest.
func FuzzDecodeCreateRequest(f *testing.F) {
	f.Add([]byte(`{"payToViewProductId":"movie","entityId":"vid-1","returnUrl":"https://shop.example.com/done"}`))
	f.Add([]byte(`{"payToViewProductId":"movie","entityId":"vid-1","returnUrl":"https://shop.example.com/done","x":1}`))
	f.Add([]byte(`{"payToViewProductId":"movie","entityId":"vid-1","entityId":"vid-2","returnUrl":"https://a"}`))
	f.Add([]byte(`{"payToViewProductId":null,"entityId":"\u0000","returnUrl":1}`))
	f.Add([]byte(`[{"payToViewProductId":"movie"}]`))
	f.Add([]byte(`{"payToViewProductId":"movie","entityId":"vid-1","returnUrl":"https://a"} trailing`))
	f.Fuzz(func(t *testing.T, body []byte) {
		in, apiErr := decodeCreateRequest(bytes.NewReader(body))
		if apiErr != nil {
			if apiErr.status != http.StatusBadRequest || !createDecodeCodes[apiErr.code] || apiErr.message == "" {
				t.Fatalf("rejection %d %q %q", apiErr.status, apiErr.code, apiErr.message)
			}
			if !utf8.ValidString(apiErr.message) || strings.IndexFunc(apiErr.message, unicode.IsControl) >= 0 {
				t.Fatalf("message echoes invalid or control characters: %q", apiErr.message)
			}
			return
		}
		if in.ProductID == "" || in.EntityID == "" || in.ReturnURL == "" || validateEntityID(in.EntityID) != nil ||
			len(in.ReturnURL) > maxReturnURLLen || len(body) > maxCreateBody {
			t.Fatalf("accepted a malformed request %+v from %q", in, body)
		}
		again, err := json.Marshal(map[string]string{"payToViewProductId": in.ProductID, "entityId": in.EntityID, "returnUrl": in.ReturnURL})
		if err != nil {
			t.Fatal(err)
		}
		if len(again) > maxCreateBody {
			return // escaping grew it past the limit
		}
		in2, apiErr := decodeCreateRequest(bytes.NewReader(again))
		if apiErr != nil || in2 != in {
			t.Fatalf("re-encoded %s decodes to %+v, %v; want %+v", again, in2, apiErr, in)
		}
	})
}

// FuzzStripeWebhook: whatever arrives, signed or not, the receiver never
// panics and never answers 5xx, except for the one documented retry: a
// correctly signed, recent event naming a PaymentIntent no purchase has yet
// (it may have overtaken the payment). Unsigned input is always a 400 or 413
// and is never applied. Seeds: testdata/fuzz/FuzzStripeWebhook.
//
// Fuzzing runs thousands of inputs a second in several worker processes, so
// this target stores Purchases in controller-runtime's in-memory client (with
// the real field indexes) instead of a control plane per worker; the
// receiver's behaviour against a real apiserver is what the webhook tests
// check.
func FuzzStripeWebhook(f *testing.F) {
	handler, secret, p := fuzzWebhookServer(f)
	f.Add(eventJSON(f, "checkout.session.completed", paidSession(p, "pi_fuzz"), time.Now()), "", true)
	f.Add(eventJSON(f, "charge.refunded", refundedCharge(p, "pi_fuzz"), time.Now()), "", true)
	f.Add(eventJSON(f, "charge.dispute.created", dispute("pi_fuzz", "needs_response"), time.Now().Add(-time.Hour)), "", true)
	f.Add([]byte(`{"id":"evt_1","object":"event","type":"checkout.session.completed","data":{"object":{}}}`), "t=1,v1=00", false)
	f.Add([]byte(`{`), "", true)
	f.Add([]byte{}, "", false)
	f.Fuzz(func(t *testing.T, payload []byte, header string, sign bool) {
		if sign {
			header = stripe.SignPayload(payload, secret, time.Now())
		}
		req := httptest.NewRequest(http.MethodPost, webhookPath, bytes.NewReader(payload))
		if header != "" {
			req.Header[stripe.SignatureHeader] = []string{header}
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		var body errorBody
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		switch {
		case rec.Code == http.StatusOK:
			if !sign {
				t.Fatalf("unsigned input accepted: %s", rec.Body)
			}
		case rec.Code == http.StatusBadRequest || rec.Code == http.StatusRequestEntityTooLarge:
			if body.Success || body.Code == "" {
				t.Fatalf("%d without a JSON error: %s", rec.Code, rec.Body)
			}
		case rec.Code == http.StatusServiceUnavailable && sign &&
			strings.HasPrefix(body.Message, "the purchase of this payment is not known yet"):
		default:
			t.Fatalf("answer %d %s to %q (signed %v)", rec.Code, rec.Body, payload, sign)
		}
	})
}

// fuzzIndexer registers the real field indexes on a fake client builder.
type fuzzIndexer struct{ b *fake.ClientBuilder }

func (i fuzzIndexer) IndexField(_ context.Context, obj client.Object, field string, fn client.IndexerFunc) error {
	i.b.WithIndex(obj, field, fn)
	return nil
}

// fuzzWebhookServer is the webhook route with its middleware over an
// in-memory store holding one Pending purchase, ptv-fuzzseed00 of alice
// (the checked-in seeds name it).
func fuzzWebhookServer(t testing.TB) (http.Handler, string, *v1alpha1.Purchase) {
	t.Helper()
	const secret = "whsec_fuzz"
	p := &v1alpha1.Purchase{
		ObjectMeta: metav1.ObjectMeta{Name: "ptv-fuzzseed00", Namespace: "fuzz", Labels: naming.PurchaseLabels("alice", "vid-1", "movie")},
		Spec: v1alpha1.PurchaseSpec{ProductRef: "movie", UserID: "alice", EntityID: "vid-1", EntityType: v1alpha1.EntityTypeVideo,
			ReturnURL: "https://shop.example.com/done", Price: v1alpha1.Price{Amount: 499, Currency: "usd"}, StripePriceID: "price_fuzz"},
		Status: *pendingStatus(),
	}
	p.Status.CheckoutSessionID = "cs_test_seed"
	b := fake.NewClientBuilder().WithScheme(testenv.Scheme()).WithStatusSubresource(&v1alpha1.Purchase{}).WithObjects(p)
	if err := index.Setup(context.Background(), fuzzIndexer{b}); err != nil {
		t.Fatal(err)
	}
	c := b.Build()
	verifier, err := stripe.NewVerifier([]string{secret}, stripe.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{
		opts: Options{Namespace: "fuzz", Client: c, APIReader: c, Verifier: verifier, Clock: clock.RealClock{},
			EntityIDHeader: DefaultEntityIDHeader, Logger: discard},
		log: discard,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+webhookPath, s.stripeWebhook)
	return s.withMiddleware(mux), secret, p
}

package emulator

import (
	"net/url"
	"reflect"
	"strconv"
	"testing"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	stripeform "github.com/stripe/stripe-go/v76/form"
	"github.com/stripe/stripe-go/v76/webhook"
)

func TestSplitKey(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want []string
		ok   bool
	}{
		{"customer", []string{"customer"}, true},
		{"metadata[userId]", []string{"metadata", "userId"}, true},
		{"line_items[0][price]", []string{"line_items", "0", "price"}, true},
		{"payment_intent_data[metadata][entityId]", []string{"payment_intent_data", "metadata", "entityId"}, true},
		{"expand[]", []string{"expand", ""}, true},
		{"[x]", nil, false},
		{"a[b", nil, false},
		{"a[b]c", nil, false},
		{"", nil, false},
	} {
		got, ok := splitKey(tc.key)
		if ok != tc.ok || (ok && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("splitKey(%q) = %q, %v; want %q, %v", tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

func TestCheckKnownParams_AcceptsWhatStripeGoSendsAndNothingElse(t *testing.T) {
	session := reflect.TypeFor[stripego.CheckoutSessionParams]()
	for _, tc := range []struct {
		key   string
		known bool
	}{
		{"mode", true},
		{"ui_mode", true},
		{"redirect_on_completion", true},
		{"expires_at", true},
		{"metadata[payToViewPurchaseId]", true},
		{"payment_intent_data[metadata][userId]", true},
		{"payment_intent_data[description]", true},
		{"line_items[0][price]", true},
		{"line_items[12][quantity]", true},
		{"expand[0]", true},
		{"expand[]", true},
		{"colour", false},
		{"line_items[0][colour]", false},
		{"line_items[x][price]", false},
		{"mode[0]", false},
		{"payment_intent_data[metadata]", true}, // metadata= clears
		{"payment_intent_data[nope]", false},
	} {
		err := checkKnownParams(form{tc.key: {"v"}}, session)
		if (err == nil) != tc.known {
			t.Errorf("%s: known=%v, err=%v", tc.key, tc.known, err)
		}
		if err != nil && (err.param != tc.key || err.code != "parameter_unknown") {
			t.Errorf("%s: error param %q code %q", tc.key, err.param, err.code)
		}
	}
}

// TestCheckKnownParams_AcceptsStripeGoEncoding encodes the operator's real
// session parameters with stripe-go's own encoder and checks every key.
func TestCheckKnownParams_AcceptsStripeGoEncoding(t *testing.T) {
	p := &stripego.CheckoutSessionParams{
		UIMode:               stripego.String("embedded"),
		RedirectOnCompletion: stripego.String("never"),
		Mode:                 stripego.String("payment"),
		LineItems:            []*stripego.CheckoutSessionLineItemParams{{Price: stripego.String("price_1"), Quantity: stripego.Int64(1)}},
		Customer:             stripego.String("cus_1"),
		ClientReferenceID:    stripego.String("ptv-1"),
		Metadata:             map[string]string{"a": "b"},
		PaymentIntentData:    &stripego.CheckoutSessionPaymentIntentDataParams{Metadata: map[string]string{"a": "b"}},
		ExpiresAt:            stripego.Int64(1),
	}
	p.AddExpand("payment_intent")
	values := &stripeform.Values{}
	stripeform.AppendTo(values, p)
	parsed, err := url.ParseQuery(values.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if apiErr := checkKnownParams(form(parsed), reflect.TypeOf(*p)); apiErr != nil {
		t.Errorf("stripe-go's own encoding rejected: %v (%s)", apiErr, values.Encode())
	}
	f := form(parsed)
	if got := f.list("expand"); !reflect.DeepEqual(got, []string{"payment_intent"}) {
		t.Errorf("expand list %v", got)
	}
	if got := f.indices("line_items"); !reflect.DeepEqual(got, []int{0}) {
		t.Errorf("line item indices %v", got)
	}
	md, err2 := f.createMetadata("payment_intent_data[metadata]")
	if err2 != nil || !reflect.DeepEqual(md, map[string]string{"a": "b"}) {
		t.Errorf("payment_intent_data metadata %v, %v", md, err2)
	}
}

func TestUpdateMetadata_MergesUnsetsAndClears(t *testing.T) {
	current := map[string]string{"keep": "1", "drop": "2"}
	for _, tc := range []struct {
		name string
		in   url.Values
		want map[string]string
	}{
		{"absent leaves it", url.Values{"name": {"x"}}, current},
		{"merge and unset", url.Values{"metadata[drop]": {""}, "metadata[new]": {"3"}}, map[string]string{"keep": "1", "new": "3"}},
		{"clear all", url.Values{"metadata": {""}}, map[string]string{}},
		{"clear then set", url.Values{"metadata": {""}, "metadata[only]": {"x"}}, map[string]string{"only": "x"}},
	} {
		got, err := form(tc.in).updateMetadata(current)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	tooMany := url.Values{}
	for i := 0; i < 51; i++ {
		tooMany.Set("metadata[k"+strconv.Itoa(i)+"]", "v")
	}
	if _, err := form(tooMany).updateMetadata(nil); err == nil {
		t.Errorf("51 metadata keys accepted")
	}
}

func TestPaginate_NewestFirstWithCursors(t *testing.T) {
	items := []string{"a", "b", "c", "d", "e"} // oldest first
	all := func(string) bool { return true }
	id := func(s string) string { return s }
	for _, tc := range []struct {
		name string
		in   url.Values
		want []string
		more bool
	}{
		{"default", url.Values{}, []string{"e", "d", "c", "b", "a"}, false},
		{"limit", url.Values{"limit": {"2"}}, []string{"e", "d"}, true},
		{"starting_after", url.Values{"limit": {"2"}, "starting_after": {"d"}}, []string{"c", "b"}, true},
		{"last page", url.Values{"limit": {"2"}, "starting_after": {"b"}}, []string{"a"}, false},
		{"ending_before", url.Values{"limit": {"2"}, "ending_before": {"b"}}, []string{"d", "c"}, true},
		{"ending_before first page", url.Values{"limit": {"3"}, "ending_before": {"c"}}, []string{"e", "d"}, false},
	} {
		got, more, err := paginate(form(tc.in), items, id, all, "thing")
		if err != nil || !reflect.DeepEqual(got, tc.want) || more != tc.more {
			t.Errorf("%s: %v more=%v err=%v; want %v more=%v", tc.name, got, more, err, tc.want, tc.more)
		}
	}
	for _, bad := range []url.Values{{"limit": {"0"}}, {"limit": {"101"}}, {"limit": {"x"}}, {"starting_after": {"zz"}}} {
		if _, _, err := paginate(form(bad), items, id, all, "thing"); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestSignatureHeader_VerifiesWithStripeGo(t *testing.T) {
	payload := []byte(`{"id":"evt_1","object":"event","api_version":"` + APIVersion + `","type":"x","data":{"object":{}}}`)
	now := time.Now()
	header := SignatureHeader(payload, "whsec_abc", now)
	if err := webhook.ValidatePayload(payload, header, "whsec_abc"); err != nil {
		t.Errorf("stripe-go rejects our signature: %v", err)
	}
	if err := webhook.ValidatePayload(payload, header, "whsec_other"); err == nil {
		t.Errorf("signature verifies with the wrong secret")
	}
	tampered := append([]byte(nil), payload...)
	tampered[5] = 'X'
	if err := webhook.ValidatePayload(tampered, header, "whsec_abc"); err == nil {
		t.Errorf("signature verifies a tampered payload")
	}
	if want := "t=" + strconv.FormatInt(now.Unix(), 10) + ",v1="; header[:len(want)] != want || len(header) != len(want)+64 {
		t.Errorf("header %q lacks Stripe's t=..,v1=<64 hex> shape", header)
	}
}

func TestMaskKey_NeverShowsTheWholeKey(t *testing.T) {
	for _, k := range []string{"sk_test_1234567890abcdef", "short", "sk_live_x"} {
		m := maskKey(k)
		if m == k || len(m) != len(k) {
			t.Errorf("maskKey(%q) = %q", k, m)
		}
	}
}

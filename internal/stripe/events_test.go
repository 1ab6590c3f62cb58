package stripe

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
)

// webhookEvent builds an event the way Stripe sends it: expandable fields
// (customer, payment_intent, charge) as bare id strings.
func webhookEvent(t *testing.T, typ string, object string) stripego.Event {
	t.Helper()
	raw := `{"id":"evt_1","object":"event","api_version":"` + stripego.APIVersion + `","type":"` + typ + `","data":{"object":` + object + `}}`
	var ev stripego.Event
	if err := json.Unmarshal([]byte(raw), &ev); err != nil {
		t.Fatalf("building event: %v", err)
	}
	return ev
}

const (
	sessionJSON = `{"id":"cs_test_a1","object":"checkout.session","status":"complete","payment_status":"paid",
		"payment_intent":"pi_1","customer":"cus_1","client_reference_id":"ptv-abc","amount_total":499,
		"currency":"eur","created":1700000000,"expires_at":1700001800,"client_secret":null,
		"metadata":{"payToViewPurchaseId":"ptv-abc","payToViewProductId":"gold","userId":"u1","entityType":"1","entityId":"v9"}}`
	chargeJSON = `{"id":"ch_1","object":"charge","payment_intent":"pi_1","amount":499,"amount_refunded":499,
		"refunded":true,"disputed":false,"currency":"eur","metadata":{"payToViewPurchaseId":"ptv-abc"}}`
	refundJSON = `{"id":"re_1","object":"refund","payment_intent":"pi_1","charge":"ch_1","amount":499,
		"currency":"eur","status":"failed","failure_reason":"expired_or_canceled_card","metadata":{"requestedBy":"admin"}}`
	disputeJSON = `{"id":"dp_1","object":"dispute","charge":"ch_1","payment_intent":"pi_1","status":"lost","amount":499}`
)

func TestSessionFromEvent_DecodesWebhookShape(t *testing.T) {
	got, err := SessionFromEvent(webhookEvent(t, EventCheckoutSessionCompleted, sessionJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := Session{
		ID: "cs_test_a1", Status: SessionComplete, PaymentStatus: PaymentPaid, PaymentIntentID: "pi_1",
		CustomerID: "cus_1", ClientReferenceID: "ptv-abc", AmountTotal: 499, Currency: "eur",
		Created: time.Unix(1700000000, 0).UTC(), ExpiresAt: time.Unix(1700001800, 0).UTC(),
		Metadata: map[string]string{
			MetaPurchaseID: "ptv-abc", MetaProductID: "gold", MetaUserID: "u1", MetaEntityType: "1", MetaEntityID: "v9",
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("SessionFromEvent =\n%+v\nwant\n%+v", got, want)
	}
	md, err := ParsePurchaseMetadata(got.Metadata)
	if err != nil {
		t.Fatal(err)
	}
	if md != (PurchaseMetadata{PurchaseID: "ptv-abc", ProductID: "gold", UserID: "u1", EntityType: 1, EntityID: "v9"}) {
		t.Fatalf("ParsePurchaseMetadata = %+v", md)
	}
}

func TestChargeFromEvent_DecodesWebhookShape(t *testing.T) {
	got, err := ChargeFromEvent(webhookEvent(t, EventChargeRefunded, chargeJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := Charge{ID: "ch_1", PaymentIntentID: "pi_1", Amount: 499, AmountRefunded: 499, Refunded: true,
		Currency: "eur", Metadata: map[string]string{MetaPurchaseID: "ptv-abc"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ChargeFromEvent = %+v, want %+v", got, want)
	}
}

func TestRefundFromEvent_DecodesWebhookShape(t *testing.T) {
	got, err := RefundFromEvent(webhookEvent(t, EventChargeRefundUpdated, refundJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := Refund{ID: "re_1", PaymentIntentID: "pi_1", ChargeID: "ch_1", Amount: 499, Currency: "eur",
		Status: RefundFailed, FailureReason: "expired_or_canceled_card", Metadata: map[string]string{"requestedBy": "admin"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("RefundFromEvent = %+v, want %+v", got, want)
	}
}

func TestDisputeFromEvent_DecodesWebhookShape(t *testing.T) {
	got, err := DisputeFromEvent(webhookEvent(t, EventChargeDisputeClosed, disputeJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := Dispute{ID: "dp_1", ChargeID: "ch_1", PaymentIntentID: "pi_1", Status: "lost", Amount: 499}
	if got != want {
		t.Fatalf("DisputeFromEvent = %+v, want %+v", got, want)
	}
}

func TestDecoders_RejectWrongObjectType(t *testing.T) {
	chargeEvent := webhookEvent(t, EventChargeRefunded, chargeJSON)
	sessionEvent := webhookEvent(t, EventCheckoutSessionCompleted, sessionJSON)
	noObject := stripego.Event{ID: "evt_2", Type: EventChargeRefunded}
	tests := []struct {
		name   string
		decode func() error
	}{
		{"session from a charge event", func() error { _, err := SessionFromEvent(chargeEvent); return err }},
		{"charge from a session event", func() error { _, err := ChargeFromEvent(sessionEvent); return err }},
		{"refund from a charge event", func() error { _, err := RefundFromEvent(chargeEvent); return err }},
		{"dispute from a charge event", func() error { _, err := DisputeFromEvent(chargeEvent); return err }},
		{"charge from an event without data", func() error { _, err := ChargeFromEvent(noObject); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.decode(); !errors.Is(err, ErrUnexpectedObject) {
				t.Fatalf("error = %v, want ErrUnexpectedObject", err)
			}
		})
	}
}

func TestPaymentIntentFromStripe_ExpandedLatestCharge(t *testing.T) {
	var pi stripego.PaymentIntent
	raw := `{"id":"pi_1","object":"payment_intent","status":"succeeded","amount":499,"currency":"eur",
		"metadata":{"payToViewPurchaseId":"ptv-abc"},
		"latest_charge":{"id":"ch_1","object":"charge","amount":499,"amount_refunded":100,"disputed":true,"currency":"eur","payment_intent":"pi_1"}}`
	if err := json.Unmarshal([]byte(raw), &pi); err != nil {
		t.Fatal(err)
	}
	got := PaymentIntentFromStripe(&pi)
	if got.ID != "pi_1" || got.Status != "succeeded" || got.Amount != 499 || got.Metadata[MetaPurchaseID] != "ptv-abc" {
		t.Fatalf("PaymentIntentFromStripe = %+v", got)
	}
	want := Charge{ID: "ch_1", PaymentIntentID: "pi_1", Amount: 499, AmountRefunded: 100, Disputed: true, Currency: "eur"}
	if got.LatestCharge == nil || !reflect.DeepEqual(*got.LatestCharge, want) {
		t.Fatalf("LatestCharge = %+v, want %+v", got.LatestCharge, want)
	}

	var noCharge stripego.PaymentIntent
	if err := json.Unmarshal([]byte(`{"id":"pi_2","object":"payment_intent","latest_charge":null}`), &noCharge); err != nil {
		t.Fatal(err)
	}
	if got := PaymentIntentFromStripe(&noCharge); got.LatestCharge != nil {
		t.Fatalf("LatestCharge = %+v, want nil for an intent without charge", got.LatestCharge)
	}
}

func TestParsePurchaseMetadata_RejectsForeignObjects(t *testing.T) {
	tests := []struct {
		name string
		md   map[string]string
	}{
		{"no metadata", nil},
		{"no purchase id", map[string]string{MetaUserID: "u1"}},
		{"entity type out of range", map[string]string{MetaPurchaseID: "p", MetaEntityType: "4"}},
		{"entity type not a number", map[string]string{MetaPurchaseID: "p", MetaEntityType: "video"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParsePurchaseMetadata(tt.md); err == nil {
				t.Fatal("want an error")
			}
		})
	}
	round := PurchaseMetadata{PurchaseID: "p", ProductID: "q", UserID: "u", EntityType: 3, EntityID: "e"}
	if got, err := ParsePurchaseMetadata(round.Map()); err != nil || got != round {
		t.Fatalf("round trip = %+v, %v; want %+v", got, err, round)
	}
}

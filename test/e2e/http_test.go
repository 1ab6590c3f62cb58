//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/md-platform/paytoview-operator/internal/auth"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

const (
	purchasesPath = "/client/v1/pay-to-view/purchases"
	returnURL     = returnOrigin + "/purchase/complete"
	tokenTTL      = time.Hour
)

// response is an HTTP answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) decode(t *testing.T, into any) {
	t.Helper()
	if err := json.Unmarshal(r.body, into); err != nil {
		t.Fatalf("decoding %d answer %s: %v", r.status, r.body, err)
	}
}

// do sends one request; body is JSON-encoded unless it is url.Values (a
// form, as the emulator's helpers take).
func (s *system) do(t *testing.T, method, rawURL, token string, body any) response {
	t.Helper()
	r, err := s.tryDo(t.Context(), method, rawURL, token, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryDo is do for callers that handle a failed request themselves: goroutines
// other than the test's, and requests that may meet a stopped replica.
func (s *system) tryDo(ctx context.Context, method, rawURL, token string, body any) (response, error) {
	var (
		rd          io.Reader
		contentType string
	)
	switch b := body.(type) {
	case nil:
	case url.Values:
		rd, contentType = strings.NewReader(b.Encode()), "application/x-www-form-urlencoded"
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return response{}, err
		}
		rd, contentType = bytes.NewReader(data), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, rawURL, rd)
	if err != nil {
		return response{}, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, rawURL, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: reading the answer: %w", method, rawURL, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// userToken mints the bearer token the identity provider would give user.
func (s *system) userToken(t *testing.T, user string) string {
	t.Helper()
	tok, err := auth.MintHS256(s.hs256, user, nil, tokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// adminToken mints a token with the admin role.
func (s *system) adminToken(t *testing.T) string {
	t.Helper()
	tok, err := auth.MintHS256(s.hs256, "e2e-support-admin", []string{"admin"}, tokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// createResult is the answer of POST /client/v1/pay-to-view/purchases.
type createResult struct {
	Success          bool   `json:"success"`
	HasAccess        bool   `json:"hasAccess"`
	PurchaseID       string `json:"purchaseId"`
	ClientSecret     string `json:"clientSecret"`
	StripeCustomerID string `json:"stripeCustomerId"`
	Code             string `json:"code"`
	Message          string `json:"message"`
}

// create is the seed's step 1.
func (s *system) create(t *testing.T, token, product, entity string) (int, createResult) {
	t.Helper()
	r := s.do(t, http.MethodPost, s.apiURL+purchasesPath, token, map[string]string{
		"payToViewProductId": product, "entityId": entity, "returnUrl": returnURL,
	})
	var out createResult
	r.decode(t, &out)
	return r.status, out
}

// createCheckout creates a purchase and returns its checkout. Like a
// frontend, it repeats the request while the API answers 503
// checkout_not_ready (the session is being created; the same request then
// reuses the purchase).
func (s *system) createCheckout(t *testing.T, token, product, entity string) createResult {
	t.Helper()
	var out createResult
	eventually(t, 2*time.Minute, "a checkout for "+entity, func() (bool, string) {
		var status int
		status, out = s.create(t, token, product, entity)
		if status == http.StatusServiceUnavailable && out.Code == "checkout_not_ready" {
			return false, out.Message
		}
		if status != http.StatusOK || !out.Success || out.HasAccess || out.PurchaseID == "" ||
			!strings.Contains(out.ClientSecret, "_secret_") || !strings.HasPrefix(out.StripeCustomerID, "cus_") {
			t.Fatalf("create %s/%s: %d %+v", product, entity, status, out)
		}
		return true, ""
	})
	return out
}

// purchaseItem is a purchase as the client API shows it.
type purchaseItem struct {
	PurchaseID         string     `json:"purchaseId"`
	PayToViewProductID string     `json:"payToViewProductId"`
	EntityID           string     `json:"entityId"`
	EntityType         int        `json:"entityType"`
	Status             string     `json:"status"`
	Amount             int64      `json:"amount"`
	Currency           string     `json:"currency"`
	CreatedAt          time.Time  `json:"createdAt"`
	CompletedAt        *time.Time `json:"completedAt"`
	ExpiresAt          *time.Time `json:"expiresAt"`
	RefundedAt         *time.Time `json:"refundedAt"`
	HasAccess          bool       `json:"hasAccess"`
}

// getPurchase is GET /client/v1/pay-to-view/purchases/{id}: what a return
// page polls.
func (s *system) getPurchase(t *testing.T, token, id string) purchaseItem {
	t.Helper()
	r := s.do(t, http.MethodGet, s.apiURL+purchasesPath+"/"+url.PathEscape(id), token, nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET purchase %s: %d %s", id, r.status, r.body)
	}
	var item purchaseItem
	r.decode(t, &item)
	return item
}

// list is the seed's "check user access": the user's purchase history.
func (s *system) list(t *testing.T, token string) []purchaseItem {
	t.Helper()
	r := s.do(t, http.MethodGet, s.apiURL+purchasesPath+"?page=1&pageSize=50", token, nil)
	if r.status != http.StatusOK {
		t.Fatalf("list purchases: %d %s", r.status, r.body)
	}
	var page struct {
		Items      []purchaseItem `json:"items"`
		TotalCount int            `json:"totalCount"`
	}
	r.decode(t, &page)
	if page.TotalCount != len(page.Items) {
		t.Fatalf("list: totalCount %d but %d items on the only page", page.TotalCount, len(page.Items))
	}
	return page.Items
}

// listed returns the purchase with id from the user's list.
func (s *system) listed(t *testing.T, token, id string) (purchaseItem, bool) {
	t.Helper()
	for _, it := range s.list(t, token) {
		if it.PurchaseID == id {
			return it, true
		}
	}
	return purchaseItem{}, false
}

// access is GET /client/v1/pay-to-view/access for one entity.
func (s *system) access(t *testing.T, token, entity string) bool {
	t.Helper()
	r := s.do(t, http.MethodGet, s.apiURL+"/client/v1/pay-to-view/access?entityId="+url.QueryEscape(entity), token, nil)
	if r.status != http.StatusOK {
		t.Fatalf("access %s: %d %s", entity, r.status, r.body)
	}
	var a struct {
		HasAccess bool `json:"hasAccess"`
	}
	r.decode(t, &a)
	return a.HasAccess
}

// waitStatus polls GET /purchases/{id}, as a return page does, until the
// purchase has the status.
func (s *system) waitStatus(t *testing.T, token, id, status string, timeout time.Duration) purchaseItem {
	t.Helper()
	var item purchaseItem
	eventually(t, timeout, "purchase "+id+" "+status, func() (bool, string) {
		item = s.getPurchase(t, token, id)
		return item.Status == status, "status " + item.Status
	})
	return item
}

// emulatorSession is the part of a Checkout Session the tests read.
type emulatorSession struct {
	ID            string            `json:"id"`
	Status        string            `json:"status"`
	PaymentStatus string            `json:"payment_status"`
	AmountTotal   int64             `json:"amount_total"`
	Currency      string            `json:"currency"`
	Metadata      map[string]string `json:"metadata"`
}

// emulatorSessionOf reads a session by its client secret, as the embedded
// checkout does.
func (s *system) emulatorSessionOf(t *testing.T, clientSecret string) emulatorSession {
	t.Helper()
	r := s.do(t, http.MethodGet, s.emulatorURL+"/_emulator/v1/checkout/sessions/"+url.PathEscape(clientSecret), "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("emulator: reading session: %d %s", r.status, r.body)
	}
	var sess emulatorSession
	r.decode(t, &sess)
	return sess
}

// pay plays the user paying in the embedded checkout (steps 2-3); webhook
// says how the emulator delivers the resulting events (deliver, drop, ...).
func (s *system) pay(t *testing.T, clientSecret, webhook string) emulatorSession {
	t.Helper()
	r := s.do(t, http.MethodPost, s.emulatorURL+"/_emulator/v1/checkout/sessions/"+url.PathEscape(clientSecret)+"/pay",
		"", url.Values{"webhook": {webhook}})
	if r.status != http.StatusOK {
		t.Fatalf("emulator: paying: %d %s", r.status, r.body)
	}
	var sess emulatorSession
	r.decode(t, &sess)
	if sess.Status != "complete" || sess.PaymentStatus != "paid" {
		t.Fatalf("emulator: paid session is %s/%s", sess.Status, sess.PaymentStatus)
	}
	return sess
}

// stripeState is everything the emulator holds.
func (s *system) stripeState(t *testing.T) emulator.State {
	t.Helper()
	r := s.do(t, http.MethodGet, s.emulatorURL+"/_emulator/v1/state", "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("emulator: state: %d %s", r.status, r.body)
	}
	var st emulator.State
	r.decode(t, &st)
	return st
}

// sessionsOf returns the Checkout Sessions created for a user.
func sessionsOf(st emulator.State, user string) []emulator.Session {
	var out []emulator.Session
	for _, sess := range st.Sessions {
		if sess.Metadata["userId"] == user {
			out = append(out, sess)
		}
	}
	return out
}

// sessionByID returns one session of the state.
func sessionByID(t *testing.T, st emulator.State, id string) emulator.Session {
	t.Helper()
	for _, sess := range st.Sessions {
		if sess.ID == id {
			return sess
		}
	}
	t.Fatalf("the emulator has no session %s", id)
	return emulator.Session{}
}

// deliveriesOf returns the webhook deliveries of the events of one type
// about one object.
func deliveriesOf(st emulator.State, eventType, objectID string) []emulator.Delivery {
	events := map[string]bool{}
	for _, ev := range st.Events {
		if ev.Type == eventType && ev.ObjectID == objectID {
			events[ev.ID] = true
		}
	}
	var out []emulator.Delivery
	for _, d := range st.Deliveries {
		if events[d.EventID] {
			out = append(out, d)
		}
	}
	return out
}

func describeDeliveries(ds []emulator.Delivery) string {
	var b strings.Builder
	for _, d := range ds {
		fmt.Fprintf(&b, "[%s %s %s attempts:", d.EventType, d.Mode, d.Status)
		for _, a := range d.Attempts {
			fmt.Fprintf(&b, " %d%s", a.StatusCode, a.Error)
		}
		b.WriteString("] ")
	}
	return b.String()
}

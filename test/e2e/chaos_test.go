//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

const (
	// chaosSeedEnv replays a chaos run: the plan (who buys what, who pays,
	// abandons or gets refunded, how each payment's webhooks travel) and
	// the order and spacing of the faults all come from this seed.
	chaosSeedEnv = "E2E_CHAOS_SEED"

	chaosUsers            = 10
	chaosPurchasesPerUser = 6
	// Of the chaosUsers*chaosPurchasesPerUser purchases, this many are
	// abandoned (never paid), paid and then refunded by an admin, and
	// created by two requests at once (a double click reaching both
	// replicas); the rest are simply paid.
	chaosAbandoned    = 8
	chaosRefunded     = 6
	chaosDoubleClicks = 6

	// chaosStepTimeout bounds one step of a user (getting a checkout,
	// paying, waiting to refund) however many faults it meets.
	chaosStepTimeout = 2 * time.Minute
	// chaosReturnPagePoll is how long a user who paid watches the return
	// page before moving on; purchases still Pending then are healed later.
	chaosReturnPagePoll = 10 * time.Second
	// chaosUsersTimeout bounds the whole buying part of the run.
	chaosUsersTimeout = 5 * time.Minute
	// chaosHealTimeout bounds each wait for the system to heal once the
	// faults are over: generous for a loaded 2-core machine, never a
	// measurement.
	chaosHealTimeout = 2 * time.Minute
	// chaosClockJump moves Stripe's clock past the expiry of every open
	// checkout session (created for 30 minutes plus at most 3).
	chaosClockJump = 40 * time.Minute
)

// chaosPlan is what a user does with one purchase.
type chaosPlan string

const (
	planPay         chaosPlan = "pay"
	planAbandon     chaosPlan = "abandon"
	planRefund      chaosPlan = "pay-and-refund"
	planDoubleClick chaosPlan = "double-click-and-pay"
)

// chaosPurchase is one planned purchase and what became of it.
type chaosPurchase struct {
	user    string
	token   string
	product string
	entity  string
	plan    chaosPlan
	// webhook is how the emulator delivers the payment's events; empty
	// leaves it to the delivery faults installed at the time.
	webhook string

	// Set by the user's goroutine.
	purchaseID string
	// others are further purchases a double click was answered with.
	others []string
	paid   bool
}

// chaosUser buys its purchases one after the other.
type chaosUser struct {
	name      string
	purchases []*chaosPurchase
}

// TestChaos runs users buying through the real API while the system is
// disturbed: operator replicas (leader and follower) are SIGKILLed and
// restarted, kube-apiserver restarts, Stripe answers 500, 502, 429 and
// slowly, and webhooks are dropped, duplicated, delayed and reordered. Some
// users abandon their checkout; an admin refunds some purchases. Once the
// faults are over and Stripe's clock has passed every session's expiry, it
// asserts that no money was lost or taken twice, that each purchase has one
// session it records (any other is one Stripe created but answered with a
// 5xx, never paid), that no purchase is left Pending, and that the
// operators' metrics agree with the Purchases.
//
// The plan and the faults come from a seed (logged; E2E_CHAOS_SEED replays
// it); the assertions hold whatever the interleaving.
func TestChaos(t *testing.T) {
	seed := chaosSeed(t)
	t.Logf("chaos seed %d (%s=%d replays this plan)", seed, chaosSeedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	start := time.Now()
	s := startSystemWith(t, systemOptions{metrics: true})
	users := planChaos(t, s, rng)
	t.Logf("system up in %s; %d users, %d planned purchases", time.Since(start).Round(time.Millisecond),
		len(users), chaosUsers*chaosPurchasesPerUser)

	chaosStart := time.Now()
	s.installFaults(t, initialAPIFaults(), initialWebhookFaults())
	admin := s.adminToken(t)

	ctx, cancel := context.WithTimeout(context.Background(), chaosUsersTimeout)
	var wg sync.WaitGroup
	errs := make([]error, len(users))
	// The users stop (and are waited for) however the test ends.
	defer func() {
		cancel()
		wg.Wait()
	}()
	for i, u := range users {
		wg.Go(func() { errs[i] = s.runChaosUser(ctx, u, admin) })
	}
	usersDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(usersDone)
	}()

	for _, a := range s.chaosActions(t, rng) {
		s.chaosPause(t, time.Duration(2000+rng.IntN(3000))*time.Millisecond)
		t.Logf("%6.1fs chaos: %s", time.Since(chaosStart).Seconds(), a.name)
		a.run()
	}
	// Users still buying are waited for, with the kubelet's restarts.
	for waiting := true; waiting; {
		select {
		case <-usersDone:
			waiting = false
		case <-time.After(500 * time.Millisecond):
			s.restartExitedReplicas(t)
		}
	}
	t.Logf("%6.1fs users done", time.Since(chaosStart).Seconds())
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("users could not buy through the faults:\n%v", err)
	}

	// The faults end; whatever was lost must heal.
	s.clearFaults(t)
	s.restartExitedReplicas(t)
	s.waitPaidSettled(t, users)
	t.Logf("%6.1fs every paid purchase settled", time.Since(chaosStart).Seconds())
	s.waitSessionsCreated(t)

	// The leader's transitions counter, from here on: the only phase
	// changes left are Pending purchases ending when their sessions expire.
	leader, _ := s.leader(t)
	leaderProc, _ := leader.current()
	before := s.waitGaugesAgree(t, leader)
	pendingBefore := s.purchasesIn(t, v1alpha1.PurchasePending)

	r := s.do(t, http.MethodPost, s.emulatorURL+"/_emulator/v1/clock/advance", "", url.Values{"by": {chaosClockJump.String()}})
	if r.status != http.StatusOK {
		t.Fatalf("emulator: advancing the clock: %d %s", r.status, r.body)
	}
	eventually(t, chaosHealTimeout, "no Pending purchase once every session expired", func() (bool, string) {
		pending := s.purchasesIn(t, v1alpha1.PurchasePending)
		return len(pending) == 0, fmt.Sprintf("still Pending: %v", pending)
	})
	t.Logf("%6.1fs abandoned checkouts ended (%d were Pending)", time.Since(chaosStart).Seconds(), len(pendingBefore))

	s.assertChaosOutcome(t, users)
	s.assertChaosMetrics(t, leader, leaderProc, before, len(pendingBefore))
	t.Logf("chaos run took %s (system start excluded)", time.Since(chaosStart).Round(time.Millisecond))
}

// chaosSeed is E2E_CHAOS_SEED, or a fresh seed.
func chaosSeed(t *testing.T) uint64 {
	t.Helper()
	if v := os.Getenv(chaosSeedEnv); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q is not a seed (an unsigned integer): %v", chaosSeedEnv, v, err)
		}
		return seed
	}
	return uint64(time.Now().UnixNano())
}

// planChaos draws what every user does.
func planChaos(t *testing.T, s *system, rng *rand.Rand) []*chaosUser {
	t.Helper()
	total := chaosUsers * chaosPurchasesPerUser
	plans := make([]chaosPlan, 0, total)
	for plan, n := range map[chaosPlan]int{planAbandon: chaosAbandoned, planRefund: chaosRefunded, planDoubleClick: chaosDoubleClicks} {
		for range n {
			plans = append(plans, plan)
		}
	}
	for len(plans) < total {
		plans = append(plans, planPay)
	}
	// Map order is random; the seed alone decides.
	sort.Slice(plans, func(i, j int) bool { return plans[i] < plans[j] })
	rng.Shuffle(len(plans), func(i, j int) { plans[i], plans[j] = plans[j], plans[i] })
	// Empty twice: the installed delivery faults decide more often.
	webhooks := []string{"", "", "deliver", "drop", "duplicate", "delay"}

	users := make([]*chaosUser, chaosUsers)
	for u := range users {
		user := &chaosUser{name: fmt.Sprintf("chaos-user-%02d", u)}
		token := s.userToken(t, user.name)
		for i := range chaosPurchasesPerUser {
			p := &chaosPurchase{
				user: user.name, token: token, product: videoProduct,
				entity:  fmt.Sprintf("chaos-%02d-%d", u, i),
				plan:    plans[u*chaosPurchasesPerUser+i],
				webhook: webhooks[rng.IntN(len(webhooks))],
			}
			if rng.IntN(4) == 0 {
				p.product, p.entity = channelProduct, fmt.Sprintf("chaos-chan-%02d-%d", u, i)
			}
			user.purchases = append(user.purchases, p)
		}
		users[u] = user
	}
	return users
}

// initialAPIFaults make Stripe fail or slow down a bounded number of calls
// from the start: an outage in front of Stripe (500), rate limits (429),
// answers lost after Stripe did the work (502 after processing), and an
// answer slower than the operator's 10 s Stripe timeout.
func initialAPIFaults() []map[string]any {
	return []map[string]any{
		{"operation": "create_checkout_session", "status": 500, "count": 3},
		{"operation": "create_customer", "status": 429, "retry_after": 1, "count": 2},
		{"operation": "create_checkout_session", "status": 502, "after_processing": true, "count": 2},
		{"operation": "get_checkout_session", "delay_ms": 11000, "count": 1},
	}
}

// laterAPIFaults hit while the run is under way: any call (503), refunds,
// expiring superseded sessions, and a session create whose answer comes
// after the client gave up.
func laterAPIFaults() []map[string]any {
	return []map[string]any{
		{"operation": "*", "status": 503, "count": 6},
		{"operation": "create_refund", "status": 429, "retry_after": 1, "count": 2},
		{"operation": "expire_checkout_session", "status": 500, "count": 2},
		{"operation": "create_checkout_session", "delay_ms": 11000, "count": 1},
	}
}

// initialWebhookFaults apply to the events of payments made without a
// delivery mode of their own, and to refunds and expiries.
func initialWebhookFaults() []map[string]any {
	return []map[string]any{
		{"event_type": "checkout.session.completed", "mode": "drop", "count": 3},
		{"event_type": "charge.refunded", "mode": "drop", "count": 1},
		{"mode": "duplicate", "count": 4},
		{"mode": "delay", "delay_ms": 3000, "count": 4},
	}
}

// installFaults adds API and delivery faults to the emulator.
func (s *system) installFaults(t *testing.T, api, webhooks []map[string]any) {
	t.Helper()
	for _, f := range api {
		if r := s.do(t, http.MethodPost, s.emulatorURL+"/_emulator/v1/faults", "", f); r.status != http.StatusOK {
			t.Fatalf("emulator: installing fault %v: %d %s", f, r.status, r.body)
		}
	}
	for _, f := range webhooks {
		if r := s.do(t, http.MethodPost, s.emulatorURL+"/_emulator/v1/webhooks/faults", "", f); r.status != http.StatusOK {
			t.Fatalf("emulator: installing delivery fault %v: %d %s", f, r.status, r.body)
		}
	}
}

// clearFaults ends every fault: API and delivery faults are removed and
// held deliveries go out.
func (s *system) clearFaults(t *testing.T) {
	t.Helper()
	for _, path := range []string{"/_emulator/v1/faults", "/_emulator/v1/webhooks/faults"} {
		if r := s.do(t, http.MethodDelete, s.emulatorURL+path, "", nil); r.status != http.StatusOK {
			t.Fatalf("emulator: DELETE %s: %d %s", path, r.status, r.body)
		}
	}
	if r := s.do(t, http.MethodPost, s.emulatorURL+"/_emulator/v1/webhooks/release", "", url.Values{"order": {"fifo"}}); r.status != http.StatusOK {
		t.Fatalf("emulator: releasing held webhooks: %d %s", r.status, r.body)
	}
}

// chaosAction is one disturbance, run from the test's goroutine.
type chaosAction struct {
	name string
	run  func()
}

// chaosActions are the disturbances of the run, in an order drawn from rng.
func (s *system) chaosActions(t *testing.T, rng *rand.Rand) []chaosAction {
	killLeader := chaosAction{"SIGKILL the leader", func() {
		leader, _ := s.leader(t)
		t.Logf("killing %s (leader)", leader.name)
		leader.kill()
		s.restartExitedReplicas(t)
	}}
	actions := []chaosAction{
		killLeader,
		killLeader,
		{"SIGKILL a follower", func() {
			leader, _ := s.leader(t)
			for _, r := range s.replicas {
				if r != leader {
					t.Logf("killing %s (follower)", r.name)
					r.kill()
				}
			}
			s.restartExitedReplicas(t)
		}},
		{"hold webhooks, then release them out of order", func() {
			if r := s.do(t, http.MethodPost, s.emulatorURL+"/_emulator/v1/webhooks/hold", "", nil); r.status != http.StatusOK {
				t.Fatalf("emulator: holding webhooks: %d %s", r.status, r.body)
			}
			// Held for a while, and until a few deliveries wait (users
			// may all be waiting for a leader just then), within bounds.
			until := time.Now().Add(15 * time.Second)
			s.chaosPause(t, time.Duration(2000+rng.IntN(2000))*time.Millisecond)
			for s.heldDeliveries(t) < 3 && time.Now().Before(until) {
				s.chaosPause(t, 500*time.Millisecond)
			}
			order := []string{"reverse", "random"}[rng.IntN(2)]
			r := s.do(t, http.MethodPost, s.emulatorURL+"/_emulator/v1/webhooks/release", "", url.Values{"order": {order}})
			if r.status != http.StatusOK {
				t.Fatalf("emulator: releasing webhooks: %d %s", r.status, r.body)
			}
			t.Logf("released held webhooks in %s order: %s", order, r.body)
		}},
		{"more Stripe API faults", func() { s.installFaults(t, laterAPIFaults(), nil) }},
	}
	if s.cluster.local != nil {
		outage := time.Duration(1000+rng.IntN(2000)) * time.Millisecond
		actions = append(actions, chaosAction{"restart kube-apiserver", func() {
			s.cluster.restartAPIServer(t, func() {
				// How long the control plane stays away is part of the
				// fault, not a wait for anything.
				time.Sleep(outage)
			})
			s.restartExitedReplicas(t)
		}})
	} else {
		t.Logf("kube-apiserver is not restarted: it is not the local control plane (%s)", externalKubeconfigEnv)
	}
	rng.Shuffle(len(actions), func(i, j int) { actions[i], actions[j] = actions[j], actions[i] })
	return actions
}

// heldDeliveries counts the webhook deliveries the emulator holds.
func (s *system) heldDeliveries(t *testing.T) int {
	t.Helper()
	r := s.do(t, http.MethodGet, s.emulatorURL+"/_emulator/v1/webhooks/deliveries", "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("emulator: listing deliveries: %d %s", r.status, r.body)
	}
	var list struct {
		Data []emulator.Delivery `json:"data"`
	}
	r.decode(t, &list)
	n := 0
	for _, d := range list.Data {
		if d.Status == "held" {
			n++
		}
	}
	return n
}

// chaosPause lets the users work for d between two disturbances, starting
// again any replica that exited meanwhile, as the kubelet would (a leader
// that could not renew its Lease exits).
func (s *system) chaosPause(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		s.restartExitedReplicas(t)
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		time.Sleep(min(left, 500*time.Millisecond))
	}
}

// runChaosUser buys the user's purchases in order.
func (s *system) runChaosUser(ctx context.Context, u *chaosUser, admin string) error {
	for _, p := range u.purchases {
		if err := s.runChaosPurchase(ctx, p, admin); err != nil {
			return fmt.Errorf("%s, %s of %s/%s: %w", u.name, p.plan, p.product, p.entity, err)
		}
	}
	return nil
}

func (s *system) runChaosPurchase(ctx context.Context, p *chaosPurchase, admin string) error {
	var c createResult
	if p.plan == planDoubleClick {
		var (
			res  [2]createResult
			errs [2]error
			wg   sync.WaitGroup
		)
		for i := range res {
			wg.Go(func() { res[i], errs[i] = s.checkoutThroughFaults(ctx, p.token, p.product, p.entity) })
		}
		wg.Wait()
		if err := errors.Join(errs[:]...); err != nil {
			return err
		}
		c = res[0]
		if res[1].PurchaseID != c.PurchaseID {
			p.others = append(p.others, res[1].PurchaseID)
		}
	} else {
		var err error
		if c, err = s.checkoutThroughFaults(ctx, p.token, p.product, p.entity); err != nil {
			return err
		}
	}
	p.purchaseID = c.PurchaseID
	if p.plan == planAbandon {
		return nil
	}
	if err := s.payThroughFaults(ctx, c.ClientSecret, p.webhook); err != nil {
		return err
	}
	p.paid = true
	if p.plan != planRefund {
		// The return page polls a while; Pending purchases heal later.
		s.pollStatus(ctx, p.token, c.PurchaseID, "Completed", chaosReturnPagePoll)
		return nil
	}
	if !s.pollStatus(ctx, p.token, c.PurchaseID, "Completed", chaosStepTimeout) {
		return fmt.Errorf("purchase %s was paid but not Completed within %s, so it could not be refunded", c.PurchaseID, chaosStepTimeout)
	}
	return s.refundThroughFaults(ctx, admin, c.PurchaseID)
}

// retryable reports whether a frontend would try an API answer again: the
// checkout is being prepared, the service or the apiserver is away, a
// replica went away mid-request, a rate limit, or a checkout that ended
// before it could be used.
func retryable(r response) bool {
	return r.status >= 500 || r.status == http.StatusTooManyRequests ||
		(r.status == http.StatusConflict && errorCode(r) == "checkout_ended")
}

// errorCode is the code of an API error answer, or "" if it has none.
func errorCode(r response) string {
	var e struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(r.body, &e)
	return e.Code
}

// retryDelay is how long to wait before repeating a request: the answer's
// Retry-After, at most a few seconds, or half a second.
func retryDelay(r response) time.Duration {
	if secs, err := strconv.Atoi(r.header.Get("Retry-After")); err == nil && secs > 0 {
		return min(time.Duration(secs)*time.Second, 3*time.Second)
	}
	return 500 * time.Millisecond
}

// retrying sends a request until done accepts the answer or it is not
// retryable, for at most chaosStepTimeout.
func (s *system) retrying(ctx context.Context, what string, send func(context.Context) (response, error), done func(response) bool) (response, error) {
	ctx, cancel := context.WithTimeout(ctx, chaosStepTimeout)
	defer cancel()
	var last string
	for {
		r, err := send(ctx)
		wait := 500 * time.Millisecond
		switch {
		case err != nil:
			last = err.Error()
		case done(r):
			return r, nil
		case retryable(r):
			last = fmt.Sprintf("%d %s", r.status, strings.TrimSpace(string(r.body)))
			wait = retryDelay(r)
		default:
			return r, fmt.Errorf("%s: %d %s", what, r.status, r.body)
		}
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("%s: gave up after %s; last answer: %s", what, chaosStepTimeout, last)
		case <-time.After(wait):
		}
	}
}

// checkoutThroughFaults is createCheckout for a goroutine of its own that
// meets faults: it repeats the request while the answer is retryable.
func (s *system) checkoutThroughFaults(ctx context.Context, token, product, entity string) (createResult, error) {
	body := map[string]string{"payToViewProductId": product, "entityId": entity, "returnUrl": returnURL}
	r, err := s.retrying(ctx, "creating a purchase of "+entity, func(ctx context.Context) (response, error) {
		return s.tryDo(ctx, http.MethodPost, s.apiURL+purchasesPath, token, body)
	}, func(r response) bool { return r.status == http.StatusOK })
	if err != nil {
		return createResult{}, err
	}
	var out createResult
	if err := json.Unmarshal(r.body, &out); err != nil {
		return out, fmt.Errorf("decoding the create answer %s: %w", r.body, err)
	}
	if !out.Success || out.HasAccess || out.PurchaseID == "" || !strings.Contains(out.ClientSecret, "_secret_") {
		return out, fmt.Errorf("create of %s answered %s, want a checkout", entity, r.body)
	}
	return out, nil
}

// payThroughFaults pays a checkout in the emulator; webhook is the
// delivery mode of its events ("" leaves it to the delivery faults).
func (s *system) payThroughFaults(ctx context.Context, clientSecret, webhook string) error {
	form := url.Values{}
	switch webhook {
	case "":
	case "delay":
		form.Set("webhook", webhook)
		form.Set("delay_ms", "2000")
	default:
		form.Set("webhook", webhook)
	}
	r, err := s.tryDo(ctx, http.MethodPost, s.emulatorURL+"/_emulator/v1/checkout/sessions/"+url.PathEscape(clientSecret)+"/pay", "", form)
	if err != nil {
		return fmt.Errorf("paying: %w", err)
	}
	if r.status != http.StatusOK {
		return fmt.Errorf("paying: emulator answered %d %s", r.status, r.body)
	}
	return nil
}

// pollStatus polls GET /purchases/{id} as a return page does, for at most
// d, and reports whether the purchase reached status. Failed requests are
// polled again.
func (s *system) pollStatus(ctx context.Context, token, id, status string, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		if s.statusOf(ctx, token, id) == status {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
}

// statusOf reads a purchase's status through GET /purchases/{id}, or ""
// when the request failed.
func (s *system) statusOf(ctx context.Context, token, id string) string {
	r, err := s.tryDo(ctx, http.MethodGet, s.apiURL+purchasesPath+"/"+url.PathEscape(id), token, nil)
	if err != nil || r.status != http.StatusOK {
		return ""
	}
	var item purchaseItem
	if json.Unmarshal(r.body, &item) != nil {
		return ""
	}
	return item.Status
}

// refundThroughFaults is an admin refunding a purchase, repeating the
// request while the answer is retryable: 200 (refunded) and 202 (in
// progress) both mean the refund is requested.
func (s *system) refundThroughFaults(ctx context.Context, admin, id string) error {
	body := map[string]string{"reason": "chaos: the customer asked"}
	_, err := s.retrying(ctx, "refunding "+id, func(ctx context.Context) (response, error) {
		return s.tryDo(ctx, http.MethodPost, s.apiURL+"/admin/v1/pay-to-view/purchases/"+id+"/refund", admin, body)
	}, func(r response) bool { return r.status == http.StatusOK || r.status == http.StatusAccepted })
	return err
}

// waitPaidSettled waits until every paid purchase shows Completed, or
// Refunded if it was refunded, polling it as its return page would (which
// asks the operator to re-read the session when a webhook was lost).
func (s *system) waitPaidSettled(t *testing.T, users []*chaosUser) {
	t.Helper()
	want := map[*chaosPurchase]string{}
	for _, u := range users {
		for _, p := range u.purchases {
			switch {
			case p.plan == planRefund:
				want[p] = "Refunded"
			case p.paid:
				want[p] = "Completed"
			}
		}
	}
	eventually(t, chaosHealTimeout, "every paid purchase Completed or Refunded", func() (bool, string) {
		var late []string
		for p, status := range want {
			if s.statusOf(t.Context(), p.token, p.purchaseID) == status {
				delete(want, p)
				continue
			}
			late = append(late, p.purchaseID+" not yet "+status)
		}
		sort.Strings(late)
		return len(late) == 0, strings.Join(late, ", ")
	})
}

// waitSessionsCreated waits until every Pending purchase has its checkout
// session, so that all of them exist before Stripe's clock jumps (the
// operator's wall clock does not, and Stripe would refuse a session that
// expires before Stripe's now).
func (s *system) waitSessionsCreated(t *testing.T) {
	t.Helper()
	eventually(t, chaosHealTimeout, "a checkout session for every Pending purchase", func() (bool, string) {
		var without []string
		for _, p := range s.allPurchases(t) {
			if p.Status.Phase == v1alpha1.PurchasePending && p.Status.CheckoutSessionID == "" {
				without = append(without, p.Name)
			}
		}
		return len(without) == 0, fmt.Sprintf("no session yet: %v", without)
	})
}

// allPurchases lists every Purchase of the run from the apiserver.
func (s *system) allPurchases(t *testing.T) []v1alpha1.Purchase {
	t.Helper()
	var list v1alpha1.PurchaseList
	if err := s.cluster.client.List(t.Context(), &list, client.InNamespace(s.ns)); err != nil {
		t.Fatalf("listing Purchases: %v", err)
	}
	return list.Items
}

// purchasesIn names the Purchases in a phase (one not marked yet counts as
// Pending, as in the operator's gauge).
func (s *system) purchasesIn(t *testing.T, phase v1alpha1.PurchasePhase) []string {
	t.Helper()
	var names []string
	for _, p := range s.allPurchases(t) {
		if phaseOrPending(&p) == phase {
			names = append(names, p.Name)
		}
	}
	sort.Strings(names)
	return names
}

func phaseOrPending(p *v1alpha1.Purchase) v1alpha1.PurchasePhase {
	if p.Status.Phase == "" {
		return v1alpha1.PurchasePending
	}
	return p.Status.Phase
}

// assertChaosOutcome checks the money and the purchases once everything
// healed.
func (s *system) assertChaosOutcome(t *testing.T, users []*chaosUser) {
	t.Helper()
	st := s.stripeState(t)
	purchases := map[string]*v1alpha1.Purchase{}
	for _, p := range s.allPurchases(t) {
		purchases[p.Name] = &p
	}

	// Stripe's side, by the purchase id the operator put on each object.
	sessions := map[string][]emulator.Session{}
	for _, sess := range st.Sessions {
		id := sess.Metadata["payToViewPurchaseId"]
		if id == "" {
			t.Errorf("session %s carries no purchase id: %+v", sess.ID, sess.Metadata)
			continue
		}
		sessions[id] = append(sessions[id], sess)
	}
	charges := st.PaidChargesByMetadata("payToViewPurchaseId")
	refunds := map[string][]emulator.Refund{}
	for _, rf := range st.Refunds {
		refunds[rf.PaymentIntentID] = append(refunds[rf.PaymentIntentID], rf)
	}

	for id := range sessions {
		if purchases[id] == nil {
			t.Errorf("Stripe holds sessions %v of purchase %s, which does not exist", sessionIDs(sessions[id]), id)
		}
	}
	for _, sess := range st.Sessions {
		if sess.PaymentStatus == stripePaid {
			p := purchases[sess.Metadata["payToViewPurchaseId"]]
			if p == nil || p.Status.CheckoutSessionID != sess.ID ||
				(p.Status.Phase != v1alpha1.PurchaseCompleted && p.Status.Phase != v1alpha1.PurchaseRefunded) {
				t.Errorf("session %s was paid, but its purchase is %s", sess.ID, describePurchase(p))
			}
		}
	}
	for id := range charges {
		if purchases[id] == nil {
			t.Errorf("Stripe charged %v for purchase %s, which does not exist", charges[id], id)
		}
	}
	paidEntities := map[string][]string{}
	counts := map[v1alpha1.PurchasePhase]int{}
	extraSessions := 0
	for id, p := range purchases {
		counts[p.Status.Phase]++
		ss, extra := sessionsOfPurchase(sessions[id], p.Status.CheckoutSessionID)
		switch {
		case len(ss) == 0 && p.Status.CheckoutSessionID != "":
			t.Errorf("purchase %s records session %s, which Stripe does not hold", id, p.Status.CheckoutSessionID)
		case len(ss) == 0 && len(extra) > 0:
			t.Errorf("purchase %s records no session, Stripe holds %v for it", id, sessionIDs(extra))
		}
		// A session beyond the recorded one can only come from a create
		// Stripe carried out but answered with a 5xx, saved under the
		// idempotency key (so the retry needs a new key). Its client
		// secret reached nobody: it must never be paid, and it ends with
		// its expiry.
		extraSessions += len(extra)
		for _, sess := range extra {
			if sess.PaymentStatus != "unpaid" || sess.Status != "expired" {
				t.Errorf("purchase %s records session %q, yet Stripe's session %s of it is %s/%s, want expired and unpaid",
					id, p.Status.CheckoutSessionID, sess.ID, sess.Status, sess.PaymentStatus)
			}
		}
		if c := meta.FindStatusCondition(p.Status.Conditions, "DuplicatePayment"); c != nil {
			t.Errorf("purchase %s is flagged as paid twice although every user paid once per entity: %s", id, c.Message)
		}

		cs := charges[id]
		if len(cs) > 1 {
			t.Errorf("purchase %s was charged %d times: %+v", id, len(cs), cs)
			continue
		}
		if len(cs) == 0 {
			// Never paid: the checkout ended, and nothing else.
			if p.Status.Phase != v1alpha1.PurchaseCanceled {
				t.Errorf("unpaid purchase %s is %s, want Canceled once its session expired or was superseded", id, p.Status.Phase)
			}
			for _, sess := range ss {
				if sess.Status != "expired" {
					t.Errorf("unpaid purchase %s is over but its session %s is %s", id, sess.ID, sess.Status)
				}
			}
			continue
		}
		ch := cs[0]
		paidEntities[p.Spec.UserID+"/"+p.Spec.EntityID] = append(paidEntities[p.Spec.UserID+"/"+p.Spec.EntityID], id)
		if len(ss) != 1 || ss[0].PaymentIntentID != ch.PaymentIntentID || ss[0].Status != "complete" || ss[0].PaymentStatus != stripePaid {
			t.Errorf("purchase %s: charge %s (%s) is not its session's payment: sessions %+v", id, ch.ID, ch.PaymentIntentID, ss)
		}
		if p.Status.ExternalTransactionID != ch.PaymentIntentID || p.Spec.Price.Amount != ch.Amount {
			t.Errorf("purchase %s records PaymentIntent %q for %d, Stripe charged %s for %d", id,
				p.Status.ExternalTransactionID, p.Spec.Price.Amount, ch.PaymentIntentID, ch.Amount)
		}
		switch ch.AmountRefunded {
		case 0:
			if p.Status.Phase != v1alpha1.PurchaseCompleted {
				t.Errorf("purchase %s was paid (%s) but is %s, want Completed", id, ch.PaymentIntentID, p.Status.Phase)
			}
		case ch.Amount:
			if p.Status.Phase != v1alpha1.PurchaseRefunded {
				t.Errorf("purchase %s was refunded in Stripe but is %s", id, p.Status.Phase)
			}
			rs := refunds[ch.PaymentIntentID]
			if len(rs) != 1 || rs[0].Status != "succeeded" || rs[0].Amount != ch.Amount || rs[0].ID != p.Status.StripeRefundID {
				t.Errorf("purchase %s: Stripe refunds %+v, want one succeeded refund of %d recorded as %q", id, rs, ch.Amount, p.Status.StripeRefundID)
			}
		default:
			t.Errorf("purchase %s: charge %s partly refunded (%d of %d)", id, ch.ID, ch.AmountRefunded, ch.Amount)
		}
	}
	for key, ids := range paidEntities {
		if len(ids) > 1 {
			t.Errorf("user/entity %s paid %d times (purchases %v)", key, len(ids), ids)
		}
	}

	// What each user did, against that.
	var planned, paid, refunded, abandoned, superseded int
	for _, u := range users {
		for _, cp := range u.purchases {
			planned++
			p := purchases[cp.purchaseID]
			if p == nil {
				t.Errorf("%s's purchase %s of %s does not exist", cp.user, cp.purchaseID, cp.entity)
				continue
			}
			if p.Spec.UserID != cp.user || p.Spec.EntityID != cp.entity || p.Spec.ProductRef != cp.product {
				t.Errorf("purchase %s is %s/%s/%s, the user bought %s/%s/%s", cp.purchaseID,
					p.Spec.UserID, p.Spec.ProductRef, p.Spec.EntityID, cp.user, cp.product, cp.entity)
			}
			want := v1alpha1.PurchaseCompleted
			switch cp.plan {
			case planAbandon:
				want = v1alpha1.PurchaseCanceled
				abandoned++
			case planRefund:
				want = v1alpha1.PurchaseRefunded
				refunded++
			}
			if cp.paid {
				paid++
				if len(charges[cp.purchaseID]) != 1 {
					t.Errorf("%s paid purchase %s once, Stripe holds %d paid charges for it", cp.user, cp.purchaseID, len(charges[cp.purchaseID]))
				}
			}
			if p.Status.Phase != want {
				t.Errorf("%s's purchase %s (%s) is %s, want %s", cp.user, cp.purchaseID, cp.plan, p.Status.Phase, want)
			}
			for _, other := range cp.others {
				superseded++
				if q := purchases[other]; q == nil || q.Status.Phase != v1alpha1.PurchaseCanceled {
					t.Errorf("%s's second checkout %s of %s (the other one was paid) is %v, want Canceled", cp.user, other, cp.entity, q)
				}
			}
		}
	}
	if len(charges) != paid {
		t.Errorf("Stripe holds paid charges for %d purchases, the users paid %d", len(charges), paid)
	}
	if lost := sessionCreatesAnsweredWith5xx(); extraSessions > lost {
		t.Errorf("Stripe holds %d sessions that no purchase records; at most %d session creates were carried out and answered with a 5xx",
			extraSessions, lost)
	}
	t.Logf("%d planned purchases: %d paid (%d refunded), %d abandoned, %d double clicks answered with two purchases; "+
		"%d Purchases in all (%v), %d sessions (%d not recorded by their purchase), %d webhook deliveries",
		planned, paid, refunded, abandoned, superseded, len(purchases), counts, len(st.Sessions), extraSessions, len(st.Deliveries))
}

// sessionsOfPurchase splits a purchase's sessions into the one it records
// (at most one) and the others.
func sessionsOfPurchase(ss []emulator.Session, recorded string) (own, others []emulator.Session) {
	for _, sess := range ss {
		if sess.ID == recorded {
			own = append(own, sess)
		} else {
			others = append(others, sess)
		}
	}
	return own, others
}

// sessionCreatesAnsweredWith5xx is how many session creates the faults of
// the run let Stripe carry out and then answer with a 5xx.
func sessionCreatesAnsweredWith5xx() int {
	n := 0
	for _, f := range append(initialAPIFaults(), laterAPIFaults()...) {
		if f["operation"] == "create_checkout_session" && f["after_processing"] == true {
			if status, _ := f["status"].(int); status >= 500 {
				n += f["count"].(int)
			}
		}
	}
	return n
}

// stripePaid is a paid session's payment_status.
const stripePaid = "paid"

func describePurchase(p *v1alpha1.Purchase) string {
	if p == nil {
		return "missing"
	}
	return fmt.Sprintf("%s (%s, session %q)", p.Name, p.Status.Phase, p.Status.CheckoutSessionID)
}

func sessionIDs(ss []emulator.Session) []string {
	var ids []string
	for _, s := range ss {
		ids = append(ids, s.ID+"("+s.Status+")")
	}
	return ids
}

// Metrics that must agree with the Purchases, and why these:
//
//   - paytoview_purchases{phase} counts the replica's cache at scrape time,
//     so once the cache has caught up it equals the apiserver's count on
//     every replica, whatever restarts happened.
//   - paytoview_purchase_transitions_total{from,to} is a counter of the
//     leader's watch: it starts at zero with each process and counts only
//     changes that process saw, so its total says nothing after a SIGKILL.
//     Its increase over a stretch in which one process led throughout does:
//     it must equal the phase changes the apiserver shows over that stretch.
//
// Other counters (API requests, webhook events, Stripe requests) restart at
// zero with every killed process and count attempts, not outcomes; no
// resource count determines them.
const (
	purchasesGauge     = "paytoview_purchases"
	transitionsCounter = "paytoview_purchase_transitions_total"
	gaugeAgreeTimeout  = time.Minute
)

// waitGaugesAgree waits until every serving replica's purchases gauge
// equals the apiserver's counts, and returns the leader's scrape.
func (s *system) waitGaugesAgree(t *testing.T, leader *replica) metrics {
	t.Helper()
	var leaderScrape metrics
	eventually(t, gaugeAgreeTimeout, "every replica's paytoview_purchases to match the Purchases", func() (bool, string) {
		want := map[v1alpha1.PurchasePhase]int{}
		for _, p := range s.allPurchases(t) {
			want[phaseOrPending(&p)]++
		}
		for _, r := range s.replicas {
			if !r.serving() {
				return false, r.name + " is not serving"
			}
			m, err := s.scrapeMetrics(t.Context(), r)
			if err != nil {
				return false, err.Error()
			}
			if !m.has(purchasesGauge) {
				return false, r.name + " reports no " + purchasesGauge
			}
			for _, phase := range []v1alpha1.PurchasePhase{v1alpha1.PurchasePending, v1alpha1.PurchaseCompleted,
				v1alpha1.PurchaseRefunded, v1alpha1.PurchaseCanceled, v1alpha1.PurchaseFailed} {
				if got := m.sum(purchasesGauge, map[string]string{"phase": string(phase)}); got != float64(want[phase]) {
					return false, fmt.Sprintf("%s reports %v %s purchases, the apiserver holds %d", r.name, got, phase, want[phase])
				}
			}
			if r == leader {
				leaderScrape = m
			}
		}
		return true, ""
	})
	return leaderScrape
}

// assertChaosMetrics checks the metrics after the abandoned checkouts
// ended: the gauges still agree with the Purchases, and the leader (the
// same process as when before was scraped) counted exactly the Pending to
// Canceled changes there were.
func (s *system) assertChaosMetrics(t *testing.T, leader *replica, leaderProc *process, before metrics, ended int) {
	t.Helper()
	after := s.waitGaugesAgree(t, leader)
	if now, _ := s.leader(t); now != leader {
		t.Fatalf("leadership moved from %s to %s with no fault; the transitions counter cannot be compared", leader.name, now.name)
	}
	if p, _ := leader.current(); p != leaderProc {
		t.Fatalf("%s was restarted with no fault; the transitions counter cannot be compared", leader.name)
	}
	eventually(t, gaugeAgreeTimeout, "the leader's transitions counter to match the phase changes", func() (bool, string) {
		m, err := s.scrapeMetrics(t.Context(), leader)
		if err != nil {
			return false, err.Error()
		}
		after = m
		canceled := after.sum(transitionsCounter, map[string]string{"from": "Pending", "to": "Canceled"}) -
			before.sum(transitionsCounter, map[string]string{"from": "Pending", "to": "Canceled"})
		all := after.sum(transitionsCounter, nil) - before.sum(transitionsCounter, nil)
		return canceled == float64(ended) && all == float64(ended),
			fmt.Sprintf("%s counted %v Pending->Canceled and %v changes in all, the apiserver shows %d Pending purchases Canceled",
				leader.name, canceled, all, ended)
	})
}

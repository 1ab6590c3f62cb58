package controllers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/index"
	"github.com/md-platform/paytoview-operator/internal/lifecycle"
	"github.com/md-platform/paytoview-operator/internal/naming"
	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

// The Purchase tests run the Purchase and Customer reconcilers in a real
// manager against envtest, talking to the Stripe emulator through the real
// Stripe client. Webhooks the emulator sends are verified and applied by a
// small receiver doing what the webhook server does: lifecycle.Apply* and an
// optimistically locked status patch.

const purchaseTestKey = "sk_test_purchasecontroller"

// purchaseHarness is one test's world: a namespace, a Stripe emulator, a
// webhook receiver and a manager running the reconcilers.
type purchaseHarness struct {
	t       *testing.T
	ns      string
	clock   clock.PassiveClock
	fake    *clocktesting.FakeClock // nil with the real clock
	em      *emulator.Emulator
	apiURL  string
	stripe  *stripe.Client
	faulty  *faultyStripe
	events  *eventLog
	tweak   func(*PurchaseReconciler)
	priceID string

	mu      sync.Mutex
	mgr     ctrl.Manager
	stopMgr func()
}

type harnessOptions struct {
	// realClock runs the reconciler and the emulator on the wall clock (for
	// schedule-driven tests); otherwise they share a fake clock.
	realClock bool
	// separateStripeClock gives the emulator a fake clock of its own that
	// advance does not move.
	separateStripeClock bool
	// stripeClockAhead runs the emulator on the shared fake clock plus
	// this much (Stripe's clock ahead of the operator's).
	stripeClockAhead time.Duration
	// stripeTimeout is the Stripe client's per-call timeout (default 5s).
	stripeTimeout time.Duration
	// wrap, when set, puts a fake in front of the Stripe client the
	// Purchase reconciler uses.
	wrap func(PurchaseStripe) PurchaseStripe
	// tweak adjusts the reconciler before it is set up.
	tweak func(*PurchaseReconciler)
}

func startPurchaseHarness(t *testing.T, opts harnessOptions) *purchaseHarness {
	t.Helper()
	h := &purchaseHarness{t: t, ns: testEnv.Namespace(t), events: &eventLog{}, tweak: opts.tweak}
	var now func() time.Time
	if opts.realClock {
		h.clock = clock.RealClock{}
		now = time.Now
	} else {
		// Starts at the wall clock, so it agrees with the apiserver's
		// creation and deletion timestamps until the test moves it.
		h.fake = clocktesting.NewFakeClock(time.Now())
		h.clock = h.fake
		now = h.fake.Now
		if opts.separateStripeClock {
			now = clocktesting.NewFakeClock(h.fake.Now()).Now
		}
		if ahead := opts.stripeClockAhead; ahead != 0 {
			fake := h.fake
			now = func() time.Time { return fake.Now().Add(ahead) }
		}
	}
	recv := &webhookReceiver{h: h}
	srv := httptest.NewServer(recv)
	t.Cleanup(srv.Close)
	h.em = emulator.New(emulator.Options{
		APIKey:             purchaseTestKey,
		WebhookURL:         srv.URL,
		Now:                now,
		ExpiryInterval:     50 * time.Millisecond,
		WebhookBackoff:     50 * time.Millisecond,
		WebhookMaxBackoff:  time.Second,
		WebhookMaxAttempts: 10,
	})
	t.Cleanup(h.em.Close)
	v, err := stripe.NewVerifier([]string{h.em.WebhookSecret()}, stripe.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	recv.verifier = v
	api := httptest.NewServer(h.em)
	t.Cleanup(api.Close)
	h.apiURL = api.URL
	timeout := opts.stripeTimeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	h.stripe, err = stripe.New(stripe.Config{SecretKey: purchaseTestKey, APIBase: api.URL, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	h.faulty = &faultyStripe{PurchaseStripe: h.stripe}
	if opts.wrap != nil {
		h.faulty.PurchaseStripe = opts.wrap(h.stripe)
	}
	h.priceID = h.createPrice(500, "usd")
	h.start()
	return h
}

// start runs a new manager with new reconcilers (after stop: an operator
// restart, nothing kept in memory).
func (h *purchaseHarness) start() {
	h.t.Helper()
	mgr, stop := startManager(h.t, h.ns, func(mgr ctrl.Manager) error {
		if err := index.Setup(context.Background(), mgr.GetFieldIndexer()); err != nil {
			return err
		}
		cr := &CustomerReconciler{Client: mgr.GetClient(), Stripe: h.stripe, Recorder: h.events}
		if err := cr.SetupWithManager(mgr); err != nil {
			return err
		}
		r := &PurchaseReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Stripe: h.faulty, Recorder: h.events, Clock: h.clock}
		if h.tweak != nil {
			h.tweak(r)
		}
		return r.SetupWithManager(mgr)
	})
	h.mu.Lock()
	h.mgr, h.stopMgr = mgr, stop
	h.mu.Unlock()
}

func (h *purchaseHarness) restart() {
	h.t.Helper()
	h.mu.Lock()
	stop := h.stopMgr
	h.mu.Unlock()
	stop()
	h.start()
}

func (h *purchaseHarness) manager() ctrl.Manager {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mgr
}

// advance moves the shared fake clock (reconciler and emulator) forward.
func (h *purchaseHarness) advance(d time.Duration) {
	h.t.Helper()
	if h.fake == nil {
		h.t.Fatal("advance needs the fake clock")
	}
	h.fake.Step(d)
}

// createPrice creates a one-time price in the emulator.
func (h *purchaseHarness) createPrice(amount int64, currency string) string {
	h.t.Helper()
	ctx := testContext(h.t)
	prod, err := h.stripe.CreateProduct(ctx, stripe.CreateProductParams{OwnerUID: h.ns + "-product", Name: "Video"})
	if err != nil {
		h.t.Fatalf("creating product in the emulator: %v", err)
	}
	pr, err := h.stripe.CreatePrice(ctx, stripe.CreatePriceParams{OwnerUID: h.ns + "-price", Generation: amount,
		ProductID: prod.ID, Amount: amount, Currency: currency})
	if err != nil {
		h.t.Fatalf("creating price in the emulator: %v", err)
	}
	return pr.ID
}

// newPurchase is what the API creates: spec only, a price snapshot, labels.
func (h *purchaseHarness) newPurchase(userID, entityID string, mods ...func(*v1alpha1.Purchase)) *v1alpha1.Purchase {
	p := &v1alpha1.Purchase{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: h.ns,
			Name:      naming.NewPurchaseName(),
			Labels:    naming.PurchaseLabels(userID, entityID, "video-product"),
		},
		Spec: v1alpha1.PurchaseSpec{
			ProductRef:         "video-product",
			UserID:             userID,
			EntityID:           entityID,
			EntityType:         v1alpha1.EntityTypeVideo,
			ReturnURL:          "https://example.com/purchase/complete",
			Price:              v1alpha1.Price{Amount: 500, Currency: "usd"},
			StripePriceID:      h.priceID,
			AccessDurationDays: ptr.To[int32](30),
		},
	}
	for _, m := range mods {
		m(p)
	}
	createObject(h.t, p)
	return p
}

// get reads the purchase from the apiserver (uncached).
func (h *purchaseHarness) get(p *v1alpha1.Purchase) *v1alpha1.Purchase {
	h.t.Helper()
	out := &v1alpha1.Purchase{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}}
	getObject(h.t, out)
	return out
}

// waitFor polls the purchase until cond holds.
func (h *purchaseHarness) waitFor(p *v1alpha1.Purchase, what string, cond func(*v1alpha1.Purchase) bool) *v1alpha1.Purchase {
	h.t.Helper()
	var last *v1alpha1.Purchase
	eventually(h.t, waitTimeout, func() bool {
		last = h.get(p)
		return cond(last)
	}, "purchase %s: %s; last status: %s", p.Name, what, describeStatus(&last))
	return last
}

// describeStatus renders a purchase's status for failure messages (lazily,
// through a pointer, so it shows the last value polled).
type statusString struct{ p **v1alpha1.Purchase }

func describeStatus(p **v1alpha1.Purchase) statusString { return statusString{p} }

func (s statusString) String() string {
	if s.p == nil || *s.p == nil {
		return "<none>"
	}
	st := (*s.p).Status
	var conds []string
	for _, c := range st.Conditions {
		conds = append(conds, fmt.Sprintf("%s=%s/%s(%s)", c.Type, c.Status, c.Reason, c.Message))
	}
	return fmt.Sprintf("phase=%q session=%q pi=%q refund=%q refunded=%d conds=%v", st.Phase, st.CheckoutSessionID,
		st.ExternalTransactionID, st.StripeRefundID, st.AmountRefunded, conds)
}

func condition(p *v1alpha1.Purchase, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(p.Status.Conditions, typ); c != nil {
		return *c
	}
	return metav1.Condition{}
}

func hasCondition(p *v1alpha1.Purchase, typ string, status metav1.ConditionStatus, reason string) bool {
	c := condition(p, typ)
	return c.Status == status && c.Reason == reason
}

// waitOpen waits until the checkout session is open (Ready=True).
func (h *purchaseHarness) waitOpen(p *v1alpha1.Purchase) *v1alpha1.Purchase {
	h.t.Helper()
	return h.waitFor(p, "Ready=True CheckoutSessionOpen", func(p *v1alpha1.Purchase) bool {
		return hasCondition(p, v1alpha1.ConditionReady, metav1.ConditionTrue, lifecycle.ReasonCheckoutSessionOpen)
	})
}

func (h *purchaseHarness) waitPhase(p *v1alpha1.Purchase, phase v1alpha1.PurchasePhase) *v1alpha1.Purchase {
	h.t.Helper()
	return h.waitFor(p, "phase "+string(phase), func(p *v1alpha1.Purchase) bool { return p.Status.Phase == phase })
}

func (h *purchaseHarness) waitAccess(p *v1alpha1.Purchase, status metav1.ConditionStatus, reason string) *v1alpha1.Purchase {
	h.t.Helper()
	return h.waitFor(p, "Access="+string(status)+" "+reason, func(p *v1alpha1.Purchase) bool {
		return hasCondition(p, v1alpha1.ConditionAccess, status, reason)
	})
}

// pay plays the buyer paying the purchase's session.
func (h *purchaseHarness) pay(p *v1alpha1.Purchase, mode emulator.WebhookMode) emulator.Session {
	h.t.Helper()
	s, err := h.em.Pay(p.Status.CheckoutSessionID, emulator.PayOptions{Webhook: mode})
	if err != nil {
		h.t.Fatalf("paying session %s: %v", p.Status.CheckoutSessionID, err)
	}
	return s
}

// poke does what the API does when a client polls: it sets the recheck
// annotation to now, which wakes the reconciler.
func (h *purchaseHarness) poke(p *v1alpha1.Purchase) {
	h.t.Helper()
	ctx := testContext(h.t)
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, v1alpha1.AnnotationRecheckRequested, h.clock.Now().UTC().Format(time.RFC3339Nano))
	if err := testEnv.Client.Patch(ctx, &v1alpha1.Purchase{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}},
		client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		h.t.Fatalf("setting the recheck annotation: %v", err)
	}
}

// requestRefund does what the admin API does.
func (h *purchaseHarness) requestRefund(p *v1alpha1.Purchase, reason, by string) {
	h.t.Helper()
	cur := h.get(p)
	base := cur.DeepCopy()
	cur.Spec.Refund = &v1alpha1.RefundRequest{Requested: true, Reason: reason, RequestedBy: by}
	if err := testEnv.Client.Patch(testContext(h.t), cur, client.MergeFrom(base)); err != nil {
		h.t.Fatalf("requesting refund: %v", err)
	}
}

// secret reads the purchase's client secret Secret; ok is false if absent.
func (h *purchaseHarness) secret(p *v1alpha1.Purchase) (*corev1.Secret, bool) {
	h.t.Helper()
	sec := &corev1.Secret{}
	err := testEnv.Client.Get(testContext(h.t), client.ObjectKey{Namespace: p.Namespace, Name: p.Name}, sec)
	if apierrors.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		h.t.Fatalf("reading Secret: %v", err)
	}
	return sec, true
}

// sessionsOf returns the emulator's sessions for a purchase.
func (h *purchaseHarness) sessionsOf(p *v1alpha1.Purchase) []emulator.Session {
	var out []emulator.Session
	for _, s := range h.em.State().Sessions {
		if s.ClientReferenceID == p.Name {
			out = append(out, s)
		}
	}
	return out
}

// stripeForm sends a form-encoded request to the emulator's Stripe API, as
// the Stripe dashboard would act (e.g. a partial refund).
func (h *purchaseHarness) stripeForm(path string, form url.Values) {
	h.t.Helper()
	req, err := http.NewRequestWithContext(testContext(h.t), http.MethodPost, h.apiURL+path, strings.NewReader(form.Encode()))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+purchaseTestKey)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		h.t.Fatalf("POST %s: %d %s", path, resp.StatusCode, body)
	}
}

// eventsFor returns "Type Reason" of the Events recorded for a purchase.
func (h *purchaseHarness) eventsFor(p *v1alpha1.Purchase) []recordedEvent {
	return h.events.forObject(p.Name)
}

func (h *purchaseHarness) waitEvent(p *v1alpha1.Purchase, typ, reason string) recordedEvent {
	h.t.Helper()
	var found recordedEvent
	eventually(h.t, waitTimeout, func() bool {
		for _, e := range h.eventsFor(p) {
			if e.Type == typ && e.Reason == reason {
				found = e
				return true
			}
		}
		return false
	}, "event %s %s on %s; got %v", typ, reason, p.Name, h.eventsFor(p))
	return found
}

func (h *purchaseHarness) countEvents(p *v1alpha1.Purchase, reason string) int {
	n := 0
	for _, e := range h.eventsFor(p) {
		if e.Reason == reason {
			n++
		}
	}
	return n
}

// waitWebhooks waits until the emulator has no delivery in flight.
func (h *purchaseHarness) waitWebhooks() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := h.em.WaitForWebhooks(ctx); err != nil {
		h.t.Fatalf("waiting for webhook deliveries: %v", err)
	}
}

// recordedEvent is one Kubernetes Event a reconciler recorded.
type recordedEvent struct {
	Object, Type, Reason, Note string
}

// eventLog is an events.EventRecorder that keeps what was recorded.
type eventLog struct {
	mu    sync.Mutex
	items []recordedEvent
}

func (l *eventLog) Eventf(regarding runtime.Object, _ runtime.Object, eventtype, reason, _, note string, args ...any) {
	name := ""
	if o, ok := regarding.(client.Object); ok {
		name = o.GetName()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.items = append(l.items, recordedEvent{Object: name, Type: eventtype, Reason: reason, Note: fmt.Sprintf(note, args...)})
}

func (l *eventLog) forObject(name string) []recordedEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []recordedEvent
	for _, e := range l.items {
		if e.Object == name {
			out = append(out, e)
		}
	}
	return out
}

func (l *eventLog) all() []recordedEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]recordedEvent(nil), l.items...)
}

// errCrash stands for the operator dying right after Stripe answered.
var errCrash = errors.New("operator crashed after the Stripe call returned")

// faultyStripe wraps the real client: it counts calls and can lose the
// answer of a successful session create, as a crash before the status
// write would.
type faultyStripe struct {
	PurchaseStripe

	mu                 sync.Mutex
	loseCreateAnswers  int
	creates, sessionRd int
	expires            int
}

func (f *faultyStripe) CreateCheckoutSession(ctx context.Context, p stripe.CreateSessionParams) (stripe.Session, error) {
	s, err := f.PurchaseStripe.CreateCheckoutSession(ctx, p)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates++
	if err == nil && f.loseCreateAnswers > 0 {
		f.loseCreateAnswers--
		return stripe.Session{}, errCrash
	}
	return s, err
}

func (f *faultyStripe) GetCheckoutSession(ctx context.Context, id string) (stripe.Session, error) {
	f.mu.Lock()
	f.sessionRd++
	f.mu.Unlock()
	return f.PurchaseStripe.GetCheckoutSession(ctx, id)
}

func (f *faultyStripe) ExpireCheckoutSession(ctx context.Context, id string) (stripe.Session, error) {
	f.mu.Lock()
	f.expires++
	f.mu.Unlock()
	return f.PurchaseStripe.ExpireCheckoutSession(ctx, id)
}

func (f *faultyStripe) counts() (creates, sessionReads, expires int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.creates, f.sessionRd, f.expires
}

// webhookReceiver verifies the emulator's webhooks and applies them to
// Purchases the way the webhook server does: find the purchase by our
// metadata or by PaymentIntent, apply the lifecycle function, patch status
// with an optimistic lock, retry on conflict; 5xx when it cannot, so the
// emulator redelivers.
type webhookReceiver struct {
	h        *purchaseHarness
	verifier *stripe.Verifier

	mu      sync.Mutex
	applied []string
}

func (w *webhookReceiver) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	ev, err := w.verifier.Verify(body, r.Header.Get(stripe.SignatureHeader))
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	var (
		name  string
		pi    string
		apply func(*v1alpha1.Purchase, time.Time) (lifecycle.Result, error)
	)
	switch ev.Type {
	case stripe.EventCheckoutSessionCompleted, stripe.EventCheckoutSessionAsyncPaymentSucceeded,
		stripe.EventCheckoutSessionAsyncPaymentFailed, stripe.EventCheckoutSessionExpired:
		s, err := stripe.SessionFromEvent(ev)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		name = s.Metadata[stripe.MetaPurchaseID]
		apply = func(p *v1alpha1.Purchase, now time.Time) (lifecycle.Result, error) {
			return lifecycle.ApplySession(p, lifecycle.SessionEvent(ev.Type), s, now)
		}
	case stripe.EventChargeRefunded:
		c, err := stripe.ChargeFromEvent(ev)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		name, pi = c.Metadata[stripe.MetaPurchaseID], c.PaymentIntentID
		apply = func(p *v1alpha1.Purchase, now time.Time) (lifecycle.Result, error) {
			return lifecycle.ApplyCharge(p, c, now)
		}
	case stripe.EventChargeRefundUpdated:
		re, err := stripe.RefundFromEvent(ev)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		name, pi = re.Metadata[stripe.MetaPurchaseID], re.PaymentIntentID
		apply = func(p *v1alpha1.Purchase, now time.Time) (lifecycle.Result, error) {
			return lifecycle.ApplyRefund(p, re, now)
		}
	case stripe.EventChargeDisputeCreated, stripe.EventChargeDisputeClosed:
		d, err := stripe.DisputeFromEvent(ev)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		pi = d.PaymentIntentID
		apply = func(p *v1alpha1.Purchase, now time.Time) (lifecycle.Result, error) {
			return lifecycle.ApplyDispute(p, d, now)
		}
	default:
		rw.WriteHeader(http.StatusOK)
		return
	}
	ctx := r.Context()
	if name == "" && pi != "" {
		var list v1alpha1.PurchaseList
		if err := w.h.manager().GetClient().List(ctx, &list, client.InNamespace(w.h.ns),
			client.MatchingFields{index.PurchaseByPaymentIntent: pi}); err != nil || len(list.Items) == 0 {
			// Not in the cache yet: let the emulator redeliver.
			http.Error(rw, fmt.Sprintf("no purchase for payment intent %s (%v)", pi, err), http.StatusServiceUnavailable)
			return
		}
		name = list.Items[0].Name
	}
	if name == "" {
		rw.WriteHeader(http.StatusOK)
		return
	}
	for attempt := 0; attempt < 20; attempt++ {
		p := &v1alpha1.Purchase{}
		if err := testEnv.Client.Get(ctx, client.ObjectKey{Namespace: w.h.ns, Name: name}, p); err != nil {
			if apierrors.IsNotFound(err) {
				rw.WriteHeader(http.StatusOK)
				return
			}
			http.Error(rw, err.Error(), http.StatusServiceUnavailable)
			return
		}
		base := p.DeepCopy()
		res, err := apply(p, w.h.clock.Now())
		if err != nil {
			w.note(string(ev.Type) + " rejected: " + err.Error())
			rw.WriteHeader(http.StatusOK)
			return
		}
		if !res.Changed {
			w.note(string(ev.Type) + " no-op")
			rw.WriteHeader(http.StatusOK)
			return
		}
		err = testEnv.Client.Status().Patch(ctx, p, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			http.Error(rw, err.Error(), http.StatusServiceUnavailable)
			return
		}
		for _, e := range res.Events {
			w.h.events.Eventf(p, nil, e.Type, e.Reason, "Webhook", "%s", e.Message)
		}
		w.note(string(ev.Type) + " applied")
		rw.WriteHeader(http.StatusOK)
		return
	}
	http.Error(rw, "too many conflicts", http.StatusServiceUnavailable)
}

func (w *webhookReceiver) note(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.applied = append(w.applied, s)
}

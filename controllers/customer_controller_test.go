package controllers

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/naming"
	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

// fakeCustomerStripe is a CustomerStripe whose answer each test chooses.
type fakeCustomerStripe struct {
	createCustomer func(stripe.CreateCustomerParams) (stripe.Customer, error)
}

func (f *fakeCustomerStripe) CreateCustomer(_ context.Context, p stripe.CreateCustomerParams) (stripe.Customer, error) {
	if f.createCustomer == nil {
		return stripe.Customer{}, errUnexpectedCall
	}
	return f.createCustomer(p)
}

func newTestCustomer(ns, userID, email string) *v1alpha1.Customer {
	return &v1alpha1.Customer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: naming.CustomerName(userID)},
		Spec:       v1alpha1.CustomerSpec{UserID: userID, Email: email},
	}
}

func TestCustomer_CreatedOnceAfterStripeRecovers(t *testing.T) {
	ns := testEnv.Namespace(t)
	c := newTestCustomer(ns, "auth0|user-1", "user1@example.com")
	createObject(t, c)

	var calls []stripe.CreateCustomerParams
	answer := stripeUnavailable(0)
	fake := &fakeCustomerStripe{createCustomer: func(p stripe.CreateCustomerParams) (stripe.Customer, error) {
		calls = append(calls, p)
		if answer != nil {
			return stripe.Customer{}, answer
		}
		return stripe.Customer{ID: "cus_1"}, nil
	}}
	rec := events.NewFakeRecorder(100)
	r := &CustomerReconciler{Client: testEnv.Client, Stripe: fake, Recorder: rec}

	if _, err := reconcileOnce(t, r, c); !stripe.IsRetryable(err) {
		t.Fatalf("reconcile during an outage = %v, want the retryable error (backoff)", err)
	}
	getObject(t, c)
	if ready := conditionReady(c.Status.Conditions); ready.Status != metav1.ConditionFalse || ready.Reason != CustomerReasonStripeUnavailable {
		t.Fatalf("Ready = %+v, want False/%s", ready, CustomerReasonStripeUnavailable)
	}

	answer = nil
	for i := range 2 {
		if _, err := reconcileOnce(t, r, c); err != nil {
			t.Fatalf("reconcile %d: %v", i, err)
		}
	}
	getObject(t, c)
	if c.Status.StripeCustomerID != "cus_1" {
		t.Fatalf("stripeCustomerId = %q, want cus_1", c.Status.StripeCustomerID)
	}
	if ready := conditionReady(c.Status.Conditions); ready.Status != metav1.ConditionTrue || ready.Reason != CustomerReasonCreated {
		t.Fatalf("Ready = %+v, want True/%s", ready, CustomerReasonCreated)
	}
	if c.Status.ObservedGeneration != c.Generation {
		t.Errorf("observedGeneration = %d, want %d", c.Status.ObservedGeneration, c.Generation)
	}
	// Two calls: the failed one and the one that created it; none once
	// status had the id.
	if len(calls) != 2 {
		t.Fatalf("CreateCustomer called %d times, want 2", len(calls))
	}
	for _, p := range calls {
		// The same owner on both calls: the retry must be replayed by
		// Stripe, never create a second customer.
		if p.OwnerUID != string(c.UID)+"@1" || p.UserID != "auth0|user-1" || p.Email != "user1@example.com" {
			t.Errorf("CreateCustomer(%+v), want owner %s@1, the user id and email", p, c.UID)
		}
	}
	if evs := recordedEvents(rec); len(evs) != 2 {
		t.Errorf("events %q, want 2: one for the outage, one for the creation", evs)
	}
}

func TestCustomer_RejectionIsRetriedLaterNotAtOnce(t *testing.T) {
	ns := testEnv.Namespace(t)
	c := newTestCustomer(ns, "user-2", "")
	createObject(t, c)
	reject := true
	var keys []string
	fake := &fakeCustomerStripe{createCustomer: func(p stripe.CreateCustomerParams) (stripe.Customer, error) {
		keys = append(keys, p.OwnerUID)
		if reject {
			return stripe.Customer{}, stripeInvalid("Invalid email address: x")
		}
		return stripe.Customer{ID: "cus_after_fix"}, nil
	}}
	r := &CustomerReconciler{Client: testEnv.Client, Stripe: fake, Recorder: events.NewFakeRecorder(10)}
	res, err := reconcileOnce(t, r, c)
	if err != nil || res.RequeueAfter != customerRejectedRetry {
		t.Fatalf("reconcile = %+v, %v; want no error and a retry after %s", res, err, customerRejectedRetry)
	}
	getObject(t, c)
	ready := conditionReady(c.Status.Conditions)
	if ready.Reason != CustomerReasonStripeRejected || ready.Message != "Invalid email address: x" {
		t.Fatalf("Ready = %+v, want %s with Stripe's message", ready, CustomerReasonStripeRejected)
	}

	// The user fixes their email: the retry is a new request to Stripe, not
	// a replay of the rejected one under the same idempotency key.
	c.Spec.Email = "fixed@example.com"
	if err := testEnv.Client.Update(testContext(t), c); err != nil {
		t.Fatal(err)
	}
	reject = false
	if _, err := reconcileOnce(t, r, c); err != nil {
		t.Fatalf("reconcile after the fix: %v", err)
	}
	getObject(t, c)
	if c.Status.StripeCustomerID != "cus_after_fix" {
		t.Fatalf("stripeCustomerId = %q after the fix, want cus_after_fix", c.Status.StripeCustomerID)
	}
	if len(keys) != 2 || keys[0] == keys[1] {
		t.Fatalf("idempotency owners %q: want two different ones, one per spec generation", keys)
	}
}

func TestCustomer_OneStripeCustomerAcrossLostAnswersAndRestarts(t *testing.T) {
	ns := testEnv.Namespace(t)
	em, sc := newEmulatedStripe(t)
	start := func() (stop func()) {
		_, stop = startManager(t, ns, func(mgr ctrl.Manager) error {
			return (&CustomerReconciler{
				Client:   mgr.GetClient(),
				Stripe:   sc,
				Recorder: mgr.GetEventRecorder("paytoview-operator"),
			}).SetupWithManager(mgr)
		})
		return stop
	}
	// Stripe creates the customer but its answer is lost: the retry must get
	// the same customer back through the idempotency key, not a second one.
	if _, err := em.AddFault(emulator.Fault{Operation: stripe.OpCreateCustomer, Status: 502, Proxy: true, AfterProcessing: true, Count: 1}); err != nil {
		t.Fatalf("adding fault: %v", err)
	}
	stop := start()
	c := newTestCustomer(ns, "google-oauth2|1234567890", "viewer@example.com")
	createObject(t, c)
	eventually(t, waitTimeout, func() bool {
		getObject(t, c)
		ready := conditionReady(c.Status.Conditions)
		return ready.Status == metav1.ConditionTrue && ready.Reason == CustomerReasonCreated
	}, "Customer %s did not become Ready", c.Name)

	customers := em.State().Customers
	if len(customers) != 1 {
		t.Fatalf("%d Stripe customers, want 1", len(customers))
	}
	if cus := customers[0]; cus.ID != c.Status.StripeCustomerID || cus.Metadata[stripe.MetaUserID] != "google-oauth2|1234567890" || cus.Email != "viewer@example.com" {
		t.Errorf("Stripe customer = %+v, want id %s with the user id in metadata and the email", cus, c.Status.StripeCustomerID)
	}

	// A restarted operator reconciles every Customer again; a spec change
	// makes sure this one was looked at after the restart.
	stop()
	start()
	c.Spec.Email = "new-address@example.com"
	if err := testEnv.Client.Update(testContext(t), c); err != nil {
		t.Fatalf("updating Customer: %v", err)
	}
	eventually(t, waitTimeout, func() bool {
		getObject(t, c)
		return c.Status.ObservedGeneration == c.Generation
	}, "the restarted controller did not reconcile Customer %s", c.Name)
	if n := len(em.State().Customers); n != 1 {
		t.Fatalf("%d Stripe customers after a restart, want still 1", n)
	}
}

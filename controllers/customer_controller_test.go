package controllers

import (
	"context"
	"errors"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/naming"
	"github.com/md-platform/paytoview-operator/internal/stripe"
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
	if ready := readyCondition(c.Status.Conditions); ready.Status != metav1.ConditionFalse || ready.Reason != CustomerReasonStripeUnavailable {
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
	if ready := readyCondition(c.Status.Conditions); ready.Status != metav1.ConditionTrue || ready.Reason != CustomerReasonCreated {
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
		if p.OwnerUID != string(c.UID) || p.UserID != "auth0|user-1" || p.Email != "user1@example.com" {
			t.Errorf("CreateCustomer(%+v), want owner %s, the user id and email", p, c.UID)
		}
	}
	if evs := recordedEvents(rec); len(evs) != 2 {
		t.Errorf("events %q, want 2: one for the outage, one for the creation", evs)
	}
}

func TestCustomer_RejectionIsTerminal(t *testing.T) {
	ns := testEnv.Namespace(t)
	c := newTestCustomer(ns, "user-2", "")
	createObject(t, c)
	fake := &fakeCustomerStripe{createCustomer: func(stripe.CreateCustomerParams) (stripe.Customer, error) {
		return stripe.Customer{}, stripeInvalid("Invalid email address: x")
	}}
	r := &CustomerReconciler{Client: testEnv.Client, Stripe: fake, Recorder: events.NewFakeRecorder(10)}
	if _, err := reconcileOnce(t, r, c); !errors.Is(err, reconcile.TerminalError(nil)) {
		t.Fatalf("reconcile = %v, want a terminal error", err)
	}
	getObject(t, c)
	ready := readyCondition(c.Status.Conditions)
	if ready.Reason != CustomerReasonStripeRejected || ready.Message != "Invalid email address: x" {
		t.Fatalf("Ready = %+v, want %s with Stripe's message", ready, CustomerReasonStripeRejected)
	}
}

package controllers

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/stripe"
)

// Reasons of a Customer's Ready condition.
const (
	// CustomerReasonCreated: the Stripe customer exists; its id is in
	// status.stripeCustomerId.
	CustomerReasonCreated = "CustomerCreated"
	// CustomerReasonStripeUnavailable: Stripe did not answer or failed; the
	// operator retries with backoff.
	CustomerReasonStripeUnavailable = "StripeUnavailable"
	// CustomerReasonStripeRejected: Stripe refused to create the customer;
	// the condition message is Stripe's.
	CustomerReasonStripeRejected = "StripeRejected"
)

// CustomerStripe is the part of the Stripe client the Customer controller
// uses; *stripe.Client implements it.
type CustomerStripe interface {
	CreateCustomer(ctx context.Context, params stripe.CreateCustomerParams) (stripe.Customer, error)
}

// CustomerReconciler creates one Stripe customer per Customer resource, that
// is per user, and records its id. It never searches Stripe for customers:
// the id in status, and the idempotency key derived from the Customer's UID
// until status holds it, are what keep a user at one Stripe customer.
type CustomerReconciler struct {
	Client   client.Client
	Stripe   CustomerStripe
	Recorder events.EventRecorder
	// Workers is how many Customers are reconciled at once; 0 means 1.
	Workers int
}

// +kubebuilder:rbac:groups=paytoview.md-platform.io,resources=customers,verbs=get;list;watch
// +kubebuilder:rbac:groups=paytoview.md-platform.io,resources=customers/status,verbs=patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SetupWithManager registers the controller. Its own status writes do not
// bump metadata.generation, so they do not wake it.
func (r *CustomerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.Customer{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Named("customer").
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Complete(r)
}

// customerRejectedRetry is how long a Customer that Stripe rejected waits
// before the operator asks Stripe again.
const customerRejectedRetry = time.Hour

// Reconcile makes sure the Customer has a Stripe customer.
func (r *CustomerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, reterr error) {
	customer := &v1alpha1.Customer{}
	if err := r.Client.Get(ctx, req.NamespacedName, customer); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !customer.DeletionTimestamp.IsZero() {
		// Nothing to clean up: the Stripe customer keeps the user's payment
		// history, which Stripe and bookkeeping need after the resource goes.
		return ctrl.Result{}, nil
	}

	base := customer.DeepCopy()
	defer func() {
		if equality.Semantic.DeepEqual(base.Status, customer.Status) {
			return
		}
		if err := r.Client.Status().Patch(ctx, customer, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			reterr = kerrors.NewAggregate([]error{reterr, fmt.Errorf("patching status of Customer %s: %w", req.NamespacedName, err)})
		}
	}()
	return r.reconcileStripeCustomer(ctx, customer)
}

// reconcileStripeCustomer creates the Stripe customer unless status already
// names one. A crash or a lost status write between Stripe's answer and the
// status patch is covered by the idempotency key (Customer UID): the retry
// gets the same customer back.
//
// A server error (5xx) from Stripe is different: Stripe saves it under the
// key and replays it for 24 hours, so the create moves to a new key
// (status.createAttempt), which the status patch records before any request
// uses it. Only such an answer moves the key; after a timeout or a network
// error the outcome is unknown and the same key is retried. A 5xx may still
// have created a customer; the next key then creates a second one, which no
// status, purchase or payment ever names: an orphan without charges, which
// costs nothing.
func (r *CustomerReconciler) reconcileStripeCustomer(ctx context.Context, c *v1alpha1.Customer) (ctrl.Result, error) {
	if c.Status.StripeCustomerID != "" {
		c.Status.ObservedGeneration = c.Generation
		r.setCustomerReady(c, metav1.ConditionTrue, CustomerReasonCreated,
			"Stripe customer "+c.Status.StripeCustomerID)
		return ctrl.Result{}, nil
	}

	cus, err := r.Stripe.CreateCustomer(ctx, stripe.CreateCustomerParams{
		// The generation is part of the key: a spec edit (email) after a
		// failed create must not be replayed by Stripe as a mismatch.
		OwnerUID: string(c.UID) + "@" + strconv.FormatInt(c.Generation, 10),
		Attempt:  c.Status.CreateAttempt,
		UserID:   c.Spec.UserID,
		Email:    c.Spec.Email,
	})
	if stripe.IsKeySpent(err) {
		c.Status.CreateAttempt++
	}
	switch {
	case err == nil:
		c.Status.StripeCustomerID = cus.ID
		c.Status.ObservedGeneration = c.Generation
		ctrl.LoggerFrom(ctx).Info("created stripe customer", "customer", klog.KObj(c), "stripeCustomer", cus.ID)
		r.setCustomerReady(c, metav1.ConditionTrue, CustomerReasonCreated, "Stripe customer "+cus.ID)
		return ctrl.Result{}, nil
	case stripe.IsRetryable(err):
		r.setCustomerReady(c, metav1.ConditionFalse, CustomerReasonStripeUnavailable,
			"Stripe is unavailable, retrying: "+stripe.UserMessage(err))
		return stripeRetry(ctx, fmt.Errorf("creating Stripe customer: %w", err))
	case stripe.IsTerminal(err):
		c.Status.ObservedGeneration = c.Generation
		r.setCustomerReady(c, metav1.ConditionFalse, CustomerReasonStripeRejected, stripe.UserMessage(err))
		// Retrying at once cannot help, but never retrying would lock the
		// user out for good after a transient rejection (an API key being
		// rotated, an account setting being fixed): try again later.
		ctrl.LoggerFrom(ctx).Error(err, "stripe rejected the customer; retrying later",
			"customer", klog.KObj(c), "retryAfter", customerRejectedRetry)
		return ctrl.Result{RequeueAfter: customerRejectedRetry}, nil
	default:
		return ctrl.Result{}, fmt.Errorf("creating Stripe customer: %w", err)
	}
}

// setCustomerReady sets the Ready condition and records an Event when its
// reason changes.
func (r *CustomerReconciler) setCustomerReady(c *v1alpha1.Customer, status metav1.ConditionStatus, reason, message string) {
	if !setReadyCondition(&c.Status.Conditions, c.Generation, status, reason, message) {
		return
	}
	eventType := "Normal"
	if status != metav1.ConditionTrue {
		eventType = "Warning"
	}
	r.Recorder.Eventf(c, nil, eventType, reason, eventActionReconcile, "%s", message)
}

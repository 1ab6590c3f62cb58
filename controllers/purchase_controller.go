// Package controllers holds the operator's reconcilers: Product (Stripe
// product and price), Customer (Stripe customer) and Purchase (the checkout
// and payment lifecycle).
package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/index"
	"github.com/md-platform/paytoview-operator/internal/lifecycle"
	"github.com/md-platform/paytoview-operator/internal/naming"
	"github.com/md-platform/paytoview-operator/internal/stripe"
)

// The client secret of a purchase's checkout session lives in a Secret named
// like the Purchase, owned by it, with this label and key. The API reads it
// from there to answer the buyer; it never appears in status, logs or Events.
const (
	// LabelClientSecret marks the Secrets that hold checkout client secrets,
	// so the operator's cache can be limited to them.
	LabelClientSecret = "paytoview.md-platform.io/client-secret"
	// ClientSecretKey is the Secret data key of the client secret.
	ClientSecretKey = "clientSecret"
)

// Defaults of PurchaseReconciler's tunables.
const (
	// DefaultSessionTTL is the least lifetime of a checkout session; Stripe
	// accepts 30 minutes to 24 hours.
	DefaultSessionTTL = 30 * time.Minute
	// DefaultRetentionTerminal is how long Canceled and Failed purchases are
	// kept before they are deleted.
	DefaultRetentionTerminal = 7 * 24 * time.Hour
	// DefaultPurchaseDeletionTimeout is how long a deleted Pending purchase
	// waits for Stripe to expire its session before it is let go anyway.
	DefaultPurchaseDeletionTimeout = 2 * time.Minute
	// DefaultRefundPollInterval is how often a pending refund is read back.
	DefaultRefundPollInterval = time.Minute
)

// conflictRequeueDelay is how soon a purchase whose status write lost an
// optimistic-lock race, or whose cached copy was stale, is reconciled again.
const conflictRequeueDelay = 100 * time.Millisecond

// stale reports whether p is older than the Purchase in the apiserver.
func (r *PurchaseReconciler) stale(ctx context.Context, p *v1alpha1.Purchase) (bool, error) {
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	latest := &v1alpha1.Purchase{}
	if err := reader.Get(ctx, client.ObjectKeyFromObject(p), latest); err != nil {
		return false, fmt.Errorf("reading Purchase %s before creating its session: %w", klog.KObj(p), err)
	}
	return latest.ResourceVersion != p.ResourceVersion, nil
}

// A checkout session is created with an expires_at sessionCreateWindow
// beyond its lifetime (SessionTTL). The persisted expires_at (and with it
// the idempotency key) is reused by retries of the create only while it is
// at least sessionReuseMargin beyond the lifetime from now: within that
// window a retry is byte-identical and replays Stripe's first answer (crash
// safety). After it, a retry asks for a new session with a new expires_at,
// because Stripe rejects an expires_at less than 30 minutes ahead of its
// own clock, and latency or a lagging clock here must not bring a retry
// close to that bound.
const (
	sessionCreateWindow = 3 * time.Minute
	sessionReuseMargin  = time.Minute
	// firstExpiryWindow is how long after its creation a purchase's first
	// create uses the expires_at derived from the creation time (see
	// firstExpiry); a later first create stores a fresh one before the call,
	// so its retries keep a full window to replay it.
	firstExpiryWindow = time.Minute
)

// Event reasons of the Purchase controller that are not lifecycle's.
const (
	eventReasonCustomerCreated        = "CustomerCreated"
	eventReasonRefundRequested        = "RefundRequested"
	eventReasonDuplicatePayment       = "DuplicatePayment"
	eventReasonConflictingPayment     = "ConflictingPayment"
	eventReasonSessionExpireAbandoned = "SessionExpiryAbandoned"
	eventReasonPaidAfterDeletion      = "PaidBeforeDeletion"
	eventReasonRetentionExpired       = "RetentionExpired"
)

// Stripe's refund metadata keys set by the operator (beyond the purchase id).
const (
	refundMetaReason      = "reason"
	refundMetaRequestedBy = "requestedBy"
)

// PurchaseStripe is the part of the Stripe client the Purchase controller
// uses; *stripe.Client implements it.
type PurchaseStripe interface {
	CreateCheckoutSession(ctx context.Context, params stripe.CreateSessionParams) (stripe.Session, error)
	GetCheckoutSession(ctx context.Context, id string) (stripe.Session, error)
	ExpireCheckoutSession(ctx context.Context, id string) (stripe.Session, error)
	CreateRefund(ctx context.Context, params stripe.CreateRefundParams) (stripe.Refund, error)
	GetRefund(ctx context.Context, id string) (stripe.Refund, error)
	GetPaymentIntent(ctx context.Context, id string) (stripe.PaymentIntent, error)
}

// PurchaseReconciler runs the purchase lifecycle: it gets the buyer a Stripe
// customer, opens the checkout session, heals missed webhooks by reading the
// session back, supersedes duplicate checkouts, refunds on request, ends
// access at expiry and deletes abandoned purchases. What Stripe reports is
// applied with the lifecycle package, the same code the webhook receiver
// uses.
type PurchaseReconciler struct {
	// Client should read from the manager's cache (field indexes of
	// internal/index are required).
	Client client.Client
	// APIReader reads from the apiserver, not the cache (mgr.GetAPIReader()):
	// a Purchase is read through it right before its session is created in
	// Stripe. Nil falls back to Client.
	APIReader client.Reader
	Stripe    PurchaseStripe
	Recorder  events.EventRecorder
	// Clock is the time source; nil means the wall clock.
	Clock clock.PassiveClock

	// Workers is how many purchases are reconciled at once (never the same
	// one twice at once); a reconcile waits on Stripe, so one worker would
	// bound the whole operator by Stripe's latency. 0 means 1.
	Workers int
	// SessionTTL is the least lifetime of a checkout session
	// (DefaultSessionTTL when 0); sessions are created with up to three
	// minutes more, and never more than 24 hours.
	SessionTTL time.Duration
	// RetentionTerminal is how long Canceled and Failed purchases are kept
	// (DefaultRetentionTerminal when 0; negative keeps them forever).
	RetentionTerminal time.Duration
	// HealingSchedule are the times after creation at which a Pending
	// purchase's session is read from Stripe in case a webhook was lost
	// (lifecycle.DefaultSchedule's when empty).
	HealingSchedule []time.Duration
	// HealingInterval is how often the session is read after the last
	// HealingSchedule time, until its expiry plus SessionExpiryMargin.
	HealingInterval time.Duration
	// SessionExpiryMargin is how long after its expiry a session still
	// open in Stripe is expired by the operator.
	SessionExpiryMargin time.Duration
	// RecheckMinInterval is the least time between two reads of a session
	// asked for with the recheck annotation.
	RecheckMinInterval time.Duration
	// DeletionTimeout is how long deletion waits for Stripe to expire an
	// open session (DefaultPurchaseDeletionTimeout when 0).
	DeletionTimeout time.Duration
	// RefundPollInterval is how often a pending refund is read back
	// (DefaultRefundPollInterval when 0).
	RefundPollInterval time.Duration
}

// +kubebuilder:rbac:groups=paytoview.md-platform.io,resources=purchases,verbs=get;list;watch;patch;delete
// +kubebuilder:rbac:groups=paytoview.md-platform.io,resources=purchases/status,verbs=get;patch
// +kubebuilder:rbac:groups=paytoview.md-platform.io,resources=purchases/finalizers,verbs=update
// +kubebuilder:rbac:groups=paytoview.md-platform.io,resources=customers,verbs=get;list;watch;create
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SetupWithManager registers the controller. It wakes for new purchases,
// spec changes (a refund request), deletion, the recheck annotation, and
// phase changes made by the webhook receiver, but not for its own
// condition-only writes. A purchase that becomes Completed wakes the Pending
// purchases of the same user and entity (to supersede them); a Customer
// that gets its Stripe id wakes the purchases waiting for it; a deleted
// client-secret Secret wakes its purchase.
func (r *PurchaseReconciler) SetupWithManager(mgr ctrl.Manager) error {
	setPurchasePhaseSource(mgr.GetCache())
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.Purchase{}, builder.WithPredicates(purchaseChanged())).
		Owns(&corev1.Secret{}, builder.WithPredicates(predicate.Funcs{
			CreateFunc:  func(event.CreateEvent) bool { return false },
			UpdateFunc:  func(event.UpdateEvent) bool { return false },
			DeleteFunc:  func(event.DeleteEvent) bool { return true },
			GenericFunc: func(event.GenericEvent) bool { return false },
		})).
		Watches(&v1alpha1.Customer{}, handler.EnqueueRequestsFromMapFunc(r.purchasesWaitingForCustomer)).
		Watches(&v1alpha1.Purchase{}, handler.EnqueueRequestsFromMapFunc(r.pendingSiblings),
			builder.WithPredicates(becameCompleted())).
		Watches(&v1alpha1.Purchase{}, countTransitions()).
		Named("purchase").
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Complete(r)
}

// purchaseScope is one reconcile of one purchase: the object, the status as
// last persisted, the time, and the Events to record once the status that
// explains them is saved.
type purchaseScope struct {
	p       *v1alpha1.Purchase
	base    *v1alpha1.Purchase
	now     time.Time
	events  []lifecycle.Event
	deleted bool
	// sessionCreated is set when this reconcile created the session and
	// wrote its Secret (which the cache may not show yet).
	sessionCreated bool
}

func (s *purchaseScope) apply(res lifecycle.Result) {
	s.events = append(s.events, res.Events...)
}

func (s *purchaseScope) event(typ, reason, format string, args ...any) {
	s.events = append(s.events, lifecycle.Event{Type: typ, Reason: reason, Message: fmt.Sprintf(format, args...)})
}

// metaNow is now as Kubernetes stores it (seconds), so that a status
// computed twice at the same second compares equal.
func (s *purchaseScope) metaNow() *metav1.Time {
	t := metav1.NewTime(s.now.UTC().Truncate(time.Second))
	return &t
}

// Reconcile moves one purchase along its lifecycle.
func (r *PurchaseReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	p := &v1alpha1.Purchase{}
	if err := r.Client.Get(ctx, req.NamespacedName, p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	s := &purchaseScope{p: p, base: p.DeepCopy(), now: r.clock().Now()}
	defer func() {
		if retErr != nil {
			purchaseReconcileErrors.WithLabelValues(errorReason(retErr)).Inc()
		}
	}()

	if !p.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, s)
	}
	if err := r.ensureFinalizer(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	defer func() {
		if s.deleted {
			return
		}
		err := r.commit(ctx, s)
		switch {
		case err == nil:
		case apierrors.IsConflict(err) && retErr == nil:
			// The webhook receiver (or the API) wrote the purchase since it
			// was read. Nothing is lost: the next reconcile starts from the
			// newer object and derives this one's changes again.
			purchaseReconcileErrors.WithLabelValues(errorReason(err)).Inc()
			logf.FromContext(ctx).V(1).Info("status changed meanwhile; reconciling again", "purchase", klog.KObj(p))
			result = ctrl.Result{RequeueAfter: conflictRequeueDelay}
		default:
			result, retErr = ctrl.Result{}, errors.Join(retErr, err)
		}
	}()

	phases := []func(context.Context, *purchaseScope) (ctrl.Result, error){
		r.reconcilePending,
		r.reconcileCustomer,
		r.reconcileCheckoutSession,
		r.reconcileClientSecret,
		r.reconcileSupersede,
		r.reconcileHealing,
		r.reconcileDuplicatePayment,
		r.reconcileRefund,
		r.reconcileChargeCheck,
		r.reconcileAccess,
		r.reconcileRetention,
	}
	for _, phase := range phases {
		res, err := phase(ctx, s)
		if err != nil {
			return ctrl.Result{}, err
		}
		result = soonest(result, res)
		if s.deleted {
			return ctrl.Result{}, nil
		}
	}
	if next := r.schedule().NextCheck(p, s.now); !next.IsZero() {
		result = soonest(result, ctrl.Result{RequeueAfter: max(next.Sub(s.now), time.Second)})
	}
	return result, nil
}

// reconcilePending marks a purchase the operator has not seen yet as Pending.
func (r *PurchaseReconciler) reconcilePending(_ context.Context, s *purchaseScope) (ctrl.Result, error) {
	if s.p.Status.Phase != "" {
		return ctrl.Result{}, nil
	}
	s.p.Status.Phase = v1alpha1.PurchasePending
	s.setReady(metav1.ConditionFalse, lifecycle.ReasonWaitingForCustomer, "waiting for the buyer's Stripe customer")
	return ctrl.Result{}, nil
}

// reconcileCustomer makes sure the buyer has a Customer resource and copies
// its Stripe customer id. The Customer controller creates the Stripe
// customer; its status change wakes this purchase again.
func (r *PurchaseReconciler) reconcileCustomer(ctx context.Context, s *purchaseScope) (ctrl.Result, error) {
	p := s.p
	if p.Status.Phase != v1alpha1.PurchasePending || p.Status.StripeCustomerID != "" {
		return ctrl.Result{}, nil
	}
	cus := &v1alpha1.Customer{}
	key := types.NamespacedName{Namespace: p.Namespace, Name: naming.CustomerName(p.Spec.UserID)}
	err := r.Client.Get(ctx, key, cus)
	if apierrors.IsNotFound(err) {
		cus = &v1alpha1.Customer{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: key.Namespace,
				Name:      key.Name,
				Labels:    map[string]string{v1alpha1.LabelUser: naming.Hash(p.Spec.UserID)},
			},
			Spec: v1alpha1.CustomerSpec{UserID: p.Spec.UserID},
		}
		err = r.Client.Create(ctx, cus)
		switch {
		case err == nil:
			s.event(corev1.EventTypeNormal, eventReasonCustomerCreated, "created Customer %s for the buyer", key.Name)
		case apierrors.IsAlreadyExists(err):
			// Another purchase of the same user got there first.
		default:
			return ctrl.Result{}, fmt.Errorf("creating Customer %s: %w", key, err)
		}
		s.setReady(metav1.ConditionFalse, lifecycle.ReasonWaitingForCustomer, "waiting for Customer "+key.Name+" to get a Stripe customer")
		return ctrl.Result{}, nil
	}
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("reading Customer %s: %w", key, err)
	}
	if cus.Spec.UserID != p.Spec.UserID {
		return ctrl.Result{}, reconcile.TerminalError(fmt.Errorf("customer %s belongs to another user", key))
	}
	if cus.Status.StripeCustomerID == "" {
		msg := "waiting for Customer " + key.Name + " to get a Stripe customer"
		if c := meta.FindStatusCondition(cus.Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Status == metav1.ConditionFalse {
			if c.Reason == CustomerReasonStripeRejected {
				s.apply(lifecycle.Fail(p, lifecycle.ReasonStripeRejected, "Stripe rejected the buyer's customer: "+c.Message, s.now))
				purchaseReconcileErrors.WithLabelValues(errReasonStripeRejected).Inc()
				return ctrl.Result{}, nil
			}
			msg += ": " + c.Message
		}
		s.setReady(metav1.ConditionFalse, lifecycle.ReasonWaitingForCustomer, msg)
		return ctrl.Result{}, nil
	}
	p.Status.StripeCustomerID = cus.Status.StripeCustomerID
	return ctrl.Result{}, nil
}

// reconcileCheckoutSession creates the checkout session. Its expires_at is
// persisted in status before Stripe is called, and together with the
// Purchase UID keys the request's idempotency: if the operator crashes or
// the status write fails after Stripe created the session, the retry sends
// the same request and Stripe answers with the same session (and client
// secret) instead of creating a second one. Only a 5xx, which Stripe saves
// under the key and replays, moves expires_at (and so the key) on. The client
// secret is written to the Secret before status says Ready, so a reader that
// sees Ready finds it.
func (r *PurchaseReconciler) reconcileCheckoutSession(ctx context.Context, s *purchaseScope) (ctrl.Result, error) {
	p := s.p
	if p.Status.Phase != v1alpha1.PurchasePending || p.Status.CheckoutSessionID != "" || p.Status.StripeCustomerID == "" {
		return ctrl.Result{}, nil
	}
	exp := p.Status.CheckoutSessionExpiresAt
	age := s.now.Sub(p.CreationTimestamp.Time)
	switch {
	case exp == nil && age >= -firstExpiryWindow && age <= firstExpiryWindow:
		// Within a minute of creation, the first attempt's expires_at (and
		// so its idempotency key) follows from the creation time: a retry
		// after a crash computes the same one and Stripe replays the first
		// answer, so it need not be stored before the call. It is stored
		// with the session (or by the deferred commit if the call fails).
		// A clock far off the apiserver's takes the path below.
		first := r.firstExpiry(p)
		p.Status.CheckoutSessionExpiresAt = &first
	case exp == nil || exp.Sub(s.now) < r.sessionTTL()+sessionReuseMargin:
		at := metav1.NewTime(s.now.Add(r.sessionTTL() + sessionCreateWindow).UTC().Truncate(time.Second))
		p.Status.CheckoutSessionExpiresAt = &at
		s.setReady(metav1.ConditionFalse, lifecycle.ReasonCreatingCheckoutSession, "creating the checkout session")
		if err := r.commit(ctx, s); err != nil {
			return ctrl.Result{}, err
		}
	}
	// Creating in Stripe cannot be undone, so it is done only from the
	// latest Purchase: a reconcile working from a stale cached copy would
	// send an expiry (and so an idempotency key) that another reconcile
	// has since replaced, and Stripe would make a second session.
	if stale, err := r.stale(ctx, p); err != nil || stale {
		return ctrl.Result{RequeueAfter: conflictRequeueDelay}, err
	}
	sess, err := r.Stripe.CreateCheckoutSession(ctx, sessionParams(p))
	switch {
	case err == nil:
	case rejectedExpiry(err):
		// Stripe's clock is ahead of ours (or the request was slow):
		// expires_at came too close to its 30-minute minimum. Stripe
		// created nothing (a validation error), so a new expires_at, and
		// with it a new key, is safe; it is at least a second later, so
		// the retry differs even if this clock has not moved.
		next := metav1.NewTime(s.now.Add(r.sessionTTL() + sessionCreateWindow).UTC().Truncate(time.Second))
		if old := p.Status.CheckoutSessionExpiresAt.Time; !next.After(old) {
			next = metav1.NewTime(old.Add(time.Second))
		}
		p.Status.CheckoutSessionExpiresAt = &next
		s.setReady(metav1.ConditionFalse, lifecycle.ReasonStripeUnavailable, "Stripe refused the session expiry, retrying with a later one: "+stripe.UserMessage(err))
		purchaseReconcileErrors.WithLabelValues(errReasonStripeUnavailable).Inc()
		ctrl.LoggerFrom(ctx).Info("stripe refused the checkout session expiry, retrying", "expiresAt", next.UTC(), "error", err.Error())
		return ctrl.Result{RequeueAfter: r.recheckMinInterval()}, nil
	case stripe.IsIdempotencyMismatch(err):
		// The key was first used with other parameters (the buyer's Stripe
		// customer changed): a session made with them was never recorded,
		// so nobody holds its client secret. Move expires_at by a second,
		// which makes a new key, and create again.
		next := metav1.NewTime(p.Status.CheckoutSessionExpiresAt.Add(time.Second))
		p.Status.CheckoutSessionExpiresAt = &next
		return ctrl.Result{}, fmt.Errorf("creating checkout session: %w", err)
	case stripe.IsRetryable(err):
		if stripe.IsKeySpent(err) {
			// Stripe saved this 5xx under the key and would replay it
			// for 24 hours. A second later expires_at makes the next
			// key; it is persisted (the deferred commit) before a create
			// uses it, since creates go out only from the latest
			// Purchase. The 5xx may have created a session all the
			// same, and the next key then creates another one. That is
			// harmless: a checkout session can only be paid through its
			// client secret, which Stripe returns only in the create's
			// answer, and this answer was the 5xx, so that secret never
			// reached the Secret or the buyer. Only the session whose
			// answer is recorded below (its secret in the Secret, its id
			// in status) can be paid; the other stays open, unpaid, and
			// expires at its expires_at.
			next := metav1.NewTime(p.Status.CheckoutSessionExpiresAt.Add(time.Second))
			p.Status.CheckoutSessionExpiresAt = &next
		}
		s.setReady(metav1.ConditionFalse, lifecycle.ReasonStripeUnavailable, "Stripe is unavailable, retrying: "+stripe.UserMessage(err))
		return stripeRetry(ctx, fmt.Errorf("creating checkout session: %w", err))
	case stripe.IsTerminal(err):
		ctrl.LoggerFrom(ctx).Info("stripe rejected the checkout session", "error", err.Error())
		purchaseReconcileErrors.WithLabelValues(errReasonStripeRejected).Inc()
		s.apply(lifecycle.Fail(p, lifecycle.ReasonStripeRejected, stripe.UserMessage(err), s.now))
		return ctrl.Result{}, nil
	default:
		return ctrl.Result{}, fmt.Errorf("creating checkout session: %w", err)
	}
	if sess.ClientSecret == "" {
		return ctrl.Result{}, fmt.Errorf("stripe returned checkout session %s without a client secret", sess.ID)
	}
	if err := r.writeClientSecret(ctx, p, sess.ID, sess.ClientSecret); err != nil {
		return ctrl.Result{}, err
	}
	p.Status.CheckoutSessionID = sess.ID
	s.sessionCreated = true
	s.setReady(metav1.ConditionTrue, lifecycle.ReasonCheckoutSessionOpen,
		fmt.Sprintf("checkout session %s is open until %s", sess.ID, p.Status.CheckoutSessionExpiresAt.UTC().Format(time.RFC3339)))
	ctrl.LoggerFrom(ctx).V(1).Info("created checkout session", "session", sess.ID)
	return ctrl.Result{}, nil
}

// rejectedExpiry reports whether Stripe refused a session create because
// of its expires_at (too close to, or beyond, the allowed range at Stripe's
// clock). Such a refusal is not the buyer's or the product's fault: the
// create is retried with a new expiry.
func rejectedExpiry(err error) bool {
	var se *stripe.Error
	return errors.As(err, &se) && se.Param == "expires_at" && se.HTTPStatus == http.StatusBadRequest
}

// sessionParams is the create request of p's session. Every field comes
// from the immutable spec or from status, so a retry is byte-identical.
func sessionParams(p *v1alpha1.Purchase) stripe.CreateSessionParams {
	exp := p.Status.CheckoutSessionExpiresAt.Time
	return stripe.CreateSessionParams{
		OwnerUID:   string(p.UID) + "@" + strconv.FormatInt(exp.Unix(), 10),
		CustomerID: p.Status.StripeCustomerID,
		PriceID:    p.Spec.StripePriceID,
		ReturnURL:  p.Spec.ReturnURL,
		ExpiresAt:  exp,
		Metadata: stripe.PurchaseMetadata{
			PurchaseID: p.Name,
			ProductID:  p.Spec.ProductRef,
			UserID:     p.Spec.UserID,
			EntityType: naming.EntityTypeCode(p.Spec.EntityType),
			EntityID:   p.Spec.EntityID,
		},
	}
}

// writeClientSecret creates or updates the Secret holding the client secret
// of session sessionID, annotated with the session id.
func (r *PurchaseReconciler) writeClientSecret(ctx context.Context, p *v1alpha1.Purchase, sessionID, clientSecret string) error {
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}}
	err := r.Client.Get(ctx, client.ObjectKeyFromObject(sec), sec)
	switch {
	case apierrors.IsNotFound(err):
		sec.Labels = map[string]string{LabelClientSecret: "true"}
		sec.Annotations = map[string]string{v1alpha1.AnnotationCheckoutSession: sessionID}
		sec.Type = corev1.SecretTypeOpaque
		sec.Data = map[string][]byte{ClientSecretKey: []byte(clientSecret)}
		if err := controllerutil.SetControllerReference(p, sec, r.Client.Scheme()); err != nil {
			return fmt.Errorf("owning client secret Secret: %w", err)
		}
		if err := r.Client.Create(ctx, sec); err != nil {
			// AlreadyExists: the cache has not seen the Secret yet; the
			// retry reads it and updates it if needed.
			return fmt.Errorf("creating client secret Secret %s: %w", klog.KObj(sec), err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("reading client secret Secret %s: %w", klog.KObj(sec), err)
	}
	if !metav1.IsControlledBy(sec, p) {
		return reconcile.TerminalError(fmt.Errorf("secret %s exists and is not owned by the purchase; not overwriting it", klog.KObj(sec)))
	}
	if string(sec.Data[ClientSecretKey]) == clientSecret && sec.Labels[LabelClientSecret] == "true" &&
		sec.Annotations[v1alpha1.AnnotationCheckoutSession] == sessionID {
		return nil
	}
	if sec.Labels == nil {
		sec.Labels = map[string]string{}
	}
	if sec.Annotations == nil {
		sec.Annotations = map[string]string{}
	}
	sec.Labels[LabelClientSecret] = "true"
	sec.Annotations[v1alpha1.AnnotationCheckoutSession] = sessionID
	sec.Data = map[string][]byte{ClientSecretKey: []byte(clientSecret)}
	if err := r.Client.Update(ctx, sec); err != nil {
		return fmt.Errorf("updating client secret Secret %s: %w", klog.KObj(sec), err)
	}
	return nil
}

// reconcileClientSecret keeps the Secret while the session can be paid: a
// deleted Secret is written again from Stripe's replay of the create (the
// same idempotent request). Once the purchase has left Pending, the client
// secret is useless and the Secret is deleted.
func (r *PurchaseReconciler) reconcileClientSecret(ctx context.Context, s *purchaseScope) (ctrl.Result, error) {
	p := s.p
	if s.sessionCreated {
		return ctrl.Result{}, nil
	}
	sec := &corev1.Secret{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, sec)
	if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("reading client secret Secret: %w", err)
	}
	exists := err == nil && metav1.IsControlledBy(sec, p)
	switch {
	case p.Status.Phase != v1alpha1.PurchasePending:
		if exists {
			if err := r.Client.Delete(ctx, sec, client.Preconditions{UID: &sec.UID}); client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, fmt.Errorf("deleting client secret Secret: %w", err)
			}
		}
	case !exists && err != nil && readyReason(p) == lifecycle.ReasonCheckoutSessionOpen && p.Status.CheckoutSessionExpiresAt != nil:
		sess, err := r.Stripe.CreateCheckoutSession(ctx, sessionParams(p))
		if err != nil {
			if stripe.IsRetryable(err) {
				return stripeRetry(ctx, fmt.Errorf("replaying checkout session create to restore the client secret: %w", err))
			}
			ctrl.LoggerFrom(ctx).Info("cannot restore the client secret", "error", err.Error())
			return ctrl.Result{}, nil
		}
		if sess.ID != p.Status.CheckoutSessionID || sess.ClientSecret == "" {
			ctrl.LoggerFrom(ctx).Info("cannot restore the client secret: stripe no longer replays the session create", "session", p.Status.CheckoutSessionID)
			return ctrl.Result{}, nil
		}
		if err := r.writeClientSecret(ctx, p, sess.ID, sess.ClientSecret); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{}, nil
}

// reconcileSupersede cancels a Pending purchase when another purchase of the
// same entity by the same user has been paid and grants access, so nobody
// pays twice. The session is expired in Stripe first; if Stripe says it was
// paid meanwhile, the purchase is completed instead (money taken is never
// dropped) and a Warning says the user paid twice.
func (r *PurchaseReconciler) reconcileSupersede(ctx context.Context, s *purchaseScope) (ctrl.Result, error) {
	p := s.p
	if p.Status.Phase != v1alpha1.PurchasePending || readyReason(p) == lifecycle.ReasonPaymentProcessing {
		return ctrl.Result{}, nil
	}
	winner, err := r.paidSibling(ctx, p, s.now)
	if err != nil || winner == "" {
		return ctrl.Result{}, err
	}
	msg := fmt.Sprintf("superseded by purchase %s, which was paid", winner)
	if p.Status.CheckoutSessionID == "" {
		s.apply(lifecycle.Cancel(p, lifecycle.ReasonSuperseded, msg, s.now))
		return ctrl.Result{}, nil
	}
	sess, err := r.Stripe.ExpireCheckoutSession(ctx, p.Status.CheckoutSessionID)
	switch {
	case err == nil && sess.Status == stripe.SessionExpired:
		s.apply(lifecycle.Cancel(p, lifecycle.ReasonSuperseded, msg, s.now))
		return ctrl.Result{}, nil
	case err == nil:
	case stripe.IsRetryable(err):
		return stripeRetry(ctx, fmt.Errorf("expiring superseded checkout session %s: %w", p.Status.CheckoutSessionID, err))
	case stripe.IsTerminal(err):
		// No longer open: read it to learn whether it was paid.
	default:
		return ctrl.Result{}, fmt.Errorf("expiring superseded checkout session %s: %w", p.Status.CheckoutSessionID, err)
	}
	res, _, err := r.readAndApplySession(ctx, s)
	if err != nil || res.RequeueAfter > 0 {
		return res, err
	}
	if p.Status.Phase == v1alpha1.PurchasePending {
		// Still open although Stripe refused to expire it a moment ago:
		// try again shortly.
		return ctrl.Result{RequeueAfter: r.recheckMinInterval()}, nil
	}
	if p.Status.Phase == v1alpha1.PurchaseCompleted {
		// Paid after all, while the winner grants access: a duplicate.
		s.duplicatePayment(ctx, winner, "")
	}
	return ctrl.Result{}, nil
}

// duplicatePayment flags the purchase as paid while purchase other (paid by
// PaymentIntent otherPI, if known) already granted access: the
// DuplicatePayment condition, a Warning Event, and, once committed, the
// duplicate payments counter.
func (s *purchaseScope) duplicatePayment(ctx context.Context, other, otherPI string) {
	if meta.FindStatusCondition(s.p.Status.Conditions, conditionDuplicatePayment) != nil {
		return
	}
	by := ""
	if otherPI != "" {
		by = " (PaymentIntent " + otherPI + ")"
	}
	msg := fmt.Sprintf("the buyer paid twice: purchase %s%s already granted access to %s when this one was paid (PaymentIntent %s); refund one of them",
		other, by, s.p.Spec.EntityID, s.p.Status.ExternalTransactionID)
	s.setCondition(conditionDuplicatePayment, metav1.ConditionTrue, eventReasonDuplicatePayment, msg)
	s.event(corev1.EventTypeWarning, eventReasonDuplicatePayment, "%s", msg)
	ctrl.LoggerFrom(ctx).Info("duplicate payment", "other", other)
}

// paidBefore reports whether q was paid before p: the earlier completion,
// then (the same second) the earlier creation, then the smaller name.
func paidBefore(q, p *v1alpha1.Purchase) bool {
	qa, pa := q.Status.CompletedAt.Time, p.Status.CompletedAt.Time
	if !qa.Equal(pa) {
		return qa.Before(pa)
	}
	qc, pc := q.CreationTimestamp.Time, p.CreationTimestamp.Time
	if !qc.Equal(pc) {
		return qc.Before(pc)
	}
	return q.Name < p.Name
}

// conditionDuplicatePayment is set (True) on a purchase that was paid while
// another purchase of the same user and entity already granted access. It
// records that support was warned, so the warning is given once.
const conditionDuplicatePayment = "DuplicatePayment"

// reconcileDuplicatePayment warns when a purchase became Completed while
// another purchase of the same user and entity already granted access: the
// buyer paid twice (two tabs served by two replicas, or a delayed payment
// settling after a card payment). The newer of the two gets a Warning Event
// naming the other and the DuplicatePayment condition, and
// paytoview_purchase_duplicate_payments_total counts it, so support can
// refund one. Nothing is refunded automatically.
func (r *PurchaseReconciler) reconcileDuplicatePayment(ctx context.Context, s *purchaseScope) (ctrl.Result, error) {
	p := s.p
	if p.Status.Phase != v1alpha1.PurchaseCompleted || p.Status.CompletedAt == nil ||
		meta.FindStatusCondition(p.Status.Conditions, conditionDuplicatePayment) != nil {
		return ctrl.Result{}, nil
	}
	var list v1alpha1.PurchaseList
	if err := r.Client.List(ctx, &list, client.InNamespace(p.Namespace),
		client.MatchingFields{index.PurchaseByUserEntity: index.UserEntityKey(p.Spec.UserID, p.Spec.EntityID)}); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing purchases of the same user and entity: %w", err)
	}
	paidAt := p.Status.CompletedAt.Time
	for i := range list.Items {
		q := &list.Items[i]
		if q.UID == p.UID || q.Status.Phase != v1alpha1.PurchaseCompleted || q.Status.CompletedAt == nil ||
			meta.FindStatusCondition(q.Status.Conditions, conditionDuplicatePayment) != nil {
			// A purchase already flagged as a duplicate is not the
			// original of another one: each pair is flagged once.
			continue
		}
		if !paidBefore(q, p) {
			// p is the older of the two: the other one is flagged.
			continue
		}
		if granted, _ := lifecycle.Access(q, paidAt); !granted {
			continue
		}
		s.duplicatePayment(ctx, q.Name, q.Status.ExternalTransactionID)
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, nil
}

// paidSibling names another purchase of the same user and entity that
// grants access now, or "" if there is none.
func (r *PurchaseReconciler) paidSibling(ctx context.Context, p *v1alpha1.Purchase, now time.Time) (string, error) {
	var list v1alpha1.PurchaseList
	if err := r.Client.List(ctx, &list, client.InNamespace(p.Namespace),
		client.MatchingFields{index.PurchaseByUserEntity: index.UserEntityKey(p.Spec.UserID, p.Spec.EntityID)}); err != nil {
		return "", fmt.Errorf("listing purchases of the same user and entity: %w", err)
	}
	for i := range list.Items {
		q := &list.Items[i]
		if q.UID == p.UID || q.Status.Phase != v1alpha1.PurchaseCompleted {
			continue
		}
		if granted, _ := lifecycle.Access(q, now); granted {
			return q.Name, nil
		}
	}
	return "", nil
}

// reconcileHealing reads the session of a Pending purchase from Stripe when
// the schedule or a recheck request says so, and applies it exactly as the
// webhook receiver would have. A session still open well past its expiry is
// expired by the operator.
func (r *PurchaseReconciler) reconcileHealing(ctx context.Context, s *purchaseScope) (ctrl.Result, error) {
	p := s.p
	if !r.schedule().SessionCheckDue(p, s.now) {
		return ctrl.Result{}, nil
	}
	res, sess, err := r.readAndApplySession(ctx, s)
	if err != nil || p.Status.Phase != v1alpha1.PurchasePending || sess.Status != stripe.SessionOpen || !r.schedule().SessionOverdue(p, s.now) {
		return res, err
	}
	expired, err := r.Stripe.ExpireCheckoutSession(ctx, sess.ID)
	switch {
	case err == nil:
		r.applySession(ctx, s, expired, nil)
		return ctrl.Result{}, nil
	case stripe.IsRetryable(err):
		return stripeRetry(ctx, fmt.Errorf("expiring overdue checkout session %s: %w", sess.ID, err))
	default:
		// Paid or expired meanwhile: the next read (soon, the session is
		// past its schedule) tells which.
		ctrl.LoggerFrom(ctx).Info("could not expire overdue checkout session", "session", sess.ID, "error", err.Error())
		return ctrl.Result{RequeueAfter: r.recheckMinInterval()}, nil
	}
}

// readAndApplySession reads the purchase's session (and, for a completed
// one, its PaymentIntent) and applies them with lifecycle.ApplyRetrieved.
// The session is zero when it could not be read.
func (r *PurchaseReconciler) readAndApplySession(ctx context.Context, s *purchaseScope) (ctrl.Result, stripe.Session, error) {
	p := s.p
	id := p.Status.CheckoutSessionID
	sess, err := r.Stripe.GetCheckoutSession(ctx, id)
	switch {
	case err == nil:
	case stripe.IsNotFound(err):
		p.Status.LastSessionCheckAt = s.metaNow()
		s.apply(lifecycle.Cancel(p, lifecycle.ReasonSessionExpired, "checkout session "+id+" no longer exists in Stripe", s.now))
		return ctrl.Result{}, stripe.Session{}, nil
	case stripe.IsRetryable(err):
		res, err := stripeRetry(ctx, fmt.Errorf("reading checkout session %s: %w", id, err))
		return res, stripe.Session{}, err
	default:
		// Recorded as checked, so a permanent error does not loop; the
		// next scheduled read tries again.
		p.Status.LastSessionCheckAt = s.metaNow()
		ctrl.LoggerFrom(ctx).Error(err, "reading checkout session", "session", id)
		return ctrl.Result{}, stripe.Session{}, nil
	}
	var pi *stripe.PaymentIntent
	if sess.Status == stripe.SessionComplete && sess.PaymentIntentID != "" {
		got, err := r.Stripe.GetPaymentIntent(ctx, sess.PaymentIntentID)
		switch {
		case err == nil:
			pi = &got
		case stripe.IsRetryable(err):
			// The session alone is applied now; the check is not recorded,
			// so it is done again (with the intent) on the retry.
			r.applySession(ctx, s, sess, nil)
			res, err := stripeRetry(ctx, fmt.Errorf("reading payment intent %s: %w", sess.PaymentIntentID, err))
			return res, sess, err
		default:
			ctrl.LoggerFrom(ctx).Error(err, "reading payment intent", "paymentIntent", sess.PaymentIntentID)
		}
	}
	p.Status.LastSessionCheckAt = s.metaNow()
	r.applySession(ctx, s, sess, pi)
	return ctrl.Result{}, sess, nil
}

// applySession applies a session read from Stripe. An observation lifecycle
// rejects (not this purchase's, or a second payment) is logged and shown as
// a Warning, not retried: retrying gives the same answer.
func (r *PurchaseReconciler) applySession(ctx context.Context, s *purchaseScope, sess stripe.Session, pi *stripe.PaymentIntent) {
	res, err := lifecycle.ApplyRetrieved(s.p, sess, pi, s.now)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "ignoring checkout session observation", "session", sess.ID)
		if errors.Is(err, lifecycle.ErrConflictingPayment) {
			s.event(corev1.EventTypeWarning, eventReasonConflictingPayment, "%s", err.Error())
		}
		return
	}
	s.apply(res)
}

// reconcileRefund carries out spec.refund: a full refund of the
// PaymentIntent, created once (idempotency key from the Purchase UID and
// status.refundAttempt, which moves on only after a 5xx Stripe saved under
// the key), then read back until Stripe settles it. The outcome is applied
// with lifecycle.ApplyRefund, as charge.refund.updated would be.
func (r *PurchaseReconciler) reconcileRefund(ctx context.Context, s *purchaseScope) (ctrl.Result, error) {
	p := s.p
	if p.Spec.Refund == nil || !p.Spec.Refund.Requested {
		return ctrl.Result{}, nil
	}
	if p.Status.StripeRefundID != "" {
		// Read back until Stripe settles it, whatever the webhooks said
		// meanwhile: a lost charge.refund.updated must not leave a failed
		// refund looking refunded, or a succeeded one looking pending. A
		// Refunded purchase is read too: its refund can still fail.
		if lifecycle.RefundSettled(p) || (p.Status.Phase != v1alpha1.PurchaseCompleted && p.Status.Phase != v1alpha1.PurchaseRefunded) {
			return ctrl.Result{}, nil
		}
		re, err := r.Stripe.GetRefund(ctx, p.Status.StripeRefundID)
		if err != nil {
			if stripe.IsRetryable(err) {
				return stripeRetry(ctx, fmt.Errorf("reading refund %s: %w", p.Status.StripeRefundID, err))
			}
			return ctrl.Result{}, fmt.Errorf("reading refund %s: %w", p.Status.StripeRefundID, err)
		}
		return r.applyRefund(ctx, s, re)
	}
	switch p.Status.Phase {
	case v1alpha1.PurchaseRefunded:
		return ctrl.Result{}, nil
	case v1alpha1.PurchaseCompleted:
	default:
		s.setCondition(v1alpha1.ConditionRefunded, metav1.ConditionFalse, lifecycle.ReasonNotRefundable,
			fmt.Sprintf("a refund was requested but the purchase is %s: nothing was paid", p.Status.Phase))
		return ctrl.Result{}, nil
	}
	if readyCondition(p, v1alpha1.ConditionRefunded) == lifecycle.ReasonRefundRejected {
		// Stripe refused; asking again gets the same answer. A human
		// handles it in the Stripe dashboard.
		return ctrl.Result{}, nil
	}
	if p.Status.ExternalTransactionID == "" {
		s.setCondition(v1alpha1.ConditionRefunded, metav1.ConditionFalse, lifecycle.ReasonNotRefundable,
			"a refund was requested but no payment was recorded (nothing was charged)")
		return ctrl.Result{}, nil
	}
	md := map[string]string{stripe.MetaPurchaseID: p.Name}
	if v := p.Spec.Refund.Reason; v != "" {
		md[refundMetaReason] = v
	}
	if v := p.Spec.Refund.RequestedBy; v != "" {
		md[refundMetaRequestedBy] = v
	}
	re, err := r.Stripe.CreateRefund(ctx, stripe.CreateRefundParams{
		OwnerUID:        string(p.UID),
		Attempt:         p.Status.RefundAttempt,
		PaymentIntentID: p.Status.ExternalTransactionID,
		Metadata:        md,
	})
	if stripe.IsKeySpent(err) {
		// Stripe saved this 5xx under the key and would replay it for
		// 24 hours: the next create uses the next key, recorded by the
		// commit at the end of this reconcile before any request uses it.
		// If the 5xx refunded all the same, the next key cannot refund
		// twice: Stripe refuses to refund more than the charge
		// (charge_already_refunded, handled below).
		p.Status.RefundAttempt++
	}
	switch {
	case err == nil:
	case alreadyRefunded(err):
		// Someone refunded the charge already: an earlier attempt whose
		// answer was a 5xx, or a refund in the Stripe dashboard. Whether it
		// is refunded in full is the charge's to say.
		s.setCondition(lifecycle.ConditionChargeCheck, metav1.ConditionTrue, reasonChargeAlreadyRefunded,
			"Stripe says the charge is already refunded; reading the charge from Stripe")
		return ctrl.Result{}, nil
	case stripe.IsRetryable(err):
		s.setCondition(v1alpha1.ConditionRefunded, metav1.ConditionFalse, lifecycle.ReasonRefundPending,
			"Stripe is unavailable, retrying the refund: "+stripe.UserMessage(err))
		return stripeRetry(ctx, fmt.Errorf("creating refund: %w", err))
	case stripe.IsTerminal(err):
		msg := "Stripe rejected the refund: " + stripe.UserMessage(err) + "; access kept"
		s.setCondition(v1alpha1.ConditionRefunded, metav1.ConditionFalse, lifecycle.ReasonRefundRejected, msg)
		s.event(corev1.EventTypeWarning, lifecycle.ReasonRefundRejected, "%s", msg)
		purchaseReconcileErrors.WithLabelValues(errReasonStripeRejected).Inc()
		return ctrl.Result{}, nil
	default:
		return ctrl.Result{}, fmt.Errorf("creating refund: %w", err)
	}
	by := p.Spec.Refund.RequestedBy
	if by == "" {
		by = "an administrator"
	}
	// The charge.refunded webhook races this status write. Stripe's answer
	// is recorded now, re-reading the purchase on conflict, so the refund id
	// is never lost to the webhook's write.
	var result ctrl.Result
	err = r.commitRetrying(ctx, s, func() error {
		s.p.Status.StripeRefundID = re.ID
		s.event(corev1.EventTypeNormal, eventReasonRefundRequested, "refund %s of %s requested by %s", re.ID, formatPrice(&s.p.Spec.Price), by)
		var err error
		result, err = r.applyRefund(ctx, s, re)
		return err
	})
	return result, err
}

// reasonChargeAlreadyRefunded is the ChargeCheckRequested reason set when
// Stripe refused the operator's refund because the charge was refunded
// already.
const reasonChargeAlreadyRefunded = "ChargeAlreadyRefunded"

// alreadyRefunded reports whether Stripe refused a refund because nothing of
// the charge is left to refund.
func alreadyRefunded(err error) bool {
	var se *stripe.Error
	return errors.As(err, &se) && se.Code == "charge_already_refunded"
}

// reconcileChargeCheck reads the payment's charge from Stripe when lifecycle
// (or a refused refund) asked for it with the ChargeCheckRequested
// condition, because the refund events seen could not say how much is
// refunded now. The charge read is applied with
// lifecycle.ApplyCurrentCharge, which decides and removes the condition.
func (r *PurchaseReconciler) reconcileChargeCheck(ctx context.Context, s *purchaseScope) (ctrl.Result, error) {
	p := s.p
	if !lifecycle.ChargeCheckRequested(p) {
		return ctrl.Result{}, nil
	}
	if p.Status.ExternalTransactionID == "" {
		meta.RemoveStatusCondition(&p.Status.Conditions, lifecycle.ConditionChargeCheck)
		return ctrl.Result{}, nil
	}
	pi, err := r.Stripe.GetPaymentIntent(ctx, p.Status.ExternalTransactionID)
	switch {
	case err == nil:
	case stripe.IsRetryable(err):
		return stripeRetry(ctx, fmt.Errorf("reading payment intent %s to check its charge: %w", p.Status.ExternalTransactionID, err))
	default:
		return ctrl.Result{}, reconcile.TerminalError(fmt.Errorf("reading payment intent %s to check its charge: %w", p.Status.ExternalTransactionID, err))
	}
	if pi.LatestCharge == nil {
		meta.RemoveStatusCondition(&p.Status.Conditions, lifecycle.ConditionChargeCheck)
		return ctrl.Result{}, nil
	}
	ch := *pi.LatestCharge
	if ch.PaymentIntentID == "" {
		ch.PaymentIntentID = pi.ID
	}
	res, err := lifecycle.ApplyCurrentCharge(p, ch, s.now)
	if err != nil {
		return ctrl.Result{}, reconcile.TerminalError(fmt.Errorf("applying charge %s: %w", ch.ID, err))
	}
	s.apply(res)
	return ctrl.Result{}, nil
}

func (r *PurchaseReconciler) applyRefund(ctx context.Context, s *purchaseScope, re stripe.Refund) (ctrl.Result, error) {
	res, err := lifecycle.ApplyRefund(s.p, re, s.now)
	if err != nil {
		return ctrl.Result{}, reconcile.TerminalError(fmt.Errorf("applying refund %s: %w", re.ID, err))
	}
	s.apply(res)
	if !lifecycle.RefundSettled(s.p) {
		ctrl.LoggerFrom(ctx).V(1).Info("refund not settled yet", "refund", re.ID, "status", s.p.Status.StripeRefundStatus)
		return ctrl.Result{RequeueAfter: r.refundPollInterval()}, nil
	}
	return ctrl.Result{}, nil
}

// reconcileAccess brings the Access condition in line with the time: it ends
// access at expiresAt (the phase stays Completed).
func (r *PurchaseReconciler) reconcileAccess(_ context.Context, s *purchaseScope) (ctrl.Result, error) {
	s.apply(lifecycle.Refresh(s.p, s.now))
	return ctrl.Result{}, nil
}

// reconcileRetention deletes Canceled and Failed purchases once they have
// been over for RetentionTerminal, so abandoned checkouts do not pile up in
// etcd. Completed and Refunded purchases are purchase history and stay.
func (r *PurchaseReconciler) reconcileRetention(ctx context.Context, s *purchaseScope) (ctrl.Result, error) {
	ended, ok := lifecycle.EndedAt(s.p)
	if !ok || r.retention() <= 0 || s.now.Before(ended.Add(r.retention())) {
		return ctrl.Result{}, nil
	}
	if err := r.commit(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	r.Recorder.Eventf(s.p, nil, corev1.EventTypeNormal, eventReasonRetentionExpired, eventActionDelete,
		"deleting: %s since %s, retention is %s", s.p.Status.Phase, ended.UTC().Format(time.RFC3339), r.retention())
	// Deleted only as read: a purchase changed meanwhile (paid after all,
	// by a webhook on another replica) fails the precondition and is
	// looked at again instead.
	if err := r.Client.Delete(ctx, s.p, client.Preconditions{UID: &s.p.UID, ResourceVersion: &s.p.ResourceVersion}); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("deleting ended purchase: %w", err)
	}
	s.deleted = true
	ctrl.LoggerFrom(ctx).Info("deleted ended purchase", "phase", s.p.Status.Phase, "endedAt", ended)
	return ctrl.Result{}, nil
}

// reconcileDelete expires a still-open session before the Purchase goes, so
// nobody pays for a purchase that no longer exists. Stripe outages hold the
// deletion for at most DeletionTimeout; then it is let go with a Warning
// (the session still expires on its own at expires_at).
func (r *PurchaseReconciler) reconcileDelete(ctx context.Context, s *purchaseScope) (ctrl.Result, error) {
	p := s.p
	if !controllerutil.ContainsFinalizer(p, v1alpha1.PurchaseFinalizer) {
		return ctrl.Result{}, nil
	}
	if id := p.Status.CheckoutSessionID; id != "" && p.Status.Phase == v1alpha1.PurchasePending && readyReason(p) != lifecycle.ReasonPaymentProcessing {
		_, err := r.Stripe.ExpireCheckoutSession(ctx, id)
		switch {
		case err == nil:
		case stripe.IsTerminal(err):
			// Not open any more. If it was paid, someone must refund it.
			if sess, gerr := r.Stripe.GetCheckoutSession(ctx, id); gerr == nil &&
				sess.Status == stripe.SessionComplete && sess.PaymentStatus != stripe.PaymentUnpaid {
				r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, eventReasonPaidAfterDeletion, eventActionDelete,
					"checkout session %s was paid (PaymentIntent %s) before the purchase was deleted; refund it in Stripe", id, sess.PaymentIntentID)
			}
		default:
			waited := s.now.Sub(p.DeletionTimestamp.Time)
			if waited < r.deletionTimeout() {
				purchaseReconcileErrors.WithLabelValues(errorReason(err)).Inc()
				ctrl.LoggerFrom(ctx).Info("could not expire checkout session before deletion, retrying", "session", id, "error", err.Error())
				return ctrl.Result{RequeueAfter: cleanupRetryDelay(waited, r.deletionTimeout(), stripe.RetryAfter(err))}, nil
			}
			r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, eventReasonSessionExpireAbandoned, eventActionDelete,
				"could not expire checkout session %s within %s (%s); letting the purchase go, the session expires at %s",
				id, r.deletionTimeout(), stripe.UserMessage(err), p.Status.CheckoutSessionExpiresAt.UTC().Format(time.RFC3339))
		}
	}
	base := p.DeepCopy()
	controllerutil.RemoveFinalizer(p, v1alpha1.PurchaseFinalizer)
	if err := r.Client.Patch(ctx, p, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("removing finalizer: %w", err)
	}
	return ctrl.Result{}, nil
}

// ensureFinalizer adds the finalizer before anything is created in Stripe.
func (r *PurchaseReconciler) ensureFinalizer(ctx context.Context, s *purchaseScope) error {
	if controllerutil.ContainsFinalizer(s.p, v1alpha1.PurchaseFinalizer) {
		return nil
	}
	controllerutil.AddFinalizer(s.p, v1alpha1.PurchaseFinalizer)
	if err := r.Client.Patch(ctx, s.p, client.MergeFromWithOptions(s.base, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("adding finalizer: %w", err)
	}
	s.base = s.p.DeepCopy()
	return nil
}

// commit persists the status if it changed (optimistic lock: a concurrent
// writer, such as the webhook receiver, makes it fail and the next reconcile
// starts from the stored object), then records the Events that explain it.
func (r *PurchaseReconciler) commit(ctx context.Context, s *purchaseScope) error {
	s.p.Status.ObservedGeneration = s.p.Generation
	if !equality.Semantic.DeepEqual(s.base.Status, s.p.Status) {
		if err := r.Client.Status().Patch(ctx, s.p, client.MergeFromWithOptions(s.base, client.MergeFromWithOptimisticLock{})); err != nil {
			return fmt.Errorf("patching status of Purchase %s: %w", klog.KObj(s.p), err)
		}
	}
	if s.base.Status.CheckoutSessionID == "" && s.p.Status.CheckoutSessionID != "" {
		// Observed once the session is on record: a reconcile that lost the
		// write and replays the same session must not count it again.
		purchaseSessionReady.Observe(max(s.now.Sub(s.p.CreationTimestamp.Time), 0).Seconds())
	}
	s.base = s.p.DeepCopy()
	for _, e := range s.events {
		r.Recorder.Eventf(s.p, nil, e.Type, e.Reason, eventActionReconcile, "%s", e.Message)
		if e.Reason == eventReasonDuplicatePayment {
			// Counted once its condition is persisted, so a retried
			// reconcile does not count it twice.
			purchaseDuplicatePayments.Inc()
		}
	}
	s.events = nil
	return nil
}

// commitRetrying applies mutate to the purchase and commits it; on a
// conflict it re-reads the purchase and applies mutate again (what earlier
// phases changed is then dropped; the next reconcile derives it again). It
// is for results of Stripe calls that must not be lost.
func (r *PurchaseReconciler) commitRetrying(ctx context.Context, s *purchaseScope, mutate func() error) error {
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		events := len(s.events)
		if err := mutate(); err != nil {
			return err
		}
		err := r.commit(ctx, s)
		if !apierrors.IsConflict(err) {
			return err
		}
		s.events = s.events[:events]
		// Read from the apiserver: the cache may not show the write that
		// conflicted yet, and every retry from it would conflict again
		// until the retries run out and Stripe's answer is lost.
		reader := r.APIReader
		if reader == nil {
			reader = r.Client
		}
		latest := &v1alpha1.Purchase{}
		if gerr := reader.Get(ctx, client.ObjectKeyFromObject(s.p), latest); gerr != nil {
			return gerr
		}
		*s.p = *latest
		s.base = latest.DeepCopy()
		return err
	})
}

func (s *purchaseScope) setReady(status metav1.ConditionStatus, reason, message string) {
	s.setCondition(v1alpha1.ConditionReady, status, reason, message)
}

func (s *purchaseScope) setCondition(typ string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&s.p.Status.Conditions, metav1.Condition{
		Type:               typ,
		Status:             status,
		Reason:             reason,
		Message:            message,
		ObservedGeneration: s.p.Generation,
		LastTransitionTime: *s.metaNow(),
	})
}

func readyReason(p *v1alpha1.Purchase) string {
	return readyCondition(p, v1alpha1.ConditionReady)
}

// readyCondition returns the reason of condition typ, or "".
func readyCondition(p *v1alpha1.Purchase, typ string) string {
	if c := meta.FindStatusCondition(p.Status.Conditions, typ); c != nil {
		return c.Reason
	}
	return ""
}

// soonest merges two results: the earlier requeue wins.
func soonest(a, b ctrl.Result) ctrl.Result {
	switch {
	case a.RequeueAfter == 0:
		return b
	case b.RequeueAfter == 0 || a.RequeueAfter <= b.RequeueAfter:
		return a
	}
	return b
}

// purchaseChanged lets through what the controller must act on: creation,
// deletion, spec changes (generation), the recheck annotation, phase changes
// made by others (the webhook receiver), a charge check asked for by the
// webhook receiver (lifecycle's ChargeCheckRequested), and periodic resyncs (the
// level-triggered safety net). The controller's own condition-only status
// writes do not wake it.
func purchaseChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, okO := e.ObjectOld.(*v1alpha1.Purchase)
			n, okN := e.ObjectNew.(*v1alpha1.Purchase)
			if !okO || !okN {
				return false
			}
			return o.ResourceVersion == n.ResourceVersion ||
				o.Generation != n.Generation ||
				o.DeletionTimestamp.IsZero() != n.DeletionTimestamp.IsZero() ||
				o.Annotations[v1alpha1.AnnotationRecheckRequested] != n.Annotations[v1alpha1.AnnotationRecheckRequested] ||
				o.Status.Phase != n.Status.Phase ||
				(lifecycle.ChargeCheckRequested(n) && !lifecycle.ChargeCheckRequested(o))
		},
	}
}

// countTransitions counts phase changes as the watch sees them, whoever
// made them (this controller or the webhook receiver on any replica). It
// enqueues nothing.
func countTransitions() handler.EventHandler {
	return handler.Funcs{
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			o, okO := e.ObjectOld.(*v1alpha1.Purchase)
			n, okN := e.ObjectNew.(*v1alpha1.Purchase)
			if okO && okN && o.Status.Phase != n.Status.Phase {
				purchaseTransitions.WithLabelValues(phaseLabel(o.Status.Phase), phaseLabel(n.Status.Phase)).Inc()
			}
		},
	}
}

// becameCompleted passes purchases that are (or just became) Completed.
func becameCompleted() predicate.Predicate {
	completed := func(o client.Object) bool {
		p, ok := o.(*v1alpha1.Purchase)
		return ok && p.Status.Phase == v1alpha1.PurchaseCompleted
	}
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return completed(e.Object) },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return completed(e.ObjectNew) && !completed(e.ObjectOld)
		},
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

// pendingSiblings maps a Completed purchase to the Pending purchases of the
// same user and entity, which it supersedes.
func (r *PurchaseReconciler) pendingSiblings(ctx context.Context, o client.Object) []reconcile.Request {
	p, ok := o.(*v1alpha1.Purchase)
	if !ok {
		return nil
	}
	var list v1alpha1.PurchaseList
	if err := r.Client.List(ctx, &list, client.InNamespace(p.Namespace),
		client.MatchingFields{index.PurchaseByUserEntity: index.UserEntityKey(p.Spec.UserID, p.Spec.EntityID)}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "listing purchases to supersede", "purchase", klog.KObj(p))
		return nil
	}
	var out []reconcile.Request
	for _, q := range list.Items {
		if q.UID != p.UID && (q.Status.Phase == v1alpha1.PurchasePending || q.Status.Phase == "") {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&q)})
		}
	}
	return out
}

// purchasesWaitingForCustomer maps a Customer to the Pending purchases of
// its user that have no Stripe customer yet.
func (r *PurchaseReconciler) purchasesWaitingForCustomer(ctx context.Context, o client.Object) []reconcile.Request {
	c, ok := o.(*v1alpha1.Customer)
	if !ok {
		return nil
	}
	var list v1alpha1.PurchaseList
	if err := r.Client.List(ctx, &list, client.InNamespace(c.Namespace),
		client.MatchingFields{index.PurchaseByUser: c.Spec.UserID}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "listing purchases of customer", "customer", klog.KObj(c))
		return nil
	}
	var out []reconcile.Request
	for _, p := range list.Items {
		if (p.Status.Phase == v1alpha1.PurchasePending || p.Status.Phase == "") && p.Status.StripeCustomerID == "" {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&p)})
		}
	}
	return out
}

func (r *PurchaseReconciler) clock() clock.PassiveClock {
	if r.Clock == nil {
		return clock.RealClock{}
	}
	return r.Clock
}

// firstExpiry is the expires_at of a purchase's first session create: its
// creation time (as stored, to the second) plus the session's lifetime and
// the create window.
func (r *PurchaseReconciler) firstExpiry(p *v1alpha1.Purchase) metav1.Time {
	return metav1.NewTime(p.CreationTimestamp.UTC().Truncate(time.Second).Add(r.sessionTTL() + sessionCreateWindow))
}

func (r *PurchaseReconciler) sessionTTL() time.Duration {
	ttl := r.SessionTTL
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	// Stripe refuses an expires_at more than 24 hours ahead; a few
	// minutes are left for the later expiry of a retry after a refusal.
	return min(ttl, 24*time.Hour-sessionCreateWindow-5*time.Minute)
}

func (r *PurchaseReconciler) retention() time.Duration {
	if r.RetentionTerminal == 0 {
		return DefaultRetentionTerminal
	}
	return r.RetentionTerminal
}

func (r *PurchaseReconciler) deletionTimeout() time.Duration {
	return durationOr(r.DeletionTimeout, DefaultPurchaseDeletionTimeout)
}

func (r *PurchaseReconciler) refundPollInterval() time.Duration {
	return durationOr(r.RefundPollInterval, DefaultRefundPollInterval)
}

func (r *PurchaseReconciler) recheckMinInterval() time.Duration {
	return r.schedule().RecheckMinInterval
}

// schedule is the healing, expiry and retention schedule with this
// reconciler's settings over lifecycle's defaults.
func (r *PurchaseReconciler) schedule() lifecycle.Schedule {
	s := lifecycle.DefaultSchedule()
	if len(r.HealingSchedule) > 0 {
		s.Healing = r.HealingSchedule
	}
	if r.HealingInterval > 0 {
		s.HealingInterval = r.HealingInterval
	}
	if r.SessionExpiryMargin > 0 {
		s.ExpiryMargin = r.SessionExpiryMargin
	}
	if r.RecheckMinInterval > 0 {
		s.RecheckMinInterval = r.RecheckMinInterval
	}
	s.Retention = max(r.retention(), 0)
	return s
}

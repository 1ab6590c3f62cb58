package controllers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/naming"
	"github.com/md-platform/paytoview-operator/internal/stripe"
)

// Reasons of a Product's Ready condition. They are part of what the platform
// team reads in `kubectl get ptvp` and `kubectl describe`, so they say what
// to do, not how the operator works.
const (
	// ProductReasonPriceReady: the Stripe price exists and can be sold.
	ProductReasonPriceReady = "PriceReady"
	// ProductReasonInactive: spec.active is false; no new purchases.
	ProductReasonInactive = "ProductInactive"
	// ProductReasonStripePriceNotFound: spec.stripePriceRef names a price
	// Stripe does not have. Fix the spec.
	ProductReasonStripePriceNotFound = "StripePriceNotFound"
	// ProductReasonStripePriceInactive: spec.stripePriceRef names an archived
	// price. Unarchive it in Stripe or reference another one.
	ProductReasonStripePriceInactive = "StripePriceInactive"
	// ProductReasonStripePriceNotOneTime: spec.stripePriceRef names a
	// recurring price; pay-to-view sells one-time prices only.
	ProductReasonStripePriceNotOneTime = "StripePriceNotOneTime"
	// ProductReasonStripeUnavailable: Stripe did not answer or failed; the
	// operator retries with backoff.
	ProductReasonStripeUnavailable = "StripeUnavailable"
	// ProductReasonStripeRejected: Stripe refused a request; the condition
	// message is Stripe's. Retrying cannot help, a spec change may.
	ProductReasonStripeRejected = "StripeRejected"
)

// Annotations the Product controller keeps on a Product. They record which
// Stripe objects the operator created, as opposed to objects it was pointed
// at with spec.stripePriceRef, so that it archives exactly its own objects
// when the spec switches between price and stripePriceRef or the Product is
// deleted. They survive a backup/restore that loses status. Do not edit them.
const (
	annotationManagedStripeProduct = "paytoview.md-platform.io/managed-stripe-product"
	annotationManagedStripePrice   = "paytoview.md-platform.io/managed-stripe-price"
)

// Defaults of ProductReconciler's tunables.
const (
	// DefaultProductCleanupTimeout is how long a deleted Product waits for
	// Stripe to archive its objects.
	DefaultProductCleanupTimeout = 10 * time.Minute
	// DefaultPriceRefRecheckInterval is how often a referenced Stripe price
	// is read again.
	DefaultPriceRefRecheckInterval = 30 * time.Minute
)

const (
	productCleanupMinRetryInterval = time.Second
	productCleanupMaxRetryInterval = time.Minute

	// Event actions (events.k8s.io requires one) and reasons that are not
	// Ready reasons.
	eventActionReconcile              = "Reconcile"
	eventActionDelete                 = "Delete"
	eventReasonStripeCleanupAbandoned = "StripeCleanupAbandoned"
)

// ProductStripe is the part of the Stripe client the Product controller uses;
// *stripe.Client implements it.
type ProductStripe interface {
	CreateProduct(ctx context.Context, params stripe.CreateProductParams) (stripe.Product, error)
	UpdateProduct(ctx context.Context, id string, params stripe.UpdateProductParams) (stripe.Product, error)
	CreatePrice(ctx context.Context, params stripe.CreatePriceParams) (stripe.Price, error)
	GetPrice(ctx context.Context, id string) (stripe.Price, error)
	ArchivePrice(ctx context.Context, id string) (stripe.Price, error)
}

// ProductReconciler keeps a Stripe Product and one-time Price in step with
// each Product (or checks the Stripe Price a Product references) and reports
// in status what new purchases will be charged.
type ProductReconciler struct {
	Client   client.Client
	Stripe   ProductStripe
	Recorder events.EventRecorder
	// Clock tells the time; nil means the real clock.
	Clock clock.PassiveClock
	// CleanupTimeout bounds how long a deleted Product waits for Stripe to
	// archive its objects before the finalizer is released anyway (with a
	// Warning Event naming what was left in Stripe). Zero means
	// DefaultProductCleanupTimeout.
	CleanupTimeout time.Duration
	// PriceRefRecheckInterval is how often a Product with spec.stripePriceRef
	// re-reads the price from Stripe, where a person may archive it. Zero
	// means DefaultPriceRefRecheckInterval.
	PriceRefRecheckInterval time.Duration
}

// +kubebuilder:rbac:groups=paytoview.md-platform.io,resources=products,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=paytoview.md-platform.io,resources=products/status,verbs=patch
// +kubebuilder:rbac:groups=paytoview.md-platform.io,resources=products/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SetupWithManager registers the controller. Status writes do not bump
// metadata.generation, so they do not wake it; setting the deletion
// timestamp does.
func (r *ProductReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.Product{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Named("product").
		Complete(r)
}

// priceRefProblem is why a referenced Stripe price cannot be sold. Only a
// spec change, or a person changing the price in Stripe, can fix it.
type priceRefProblem struct {
	reason  string
	message string
	// recheck is when to look again; zero means only on a spec change.
	recheck time.Duration
}

func (e *priceRefProblem) Error() string { return e.message }

// Reconcile creates or checks the Stripe objects of one Product and reports
// the result in its status.
func (r *ProductReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, reterr error) {
	product := &v1alpha1.Product{}
	if err := r.Client.Get(ctx, req.NamespacedName, product); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !product.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, product)
	}
	// The finalizer goes on before the first Stripe call, so nothing is
	// created in Stripe that deletion would not archive.
	if !controllerutil.ContainsFinalizer(product, v1alpha1.ProductFinalizer) {
		orig := product.DeepCopy()
		controllerutil.AddFinalizer(product, v1alpha1.ProductFinalizer)
		if err := r.Client.Patch(ctx, product, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer to Product %s: %w", req.NamespacedName, err)
		}
	}

	base := product.DeepCopy()
	defer func() {
		if err := r.patch(ctx, base, product); err != nil {
			reterr = kerrors.NewAggregate([]error{reterr, err})
		}
	}()
	return r.reconcileNormal(ctx, product)
}

// reconcileNormal runs the phases of the Product's mode and turns their
// outcome into the Ready condition and a requeue.
func (r *ProductReconciler) reconcileNormal(ctx context.Context, p *v1alpha1.Product) (ctrl.Result, error) {
	phases := []func(context.Context, *v1alpha1.Product) error{r.reconcileStripeProduct, r.reconcilePrice}
	if p.Spec.StripePriceRef != "" {
		phases = []func(context.Context, *v1alpha1.Product) error{r.reconcilePriceRef, r.retireManagedObjects}
	}
	var err error
	for _, phase := range phases {
		if err = phase(ctx, p); err != nil {
			break
		}
	}

	var problem *priceRefProblem
	switch {
	case err == nil:
		p.Status.ObservedGeneration = p.Generation
		if !productActive(p) {
			r.setProductReady(p, metav1.ConditionFalse, ProductReasonInactive,
				"spec.active is false: the Product accepts no new purchases")
		} else {
			r.setProductReady(p, metav1.ConditionTrue, ProductReasonPriceReady,
				fmt.Sprintf("new purchases are charged %s (Stripe price %s)", formatPrice(p.Status.Price), p.Status.StripePriceID))
		}
		if p.Spec.StripePriceRef != "" {
			return ctrl.Result{RequeueAfter: r.priceRefRecheckInterval()}, nil
		}
		return ctrl.Result{}, nil
	case errors.As(err, &problem):
		p.Status.ObservedGeneration = p.Generation
		r.setProductReady(p, metav1.ConditionFalse, problem.reason, problem.message)
		return ctrl.Result{RequeueAfter: problem.recheck}, nil
	case stripe.IsRetryable(err):
		r.setProductReady(p, metav1.ConditionFalse, ProductReasonStripeUnavailable,
			"Stripe is unavailable, retrying: "+stripe.UserMessage(err))
		return stripeRetry(ctx, err)
	case stripe.IsTerminal(err):
		// observedGeneration moves on: this spec got its final answer.
		p.Status.ObservedGeneration = p.Generation
		r.setProductReady(p, metav1.ConditionFalse, ProductReasonStripeRejected, stripe.UserMessage(err))
		return ctrl.Result{}, reconcile.TerminalError(err)
	default:
		return ctrl.Result{}, err
	}
}

// reconcileStripeProduct creates the operator's Stripe product once and keeps
// its name, description and active flag in step with the spec.
func (r *ProductReconciler) reconcileStripeProduct(ctx context.Context, p *v1alpha1.Product) error {
	id := p.Annotations[annotationManagedStripeProduct]
	if id == "" {
		prod, err := r.Stripe.CreateProduct(ctx, stripe.CreateProductParams{
			OwnerUID:    string(p.UID),
			Attempt:     p.Status.ProductCreateAttempt,
			Name:        p.Spec.DisplayName,
			Description: p.Spec.Description,
			Metadata: map[string]string{
				stripe.MetaProductID:  p.Name,
				stripe.MetaEntityType: strconv.Itoa(naming.EntityTypeCode(p.Spec.EntityType)),
			},
		})
		if stripe.IsKeySpent(err) {
			// Stripe saved this 5xx under the key and would replay it for
			// 24 hours: the next create uses the next key, which the
			// status patch records before any request uses it. A product
			// the 5xx created all the same is never named by the
			// annotation or status, so it gets no price and sells nothing.
			p.Status.ProductCreateAttempt++
		}
		if err != nil {
			return fmt.Errorf("creating Stripe product: %w", err)
		}
		setAnnotation(p, annotationManagedStripeProduct, prod.ID)
		p.Status.StripeProductID = prod.ID
		ctrl.LoggerFrom(ctx).Info("created stripe product", "stripeProduct", prod.ID)
		r.Recorder.Eventf(p, nil, "Normal", "StripeProductCreated", eventActionReconcile,
			"Created Stripe product %s", prod.ID)
		if prod.Active == productActive(p) {
			return nil
		}
	} else if p.Status.ObservedGeneration == p.Generation && p.Status.StripeProductID == id {
		// Stripe matched this spec when the generation was last observed.
		return nil
	}

	// A new generation may have changed the name, the description or the
	// active flag: send all three, the update is idempotent.
	active := productActive(p)
	if _, err := r.Stripe.UpdateProduct(ctx, id, stripe.UpdateProductParams{
		Name:        &p.Spec.DisplayName,
		Description: &p.Spec.Description,
		Active:      &active,
	}); err != nil {
		return fmt.Errorf("updating Stripe product %s: %w", id, err)
	}
	p.Status.StripeProductID = id
	if active {
		r.Recorder.Eventf(p, nil, "Normal", "StripeProductUpdated", eventActionReconcile,
			"Updated Stripe product %s from the spec", id)
	} else {
		r.Recorder.Eventf(p, nil, "Normal", "StripeProductArchived", eventActionReconcile,
			"Archived Stripe product %s: spec.active is false", id)
	}
	return nil
}

// reconcilePrice makes the operator's Stripe price charge spec.price. Stripe
// prices are immutable, so a change creates a new price and archives the old
// one; purchases made before keep the price id they were sold with.
func (r *ProductReconciler) reconcilePrice(ctx context.Context, p *v1alpha1.Product) error {
	want := *p.Spec.Price
	current := p.Annotations[annotationManagedStripePrice]
	if current != "" && p.Status.StripePriceID == current && p.Status.Price != nil && *p.Status.Price == want {
		return nil
	}
	if current != "" && p.Status.StripePriceID != current {
		// Status does not describe our price (it was lost, or described a
		// referenced price): ask Stripe before creating another one.
		price, err := r.Stripe.GetPrice(ctx, current)
		switch {
		case err == nil && price.Active && price.UnitAmount == want.Amount && price.Currency == want.Currency:
			recordPrice(p, price)
			return nil
		case err != nil && !stripe.IsNotFound(err):
			return fmt.Errorf("reading Stripe price %s: %w", current, err)
		}
	}

	price, err := r.Stripe.CreatePrice(ctx, stripe.CreatePriceParams{
		OwnerUID:   string(p.UID),
		Generation: p.Generation,
		Attempt:    p.Status.PriceCreateAttempt,
		ProductID:  p.Status.StripeProductID,
		Amount:     want.Amount,
		Currency:   want.Currency,
		Metadata:   map[string]string{stripe.MetaProductID: p.Name},
	})
	if stripe.IsKeySpent(err) {
		// As for the product: a new key after a saved 5xx. A price the 5xx
		// created all the same is never recorded, so no purchase snapshots
		// it and no checkout session charges it.
		p.Status.PriceCreateAttempt++
	}
	if err != nil {
		return fmt.Errorf("creating Stripe price: %w", err)
	}
	// The new price is recorded only once the old one is archived: if
	// archiving fails, the retry gets the same new price back (the
	// idempotency key is UID + generation) and tries the archive again, so
	// the old id is never forgotten while still active.
	if current != "" && current != price.ID {
		if err := r.archivePrice(ctx, current); err != nil {
			return err
		}
		r.Recorder.Eventf(p, nil, "Normal", "StripePriceArchived", eventActionReconcile,
			"Archived Stripe price %s, replaced by %s", current, price.ID)
	}
	setAnnotation(p, annotationManagedStripePrice, price.ID)
	recordPrice(p, price)
	ctrl.LoggerFrom(ctx).Info("created stripe price", "stripePrice", price.ID, "amount", price.UnitAmount, "currency", price.Currency)
	r.Recorder.Eventf(p, nil, "Normal", "StripePriceCreated", eventActionReconcile,
		"Created Stripe price %s: %s", price.ID, formatPrice(p.Status.Price))
	return nil
}

// reconcilePriceRef checks that the referenced Stripe price can be sold and
// records what it charges.
func (r *ProductReconciler) reconcilePriceRef(ctx context.Context, p *v1alpha1.Product) error {
	ref := p.Spec.StripePriceRef
	price, err := r.Stripe.GetPrice(ctx, ref)
	switch {
	case stripe.IsNotFound(err):
		return &priceRefProblem{
			reason:  ProductReasonStripePriceNotFound,
			message: fmt.Sprintf("Stripe has no price %s: fix spec.stripePriceRef", ref),
		}
	case err != nil:
		return fmt.Errorf("reading Stripe price %s: %w", ref, err)
	case price.Type != "one_time":
		return &priceRefProblem{
			reason:  ProductReasonStripePriceNotOneTime,
			message: fmt.Sprintf("Stripe price %s is %s; pay-to-view sells one-time prices only", ref, price.Type),
		}
	case !price.Active:
		// A person can unarchive the price in the dashboard: look again later.
		return &priceRefProblem{
			reason:  ProductReasonStripePriceInactive,
			message: fmt.Sprintf("Stripe price %s is archived: unarchive it in Stripe or reference another price", ref),
			recheck: r.priceRefRecheckInterval(),
		}
	}
	if p.Status.StripePriceID != price.ID {
		r.Recorder.Eventf(p, nil, "Normal", "StripePriceReferenced", eventActionReconcile,
			"Selling referenced Stripe price %s (%d %s)", price.ID, price.UnitAmount, price.Currency)
	}
	p.Status.StripeProductID = price.ProductID
	recordPrice(p, price)
	return nil
}

// retireManagedObjects archives the price and product the operator created
// while the Product had spec.price, now that it sells a referenced price.
// It runs after the reference was found good, so a typo in the reference
// never takes down a working price.
func (r *ProductReconciler) retireManagedObjects(ctx context.Context, p *v1alpha1.Product) error {
	if id := p.Annotations[annotationManagedStripePrice]; id != "" {
		if id != p.Spec.StripePriceRef {
			if err := r.archivePrice(ctx, id); err != nil {
				return err
			}
			r.Recorder.Eventf(p, nil, "Normal", "StripePriceArchived", eventActionReconcile,
				"Archived Stripe price %s, replaced by referenced price %s", id, p.Spec.StripePriceRef)
		}
		delete(p.Annotations, annotationManagedStripePrice)
	}
	id := p.Annotations[annotationManagedStripeProduct]
	if id == "" || id == p.Status.StripeProductID || p.Status.ObservedGeneration == p.Generation {
		return nil
	}
	// The annotation is kept: switching back to spec.price reuses (and
	// unarchives) this product instead of creating another one.
	if err := r.archiveProduct(ctx, id); err != nil {
		return err
	}
	r.Recorder.Eventf(p, nil, "Normal", "StripeProductArchived", eventActionReconcile,
		"Archived Stripe product %s: the Product sells a referenced price now", id)
	return nil
}

// reconcileDelete archives the operator's Stripe objects and releases the
// finalizer. A Stripe outage delays deletion by at most CleanupTimeout.
func (r *ProductReconciler) reconcileDelete(ctx context.Context, p *v1alpha1.Product) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(p, v1alpha1.ProductFinalizer) {
		return ctrl.Result{}, nil
	}
	log := ctrl.LoggerFrom(ctx)
	archived, left, err := r.archiveManagedObjects(ctx, p)
	if len(archived) > 0 {
		r.Recorder.Eventf(p, nil, "Normal", "StripeArchived", eventActionDelete,
			"Archived %s in Stripe", strings.Join(archived, " and "))
	}
	switch {
	case err == nil:
	case stripe.IsRetryable(err) && r.clock().Since(p.DeletionTimestamp.Time) < r.cleanupTimeout():
		age := r.clock().Since(p.DeletionTimestamp.Time)
		delay := cleanupRetryDelay(age, r.cleanupTimeout(), stripe.RetryAfter(err))
		log.Error(err, "archiving in stripe failed, retrying", "after", delay)
		return ctrl.Result{RequeueAfter: delay}, nil
	default:
		// Terminal, or Stripe has been down longer than we may hold the
		// deletion: release it and tell a person what to clean up.
		log.Error(err, "giving up archiving in stripe, releasing the finalizer", "left", left)
		r.Recorder.Eventf(p, nil, "Warning", eventReasonStripeCleanupAbandoned, eventActionDelete,
			"Deleted without archiving %s in Stripe (%s); archive them in the Stripe dashboard",
			strings.Join(left, " and "), stripe.UserMessage(err))
	}

	orig := p.DeepCopy()
	controllerutil.RemoveFinalizer(p, v1alpha1.ProductFinalizer)
	if err := r.Client.Patch(ctx, p, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return ctrl.Result{}, fmt.Errorf("removing finalizer from Product %s: %w", klog.KObj(p), err)
	}
	return ctrl.Result{}, nil
}

// archiveManagedObjects archives the price and product the operator created
// for p, never a referenced price or its product. It names what it archived
// and what it could not, as "price price_..." / "product prod_...".
func (r *ProductReconciler) archiveManagedObjects(ctx context.Context, p *v1alpha1.Product) (archived, left []string, err error) {
	var errs []error
	record := func(what string, err error) {
		if err != nil {
			left = append(left, what)
			errs = append(errs, err)
			return
		}
		archived = append(archived, what)
	}
	if id := p.Annotations[annotationManagedStripePrice]; id != "" && id != p.Spec.StripePriceRef {
		record("price "+id, r.archivePrice(ctx, id))
	}
	// With a reference, status.stripeProductId is the referenced price's
	// product, which is not ours to archive even if it is the one we made.
	if id := p.Annotations[annotationManagedStripeProduct]; id != "" &&
		(p.Spec.StripePriceRef == "" || id != p.Status.StripeProductID) {
		record("product "+id, r.archiveProduct(ctx, id))
	}
	return archived, left, errors.Join(errs...)
}

// archivePrice archives a price; one that no longer exists counts as archived.
func (r *ProductReconciler) archivePrice(ctx context.Context, id string) error {
	if _, err := r.Stripe.ArchivePrice(ctx, id); err != nil && !stripe.IsNotFound(err) {
		return fmt.Errorf("archiving Stripe price %s: %w", id, err)
	}
	return nil
}

// archiveProduct archives a product; one that no longer exists counts as archived.
func (r *ProductReconciler) archiveProduct(ctx context.Context, id string) error {
	inactive := false
	if _, err := r.Stripe.UpdateProduct(ctx, id, stripe.UpdateProductParams{Active: &inactive}); err != nil && !stripe.IsNotFound(err) {
		return fmt.Errorf("archiving Stripe product %s: %w", id, err)
	}
	return nil
}

// patch writes what the reconcile changed: first the annotations that record
// the operator's Stripe objects, then the status. Both use optimistic
// locking, so a concurrent writer makes this fail and the next reconcile
// re-reads and re-applies instead of overwriting the other writer.
func (r *ProductReconciler) patch(ctx context.Context, base, p *v1alpha1.Product) error {
	if !equality.Semantic.DeepEqual(base.Annotations, p.Annotations) {
		status := p.Status.DeepCopy()
		if err := r.Client.Patch(ctx, p, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			return fmt.Errorf("recording Stripe ids on Product %s: %w", klog.KObj(p), err)
		}
		// The response carries the stored status; ours is the new one.
		p.Status = *status
		base.ResourceVersion = p.ResourceVersion
		base.Annotations = p.Annotations
	}
	if equality.Semantic.DeepEqual(base.Status, p.Status) {
		return nil
	}
	if err := r.Client.Status().Patch(ctx, p, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("patching status of Product %s: %w", klog.KObj(p), err)
	}
	return nil
}

// setProductReady sets the Ready condition and records an Event when its
// reason changes, so a retry loop with the same outcome adds no noise.
func (r *ProductReconciler) setProductReady(p *v1alpha1.Product, status metav1.ConditionStatus, reason, message string) {
	if !setReadyCondition(&p.Status.Conditions, p.Generation, status, reason, message) {
		return
	}
	eventType := "Warning"
	if status == metav1.ConditionTrue || reason == ProductReasonInactive {
		eventType = "Normal"
	}
	r.Recorder.Eventf(p, nil, eventType, reason, eventActionReconcile, "%s", message)
}

func (r *ProductReconciler) clock() clock.PassiveClock {
	if r.Clock == nil {
		return clock.RealClock{}
	}
	return r.Clock
}

func (r *ProductReconciler) cleanupTimeout() time.Duration {
	return durationOr(r.CleanupTimeout, DefaultProductCleanupTimeout)
}

func (r *ProductReconciler) priceRefRecheckInterval() time.Duration {
	return durationOr(r.PriceRefRecheckInterval, DefaultPriceRefRecheckInterval)
}

// cleanupRetryDelay spaces deletion retries: half the time already waited
// (so retries thin out as an outage goes on), at least a second, at most a
// minute, at least Stripe's Retry-After, and never past the give-up time, so
// the finalizer is released promptly when the timeout is reached.
func cleanupRetryDelay(waited, timeout, retryAfter time.Duration) time.Duration {
	d := min(max(waited/2, productCleanupMinRetryInterval), productCleanupMaxRetryInterval)
	d = max(d, retryAfter)
	if remaining := timeout - waited; d > remaining {
		d = max(remaining, productCleanupMinRetryInterval)
	}
	return d
}

// stripeRetry turns a retryable Stripe error into a requeue: after Stripe's
// Retry-After when it sent one, else with the work queue's exponential
// backoff (by returning the error).
func stripeRetry(ctx context.Context, err error) (ctrl.Result, error) {
	if d := stripe.RetryAfter(err); d > 0 {
		ctrl.LoggerFrom(ctx).Info("stripe is unavailable, retrying", "after", d, "error", err.Error())
		return ctrl.Result{RequeueAfter: d}, nil
	}
	return ctrl.Result{}, err
}

func productActive(p *v1alpha1.Product) bool {
	return p.Spec.Active == nil || *p.Spec.Active
}

func recordPrice(p *v1alpha1.Product, price stripe.Price) {
	p.Status.StripePriceID = price.ID
	p.Status.Price = &v1alpha1.Price{Amount: price.UnitAmount, Currency: price.Currency}
}

func setAnnotation(p *v1alpha1.Product, key, value string) {
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Annotations[key] = value
}

func formatPrice(p *v1alpha1.Price) string {
	if p == nil {
		return "nothing"
	}
	return fmt.Sprintf("%d %s", p.Amount, p.Currency)
}

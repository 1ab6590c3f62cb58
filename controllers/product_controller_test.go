package controllers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/yaml"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
	"github.com/md-platform/paytoview-operator/internal/testenv"
)

// fakeProductStripe is a ProductStripe whose behaviour each test chooses. A
// call to a method the test did not set fails the reconcile with an error
// the test sees.
type fakeProductStripe struct {
	createProduct func(stripe.CreateProductParams) (stripe.Product, error)
	updateProduct func(string, stripe.UpdateProductParams) (stripe.Product, error)
	createPrice   func(stripe.CreatePriceParams) (stripe.Price, error)
	getPrice      func(string) (stripe.Price, error)
	archivePrice  func(string) (stripe.Price, error)
}

var errUnexpectedCall = errors.New("unexpected Stripe call")

func (f *fakeProductStripe) CreateProduct(_ context.Context, p stripe.CreateProductParams) (stripe.Product, error) {
	if f.createProduct == nil {
		return stripe.Product{}, errUnexpectedCall
	}
	return f.createProduct(p)
}

func (f *fakeProductStripe) UpdateProduct(_ context.Context, id string, p stripe.UpdateProductParams) (stripe.Product, error) {
	if f.updateProduct == nil {
		return stripe.Product{}, errUnexpectedCall
	}
	return f.updateProduct(id, p)
}

func (f *fakeProductStripe) CreatePrice(_ context.Context, p stripe.CreatePriceParams) (stripe.Price, error) {
	if f.createPrice == nil {
		return stripe.Price{}, errUnexpectedCall
	}
	return f.createPrice(p)
}

func (f *fakeProductStripe) GetPrice(_ context.Context, id string) (stripe.Price, error) {
	if f.getPrice == nil {
		return stripe.Price{}, errUnexpectedCall
	}
	return f.getPrice(id)
}

func (f *fakeProductStripe) ArchivePrice(_ context.Context, id string) (stripe.Price, error) {
	if f.archivePrice == nil {
		return stripe.Price{}, errUnexpectedCall
	}
	return f.archivePrice(id)
}

// Errors shaped like the ones *stripe.Client returns.
func stripeUnavailable(retryAfter time.Duration) error {
	return &stripe.Error{Op: "test", Kind: stripe.ErrorRetryable, HTTPStatus: 500, Type: "api_error",
		Message: "An unknown error occurred", RetryAfter: retryAfter}
}

func stripeNoSuchPrice(id string) error {
	return &stripe.Error{Op: stripe.OpGetPrice, Kind: stripe.ErrorTerminal, HTTPStatus: 404,
		Type: "invalid_request_error", Code: "resource_missing", Message: "No such price: '" + id + "'"}
}

func stripeInvalid(msg string) error {
	return &stripe.Error{Op: "test", Kind: stripe.ErrorTerminal, HTTPStatus: 400,
		Type: "invalid_request_error", Message: msg}
}

// newTestProduct returns a Product (not yet created) selling a 7-day video
// at 500 usd, or the referenced price when ref is set.
func newTestProduct(ns, name, ref string) *v1alpha1.Product {
	p := &v1alpha1.Product{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.ProductSpec{
			DisplayName:        "Seven days of a video",
			EntityType:         v1alpha1.EntityTypeVideo,
			AccessDurationDays: ptr.To[int32](7),
		},
	}
	if ref != "" {
		p.Spec.StripePriceRef = ref
	} else {
		p.Spec.Price = &v1alpha1.Price{Amount: 500, Currency: "usd"}
	}
	return p
}

func newTestProductReconciler(fake *fakeProductStripe) (*ProductReconciler, *events.FakeRecorder) {
	rec := events.NewFakeRecorder(100)
	return &ProductReconciler{Client: testEnv.Client, Stripe: fake, Recorder: rec}, rec
}

func TestProduct_PriceRefIsCheckedInStripe(t *testing.T) {
	ns := testEnv.Namespace(t)
	tests := []struct {
		name        string
		price       stripe.Price
		err         error
		wantStatus  metav1.ConditionStatus
		wantReason  string
		wantRecheck bool
	}{
		{
			name:        "active one-time price is sold",
			price:       stripe.Price{ID: "price_ok", ProductID: "prod_theirs", Active: true, Type: "one_time", UnitAmount: 1999, Currency: "eur"},
			wantStatus:  metav1.ConditionTrue,
			wantReason:  ProductReasonPriceReady,
			wantRecheck: true,
		},
		{
			name:       "unknown price is reported and waits for a spec change",
			err:        stripeNoSuchPrice("price_missing"),
			wantStatus: metav1.ConditionFalse,
			wantReason: ProductReasonStripePriceNotFound,
		},
		{
			name:        "archived price is reported and looked at again later",
			price:       stripe.Price{ID: "price_old", ProductID: "prod_theirs", Active: false, Type: "one_time", UnitAmount: 1999, Currency: "eur"},
			wantStatus:  metav1.ConditionFalse,
			wantReason:  ProductReasonStripePriceInactive,
			wantRecheck: true,
		},
		{
			name:       "recurring price is refused",
			price:      stripe.Price{ID: "price_sub", ProductID: "prod_theirs", Active: true, Type: "recurring", UnitAmount: 999, Currency: "usd"},
			wantStatus: metav1.ConditionFalse,
			wantReason: ProductReasonStripePriceNotOneTime,
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref := tt.price.ID
			if ref == "" {
				ref = "price_missing"
			}
			fake := &fakeProductStripe{getPrice: func(id string) (stripe.Price, error) {
				if id != ref {
					t.Errorf("GetPrice(%q), want %q", id, ref)
				}
				return tt.price, tt.err
			}}
			r, rec := newTestProductReconciler(fake)
			p := newTestProduct(ns, "ref-"+string(rune('a'+i)), ref)
			createObject(t, p)

			res, err := reconcileOnce(t, r, p)
			if err != nil {
				t.Fatalf("reconcile: %v", err)
			}
			if got := res.RequeueAfter > 0; got != tt.wantRecheck {
				t.Errorf("requeue after %s, want a recheck: %v", res.RequeueAfter, tt.wantRecheck)
			}
			getObject(t, p)
			ready := conditionReady(p.Status.Conditions)
			if ready.Status != tt.wantStatus || ready.Reason != tt.wantReason {
				t.Fatalf("Ready = %s/%s (%s), want %s/%s", ready.Status, ready.Reason, ready.Message, tt.wantStatus, tt.wantReason)
			}
			if !strings.Contains(ready.Message, ref) {
				t.Errorf("Ready message %q does not name the price %s", ready.Message, ref)
			}
			if p.Status.ObservedGeneration != p.Generation {
				t.Errorf("observedGeneration = %d, want %d", p.Status.ObservedGeneration, p.Generation)
			}
			if tt.wantStatus == metav1.ConditionTrue {
				if p.Status.StripePriceID != ref || p.Status.StripeProductID != "prod_theirs" ||
					p.Status.Price == nil || *p.Status.Price != (v1alpha1.Price{Amount: 1999, Currency: "eur"}) {
					t.Errorf("status = %+v, want the referenced price's id, product and amount", p.Status)
				}
			}
			if evs := recordedEvents(rec); len(evs) == 0 || !strings.Contains(strings.Join(evs, "\n"), tt.wantReason) {
				t.Errorf("events %q do not report %s", evs, tt.wantReason)
			}
		})
	}
}

func TestProduct_StripeErrorsAreReported(t *testing.T) {
	ns := testEnv.Namespace(t)
	t.Run("retryable error waits for Retry-After", func(t *testing.T) {
		fake := &fakeProductStripe{createProduct: func(stripe.CreateProductParams) (stripe.Product, error) {
			return stripe.Product{}, stripeUnavailable(7 * time.Second)
		}}
		r, _ := newTestProductReconciler(fake)
		p := newTestProduct(ns, "retry-after", "")
		createObject(t, p)
		res, err := reconcileOnce(t, r, p)
		if err != nil || res.RequeueAfter != 7*time.Second {
			t.Fatalf("reconcile = %+v, %v; want a requeue after Stripe's 7s Retry-After", res, err)
		}
		getObject(t, p)
		if ready := conditionReady(p.Status.Conditions); ready.Reason != ProductReasonStripeUnavailable || ready.Status != metav1.ConditionFalse {
			t.Fatalf("Ready = %+v, want False/%s", ready, ProductReasonStripeUnavailable)
		}
		if p.Status.ObservedGeneration == p.Generation {
			t.Error("observedGeneration moved on although the spec is not in Stripe yet")
		}
	})
	t.Run("retryable error without Retry-After backs off", func(t *testing.T) {
		fake := &fakeProductStripe{createProduct: func(stripe.CreateProductParams) (stripe.Product, error) {
			return stripe.Product{}, stripeUnavailable(0)
		}}
		r, _ := newTestProductReconciler(fake)
		p := newTestProduct(ns, "backoff", "")
		createObject(t, p)
		// A returned error makes the work queue back off exponentially.
		if _, err := reconcileOnce(t, r, p); !stripe.IsRetryable(err) || errors.Is(err, reconcile.TerminalError(nil)) {
			t.Fatalf("reconcile error = %v, want the retryable Stripe error", err)
		}
	})
	t.Run("rejection is terminal and shows Stripe's message", func(t *testing.T) {
		fake := &fakeProductStripe{createProduct: func(stripe.CreateProductParams) (stripe.Product, error) {
			return stripe.Product{}, stripeInvalid("Your account cannot create products.")
		}}
		r, _ := newTestProductReconciler(fake)
		p := newTestProduct(ns, "rejected", "")
		createObject(t, p)
		if _, err := reconcileOnce(t, r, p); !errors.Is(err, reconcile.TerminalError(nil)) {
			t.Fatalf("reconcile error = %v, want a terminal error", err)
		}
		getObject(t, p)
		ready := conditionReady(p.Status.Conditions)
		if ready.Reason != ProductReasonStripeRejected || ready.Message != "Your account cannot create products." {
			t.Fatalf("Ready = %+v, want %s with Stripe's message", ready, ProductReasonStripeRejected)
		}
	})
}

// fakeCatalog is a minimal in-memory Stripe catalog for fake-driven tests
// that need state across calls.
type fakeCatalog struct {
	products map[string]*stripe.Product
	prices   map[string]*stripe.Price
	names    map[string]string
	n        int
	// failArchive, when set, is returned by the next ArchivePrice calls.
	failArchive error
}

func newFakeCatalog() *fakeCatalog {
	return &fakeCatalog{products: map[string]*stripe.Product{}, prices: map[string]*stripe.Price{}, names: map[string]string{}}
}

func (c *fakeCatalog) id(prefix string) string {
	c.n++
	return fmt.Sprintf("%s%d", prefix, c.n)
}

func (c *fakeCatalog) stripe() *fakeProductStripe {
	return &fakeProductStripe{
		createProduct: func(p stripe.CreateProductParams) (stripe.Product, error) {
			prod := &stripe.Product{ID: c.id("prod_"), Active: true}
			c.products[prod.ID] = prod
			c.names[prod.ID] = p.Name
			return *prod, nil
		},
		updateProduct: func(id string, p stripe.UpdateProductParams) (stripe.Product, error) {
			prod, ok := c.products[id]
			if !ok {
				return stripe.Product{}, stripeNoSuchPrice(id)
			}
			if p.Active != nil {
				prod.Active = *p.Active
			}
			if p.Name != nil {
				c.names[id] = *p.Name
			}
			return *prod, nil
		},
		createPrice: func(p stripe.CreatePriceParams) (stripe.Price, error) {
			pr := &stripe.Price{ID: c.id("price_"), ProductID: p.ProductID, Active: true, Type: "one_time", UnitAmount: p.Amount, Currency: p.Currency}
			c.prices[pr.ID] = pr
			return *pr, nil
		},
		getPrice: func(id string) (stripe.Price, error) {
			pr, ok := c.prices[id]
			if !ok {
				return stripe.Price{}, stripeNoSuchPrice(id)
			}
			return *pr, nil
		},
		archivePrice: func(id string) (stripe.Price, error) {
			if c.failArchive != nil {
				return stripe.Price{}, c.failArchive
			}
			pr, ok := c.prices[id]
			if !ok {
				return stripe.Price{}, stripeNoSuchPrice(id)
			}
			pr.Active = false
			return *pr, nil
		},
	}
}

func updateSpec(t *testing.T, p *v1alpha1.Product, mutate func(*v1alpha1.ProductSpec)) {
	t.Helper()
	getObject(t, p)
	mutate(&p.Spec)
	if err := testEnv.Client.Update(testContext(t), p); err != nil {
		t.Fatalf("updating Product %s: %v", p.Name, err)
	}
}

func TestProduct_OldPriceIsArchivedBeforeTheNewOneIsRecorded(t *testing.T) {
	ns := testEnv.Namespace(t)
	cat := newFakeCatalog()
	r, _ := newTestProductReconciler(cat.stripe())
	p := newTestProduct(ns, "reprice", "")
	createObject(t, p)
	if _, err := reconcileOnce(t, r, p); err != nil {
		t.Fatalf("first reconcile: %v", err)
	}
	getObject(t, p)
	oldPrice := p.Status.StripePriceID

	updateSpec(t, p, func(s *v1alpha1.ProductSpec) { s.Price.Amount = 700 })
	cat.failArchive = stripeUnavailable(0)
	if _, err := reconcileOnce(t, r, p); !stripe.IsRetryable(err) {
		t.Fatalf("reconcile while archiving fails = %v, want the retryable error", err)
	}
	getObject(t, p)
	if p.Status.StripePriceID != oldPrice || p.Annotations[annotationManagedStripePrice] != oldPrice {
		t.Fatalf("after a failed archive, status price %s / annotation %s; want the old price %s kept until it is archived",
			p.Status.StripePriceID, p.Annotations[annotationManagedStripePrice], oldPrice)
	}
	if ready := conditionReady(p.Status.Conditions); ready.Reason != ProductReasonStripeUnavailable {
		t.Errorf("Ready reason = %s, want %s", ready.Reason, ProductReasonStripeUnavailable)
	}

	cat.failArchive = nil
	if _, err := reconcileOnce(t, r, p); err != nil {
		t.Fatalf("reconcile after Stripe recovered: %v", err)
	}
	getObject(t, p)
	if p.Status.StripePriceID == oldPrice || p.Status.Price.Amount != 700 {
		t.Fatalf("status = %+v, want a new 700 usd price", p.Status)
	}
	if cat.prices[oldPrice].Active {
		t.Errorf("old price %s is still active", oldPrice)
	}
	if ready := conditionReady(p.Status.Conditions); ready.Status != metav1.ConditionTrue {
		t.Errorf("Ready = %+v, want True", ready)
	}
}

func TestProduct_SwitchingToPriceRefRetiresOwnObjectsAndBack(t *testing.T) {
	ns := testEnv.Namespace(t)
	cat := newFakeCatalog()
	cat.prices["price_theirs"] = &stripe.Price{ID: "price_theirs", ProductID: "prod_theirs", Active: true, Type: "one_time", UnitAmount: 300, Currency: "usd"}
	cat.products["prod_theirs"] = &stripe.Product{ID: "prod_theirs", Active: true}
	r, _ := newTestProductReconciler(cat.stripe())
	p := newTestProduct(ns, "switch", "")
	createObject(t, p)
	if _, err := reconcileOnce(t, r, p); err != nil {
		t.Fatalf("first reconcile: %v", err)
	}
	getObject(t, p)
	ownProduct, ownPrice := p.Status.StripeProductID, p.Status.StripePriceID

	updateSpec(t, p, func(s *v1alpha1.ProductSpec) { s.Price, s.StripePriceRef = nil, "price_theirs" })
	if _, err := reconcileOnce(t, r, p); err != nil {
		t.Fatalf("reconcile with a reference: %v", err)
	}
	getObject(t, p)
	if p.Status.StripePriceID != "price_theirs" || p.Status.StripeProductID != "prod_theirs" {
		t.Fatalf("status = %+v, want the referenced price and its product", p.Status)
	}
	if cat.prices[ownPrice].Active || cat.products[ownProduct].Active {
		t.Errorf("own price active=%v, own product active=%v; want both archived", cat.prices[ownPrice].Active, cat.products[ownProduct].Active)
	}
	if !cat.prices["price_theirs"].Active || !cat.products["prod_theirs"].Active {
		t.Error("the referenced price or its product was archived; the operator does not own them")
	}

	updateSpec(t, p, func(s *v1alpha1.ProductSpec) {
		s.Price, s.StripePriceRef = &v1alpha1.Price{Amount: 900, Currency: "usd"}, ""
	})
	if _, err := reconcileOnce(t, r, p); err != nil {
		t.Fatalf("reconcile back to a price: %v", err)
	}
	getObject(t, p)
	if p.Status.StripeProductID != ownProduct || !cat.products[ownProduct].Active {
		t.Errorf("status product %s (active=%v), want own product %s reused and unarchived",
			p.Status.StripeProductID, cat.products[ownProduct].Active, ownProduct)
	}
	if p.Status.StripePriceID == "price_theirs" || p.Status.Price.Amount != 900 {
		t.Errorf("status = %+v, want a new own 900 usd price", p.Status)
	}
	if !cat.prices["price_theirs"].Active {
		t.Error("the referenced price was archived when the Product stopped using it")
	}
}

func TestProduct_DeletionGivesUpOnStripeAfterCleanupTimeout(t *testing.T) {
	ns := testEnv.Namespace(t)
	cat := newFakeCatalog()
	clk := clocktesting.NewFakePassiveClock(time.Now())
	r, rec := newTestProductReconciler(cat.stripe())
	r.Clock = clk
	r.CleanupTimeout = 10 * time.Minute
	p := newTestProduct(ns, "outage", "")
	createObject(t, p)
	if _, err := reconcileOnce(t, r, p); err != nil {
		t.Fatalf("first reconcile: %v", err)
	}
	getObject(t, p)
	price, product := p.Status.StripePriceID, p.Status.StripeProductID
	recordedEvents(rec)

	// Stripe goes down, then the Product is deleted.
	outage := stripeUnavailable(0)
	cat.failArchive = outage
	if err := testEnv.Client.Delete(testContext(t), p); err != nil {
		t.Fatalf("deleting: %v", err)
	}
	getObject(t, p)
	clk.SetTime(p.DeletionTimestamp.Add(time.Minute))
	res, err := reconcileOnce(t, r, p)
	if err != nil || res.RequeueAfter <= 0 || res.RequeueAfter > 9*time.Minute {
		t.Fatalf("reconcile during the outage = %+v, %v; want a requeue before the give-up time", res, err)
	}
	getObject(t, p)
	if len(p.Finalizers) == 0 {
		t.Fatal("finalizer released while Stripe was down and the timeout not reached")
	}

	clk.SetTime(p.DeletionTimestamp.Add(10*time.Minute + time.Second))
	if _, err := reconcileOnce(t, r, p); err != nil {
		t.Fatalf("reconcile after the timeout: %v", err)
	}
	err = testEnv.Client.Get(testContext(t), client.ObjectKeyFromObject(p), p)
	if !apierrors.IsNotFound(err) {
		t.Fatalf("Product still there after the cleanup timeout (err=%v, finalizers=%v)", err, p.Finalizers)
	}
	evs := strings.Join(recordedEvents(rec), "\n")
	if !strings.Contains(evs, "Warning "+eventReasonStripeCleanupAbandoned+" Deleted without archiving price "+price) {
		t.Errorf("events %q: want a Warning naming price %s, left in Stripe", evs, price)
	}
	if cat.products[product].Active {
		t.Errorf("product %s was not archived although Stripe accepted that call", product)
	}
}

func TestCleanupRetryDelay(t *testing.T) {
	tests := []struct {
		name                       string
		waited, timeout, retryAftr time.Duration
		want                       time.Duration
	}{
		{"first retry after a second", 0, 10 * time.Minute, 0, time.Second},
		{"half the time waited", 20 * time.Second, 10 * time.Minute, 0, 10 * time.Second},
		{"at most a minute", 5 * time.Minute, 10 * time.Minute, 0, time.Minute},
		{"Retry-After wins when longer", 4 * time.Second, 10 * time.Minute, 30 * time.Second, 30 * time.Second},
		{"never past the give-up time", 9*time.Minute + 50*time.Second, 10 * time.Minute, 0, 10 * time.Second},
		{"at least a second at the give-up time", 10 * time.Minute, 10 * time.Minute, 0, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cleanupRetryDelay(tt.waited, tt.timeout, tt.retryAftr); got != tt.want {
				t.Errorf("cleanupRetryDelay(%s, %s, %s) = %s, want %s", tt.waited, tt.timeout, tt.retryAftr, got, tt.want)
			}
		})
	}
}

// The tests below run the controller in a manager against the Stripe
// emulator: real HTTP, real stripe-go wire format, idempotency and faults.

// productHarness is a Product controller running against the emulator in a
// namespace of its own.
type productHarness struct {
	ns string
	em *emulator.Emulator
	sc *stripe.Client
}

func startProductController(t *testing.T, tweak func(*ProductReconciler)) *productHarness {
	t.Helper()
	h := &productHarness{ns: testEnv.Namespace(t)}
	h.em, h.sc = newEmulatedStripe(t)
	startManager(t, h.ns, func(mgr ctrl.Manager) error {
		r := &ProductReconciler{
			Client:   mgr.GetClient(),
			Stripe:   h.sc,
			Recorder: mgr.GetEventRecorder("paytoview-operator"),
		}
		if tweak != nil {
			tweak(r)
		}
		return r.SetupWithManager(mgr)
	})
	return h
}

// waitReady waits until the Product's Ready condition describes its current
// generation with the given status and reason, and returns the Product.
func waitReady(t *testing.T, p *v1alpha1.Product, status metav1.ConditionStatus, reason string) {
	t.Helper()
	var last metav1.Condition
	if !poll(waitTimeout, func() bool {
		getObject(t, p)
		last = conditionReady(p.Status.Conditions)
		return last.ObservedGeneration == p.Generation && last.Status == status && last.Reason == reason
	}) {
		t.Fatalf("Product %s generation %d: Ready %s/%s (%q, generation %d), want %s/%s",
			p.Name, p.Generation, last.Status, last.Reason, last.Message, last.ObservedGeneration, status, reason)
	}
}

func (h *productHarness) product(t *testing.T, id string) emulator.Product {
	t.Helper()
	for _, p := range h.em.State().Products {
		if p.ID == id {
			return p
		}
	}
	t.Fatalf("the emulator has no product %s", id)
	return emulator.Product{}
}

func (h *productHarness) price(t *testing.T, id string) emulator.Price {
	t.Helper()
	for _, p := range h.em.State().Prices {
		if p.ID == id {
			return p
		}
	}
	t.Fatalf("the emulator has no price %s", id)
	return emulator.Price{}
}

func TestProduct_SyncsPriceNameAndActiveWithStripe(t *testing.T) {
	h := startProductController(t, nil)
	p := newTestProduct(h.ns, "video-week", "")
	createObject(t, p)

	waitReady(t, p, metav1.ConditionTrue, ProductReasonPriceReady)
	if p.Status.StripeProductID == "" || p.Status.StripePriceID == "" ||
		p.Status.Price == nil || *p.Status.Price != (v1alpha1.Price{Amount: 500, Currency: "usd"}) {
		t.Fatalf("status = %+v, want Stripe ids and 500 usd", p.Status)
	}
	if p.Status.ObservedGeneration != p.Generation {
		t.Errorf("observedGeneration = %d, want %d", p.Status.ObservedGeneration, p.Generation)
	}
	prod := h.product(t, p.Status.StripeProductID)
	if prod.Name != "Seven days of a video" || !prod.Active ||
		prod.Metadata[stripe.MetaProductID] != "video-week" || prod.Metadata[stripe.MetaEntityType] != "1" {
		t.Errorf("Stripe product = %+v, want the display name, active, payToViewProductId and entityType 1", prod)
	}
	firstPrice := h.price(t, p.Status.StripePriceID)
	if !firstPrice.Active || firstPrice.ProductID != prod.ID || firstPrice.UnitAmount != 500 || firstPrice.Currency != "usd" {
		t.Errorf("Stripe price = %+v, want an active 500 usd price of %s", firstPrice, prod.ID)
	}

	t.Log("a price change makes a new price and archives the old one")
	updateSpec(t, p, func(s *v1alpha1.ProductSpec) { s.Price.Amount = 700 })
	waitReady(t, p, metav1.ConditionTrue, ProductReasonPriceReady)
	if p.Status.StripePriceID == firstPrice.ID || p.Status.Price.Amount != 700 {
		t.Fatalf("status = %+v, want a new 700 usd price", p.Status)
	}
	if newPrice := h.price(t, p.Status.StripePriceID); !newPrice.Active || newPrice.UnitAmount != 700 || newPrice.ProductID != prod.ID {
		t.Errorf("new Stripe price = %+v, want an active 700 usd price of the same product", newPrice)
	}
	if h.price(t, firstPrice.ID).Active {
		t.Errorf("old price %s still active", firstPrice.ID)
	}

	t.Log("a display name change updates the Stripe product, not the price")
	priceBefore := p.Status.StripePriceID
	updateSpec(t, p, func(s *v1alpha1.ProductSpec) { s.DisplayName = "A week with this video" })
	waitReady(t, p, metav1.ConditionTrue, ProductReasonPriceReady)
	eventually(t, waitTimeout, func() bool {
		getObject(t, p)
		return p.Status.ObservedGeneration == p.Generation
	}, "observedGeneration did not reach the new generation")
	if got := h.product(t, prod.ID).Name; got != "A week with this video" {
		t.Errorf("Stripe product name = %q, want the new display name", got)
	}
	if p.Status.StripePriceID != priceBefore {
		t.Errorf("a name change replaced the price %s with %s", priceBefore, p.Status.StripePriceID)
	}

	t.Log("active=false archives the Stripe product and stops sales")
	updateSpec(t, p, func(s *v1alpha1.ProductSpec) { s.Active = ptr.To(false) })
	waitReady(t, p, metav1.ConditionFalse, ProductReasonInactive)
	if h.product(t, prod.ID).Active {
		t.Error("Stripe product still active after spec.active=false")
	}

	t.Log("active=true unarchives it")
	updateSpec(t, p, func(s *v1alpha1.ProductSpec) { s.Active = ptr.To(true) })
	waitReady(t, p, metav1.ConditionTrue, ProductReasonPriceReady)
	if !h.product(t, prod.ID).Active {
		t.Error("Stripe product still archived after spec.active=true")
	}

	var evs []string
	if !poll(waitTimeout, func() bool {
		evs = kubeEvents(t, h.ns, p.Name)
		return hasEvent(evs, "Normal StripeProductCreated") && hasEvent(evs, "Normal StripePriceCreated") &&
			hasEvent(evs, "Normal StripePriceArchived") && hasEvent(evs, "Normal "+ProductReasonInactive)
	}) {
		t.Errorf("events %q do not tell the Product's story", evs)
	}

	t.Log("deletion archives the product and its price, then releases the finalizer")
	if err := testEnv.Client.Delete(testContext(t), p); err != nil {
		t.Fatalf("deleting: %v", err)
	}
	eventually(t, waitTimeout, func() bool {
		return apierrors.IsNotFound(testEnv.Client.Get(testContext(t), client.ObjectKeyFromObject(p), &v1alpha1.Product{}))
	}, "Product %s was not deleted", p.Name)
	if h.product(t, prod.ID).Active || h.price(t, p.Status.StripePriceID).Active {
		t.Error("deleted Product left an active Stripe product or price")
	}
}

func TestProduct_PriceRefIsValidatedAgainstStripe(t *testing.T) {
	h := startProductController(t, nil)
	ctx := testContext(t)
	// A product and prices made in the Stripe dashboard, not by the operator.
	theirs, err := h.sc.CreateProduct(ctx, stripe.CreateProductParams{OwnerUID: "dashboard", Name: "Made in the dashboard"})
	if err != nil {
		t.Fatalf("creating Stripe product: %v", err)
	}
	good, err := h.sc.CreatePrice(ctx, stripe.CreatePriceParams{OwnerUID: "dashboard", Generation: 1, ProductID: theirs.ID, Amount: 1200, Currency: "eur"})
	if err != nil {
		t.Fatalf("creating Stripe price: %v", err)
	}
	archived, err := h.sc.CreatePrice(ctx, stripe.CreatePriceParams{OwnerUID: "dashboard", Generation: 2, ProductID: theirs.ID, Amount: 900, Currency: "eur"})
	if err != nil {
		t.Fatalf("creating Stripe price: %v", err)
	}
	if _, err := h.sc.ArchivePrice(ctx, archived.ID); err != nil {
		t.Fatalf("archiving Stripe price: %v", err)
	}

	valid := newTestProduct(h.ns, "ref-valid", good.ID)
	unknown := newTestProduct(h.ns, "ref-unknown", "price_doesnotexist123")
	inactive := newTestProduct(h.ns, "ref-inactive", archived.ID)
	for _, p := range []*v1alpha1.Product{valid, unknown, inactive} {
		createObject(t, p)
	}
	waitReady(t, valid, metav1.ConditionTrue, ProductReasonPriceReady)
	if valid.Status.StripePriceID != good.ID || valid.Status.StripeProductID != theirs.ID ||
		*valid.Status.Price != (v1alpha1.Price{Amount: 1200, Currency: "eur"}) {
		t.Errorf("status = %+v, want the referenced price, its product and 1200 eur", valid.Status)
	}
	waitReady(t, unknown, metav1.ConditionFalse, ProductReasonStripePriceNotFound)
	waitReady(t, inactive, metav1.ConditionFalse, ProductReasonStripePriceInactive)
	if n := len(h.em.State().Products); n != 1 {
		t.Errorf("%d Stripe products, want only the dashboard's: a reference creates nothing", n)
	}

	if err := testEnv.Client.Delete(ctx, valid); err != nil {
		t.Fatalf("deleting: %v", err)
	}
	eventually(t, waitTimeout, func() bool {
		return apierrors.IsNotFound(testEnv.Client.Get(ctx, client.ObjectKeyFromObject(valid), &v1alpha1.Product{}))
	}, "Product %s was not deleted", valid.Name)
	if !h.price(t, good.ID).Active || !h.product(t, theirs.ID).Active {
		t.Error("deleting a Product archived the price it referenced, which the operator does not own")
	}
}

func TestProduct_StripeOutageIsReportedThenRecovers(t *testing.T) {
	h := startProductController(t, nil)
	if _, err := h.em.AddFault(emulator.Fault{Operation: "*", Status: 500}); err != nil {
		t.Fatalf("adding fault: %v", err)
	}
	p := newTestProduct(h.ns, "outage", "")
	createObject(t, p)
	waitReady(t, p, metav1.ConditionFalse, ProductReasonStripeUnavailable)

	h.em.ClearFaults()
	waitReady(t, p, metav1.ConditionTrue, ProductReasonPriceReady)
	st := h.em.State()
	if len(st.Products) != 1 || len(st.Prices) != 1 {
		t.Errorf("%d products and %d prices in Stripe, want one of each", len(st.Products), len(st.Prices))
	}
}

func TestProduct_LostStripeAnswersCreateNoDuplicates(t *testing.T) {
	h := startProductController(t, nil)
	// Stripe creates the objects but the answers never arrive: the retries
	// must get the same objects back through their idempotency keys.
	for _, op := range []string{stripe.OpCreateProduct, stripe.OpCreatePrice} {
		if _, err := h.em.AddFault(emulator.Fault{Operation: op, Status: 502, Proxy: true, AfterProcessing: true, Count: 1}); err != nil {
			t.Fatalf("adding fault: %v", err)
		}
	}
	p := newTestProduct(h.ns, "lost-answers", "")
	createObject(t, p)
	waitReady(t, p, metav1.ConditionTrue, ProductReasonPriceReady)
	st := h.em.State()
	if len(st.Products) != 1 || len(st.Prices) != 1 {
		t.Fatalf("%d products and %d prices in Stripe, want one of each", len(st.Products), len(st.Prices))
	}
	if st.Products[0].ID != p.Status.StripeProductID || st.Prices[0].ID != p.Status.StripePriceID {
		t.Errorf("status names %s/%s, Stripe has %s/%s", p.Status.StripeProductID, p.Status.StripePriceID, st.Products[0].ID, st.Prices[0].ID)
	}
}

func TestProduct_DeletionDuringStripeOutageIsReleasedAfterTimeout(t *testing.T) {
	var clk *clocktesting.FakePassiveClock
	h := startProductController(t, func(r *ProductReconciler) {
		r.CleanupTimeout = 10 * time.Minute
		clk = clocktesting.NewFakePassiveClock(time.Now())
		r.Clock = clk
	})
	p := newTestProduct(h.ns, "deleted-in-outage", "")
	createObject(t, p)
	waitReady(t, p, metav1.ConditionTrue, ProductReasonPriceReady)

	const budget = 1000
	if _, err := h.em.AddFault(emulator.Fault{Operation: "*", Status: 503, Count: budget}); err != nil {
		t.Fatalf("adding fault: %v", err)
	}
	if err := testEnv.Client.Delete(testContext(t), p); err != nil {
		t.Fatalf("deleting: %v", err)
	}
	eventually(t, waitTimeout, func() bool {
		f := h.em.Faults()
		return len(f) == 1 && f[0].Count < budget
	}, "the controller did not try to archive in Stripe")
	getObject(t, p)
	if len(p.Finalizers) == 0 {
		t.Fatal("finalizer released on the first failure, before the cleanup timeout")
	}

	clk.SetTime(time.Now().Add(11 * time.Minute))
	eventually(t, waitTimeout, func() bool {
		return apierrors.IsNotFound(testEnv.Client.Get(testContext(t), client.ObjectKeyFromObject(p), &v1alpha1.Product{}))
	}, "Product %s was not released after the cleanup timeout", p.Name)
	var evs []string
	want := "Warning " + eventReasonStripeCleanupAbandoned + ": Deleted without archiving price " +
		p.Status.StripePriceID + " and product " + p.Status.StripeProductID
	if !poll(waitTimeout, func() bool {
		evs = kubeEvents(t, h.ns, p.Name)
		return hasEvent(evs, want)
	}) {
		t.Errorf("events %q: want %q", evs, want)
	}
	if !h.product(t, p.Status.StripeProductID).Active {
		t.Error("the Stripe product was archived although Stripe was failing every call")
	}
}

func TestProduct_SamplesBecomeReady(t *testing.T) {
	h := startProductController(t, nil)
	dir := filepath.Join(testenv.RepoRoot(), "config", "samples")
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatalf("reading kustomization: %v", err)
	}
	var kust struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.UnmarshalStrict(raw, &kust); err != nil {
		t.Fatalf("parsing kustomization: %v", err)
	}
	var samples []*v1alpha1.Product
	for _, file := range kust.Resources {
		raw, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatalf("reading sample: %v", err)
		}
		p := &v1alpha1.Product{}
		if err := yaml.UnmarshalStrict(raw, p); err != nil {
			t.Fatalf("parsing sample %s: %v", file, err)
		}
		p.Namespace = h.ns
		createObject(t, p)
		samples = append(samples, p)
	}
	var week, lifetime bool
	for _, p := range samples {
		waitReady(t, p, metav1.ConditionTrue, ProductReasonPriceReady)
		days := p.Spec.AccessDurationDays
		week = week || (p.Spec.EntityType == v1alpha1.EntityTypeVideo && days != nil && *days == 7)
		lifetime = lifetime || (p.Spec.EntityType == v1alpha1.EntityTypeChannel && days == nil)
	}
	if !week || !lifetime {
		t.Errorf("samples: 7-day video %v, lifetime channel %v; want both", week, lifetime)
	}
}

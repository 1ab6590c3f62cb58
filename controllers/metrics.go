package controllers

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/stripe"
)

// Reasons of paytoview_purchase_reconcile_errors_total.
const (
	errReasonStripeUnavailable = "stripe_unavailable"
	errReasonStripeRejected    = "stripe_rejected"
	errReasonConflict          = "conflict"
	errReasonAPIServer         = "apiserver"
	errReasonOther             = "other"
)

var (
	purchaseTransitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "paytoview_purchase_transitions_total",
		Help: "Purchase phase changes seen by the Purchase controller's watch, whoever made them, by phase before and after (None: not seen yet).",
	}, []string{"from", "to"})

	purchaseSessionReady = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "paytoview_purchase_session_ready_seconds",
		Help:    "Time from a Purchase's creation to its checkout session being open (Ready=True), the wait the buyer sees.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300},
	})

	purchaseReconcileErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "paytoview_purchase_reconcile_errors_total",
		Help: "Purchase reconciles that failed or hit a refusal, by reason (stripe_unavailable, stripe_rejected, conflict, apiserver, other).",
	}, []string{"reason"})

	purchaseDuplicatePayments = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "paytoview_purchase_duplicate_payments_total",
		Help: "Purchases paid while another purchase of the same user and entity already granted access (the buyer paid twice; support refunds one).",
	})

	purchasesDesc = prometheus.NewDesc("paytoview_purchases",
		"Purchases in the operator's cache, by phase.", []string{"phase"}, nil)
)

// purchasePhaseSource is the cache the purchases gauge counts from: the one
// of the manager the Purchase controller was last set up with.
var purchasePhaseSource atomic.Pointer[client.Reader]

func init() {
	metrics.Registry.MustRegister(purchaseTransitions, purchaseSessionReady, purchaseReconcileErrors, purchaseDuplicatePayments,
		&PurchasePhaseCollector{Reader: currentPurchaseReader{}})
}

func setPurchasePhaseSource(r client.Reader) { purchasePhaseSource.Store(&r) }

// errNoPurchaseSource: no Purchase controller has been set up yet.
var errNoPurchaseSource = errors.New("no Purchase controller is set up")

// currentPurchaseReader reads through purchasePhaseSource.
type currentPurchaseReader struct{}

func (currentPurchaseReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if r := purchasePhaseSource.Load(); r != nil {
		return (*r).Get(ctx, key, obj, opts...)
	}
	return errNoPurchaseSource
}

func (currentPurchaseReader) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if r := purchasePhaseSource.Load(); r != nil {
		return (*r).List(ctx, list, opts...)
	}
	return errNoPurchaseSource
}

// PurchasePhaseCollector reports paytoview_purchases{phase} by counting the
// Purchases in a (cached) reader at scrape time, so the gauge cannot drift
// from the truth across restarts, deletions or writes by the webhook
// receiver. Every phase is reported, with 0 when there is none.
type PurchasePhaseCollector struct {
	// Reader lists Purchases, normally the manager's cache.
	Reader client.Reader
}

// Describe implements prometheus.Collector.
func (c *PurchasePhaseCollector) Describe(ch chan<- *prometheus.Desc) { ch <- purchasesDesc }

// Collect implements prometheus.Collector.
func (c *PurchasePhaseCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list v1alpha1.PurchaseList
	if err := c.Reader.List(ctx, &list); err != nil {
		return
	}
	counts := map[v1alpha1.PurchasePhase]int{}
	for i := range list.Items {
		ph := list.Items[i].Status.Phase
		if ph == "" {
			ph = v1alpha1.PurchasePending
		}
		counts[ph]++
	}
	for _, ph := range []v1alpha1.PurchasePhase{v1alpha1.PurchasePending, v1alpha1.PurchaseCompleted,
		v1alpha1.PurchaseRefunded, v1alpha1.PurchaseCanceled, v1alpha1.PurchaseFailed} {
		ch <- prometheus.MustNewConstMetric(purchasesDesc, prometheus.GaugeValue, float64(counts[ph]), string(ph))
	}
}

func phaseLabel(p v1alpha1.PurchasePhase) string {
	if p == "" {
		return "None"
	}
	return string(p)
}

// errorReason classifies a reconcile error for the errors metric.
func errorReason(err error) string {
	var status apierrors.APIStatus
	switch {
	case stripe.IsRetryable(err):
		return errReasonStripeUnavailable
	case stripe.IsTerminal(err):
		return errReasonStripeRejected
	case apierrors.IsConflict(err):
		return errReasonConflict
	case errors.As(err, &status):
		return errReasonAPIServer
	}
	return errReasonOther
}

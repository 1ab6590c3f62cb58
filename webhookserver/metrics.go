package webhookserver

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics of the API and the webhook receiver, on controller-runtime's
// registry so the manager's metrics endpoint serves them.
var (
	apiRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "paytoview_api_requests_total",
		Help: "HTTP requests served by the pay-to-view API, by route pattern and status code.",
	}, []string{"route", "code"})

	apiLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "paytoview_api_request_duration_seconds",
		Help:    "Time to answer a pay-to-view API request, by route pattern.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15},
	}, []string{"route"})

	webhookEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "paytoview_webhook_events_total",
		Help: "Verified Stripe webhook events, by event type and outcome (applied, duplicate, unrelated, unknown_purchase, ignored, invalid, error).",
	}, []string{"type", "outcome"})

	webhookVerifyFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "paytoview_webhook_verification_failures_total",
		Help: "Stripe webhook deliveries rejected before any change, by reason.",
	}, []string{"reason"})

	webhookLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "paytoview_webhook_handler_duration_seconds",
		Help:    "Time to verify and apply one Stripe webhook delivery, by outcome.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"outcome"})

	purchasesCreated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "paytoview_api_purchase_creates_total",
		Help: "Outcomes of purchase creation requests: created, reused, has_access, payment_processing, rate_limited, too_many_pending.",
	}, []string{"outcome"})
)

func init() {
	metrics.Registry.MustRegister(apiRequests, apiLatency, webhookEvents, webhookVerifyFailures, webhookLatency, purchasesCreated)
}

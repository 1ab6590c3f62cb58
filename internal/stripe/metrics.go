package stripe

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Outcomes of a Stripe call, the "outcome" label of
// paytoview_stripe_requests_total.
const (
	OutcomeSuccess             = "success"
	OutcomeRetryableError      = "retryable_error"
	OutcomeTerminalError       = "terminal_error"
	OutcomeNotFound            = "not_found"
	OutcomeIdempotencyMismatch = "idempotency_mismatch"
)

var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "paytoview_stripe_requests_total",
		Help: "Stripe API calls by operation and outcome (success, retryable_error, terminal_error, not_found, idempotency_mismatch).",
	}, []string{"operation", "outcome"})

	requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "paytoview_stripe_request_duration_seconds",
		Help:    "Latency of Stripe API calls, including stripe-go's own retries.",
		Buckets: []float64{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"operation"})
)

func init() {
	metrics.Registry.MustRegister(requestsTotal, requestDuration)
}

// outcomeOf maps a call's result to its metric label.
func outcomeOf(e *Error) string {
	switch {
	case e == nil:
		return OutcomeSuccess
	case e.Kind == ErrorIdempotencyMismatch:
		return OutcomeIdempotencyMismatch
	case e.Kind == ErrorRetryable:
		return OutcomeRetryableError
	case IsNotFound(e):
		return OutcomeNotFound
	default:
		return OutcomeTerminalError
	}
}

func observe(op string, e *Error, took time.Duration) {
	requestsTotal.WithLabelValues(op, outcomeOf(e)).Inc()
	requestDuration.WithLabelValues(op).Observe(took.Seconds())
}

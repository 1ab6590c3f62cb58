package webhookserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	stripego "github.com/stripe/stripe-go/v76"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/index"
	"github.com/md-platform/paytoview-operator/internal/lifecycle"
	"github.com/md-platform/paytoview-operator/internal/stripe"
)

const (
	// maxWebhookBody bounds a webhook delivery. Stripe events are a few KiB.
	maxWebhookBody = 1 << 20
	// statusPatchAttempts bounds the re-read and re-apply loop on conflicts
	// with the controller's own status writes.
	statusPatchAttempts = 8
	// unmatchedEventGrace is how long after its creation an event found by
	// PaymentIntent id alone (a dispute, a refund made in the dashboard) is
	// answered 503 when no purchase has that PaymentIntent yet, so Stripe
	// delivers it again: it may have overtaken the checkout.session.completed
	// that records the PaymentIntent. Older unmatched events are unrelated
	// payments and are acknowledged, so nothing loops for long.
	unmatchedEventGrace = 10 * time.Minute
)

// Outcomes of a verified webhook event (the outcome label of the metrics).
const (
	outcomeApplied            = "applied"
	outcomeDuplicate          = "duplicate"
	outcomeUnrelated          = "unrelated"
	outcomeUnknownPurchase    = "unknown_purchase"
	outcomeIgnored            = "ignored"
	outcomeInvalid            = "invalid"
	outcomeConflictingPayment = "conflicting_payment"
	outcomeRetryLater         = "retry_later"
	outcomeError              = "error"
	outcomeRejected           = "rejected"
)

// webhookAck is the 200 answer: Stripe only needs the status, people
// replaying events by hand like to see what happened.
type webhookAck struct {
	Received bool   `json:"received"`
	Outcome  string `json:"outcome"`
}

// handledEvents are the event types routed to the lifecycle functions; the
// type label of the metrics is one of these or "other".
var handledEvents = map[stripego.EventType]bool{
	"checkout.session.completed":               true,
	"checkout.session.async_payment_succeeded": true,
	"checkout.session.async_payment_failed":    true,
	"checkout.session.expired":                 true,
	"charge.refunded":                          true,
	"charge.refund.updated":                    true,
	"charge.dispute.created":                   true,
	"charge.dispute.closed":                    true,
}

// stripeWebhook serves POST /client/v1/webhooks/stripe.
//
// Nothing is read or changed before the signature over the raw bytes is
// verified; the body is never re-serialised first. Verified events are
// applied with the same lifecycle functions the Purchase controller's
// healing uses, to a Purchase read from the apiserver, with an optimistic
// lock. 200 means the change is stored, or that the event needs none
// (duplicate, unrelated, unknown purchase); 5xx means it could not be
// stored and Stripe should deliver it again.
func (s *Server) stripeWebhook(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	outcome := outcomeRejected
	defer func() { webhookLatency.WithLabelValues(outcome).Observe(time.Since(start).Seconds()) }()
	log := logr.FromContextOrDiscard(r.Context())

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			webhookVerifyFailures.WithLabelValues("body_too_large").Inc()
			log.Info("rejected webhook", "reason", "body_too_large")
			writeError(w, newError(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, fmt.Sprintf("webhook bodies are at most %d bytes", maxWebhookBody)))
			return
		}
		webhookVerifyFailures.WithLabelValues("unreadable_body").Inc()
		writeError(w, newError(http.StatusBadRequest, CodeMalformedJSON, "could not read the body"))
		return
	}
	ev, err := s.opts.Verifier.Verify(body, r.Header.Get(stripe.SignatureHeader))
	if err != nil {
		reason := "unknown"
		var verr *stripe.VerifyError
		if errors.As(err, &verr) {
			reason = verr.Reason
		}
		webhookVerifyFailures.WithLabelValues(reason).Inc()
		log.Info("rejected webhook", "reason", reason)
		writeError(w, newError(http.StatusBadRequest, CodeInvalidSignature, "webhook verification failed: "+reason))
		return
	}

	typ := string(ev.Type)
	typeLabel := typ
	if !handledEvents[ev.Type] {
		typeLabel = "other"
	}
	log = log.WithValues("event", ev.ID, "type", typ)
	ctx := logr.NewContext(r.Context(), log)
	outcome, err = s.applyEvent(ctx, ev)
	webhookEvents.WithLabelValues(typeLabel, outcome).Inc()
	switch {
	case err != nil:
		log.Error(err, "could not apply webhook event; Stripe will deliver it again")
		writeError(w, newError(http.StatusServiceUnavailable, CodeUnavailable, "the event could not be stored; deliver it again").withRetryAfter(time.Second))
	case outcome == outcomeRetryLater:
		log.Info("no purchase has this PaymentIntent yet; asking Stripe to deliver the event again")
		writeError(w, newError(http.StatusServiceUnavailable, CodeUnavailable, "the purchase of this payment is not known yet; deliver the event again").withRetryAfter(time.Second))
	default:
		log.V(1).Info("handled webhook event", "outcome", outcome)
		writeJSON(w, http.StatusOK, webhookAck{Received: true, Outcome: outcome})
	}
}

// applyEvent routes a verified event to its lifecycle function.
func (s *Server) applyEvent(ctx context.Context, ev stripego.Event) (string, error) {
	log := logr.FromContextOrDiscard(ctx)
	switch ev.Type {
	case "checkout.session.completed", "checkout.session.async_payment_succeeded",
		"checkout.session.async_payment_failed", "checkout.session.expired":
		sess, err := stripe.SessionFromEvent(ev)
		if err != nil {
			log.Error(err, "could not decode checkout session")
			return outcomeInvalid, nil
		}
		name, outcome, err := s.findPurchase(ctx, sess.Metadata, sess.ClientReferenceID, index.PurchaseByCheckoutSession, sess.ID, false, ev)
		if name == "" {
			return outcome, err
		}
		return s.applyToPurchase(ctx, name, func(p *v1alpha1.Purchase, now time.Time) (lifecycle.Result, error) {
			return lifecycle.ApplySession(p, lifecycle.SessionEvent(ev.Type), sess, now)
		})

	case "charge.refunded":
		ch, err := stripe.ChargeFromEvent(ev)
		if err != nil {
			log.Error(err, "could not decode charge")
			return outcomeInvalid, nil
		}
		name, outcome, err := s.findPurchase(ctx, ch.Metadata, "", index.PurchaseByPaymentIntent, ch.PaymentIntentID, true, ev)
		if name == "" {
			return outcome, err
		}
		return s.applyToPurchase(ctx, name, func(p *v1alpha1.Purchase, now time.Time) (lifecycle.Result, error) {
			return lifecycle.ApplyCharge(p, ch, now)
		})

	case "charge.refund.updated":
		rf, err := stripe.RefundFromEvent(ev)
		if err != nil {
			log.Error(err, "could not decode refund")
			return outcomeInvalid, nil
		}
		name, outcome, err := s.findPurchase(ctx, rf.Metadata, "", index.PurchaseByPaymentIntent, rf.PaymentIntentID, true, ev)
		if name == "" {
			return outcome, err
		}
		return s.applyToPurchase(ctx, name, func(p *v1alpha1.Purchase, now time.Time) (lifecycle.Result, error) {
			return lifecycle.ApplyRefund(p, rf, now)
		})

	case "charge.dispute.created", "charge.dispute.closed":
		d, err := stripe.DisputeFromEvent(ev)
		if err != nil {
			log.Error(err, "could not decode dispute")
			return outcomeInvalid, nil
		}
		name, outcome, err := s.findPurchase(ctx, nil, "", index.PurchaseByPaymentIntent, d.PaymentIntentID, true, ev)
		if name == "" {
			return outcome, err
		}
		return s.applyToPurchase(ctx, name, func(p *v1alpha1.Purchase, now time.Time) (lifecycle.Result, error) {
			return lifecycle.ApplyDispute(p, d, now)
		})
	}
	return outcomeIgnored, nil
}

// findPurchase names the Purchase an event is about: the purchase id in the
// object's metadata (the seed's payToViewPurchaseId), else the session's
// client_reference_id, else a cache index lookup (session id or
// PaymentIntent id). The name is only a pointer: the purchase itself is
// read from the apiserver before anything is applied, and the lifecycle
// functions check the metadata's userId against it.
//
// When it returns no name, outcome says why and err whether to retry.
func (s *Server) findPurchase(ctx context.Context, md map[string]string, clientRef, field, value string, graceOnMiss bool, ev stripego.Event) (name, outcome string, err error) {
	log := logr.FromContextOrDiscard(ctx)
	if id, ok := md[stripe.MetaPurchaseID]; ok {
		if !validPurchaseID(id) {
			log.Info("event names a purchase id that is not one of ours", "metadataPurchaseId", sanitise(id, 80))
			return "", outcomeUnrelated, nil
		}
		return id, "", nil
	}
	if clientRef != "" && validPurchaseID(clientRef) {
		return clientRef, "", nil
	}
	if value == "" {
		log.V(1).Info("event carries no purchase id, session id or PaymentIntent id of ours")
		return "", outcomeUnrelated, nil
	}
	var list v1alpha1.PurchaseList
	if err := s.opts.Client.List(ctx, &list, client.InNamespace(s.opts.Namespace),
		client.MatchingFields{field: value}, client.UnsafeDisableDeepCopy); err != nil {
		return "", outcomeError, fmt.Errorf("looking up Purchase by %s %s in the cache: %w", field, value, err)
	}
	switch len(list.Items) {
	case 1:
		return list.Items[0].Name, "", nil
	case 0:
		if !graceOnMiss {
			// Our sessions always carry our metadata: one without it that
			// no purchase tracks belongs to another integration.
			log.V(1).Info("no purchase matches the event", "field", field, "value", value)
			return "", outcomeUnrelated, nil
		}
		if s.opts.Clock.Now().Sub(time.Unix(ev.Created, 0)) < unmatchedEventGrace {
			return "", outcomeRetryLater, nil
		}
		log.Info("no purchase matches the event", "field", field, "value", value)
		return "", outcomeUnknownPurchase, nil
	default:
		// The PaymentIntent and session ids are unique per purchase; two
		// matches mean someone copied status by hand. Apply to neither.
		log.Error(errors.New("several purchases match"), "refusing ambiguous event", "field", field, "value", value, "count", len(list.Items))
		return "", outcomeUnrelated, nil
	}
}

// applyToPurchase applies the observation to the Purchase and patches status
// with an optimistic lock, re-reading and re-applying on conflict. Phase
// changes are recorded as Kubernetes Events. The first try reads the cache,
// which usually holds the latest Purchase: a change computed from it is
// stored only if it is the latest (the lock), and any other answer (nothing
// to change, not this purchase, ...) is decided again from the apiserver, so
// a stale cache never loses an update.
func (s *Server) applyToPurchase(ctx context.Context, name string, apply func(*v1alpha1.Purchase, time.Time) (lifecycle.Result, error)) (string, error) {
	log := logr.FromContextOrDiscard(ctx).WithValues("purchase", name)
	fromCache := true
	for range statusPatchAttempts {
		var p v1alpha1.Purchase
		reader := s.opts.APIReader
		if fromCache {
			reader = s.opts.Client
		}
		err := reader.Get(ctx, client.ObjectKey{Namespace: s.opts.Namespace, Name: name}, &p)
		if fromCache && err != nil {
			fromCache = false
			continue
		}
		if apierrors.IsNotFound(err) {
			log.Info("event is for a purchase that does not exist here")
			return outcomeUnknownPurchase, nil
		}
		if err != nil {
			return outcomeError, fmt.Errorf("reading Purchase %s: %w", name, err)
		}
		base := p.DeepCopy()
		res, err := apply(&p, s.opts.Clock.Now())
		if fromCache && (err != nil || !res.Changed) {
			fromCache = false
			continue
		}
		fromCache = false
		switch {
		case errors.Is(err, lifecycle.ErrNotThisPurchase):
			log.Info("event does not belong to the purchase it names", "reason", err.Error())
			return outcomeUnrelated, nil
		case errors.Is(err, lifecycle.ErrConflictingPayment):
			log.Error(err, "a second payment was made for a paid purchase; refund it in the Stripe dashboard")
			s.recordEvent(&p, corev1.EventTypeWarning, "ConflictingPayment", err.Error())
			return outcomeConflictingPayment, nil
		case err != nil:
			log.Error(err, "could not apply event")
			return outcomeInvalid, nil
		case !res.Changed:
			return outcomeDuplicate, nil
		}
		err = s.opts.Client.Status().Patch(ctx, &p, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
		switch {
		case err == nil:
		case apierrors.IsConflict(err):
			log.V(1).Info("purchase changed meanwhile; re-reading")
			continue
		case apierrors.IsNotFound(err):
			return outcomeUnknownPurchase, nil
		default:
			return outcomeError, fmt.Errorf("patching status of Purchase %s: %w", name, err)
		}
		if res.PhaseChanged() {
			log.Info("purchase changed phase", "from", res.From, "to", res.To)
		}
		for _, e := range res.Events {
			s.recordEvent(&p, e.Type, e.Reason, e.Message)
		}
		return outcomeApplied, nil
	}
	return outcomeError, fmt.Errorf("patching status of Purchase %s: still conflicting after %d attempts", name, statusPatchAttempts)
}

func (s *Server) recordEvent(p *v1alpha1.Purchase, eventType, reason, message string) {
	if s.opts.Recorder == nil {
		return
	}
	s.opts.Recorder.Eventf(p, nil, eventType, reason, "StripeWebhook", "%s", message)
}

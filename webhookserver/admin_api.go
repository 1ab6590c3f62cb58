package webhookserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/auth"
	"github.com/md-platform/paytoview-operator/internal/index"
	"github.com/md-platform/paytoview-operator/internal/lifecycle"
	"github.com/md-platform/paytoview-operator/internal/naming"
)

const (
	// maxRefundBody bounds the refund request body.
	maxRefundBody = 64 << 10
	// maxRefundReason is the CRD's limit for spec.refund.reason.
	maxRefundReason = 500
	// maxUserIDLen is the CRD's limit for userId.
	maxUserIDLen = 255
)

// requireAdmin answers 401 without a valid token and 403 for a valid token
// without the admin role.
func (s *Server) requireAdmin(w http.ResponseWriter, r *http.Request) (auth.Principal, bool) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return p, false
	}
	if !p.Admin {
		writeError(w, newError(http.StatusForbidden, CodeForbidden, "this endpoint is for administrators"))
		return p, false
	}
	return p, true
}

// refundResponse answers the refund endpoint.
type refundResponse struct {
	Success    bool   `json:"success"`
	PurchaseID string `json:"purchaseId"`
	Status     string `json:"status"`
	Message    string `json:"message,omitempty"`
}

// decodeRefundReason reads the optional {"reason"} body; an empty body means
// no reason.
func decodeRefundReason(r *http.Request) (string, *apiError) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxRefundBody+1))
	if err != nil {
		return "", newError(http.StatusBadRequest, CodeMalformedJSON, "could not read the body")
	}
	if len(bytes.TrimSpace(raw)) == 0 && len(raw) <= maxRefundBody {
		return "", nil
	}
	obj, apiErr := decodeObject(bytes.NewReader(raw), maxRefundBody, []string{"reason"})
	if apiErr != nil {
		return "", apiErr
	}
	reason, _, apiErr := stringField(obj, "reason")
	if apiErr != nil {
		return "", apiErr
	}
	if len(reason) > maxRefundReason {
		return "", newError(http.StatusBadRequest, CodeInvalidField, fmt.Sprintf("reason is longer than %d bytes", maxRefundReason))
	}
	if strings.IndexFunc(reason, func(r rune) bool { return unicode.IsControl(r) && r != '\n' }) >= 0 {
		return "", newError(http.StatusBadRequest, CodeInvalidField, "reason must not contain control characters")
	}
	return reason, nil
}

// adminRefund serves POST /admin/v1/pay-to-view/purchases/{id}/refund. It
// records the refund request on the Purchase (the controller refunds through
// Stripe with an idempotency key from the Purchase UID, so a repeated request
// never refunds twice) and waits for the outcome.
func (s *Server) adminRefund(w http.ResponseWriter, r *http.Request) {
	principal, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	log := logr.FromContextOrDiscard(ctx)
	id := r.PathValue("id")
	notFound := newError(http.StatusNotFound, CodePurchaseNotFound, "no such purchase")
	if !validPurchaseID(id) {
		writeError(w, notFound)
		return
	}
	reason, apiErr := decodeRefundReason(r)
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	log = log.WithValues("purchase", id, "admin", principal.UserID)

	p, apiErr := s.requestRefund(ctx, log, id, reason, principal.UserID)
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	// spec is immutable but for the refund request, so this generation is
	// the one the operator acts on.
	requested := p.Generation
	if phaseOf(p) == v1alpha1.PurchaseRefunded {
		writeJSON(w, http.StatusOK, refundResponse{Success: true, PurchaseID: id, Status: string(v1alpha1.PurchaseRefunded)})
		return
	}
	if c := refundFailure(p, requested); c != nil {
		writeError(w, refundFailedError(log, id, c))
		return
	}

	waitCtx, cancel := context.WithTimeout(ctx, s.opts.RefundTimeout)
	defer cancel()
	done, err := s.waiter.wait(waitCtx, id, func(p *v1alpha1.Purchase) bool {
		return phaseOf(p) == v1alpha1.PurchaseRefunded || refundFailure(p, requested) != nil
	})
	switch {
	case err == nil:
		if c := refundFailure(done, requested); c != nil && phaseOf(done) != v1alpha1.PurchaseRefunded {
			writeError(w, refundFailedError(log, id, c))
			return
		}
		log.Info("purchase refunded")
		writeJSON(w, http.StatusOK, refundResponse{Success: true, PurchaseID: id, Status: string(v1alpha1.PurchaseRefunded)})
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		if done != nil {
			p = done
		}
		resp := refundResponse{Success: true, PurchaseID: id, Status: string(phaseOf(p)),
			Message: "the refund is requested and still in progress"}
		if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionRefunded); c != nil && c.Message != "" {
			resp.Message = c.Message
		}
		writeJSON(w, http.StatusAccepted, resp)
	case errors.Is(err, errPurchaseDeleted):
		writeError(w, notFound)
	default:
		writeError(w, unavailableError(log, err, "could not wait for refund"))
	}
}

// refundFailure is the Refunded condition when Stripe refused or failed the
// refund requested at generation requested, else nil. Neither is retried by
// the operator, so waiting longer would only hide it. A failure recorded
// before the request (a refund started in the Stripe dashboard that failed)
// carries an older observedGeneration and does not count: the operator is
// about to refund anew.
func refundFailure(p *v1alpha1.Purchase, requested int64) *metav1.Condition {
	c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionRefunded)
	if c == nil || c.Status != metav1.ConditionFalse || c.ObservedGeneration < requested {
		return nil
	}
	if c.Reason != lifecycle.ReasonRefundRejected && c.Reason != lifecycle.ReasonRefundFailed {
		return nil
	}
	return c
}

// refundFailedError answers a refund Stripe refused or failed with the
// condition's message: Stripe's reason, which holds no secrets.
func refundFailedError(log logr.Logger, id string, c *metav1.Condition) *apiError {
	log.Info("refund failed at Stripe", "reason", c.Reason)
	msg := c.Message
	if msg == "" {
		msg = "Stripe did not refund this purchase; handle the refund in the Stripe dashboard"
	}
	return newError(http.StatusBadGateway, CodeRefundFailed, msg).withPurchase(id)
}

// requestRefund sets spec.refund on a Completed purchase unless it is set
// already, with an optimistic lock so two admins never overwrite each other's
// request (the CRD forbids changing it anyway). It reads from the apiserver:
// the decision to refund must not rest on a stale cache.
func (s *Server) requestRefund(ctx context.Context, log logr.Logger, id, reason, admin string) (*v1alpha1.Purchase, *apiError) {
	const attempts = 5
	for range attempts {
		var p v1alpha1.Purchase
		err := s.opts.APIReader.Get(ctx, client.ObjectKey{Namespace: s.opts.Namespace, Name: id}, &p)
		if apierrors.IsNotFound(err) {
			return nil, newError(http.StatusNotFound, CodePurchaseNotFound, "no such purchase")
		}
		if err != nil {
			return nil, unavailableError(log, err, "could not read purchase")
		}
		switch phaseOf(&p) {
		case v1alpha1.PurchaseRefunded:
			return &p, nil
		case v1alpha1.PurchaseCompleted:
		default:
			return nil, newError(http.StatusConflict, CodeNotRefundable,
				fmt.Sprintf("a %s purchase was never paid, so it cannot be refunded", phaseOf(&p)))
		}
		if p.Spec.Refund != nil {
			return &p, nil
		}
		base := p.DeepCopy()
		p.Spec.Refund = &v1alpha1.RefundRequest{Requested: true, Reason: reason, RequestedBy: admin}
		err = s.opts.Client.Patch(ctx, &p, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
		switch {
		case err == nil:
			log.Info("refund requested")
			if s.opts.Recorder != nil {
				s.opts.Recorder.Eventf(&p, nil, corev1.EventTypeNormal, "RefundRequested", "RequestRefund",
					"Refund requested by an administrator through the API")
			}
			return &p, nil
		case apierrors.IsConflict(err):
			continue
		case apierrors.IsNotFound(err):
			return nil, newError(http.StatusNotFound, CodePurchaseNotFound, "no such purchase")
		default:
			return nil, unavailableError(log, err, "could not request refund")
		}
	}
	return nil, unavailableError(log, errors.New("the purchase kept changing"), "could not request refund")
}

// adminPurchaseItem is a purchase as support staff see it.
type adminPurchaseItem struct {
	purchaseItem
	UserID                string `json:"userId"`
	StripeCustomerID      string `json:"stripeCustomerId,omitempty"`
	CheckoutSessionID     string `json:"checkoutSessionId,omitempty"`
	ExternalTransactionID string `json:"externalTransactionId,omitempty"`
	RefundRequested       bool   `json:"refundRequested"`
}

// adminListPurchases serves GET /admin/v1/pay-to-view/purchases with
// optional userId, entityId and status filters. userId (and entityId with
// it) use the cache's field indexes; entityId alone uses the entity label;
// no filter or status alone walks the namespace's cache, which is fine for
// occasional support queries.
func (s *Server) adminListPurchases(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	q := r.URL.Query()
	lq, apiErr := parseListQuery(q)
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	userID, apiErr := singleParam(q, "userId")
	if apiErr == nil && userID != "" && (len(userID) > maxUserIDLen || strings.IndexFunc(userID, unicode.IsControl) >= 0) {
		apiErr = newError(http.StatusBadRequest, CodeInvalidField, fmt.Sprintf("userId must be at most %d printable characters", maxUserIDLen))
	}
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	entityID, apiErr := singleParam(q, "entityId")
	if apiErr == nil && entityID != "" {
		apiErr = validateEntityID(entityID)
	}
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	status, apiErr := singleParam(q, "status")
	if apiErr == nil && status != "" && !validPhase(status) {
		apiErr = newError(http.StatusBadRequest, CodeInvalidField, "status must be one of Pending, Completed, Refunded, Canceled, Failed")
	}
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}

	opts := []client.ListOption{client.InNamespace(s.opts.Namespace), client.UnsafeDisableDeepCopy}
	switch {
	case userID != "" && entityID != "":
		opts = append(opts, client.MatchingFields{index.PurchaseByUserEntity: index.UserEntityKey(userID, entityID)})
	case userID != "":
		opts = append(opts, client.MatchingFields{index.PurchaseByUser: userID})
	case entityID != "":
		opts = append(opts, client.MatchingLabels{v1alpha1.LabelEntity: naming.Hash(entityID)})
	}
	var list v1alpha1.PurchaseList
	if err := s.opts.Client.List(r.Context(), &list, opts...); err != nil {
		writeError(w, unavailableError(logr.FromContextOrDiscard(r.Context()), err, "could not list purchases"))
		return
	}
	matched := make([]*v1alpha1.Purchase, 0, len(list.Items))
	for i := range list.Items {
		p := &list.Items[i]
		// The label is a hash; compare the real id too.
		if entityID != "" && p.Spec.EntityID != entityID {
			continue
		}
		if status != "" && string(phaseOf(p)) != status {
			continue
		}
		matched = append(matched, p)
	}
	newestFirst(matched)
	now := s.opts.Clock.Now()
	sel, next := paginate(matched, lq)
	items := make([]adminPurchaseItem, len(sel))
	for i, p := range sel {
		items[i] = adminPurchaseItem{
			purchaseItem:          itemOf(p, now),
			UserID:                p.Spec.UserID,
			StripeCustomerID:      p.Status.StripeCustomerID,
			CheckoutSessionID:     p.Status.CheckoutSessionID,
			ExternalTransactionID: p.Status.ExternalTransactionID,
			RefundRequested:       p.Spec.Refund != nil,
		}
	}
	writeJSON(w, http.StatusOK, purchasePage[adminPurchaseItem]{Items: items, Page: lq.page, PageSize: lq.pageSize,
		TotalCount: len(matched), NextCursor: next})
}

func validPhase(s string) bool {
	switch v1alpha1.PurchasePhase(s) {
	case v1alpha1.PurchasePending, v1alpha1.PurchaseCompleted, v1alpha1.PurchaseRefunded,
		v1alpha1.PurchaseCanceled, v1alpha1.PurchaseFailed:
		return true
	}
	return false
}

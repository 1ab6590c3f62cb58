package webhookserver

import (
	"net/http"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/lifecycle"
)

// Tests of the admin API that need no Purchase controller: the test plays
// the controller's part by writing status.

func TestRefund_FailureSeenWhileWaitingIs502AndAnEarlierOneIsNot(t *testing.T) {
	h := newHarness(t, harnessConfig{noPurchaseController: true, options: func(o *Options) { o.RefundTimeout = waitTimeout }})
	// A refund started in the Stripe dashboard failed before the admin
	// asked: the operator will refund anew, so that is no answer yet.
	st := completedStatus(time.Now().Add(-time.Hour), 0)
	st.Conditions = []metav1.Condition{{
		Type: v1alpha1.ConditionRefunded, Status: metav1.ConditionFalse, Reason: lifecycle.ReasonRefundFailed,
		Message: "refund re_dashboard failed (expired_or_canceled_card)", ObservedGeneration: 1, LastTransitionTime: metav1.Now(),
	}}
	p := h.seed("alice", "vid-1", "movie", st)

	call := h.requestAsync(http.MethodPost, "/admin/v1/pay-to-view/purchases/"+p.Name+"/refund", token(t, "support-1", true), nil)
	eventually(t, func() bool {
		p = h.purchase(p.Name)
		return p.Spec.Refund != nil && h.srv.waiter.waiting() == 1
	}, "the refund was never requested and waited for")

	// The operator's refund fails.
	const reason = "refund re_ours failed (lost_or_stolen_card); access kept, handle the refund in the Stripe dashboard"
	meta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{
		Type: v1alpha1.ConditionRefunded, Status: metav1.ConditionFalse, Reason: lifecycle.ReasonRefundFailed,
		Message: reason, ObservedGeneration: p.Generation,
	})
	h.setStatus(p)

	r := call.answer(t)
	if m := r.expectError(t, http.StatusBadGateway, CodeRefundFailed); m["message"] != reason || m["purchaseId"] != p.Name {
		t.Fatalf("answer %s, want the condition's message and purchaseId %s", r.body, p.Name)
	}
}

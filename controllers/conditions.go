package controllers

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
)

// setReadyCondition sets the Ready condition and reports whether its status
// or reason changed, so that callers record an Event only then and a retry
// loop with the same outcome adds no noise.
func setReadyCondition(conds *[]metav1.Condition, generation int64, status metav1.ConditionStatus, reason, message string) bool {
	// A copy: SetStatusCondition updates the condition in place.
	var prev metav1.Condition
	if cond := meta.FindStatusCondition(*conds, v1alpha1.ConditionReady); cond != nil {
		prev = *cond
	}
	meta.SetStatusCondition(conds, metav1.Condition{
		Type:               v1alpha1.ConditionReady,
		Status:             status,
		Reason:             reason,
		Message:            message,
		ObservedGeneration: generation,
	})
	return prev.Status != status || prev.Reason != reason
}

// durationOr is d when it is set (positive), else def.
func durationOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

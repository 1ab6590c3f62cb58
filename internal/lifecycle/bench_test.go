package lifecycle

import (
	"testing"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
)

// BenchmarkApplySession_Completed is the transition every paid purchase
// takes: a Pending purchase and its checkout.session.completed.
func BenchmarkApplySession_Completed(b *testing.B) {
	pending, sess := purchase(), paidSession()
	b.ReportAllocs()
	for b.Loop() {
		p := pending.DeepCopy()
		res, err := ApplySession(p, SessionCompleted, sess, t0)
		if err != nil || !res.Changed || p.Status.Phase != v1alpha1.PurchaseCompleted {
			b.Fatalf("ApplySession: %v, %+v, phase %s", err, res, p.Status.Phase)
		}
	}
}

// BenchmarkApplySession_Duplicate is a redelivered event: nothing changes.
func BenchmarkApplySession_Duplicate(b *testing.B) {
	p, sess := purchase(completed), paidSession()
	b.ReportAllocs()
	for b.Loop() {
		res, err := ApplySession(p, SessionCompleted, sess, t0)
		if err != nil || res.Changed {
			b.Fatalf("ApplySession: %v, %+v", err, res)
		}
	}
}

// BenchmarkAccess is the access rule every read applies.
func BenchmarkAccess(b *testing.B) {
	p := purchase(completed)
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := Access(p, t0); !ok {
			b.Fatal("no access")
		}
	}
}

package lifecycle

import (
	"errors"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/stripe"
)

var (
	t0      = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	created = t0.Add(-10 * time.Minute)
)

const (
	purchaseName = "ptv-abc123"
	userID       = "user-1"
	sessionID    = "cs_test_1"
	piID         = "pi_1"
)

// purchase builds a Pending purchase with a session, 30 days of access and
// a price of 500 usd, with its conditions already in line (Access NotPaid),
// then applies the modifiers.
func purchase(mods ...func(*v1alpha1.Purchase)) *v1alpha1.Purchase {
	p := &v1alpha1.Purchase{
		ObjectMeta: metav1.ObjectMeta{Name: purchaseName, Namespace: "ns", Generation: 1, CreationTimestamp: metav1.NewTime(created)},
		Spec: v1alpha1.PurchaseSpec{
			ProductRef: "prod", UserID: userID, EntityID: "vid-1", EntityType: v1alpha1.EntityTypeVideo,
			ReturnURL: "https://example.com/r", Price: v1alpha1.Price{Amount: 500, Currency: "usd"},
			StripePriceID: "price_1", AccessDurationDays: ptr.To[int32](30),
		},
		Status: v1alpha1.PurchaseStatus{
			Phase:                    v1alpha1.PurchasePending,
			CheckoutSessionID:        sessionID,
			CheckoutSessionExpiresAt: ptr.To(metav1.NewTime(created.Add(30 * time.Minute))),
			Conditions: []metav1.Condition{{
				Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonCheckoutSessionOpen,
				Message: "open", ObservedGeneration: 1, LastTransitionTime: metav1.NewTime(created),
			}},
		},
	}
	for _, m := range mods {
		m(p)
	}
	Refresh(p, t0.Add(-time.Hour))
	return p
}

func lifetime(p *v1alpha1.Purchase) { p.Spec.AccessDurationDays = nil }

// completed makes the purchase Completed at t0-1h through the real
// transition, so its status is what ApplySession produces.
func completed(p *v1alpha1.Purchase) {
	if _, err := ApplySession(p, SessionCompleted, paidSession(), t0.Add(-time.Hour)); err != nil {
		panic(err)
	}
}

func phase(ph v1alpha1.PurchasePhase) func(*v1alpha1.Purchase) {
	return func(p *v1alpha1.Purchase) { p.Status.Phase = ph }
}

func meta4(purchaseID, user string) map[string]string {
	return map[string]string{
		stripe.MetaPurchaseID: purchaseID, stripe.MetaProductID: "prod", stripe.MetaUserID: user,
		stripe.MetaEntityType: "1", stripe.MetaEntityID: "vid-1",
	}
}

func paidSession() stripe.Session {
	return stripe.Session{
		ID: sessionID, Status: stripe.SessionComplete, PaymentStatus: stripe.PaymentPaid,
		PaymentIntentID: piID, ClientReferenceID: purchaseName, AmountTotal: 500, Currency: "usd",
		Metadata: meta4(purchaseName, userID),
	}
}

func session(status stripe.SessionStatus, pay stripe.PaymentStatus) stripe.Session {
	s := paidSession()
	s.Status, s.PaymentStatus = status, pay
	if pay != stripe.PaymentPaid {
		s.PaymentIntentID = ""
	}
	return s
}

type want struct {
	phase     v1alpha1.PurchasePhase
	changed   bool
	events    []string
	access    string // Access condition reason
	ready     string // Ready condition reason, "" = don't check
	refunded  string // Refunded condition reason, "" = don't check, "-" = absent
	err       error
	check     func(*testing.T, *v1alpha1.Purchase)
	noChanges bool // the status must be byte-for-byte what it was
}

func verify(t *testing.T, before, p *v1alpha1.Purchase, res Result, err error, w want) {
	t.Helper()
	if w.err != nil {
		if !errors.Is(err, w.err) {
			t.Fatalf("error = %v, want %v", err, w.err)
		}
		if !equalStatus(before, p) {
			t.Fatalf("a rejected observation changed the status:\nbefore %+v\nafter  %+v", before.Status, p.Status)
		}
		return
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	if p.Status.Phase != w.phase {
		t.Errorf("phase = %q, want %q", p.Status.Phase, w.phase)
	}
	if res.To != p.Status.Phase || res.From != before.Status.Phase {
		t.Errorf("result From/To = %q/%q, want %q/%q", res.From, res.To, before.Status.Phase, p.Status.Phase)
	}
	if res.Changed != w.changed {
		t.Errorf("Changed = %v, want %v", res.Changed, w.changed)
	}
	if res.Changed != !equalStatus(before, p) {
		t.Errorf("Changed = %v but status equality says %v", res.Changed, !equalStatus(before, p))
	}
	var reasons []string
	for _, e := range res.Events {
		reasons = append(reasons, e.Reason)
		if e.Type != "Normal" && e.Type != "Warning" {
			t.Errorf("event %s has type %q", e.Reason, e.Type)
		}
		if e.Message == "" {
			t.Errorf("event %s has no message", e.Reason)
		}
	}
	if len(reasons) != len(w.events) {
		t.Errorf("events = %v, want %v", reasons, w.events)
	} else {
		for i := range reasons {
			if reasons[i] != w.events[i] {
				t.Errorf("events = %v, want %v", reasons, w.events)
				break
			}
		}
	}
	if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionAccess); c == nil || c.Reason != w.access {
		t.Errorf("Access condition = %+v, want reason %s", c, w.access)
	} else if (c.Status == metav1.ConditionTrue) != (w.access == ReasonPaid) {
		t.Errorf("Access condition status %s with reason %s", c.Status, c.Reason)
	}
	if w.ready != "" {
		if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Reason != w.ready {
			t.Errorf("Ready condition = %+v, want reason %s", c, w.ready)
		}
	}
	switch c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionRefunded); {
	case w.refunded == "":
	case w.refunded == "-" && c != nil:
		t.Errorf("Refunded condition = %+v, want none", c)
	case w.refunded != "-" && (c == nil || c.Reason != w.refunded):
		t.Errorf("Refunded condition = %+v, want reason %s", c, w.refunded)
	}
	if w.noChanges && !equalStatus(before, p) {
		t.Errorf("status changed:\nbefore %+v\nafter  %+v", before.Status, p.Status)
	}
	if w.check != nil {
		w.check(t, p)
	}
}

func equalStatus(a, b *v1alpha1.Purchase) bool {
	return equality.Semantic.DeepEqual(&a.Status, &b.Status)
}

func TestApplySession(t *testing.T) {
	otherSession := func(s stripe.Session) stripe.Session { s.ID = "cs_test_other"; return s }
	cases := []struct {
		name string
		p    *v1alpha1.Purchase
		ev   SessionEvent
		s    stripe.Session
		want want
	}{{
		name: "completed and paid completes a pending purchase with 30 days of access",
		p:    purchase(), ev: SessionCompleted, s: paidSession(),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{EventCompleted}, access: ReasonPaid, ready: ReasonPaid, refunded: "-",
			check: func(t *testing.T, p *v1alpha1.Purchase) {
				if p.Status.ExternalTransactionID != piID {
					t.Errorf("externalTransactionId = %q", p.Status.ExternalTransactionID)
				}
				if !p.Status.CompletedAt.Time.Equal(t0) {
					t.Errorf("completedAt = %v", p.Status.CompletedAt)
				}
				if !p.Status.ExpiresAt.Time.Equal(t0.Add(30 * 24 * time.Hour)) {
					t.Errorf("expiresAt = %v", p.Status.ExpiresAt)
				}
			}},
	}, {
		name: "lifetime product has no expiresAt",
		p:    purchase(lifetime), ev: SessionCompleted, s: paidSession(),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{EventCompleted}, access: ReasonPaid,
			check: func(t *testing.T, p *v1alpha1.Purchase) {
				if p.Status.ExpiresAt != nil {
					t.Errorf("expiresAt = %v, want none", p.Status.ExpiresAt)
				}
			}},
	}, {
		name: "no_payment_required counts as paid",
		p:    purchase(), ev: SessionCompleted, s: session(stripe.SessionComplete, stripe.PaymentNoPaymentRequired),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{EventCompleted}, access: ReasonPaid},
	}, {
		name: "duplicate completed event is a no-op",
		p:    purchase(completed), ev: SessionCompleted, s: paidSession(),
		want: want{phase: v1alpha1.PurchaseCompleted, access: ReasonPaid, noChanges: true},
	}, {
		name: "healing read of an already completed session is a no-op",
		p:    purchase(completed), ev: SessionRetrieved, s: paidSession(),
		want: want{phase: v1alpha1.PurchaseCompleted, access: ReasonPaid, noChanges: true},
	}, {
		name: "completed after a full refund leaves it refunded",
		p: purchase(completed, func(p *v1alpha1.Purchase) {
			if _, err := ApplyCharge(p, stripe.Charge{ID: "ch_1", PaymentIntentID: piID, Amount: 500, AmountRefunded: 500, Refunded: true}, t0.Add(-time.Minute)); err != nil {
				panic(err)
			}
		}), ev: SessionCompleted, s: paidSession(),
		want: want{phase: v1alpha1.PurchaseRefunded, access: ReasonRefunded, refunded: ReasonRefunded, noChanges: true},
	}, {
		name: "completed after charge.refunded arrived first keeps it refunded and fills in the completion",
		p: purchase(func(p *v1alpha1.Purchase) {
			if _, err := ApplyCharge(p, stripe.Charge{ID: "ch_1", PaymentIntentID: piID, Amount: 500, AmountRefunded: 500, Refunded: true, Metadata: meta4(purchaseName, userID)}, t0.Add(-time.Minute)); err != nil {
				panic(err)
			}
		}), ev: SessionCompleted, s: paidSession(),
		want: want{phase: v1alpha1.PurchaseRefunded, changed: true, access: ReasonRefunded, refunded: ReasonRefunded,
			check: func(t *testing.T, p *v1alpha1.Purchase) {
				if p.Status.CompletedAt == nil || p.Status.ExternalTransactionID != piID {
					t.Errorf("completion not recorded: %+v", p.Status)
				}
			}},
	}, {
		name: "paid session on a canceled purchase completes it: money taken is never lost",
		p:    purchase(func(p *v1alpha1.Purchase) { Cancel(p, ReasonSuperseded, "superseded", t0.Add(-time.Minute)) }),
		ev:   SessionCompleted, s: paidSession(),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{EventCompleted}, access: ReasonPaid, ready: ReasonPaid},
	}, {
		name: "paid session on a failed purchase completes it",
		p:    purchase(phase(v1alpha1.PurchaseFailed)), ev: SessionRetrieved, s: paidSession(),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{EventCompleted}, access: ReasonPaid},
	}, {
		name: "completed but unpaid (delayed payment) stays pending, processing",
		p:    purchase(), ev: SessionCompleted, s: session(stripe.SessionComplete, stripe.PaymentUnpaid),
		want: want{phase: v1alpha1.PurchasePending, changed: true, events: []string{ReasonPaymentProcessing}, access: ReasonNotPaid, ready: ReasonPaymentProcessing},
	}, {
		name: "duplicate completed-unpaid is a no-op",
		p: purchase(func(p *v1alpha1.Purchase) {
			_, _ = ApplySession(p, SessionCompleted, session(stripe.SessionComplete, stripe.PaymentUnpaid), t0.Add(-time.Minute))
		}),
		ev: SessionCompleted, s: session(stripe.SessionComplete, stripe.PaymentUnpaid),
		want: want{phase: v1alpha1.PurchasePending, access: ReasonNotPaid, ready: ReasonPaymentProcessing, noChanges: true},
	}, {
		name: "async payment succeeded completes a processing purchase",
		p: purchase(func(p *v1alpha1.Purchase) {
			_, _ = ApplySession(p, SessionCompleted, session(stripe.SessionComplete, stripe.PaymentUnpaid), t0.Add(-time.Minute))
		}),
		ev: SessionAsyncPaymentSucceeded, s: paidSession(),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{EventCompleted}, access: ReasonPaid, ready: ReasonPaid},
	}, {
		name: "async payment failed fails a pending purchase",
		p:    purchase(), ev: SessionAsyncPaymentFailed, s: session(stripe.SessionComplete, stripe.PaymentUnpaid),
		want: want{phase: v1alpha1.PurchaseFailed, changed: true, events: []string{EventFailed}, access: ReasonNotPaid, ready: ReasonPaymentFailed},
	}, {
		name: "async payment failed after completion is ignored",
		p:    purchase(completed), ev: SessionAsyncPaymentFailed, s: session(stripe.SessionComplete, stripe.PaymentUnpaid),
		want: want{phase: v1alpha1.PurchaseCompleted, access: ReasonPaid, noChanges: true},
	}, {
		name: "completed-unpaid arriving after async failed leaves it failed",
		p: purchase(func(p *v1alpha1.Purchase) {
			_, _ = ApplySession(p, SessionAsyncPaymentFailed, session(stripe.SessionComplete, stripe.PaymentUnpaid), t0.Add(-time.Minute))
		}),
		ev: SessionCompleted, s: session(stripe.SessionComplete, stripe.PaymentUnpaid),
		want: want{phase: v1alpha1.PurchaseFailed, access: ReasonNotPaid, ready: ReasonPaymentFailed, noChanges: true},
	}, {
		name: "expired session cancels a pending purchase",
		p:    purchase(), ev: SessionExpiredEvent, s: session(stripe.SessionExpired, stripe.PaymentUnpaid),
		want: want{phase: v1alpha1.PurchaseCanceled, changed: true, events: []string{EventCanceled}, access: ReasonNotPaid, ready: ReasonSessionExpired,
			check: func(t *testing.T, p *v1alpha1.Purchase) {
				if at, ok := EndedAt(p); !ok || !at.Equal(t0) {
					t.Errorf("EndedAt = %v, %v; want %v", at, ok, t0)
				}
			}},
	}, {
		name: "healing read of an expired session cancels",
		p:    purchase(), ev: SessionRetrieved, s: session(stripe.SessionExpired, stripe.PaymentUnpaid),
		want: want{phase: v1alpha1.PurchaseCanceled, changed: true, events: []string{EventCanceled}, access: ReasonNotPaid, ready: ReasonSessionExpired},
	}, {
		name: "expired on a completed purchase is a no-op",
		p:    purchase(completed), ev: SessionExpiredEvent, s: session(stripe.SessionExpired, stripe.PaymentUnpaid),
		want: want{phase: v1alpha1.PurchaseCompleted, access: ReasonPaid, noChanges: true},
	}, {
		name: "duplicate expired on a canceled purchase is a no-op",
		p:    purchase(func(p *v1alpha1.Purchase) { Cancel(p, ReasonSessionExpired, "expired", t0.Add(-time.Minute)) }),
		ev:   SessionExpiredEvent, s: session(stripe.SessionExpired, stripe.PaymentUnpaid),
		want: want{phase: v1alpha1.PurchaseCanceled, access: ReasonNotPaid, noChanges: true},
	}, {
		name: "open session read by healing changes nothing",
		p:    purchase(), ev: SessionRetrieved, s: session(stripe.SessionOpen, stripe.PaymentUnpaid),
		want: want{phase: v1alpha1.PurchasePending, access: ReasonNotPaid, ready: ReasonCheckoutSessionOpen, noChanges: true},
	}, {
		name: "expiry of a session the purchase does not track does not cancel it",
		p:    purchase(), ev: SessionExpiredEvent, s: otherSession(session(stripe.SessionExpired, stripe.PaymentUnpaid)),
		want: want{phase: v1alpha1.PurchasePending, access: ReasonNotPaid, noChanges: true},
	}, {
		name: "a paid session the purchase does not track still completes it",
		p:    purchase(), ev: SessionCompleted, s: otherSession(paidSession()),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{EventCompleted}, access: ReasonPaid,
			check: func(t *testing.T, p *v1alpha1.Purchase) {
				if p.Status.CheckoutSessionID != "cs_test_other" {
					t.Errorf("checkoutSessionId = %q, want the paid one", p.Status.CheckoutSessionID)
				}
			}},
	}, {
		name: "a second paid session for a completed purchase is a conflicting payment",
		p:    purchase(completed), ev: SessionCompleted,
		s:    func() stripe.Session { s := otherSession(paidSession()); s.PaymentIntentID = "pi_2"; return s }(),
		want: want{err: ErrConflictingPayment},
	}, {
		name: "metadata userId mismatch is rejected",
		p:    purchase(), ev: SessionCompleted,
		s:    func() stripe.Session { s := paidSession(); s.Metadata = meta4(purchaseName, "mallory"); return s }(),
		want: want{err: ErrNotThisPurchase},
	}, {
		name: "metadata naming another purchase is rejected",
		p:    purchase(), ev: SessionCompleted,
		s:    func() stripe.Session { s := paidSession(); s.Metadata = meta4("ptv-other", userID); return s }(),
		want: want{err: ErrNotThisPurchase},
	}, {
		name: "a session without metadata is accepted when it is the tracked one",
		p:    purchase(), ev: SessionCompleted,
		s:    func() stripe.Session { s := paidSession(); s.Metadata = nil; s.ClientReferenceID = ""; return s }(),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{EventCompleted}, access: ReasonPaid},
	}, {
		name: "a session without metadata or reference that is not tracked is rejected",
		p:    purchase(), ev: SessionCompleted,
		s: func() stripe.Session {
			s := otherSession(paidSession())
			s.Metadata = nil
			s.ClientReferenceID = ""
			return s
		}(),
		want: want{err: ErrNotThisPurchase},
	}, {
		name: "a session without an id is rejected",
		p:    purchase(), ev: SessionCompleted,
		s:    func() stripe.Session { s := paidSession(); s.ID = ""; return s }(),
		want: want{err: ErrNotThisPurchase},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.p.DeepCopy()
			res, err := ApplySession(tc.p, tc.ev, tc.s, t0)
			verify(t, before, tc.p, res, err, tc.want)
		})
	}
}

func TestApplySession_DuplicateAfterApplyingIsNoOp(t *testing.T) {
	for _, ev := range []struct {
		ev SessionEvent
		s  stripe.Session
	}{
		{SessionCompleted, paidSession()},
		{SessionCompleted, session(stripe.SessionComplete, stripe.PaymentUnpaid)},
		{SessionAsyncPaymentSucceeded, paidSession()},
		{SessionAsyncPaymentFailed, session(stripe.SessionComplete, stripe.PaymentUnpaid)},
		{SessionExpiredEvent, session(stripe.SessionExpired, stripe.PaymentUnpaid)},
	} {
		t.Run(string(ev.ev), func(t *testing.T) {
			p := purchase()
			if res, err := ApplySession(p, ev.ev, ev.s, t0); err != nil || !res.Changed {
				t.Fatalf("first application: %+v, %v", res, err)
			}
			// The same event again, later: a redelivery.
			res, err := ApplySession(p, ev.ev, ev.s, t0.Add(time.Minute))
			if err != nil || res.Changed || len(res.Events) != 0 {
				t.Fatalf("redelivery changed something: %+v, %v", res, err)
			}
		})
	}
}

func TestApplyRetrieved(t *testing.T) {
	cases := []struct {
		name string
		s    stripe.Session
		pi   *stripe.PaymentIntent
		want want
	}{{
		name: "complete and paid completes",
		s:    paidSession(), pi: nil,
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{EventCompleted}, access: ReasonPaid},
	}, {
		name: "complete and paid without payment intent id takes it from the intent read",
		s:    func() stripe.Session { s := paidSession(); s.PaymentIntentID = ""; return s }(),
		pi:   &stripe.PaymentIntent{ID: piID, Status: "succeeded"},
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{EventCompleted}, access: ReasonPaid,
			check: func(t *testing.T, p *v1alpha1.Purchase) {
				if p.Status.ExternalTransactionID != piID {
					t.Errorf("externalTransactionId = %q", p.Status.ExternalTransactionID)
				}
			}},
	}, {
		name: "complete, unpaid, intent succeeded: the async webhook was lost",
		s:    session(stripe.SessionComplete, stripe.PaymentUnpaid),
		pi:   &stripe.PaymentIntent{ID: piID, Status: "succeeded"},
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{EventCompleted}, access: ReasonPaid},
	}, {
		name: "complete, unpaid, intent processing: still processing",
		s:    session(stripe.SessionComplete, stripe.PaymentUnpaid),
		pi:   &stripe.PaymentIntent{ID: piID, Status: "processing"},
		want: want{phase: v1alpha1.PurchasePending, changed: true, events: []string{ReasonPaymentProcessing}, access: ReasonNotPaid, ready: ReasonPaymentProcessing},
	}, {
		name: "complete, unpaid, intent needs a new payment method: async failed",
		s:    session(stripe.SessionComplete, stripe.PaymentUnpaid),
		pi:   &stripe.PaymentIntent{ID: piID, Status: "requires_payment_method"},
		want: want{phase: v1alpha1.PurchaseFailed, changed: true, events: []string{EventFailed}, access: ReasonNotPaid, ready: ReasonPaymentFailed},
	}, {
		name: "paid with a partly refunded charge records the refund and keeps access",
		s:    paidSession(),
		pi: &stripe.PaymentIntent{ID: piID, Status: "succeeded", LatestCharge: &stripe.Charge{
			ID: "ch_1", Amount: 500, AmountRefunded: 100, Metadata: meta4(purchaseName, userID)}},
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{EventCompleted, ReasonPartiallyRefunded}, access: ReasonPaid, refunded: ReasonPartiallyRefunded},
	}, {
		name: "expired cancels",
		s:    session(stripe.SessionExpired, stripe.PaymentUnpaid),
		want: want{phase: v1alpha1.PurchaseCanceled, changed: true, events: []string{EventCanceled}, access: ReasonNotPaid},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := purchase()
			before := p.DeepCopy()
			res, err := ApplyRetrieved(p, tc.s, tc.pi, t0)
			verify(t, before, p, res, err, tc.want)
		})
	}
}

// charge is the 500 usd charge of the purchase with refunded of it refunded.
func charge(refunded int64) stripe.Charge {
	return stripe.Charge{ID: "ch_1", PaymentIntentID: piID, Amount: 500, AmountRefunded: refunded,
		Refunded: refunded >= 500, Currency: "usd", Metadata: meta4(purchaseName, userID)}
}

func TestApplyCharge(t *testing.T) {
	partly := func(p *v1alpha1.Purchase) {
		if _, err := ApplyCharge(p, charge(200), t0.Add(-time.Minute)); err != nil {
			panic(err)
		}
	}
	cases := []struct {
		name string
		p    *v1alpha1.Purchase
		c    stripe.Charge
		want want
	}{{
		name: "full refund makes a completed purchase refunded and revokes access",
		p:    purchase(completed), c: charge(500),
		want: want{phase: v1alpha1.PurchaseRefunded, changed: true, events: []string{ReasonRefunded}, access: ReasonRefunded, refunded: ReasonRefunded,
			check: func(t *testing.T, p *v1alpha1.Purchase) {
				if p.Status.AmountRefunded != 500 || p.Status.RefundedAt == nil || !p.Status.RefundedAt.Time.Equal(t0) {
					t.Errorf("amountRefunded %d refundedAt %v", p.Status.AmountRefunded, p.Status.RefundedAt)
				}
			}},
	}, {
		name: "partial refund records the amount and keeps access",
		p:    purchase(completed), c: charge(200),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{ReasonPartiallyRefunded}, access: ReasonPaid, refunded: ReasonPartiallyRefunded,
			check: func(t *testing.T, p *v1alpha1.Purchase) {
				if p.Status.AmountRefunded != 200 || p.Status.RefundedAt != nil {
					t.Errorf("amountRefunded %d refundedAt %v", p.Status.AmountRefunded, p.Status.RefundedAt)
				}
			}},
	}, {
		name: "charge.refunded for the operator's own pending refund only records the amount",
		p:    purchase(completed, func(p *v1alpha1.Purchase) { p.Status.StripeRefundID = "re_1" }), c: charge(500),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, access: ReasonPaid,
			check: func(t *testing.T, p *v1alpha1.Purchase) {
				if p.Status.AmountRefunded != 500 {
					t.Errorf("amountRefunded %d", p.Status.AmountRefunded)
				}
			}},
	}, {
		name: "a second partial refund raises the total",
		p:    purchase(completed, partly), c: charge(300),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{ReasonPartiallyRefunded}, access: ReasonPaid, refunded: ReasonPartiallyRefunded,
			check: func(t *testing.T, p *v1alpha1.Purchase) {
				if p.Status.AmountRefunded != 300 {
					t.Errorf("amountRefunded %d", p.Status.AmountRefunded)
				}
			}},
	}, {
		name: "the charge's total is authoritative: a lower one (a refund failed) lowers amountRefunded",
		p:    purchase(completed, partly), c: charge(100),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{ReasonPartiallyRefunded}, access: ReasonPaid, refunded: ReasonPartiallyRefunded,
			check: func(t *testing.T, p *v1alpha1.Purchase) {
				if p.Status.AmountRefunded != 100 {
					t.Errorf("amountRefunded %d", p.Status.AmountRefunded)
				}
			}},
	}, {
		name: "a charge never moves a refunded purchase back, but its total is recorded",
		p: purchase(completed, func(p *v1alpha1.Purchase) {
			_, _ = ApplyCharge(p, charge(500), t0.Add(-time.Minute))
		}), c: charge(300),
		want: want{phase: v1alpha1.PurchaseRefunded, changed: true, access: ReasonRefunded, refunded: ReasonRefunded,
			check: func(t *testing.T, p *v1alpha1.Purchase) {
				if p.Status.AmountRefunded != 300 {
					t.Errorf("amountRefunded %d", p.Status.AmountRefunded)
				}
			}},
	}, {
		name: "the rest refunded after a partial refund is a full refund",
		p:    purchase(completed, partly), c: charge(500),
		want: want{phase: v1alpha1.PurchaseRefunded, changed: true, events: []string{ReasonRefunded}, access: ReasonRefunded, refunded: ReasonRefunded},
	}, {
		name: "duplicate full refund is a no-op",
		p: purchase(completed, func(p *v1alpha1.Purchase) {
			_, _ = ApplyCharge(p, charge(500), t0.Add(-time.Minute))
		}), c: charge(500),
		want: want{phase: v1alpha1.PurchaseRefunded, access: ReasonRefunded, noChanges: true},
	}, {
		name: "a full refund seen before the completion makes the pending purchase refunded",
		p:    purchase(), c: charge(500),
		want: want{phase: v1alpha1.PurchaseRefunded, changed: true, events: []string{ReasonRefunded}, access: ReasonRefunded,
			check: func(t *testing.T, p *v1alpha1.Purchase) {
				if p.Status.ExternalTransactionID != piID {
					t.Errorf("externalTransactionId = %q", p.Status.ExternalTransactionID)
				}
			}},
	}, {
		name: "a charge for another payment intent is rejected",
		p:    purchase(completed), c: func() stripe.Charge { c := charge(500); c.PaymentIntentID = "pi_other"; return c }(),
		want: want{err: ErrNotThisPurchase},
	}, {
		name: "a charge with another user's metadata is rejected",
		p:    purchase(completed), c: func() stripe.Charge { c := charge(500); c.Metadata = meta4(purchaseName, "mallory"); return c }(),
		want: want{err: ErrNotThisPurchase},
	}, {
		name: "a charge without our metadata for a purchase without payment intent is rejected",
		p:    purchase(), c: func() stripe.Charge { c := charge(500); c.Metadata = nil; return c }(),
		want: want{err: ErrNotThisPurchase},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.p.DeepCopy()
			res, err := ApplyCharge(tc.p, tc.c, t0)
			verify(t, before, tc.p, res, err, tc.want)
		})
	}
}

func refund(status stripe.RefundStatus, amount int64) stripe.Refund {
	return stripe.Refund{ID: "re_1", PaymentIntentID: piID, ChargeID: "ch_1", Amount: amount, Currency: "usd", Status: status,
		Metadata: map[string]string{stripe.MetaPurchaseID: purchaseName}}
}

func TestApplyRefund(t *testing.T) {
	requested := func(p *v1alpha1.Purchase) { p.Status.StripeRefundID = "re_1" }
	cases := []struct {
		name string
		p    *v1alpha1.Purchase
		r    stripe.Refund
		want want
	}{{
		name: "our refund succeeded: refunded",
		p:    purchase(completed, requested), r: refund(stripe.RefundSucceeded, 500),
		want: want{phase: v1alpha1.PurchaseRefunded, changed: true, events: []string{ReasonRefunded}, access: ReasonRefunded, refunded: ReasonRefunded,
			check: func(t *testing.T, p *v1alpha1.Purchase) {
				if p.Status.AmountRefunded != 500 || p.Status.RefundedAt == nil {
					t.Errorf("amountRefunded %d refundedAt %v", p.Status.AmountRefunded, p.Status.RefundedAt)
				}
			}},
	}, {
		name: "our refund pending: condition says so, access kept",
		p:    purchase(completed, requested), r: refund(stripe.RefundPending, 500),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, access: ReasonPaid, refunded: ReasonRefundPending},
	}, {
		name: "our refund failed: RefundFailed, warning, access kept",
		p:    purchase(completed, requested), r: func() stripe.Refund {
			r := refund(stripe.RefundFailed, 500)
			r.FailureReason = "expired_or_canceled_card"
			return r
		}(),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{ReasonRefundFailed}, access: ReasonPaid, refunded: ReasonRefundFailed},
	}, {
		name: "duplicate failed refund is a no-op",
		p: purchase(completed, requested, func(p *v1alpha1.Purchase) {
			_, _ = ApplyRefund(p, refund(stripe.RefundFailed, 500), t0.Add(-time.Minute))
		}), r: refund(stripe.RefundFailed, 500),
		want: want{phase: v1alpha1.PurchaseCompleted, access: ReasonPaid, refunded: ReasonRefundFailed, noChanges: true},
	}, {
		name: "a pending update arriving after the failure does not hide it",
		p: purchase(completed, requested, func(p *v1alpha1.Purchase) {
			_, _ = ApplyRefund(p, refund(stripe.RefundFailed, 500), t0.Add(-time.Minute))
		}), r: refund(stripe.RefundPending, 500),
		want: want{phase: v1alpha1.PurchaseCompleted, access: ReasonPaid, refunded: ReasonRefundFailed, noChanges: true},
	}, {
		name: "a refund failing after it succeeded makes the purchase completed again, with access",
		p: purchase(completed, requested, func(p *v1alpha1.Purchase) {
			_, _ = ApplyRefund(p, refund(stripe.RefundSucceeded, 500), t0.Add(-time.Minute))
		}), r: refund(stripe.RefundFailed, 500),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{ReasonRefundFailed}, access: ReasonPaid, refunded: ReasonRefundFailed,
			check: func(t *testing.T, p *v1alpha1.Purchase) {
				if p.Status.AmountRefunded != 0 || p.Status.RefundedAt != nil {
					t.Errorf("amountRefunded %d refundedAt %v", p.Status.AmountRefunded, p.Status.RefundedAt)
				}
			}},
	}, {
		name: "a dashboard refund reported by charge.refunded, then failed, restores access",
		p: purchase(completed, func(p *v1alpha1.Purchase) {
			_, _ = ApplyCharge(p, charge(500), t0.Add(-time.Minute))
		}), r: func() stripe.Refund { r := refund(stripe.RefundFailed, 500); r.Metadata = nil; return r }(),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{ReasonRefundFailed}, access: ReasonPaid, refunded: ReasonRefundFailed},
	}, {
		name: "our refund counted by charge.refunded while pending, then failed: amount back to zero, access kept",
		p: purchase(completed, requested, func(p *v1alpha1.Purchase) {
			_, _ = ApplyRefund(p, refund(stripe.RefundPending, 500), t0.Add(-2*time.Minute))
			_, _ = ApplyCharge(p, charge(500), t0.Add(-time.Minute))
		}), r: refund(stripe.RefundFailed, 500),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{ReasonRefundFailed}, access: ReasonPaid, refunded: ReasonRefundFailed,
			check: func(t *testing.T, p *v1alpha1.Purchase) {
				if p.Status.AmountRefunded != 0 {
					t.Errorf("amountRefunded %d", p.Status.AmountRefunded)
				}
			}},
	}, {
		name: "duplicate succeeded refund is a no-op",
		p: purchase(completed, requested, func(p *v1alpha1.Purchase) {
			_, _ = ApplyRefund(p, refund(stripe.RefundSucceeded, 500), t0.Add(-time.Minute))
		}), r: refund(stripe.RefundSucceeded, 500),
		want: want{phase: v1alpha1.PurchaseRefunded, access: ReasonRefunded, noChanges: true},
	}, {
		name: "a dashboard refund of the whole price refunds",
		p:    purchase(completed), r: func() stripe.Refund {
			r := refund(stripe.RefundSucceeded, 500)
			r.ID = "re_dash"
			r.Metadata = nil
			return r
		}(),
		want: want{phase: v1alpha1.PurchaseRefunded, changed: true, events: []string{ReasonRefunded}, access: ReasonRefunded},
	}, {
		name: "a partial dashboard refund keeps access",
		p:    purchase(completed), r: func() stripe.Refund {
			r := refund(stripe.RefundSucceeded, 100)
			r.ID = "re_dash"
			r.Metadata = nil
			return r
		}(),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{ReasonPartiallyRefunded}, access: ReasonPaid, refunded: ReasonPartiallyRefunded},
	}, {
		name: "a refund of another payment intent is rejected",
		p:    purchase(completed), r: func() stripe.Refund {
			r := refund(stripe.RefundSucceeded, 500)
			r.ID = "re_x"
			r.PaymentIntentID = "pi_x"
			return r
		}(),
		want: want{err: ErrNotThisPurchase},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.p.DeepCopy()
			res, err := ApplyRefund(tc.p, tc.r, t0)
			verify(t, before, tc.p, res, err, tc.want)
		})
	}
}

func dispute(status string) stripe.Dispute {
	return stripe.Dispute{ID: "dp_1", ChargeID: "ch_1", PaymentIntentID: piID, Status: status, Amount: 500}
}

func TestApplyDispute(t *testing.T) {
	with := func(status string) func(*v1alpha1.Purchase) {
		return func(p *v1alpha1.Purchase) {
			if _, err := ApplyDispute(p, dispute(status), t0.Add(-time.Minute)); err != nil {
				panic(err)
			}
		}
	}
	expired := func(p *v1alpha1.Purchase) {
		p.Status.ExpiresAt = ptr.To(metav1.NewTime(t0.Add(-time.Second)))
	}
	cases := []struct {
		name string
		p    *v1alpha1.Purchase
		d    stripe.Dispute
		want want
	}{{
		name: "dispute created suspends access",
		p:    purchase(completed), d: dispute("needs_response"),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{ReasonDisputed}, access: ReasonDisputed},
	}, {
		name: "dispute moving to under_review is recorded without a new event",
		p:    purchase(completed, with("needs_response")), d: dispute("under_review"),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, access: ReasonDisputed},
	}, {
		name: "duplicate dispute created is a no-op",
		p:    purchase(completed, with("needs_response")), d: dispute("needs_response"),
		want: want{phase: v1alpha1.PurchaseCompleted, access: ReasonDisputed, noChanges: true},
	}, {
		name: "dispute won restores access",
		p:    purchase(completed, with("needs_response")), d: dispute("won"),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{EventDisputeWon}, access: ReasonPaid},
	}, {
		name: "dispute won after access expired does not restore it",
		p:    purchase(completed, with("needs_response"), expired), d: dispute("won"),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{EventDisputeWon}, access: ReasonExpired},
	}, {
		name: "dispute lost ends access",
		p:    purchase(completed, with("needs_response")), d: dispute("lost"),
		want: want{phase: v1alpha1.PurchaseCompleted, changed: true, events: []string{ReasonDisputeLost}, access: ReasonDisputeLost},
	}, {
		name: "dispute created arriving after it closed won does not suspend again",
		p:    purchase(completed, with("won")), d: dispute("needs_response"),
		want: want{phase: v1alpha1.PurchaseCompleted, access: ReasonPaid, noChanges: true},
	}, {
		name: "dispute created arriving after it was lost changes nothing",
		p:    purchase(completed, with("lost")), d: dispute("needs_response"),
		want: want{phase: v1alpha1.PurchaseCompleted, access: ReasonDisputeLost, noChanges: true},
	}, {
		name: "a lost dispute is permanent even if another dispute is won",
		p:    purchase(completed, with("lost")), d: func() stripe.Dispute { d := dispute("won"); d.ID = "dp_2"; return d }(),
		want: want{phase: v1alpha1.PurchaseCompleted, access: ReasonDisputeLost, noChanges: true},
	}, {
		name: "dispute on a refunded purchase keeps it refunded",
		p: purchase(completed, func(p *v1alpha1.Purchase) {
			_, _ = ApplyCharge(p, charge(500), t0.Add(-time.Minute))
		}), d: dispute("needs_response"),
		want: want{phase: v1alpha1.PurchaseRefunded, changed: true, events: []string{ReasonDisputed}, access: ReasonRefunded},
	}, {
		name: "a dispute on another payment is rejected",
		p:    purchase(completed), d: func() stripe.Dispute { d := dispute("needs_response"); d.PaymentIntentID = "pi_x"; return d }(),
		want: want{err: ErrNotThisPurchase},
	}, {
		name: "a dispute for a purchase with no payment is rejected",
		p:    purchase(), d: dispute("needs_response"),
		want: want{err: ErrNotThisPurchase},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.p.DeepCopy()
			res, err := ApplyDispute(tc.p, tc.d, t0)
			verify(t, before, tc.p, res, err, tc.want)
		})
	}
}

func TestAccess(t *testing.T) {
	cases := []struct {
		name    string
		p       *v1alpha1.Purchase
		at      time.Time
		granted bool
		reason  string
	}{
		{"pending", purchase(), t0, false, ReasonNotPaid},
		{"unseen purchase", purchase(phase("")), t0, false, ReasonNotPaid},
		{"canceled", purchase(phase(v1alpha1.PurchaseCanceled)), t0, false, ReasonNotPaid},
		{"failed", purchase(phase(v1alpha1.PurchaseFailed)), t0, false, ReasonNotPaid},
		{"completed within the duration", purchase(completed), t0, true, ReasonPaid},
		{"completed, a second before expiry", purchase(completed), t0.Add(-time.Hour).Add(30*24*time.Hour - time.Second), true, ReasonPaid},
		{"completed, at expiry", purchase(completed), t0.Add(-time.Hour).Add(30 * 24 * time.Hour), false, ReasonExpired},
		{"lifetime, far future", purchase(lifetime, completed), t0.Add(100 * 365 * 24 * time.Hour), true, ReasonPaid},
		{"refunded", purchase(phase(v1alpha1.PurchaseRefunded)), t0, false, ReasonRefunded},
		{"disputed", purchase(completed, func(p *v1alpha1.Purchase) {
			p.Status.Dispute = &v1alpha1.DisputeStatus{ID: "dp", Status: "warning_needs_response"}
		}), t0, false, ReasonDisputed},
		{"dispute warning closed", purchase(completed, func(p *v1alpha1.Purchase) {
			p.Status.Dispute = &v1alpha1.DisputeStatus{ID: "dp", Status: "warning_closed"}
		}), t0, true, ReasonPaid},
		{"dispute lost beats expiry", purchase(completed, func(p *v1alpha1.Purchase) {
			p.Status.Dispute = &v1alpha1.DisputeStatus{ID: "dp", Status: "lost"}
		}), t0.Add(365 * 24 * time.Hour), false, ReasonDisputeLost},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			granted, reason := Access(tc.p, tc.at)
			if granted != tc.granted || reason != tc.reason {
				t.Fatalf("Access = %v, %s; want %v, %s", granted, reason, tc.granted, tc.reason)
			}
		})
	}
}

func TestRefresh_EndsAccessAtExpiry(t *testing.T) {
	p := purchase(completed)
	expiry := p.Status.ExpiresAt.Time
	if res := Refresh(p, expiry.Add(-time.Second)); res.Changed || len(res.Events) != 0 {
		t.Fatalf("refresh before expiry changed something: %+v", res)
	}
	res := Refresh(p, expiry)
	if !res.Changed || len(res.Events) != 1 || res.Events[0].Reason != EventAccessExpired || res.PhaseChanged() {
		t.Fatalf("refresh at expiry: %+v", res)
	}
	if granted, reason := Access(p, expiry); granted || reason != ReasonExpired {
		t.Fatalf("Access after expiry = %v %s", granted, reason)
	}
	if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionAccess); c.Status != metav1.ConditionFalse || c.Reason != ReasonExpired {
		t.Fatalf("Access condition = %+v", c)
	}
	if res := Refresh(p, expiry.Add(time.Hour)); res.Changed || len(res.Events) != 0 {
		t.Fatalf("second refresh changed something: %+v", res)
	}
}

func TestCancelAndFail_OnlyEndPendingPurchases(t *testing.T) {
	for _, ph := range []v1alpha1.PurchasePhase{v1alpha1.PurchaseCompleted, v1alpha1.PurchaseRefunded, v1alpha1.PurchaseCanceled, v1alpha1.PurchaseFailed} {
		p := purchase(phase(ph))
		if res := Cancel(p, ReasonSuperseded, "x", t0); res.Changed || p.Status.Phase != ph {
			t.Errorf("Cancel on %s: %+v", ph, res)
		}
		if res := Fail(p, ReasonStripeRejected, "x", t0); res.Changed || p.Status.Phase != ph {
			t.Errorf("Fail on %s: %+v", ph, res)
		}
	}
	p := purchase(phase(""))
	res := Fail(p, ReasonStripeRejected, "No such price: 'price_1'", t0)
	if !res.Changed || res.To != v1alpha1.PurchaseFailed || res.From != "" || !res.PhaseChanged() {
		t.Fatalf("Fail on an unseen purchase: %+v", res)
	}
	c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady)
	if c.Status != metav1.ConditionFalse || c.Reason != ReasonStripeRejected || c.Message != "No such price: 'price_1'" {
		t.Fatalf("Ready = %+v", c)
	}
	if res.Events[0].Type != "Warning" {
		t.Fatalf("Fail event type = %s", res.Events[0].Type)
	}
}

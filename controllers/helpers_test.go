package controllers

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
	"github.com/md-platform/paytoview-operator/internal/testenv"
)

// Generic helpers for the controllers' envtest tests. Names are generic on
// purpose: every test file of the package may use them.

// waitTimeout bounds every wait on the apiserver or a reconciler in tests.
const waitTimeout = 30 * time.Second

// eventually polls cond until it returns true, failing the test with msg if
// it has not within timeout. It is the only way tests wait: no sleeps.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("timed out after %s: "+msg, append([]any{timeout}, args...)...)
	}
}

// poll calls cond every 20ms until it returns true (poll returns true) or
// timeout has passed (poll returns false). Callers that want to report the
// last state they saw use it instead of eventually.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// testContext is a context cancelled when the test ends.
func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

// startManager runs a controller-runtime manager against the test
// apiserver, with its cache limited to namespace ns, no metrics or health
// servers, and the controllers that setup registers. It stops (and waits
// for the manager to stop) when the test ends, or when the returned stop
// function is called, e.g. to simulate an operator restart.
func startManager(t testing.TB, ns string, setup func(mgr ctrl.Manager) error) (mgr ctrl.Manager, stop func()) {
	t.Helper()
	// Created first, so its cleanup runs last: after the manager has
	// stopped, stray log lines must not reach a finished test.
	logger := testenv.Logger(t)
	mgr, err := ctrl.NewManager(testEnv.Config, ctrl.Options{
		Scheme:                 testEnv.Scheme,
		Logger:                 logger,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
		// Every test starts its own manager with the same controller names.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatalf("creating manager: %v", err)
	}
	if err := setup(mgr); err != nil {
		t.Fatalf("setting up controllers: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("manager stopped with error: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("manager did not stop within %s", waitTimeout)
		}
	}
	t.Cleanup(stop)
	return mgr, stop
}

// getObject reads obj (by its namespace and name) from the test apiserver,
// uncached, failing the test on any error.
func getObject(t testing.TB, obj client.Object) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := testEnv.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatalf("getting %T %s: %v", obj, client.ObjectKeyFromObject(obj), err)
	}
}

// newEmulatedStripe runs the Stripe emulator on a real socket for one test
// and returns it with a *stripe.Client pointed at it. The client does not
// retry by itself: retrying is the controllers' job.
func newEmulatedStripe(t testing.TB) (*emulator.Emulator, *stripe.Client) {
	t.Helper()
	em := emulator.New(emulator.Options{})
	srv := httptest.NewServer(em)
	t.Cleanup(func() {
		srv.Close()
		em.Close()
	})
	sc, err := stripe.New(stripe.Config{SecretKey: "sk_test_controllers", APIBase: srv.URL, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("creating Stripe client: %v", err)
	}
	return em, sc
}

// kubeEvents lists the Kubernetes Events (events.k8s.io) about the object
// named name in namespace ns, as "<type> <reason>: <note>".
func kubeEvents(t testing.TB, ns, name string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var list eventsv1.EventList
	if err := testEnv.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
		t.Fatalf("listing events in %s: %v", ns, err)
	}
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == name {
			out = append(out, e.Type+" "+e.Reason+": "+e.Note)
		}
	}
	return out
}

// createObject creates obj in the test apiserver, failing the test on any error.
func createObject(t testing.TB, obj client.Object) {
	t.Helper()
	if err := testEnv.Client.Create(testContext(t), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, client.ObjectKeyFromObject(obj), err)
	}
}

// reconcileOnce runs one reconcile of obj's key, as the controller would.
func reconcileOnce(t testing.TB, r reconcile.Reconciler, obj client.Object) (ctrl.Result, error) {
	t.Helper()
	return r.Reconcile(testContext(t), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(obj)})
}

// conditionReady returns the Ready condition of conds, or a zero one.
func conditionReady(conds []metav1.Condition) metav1.Condition {
	if c := meta.FindStatusCondition(conds, v1alpha1.ConditionReady); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// hasEvent reports whether one of evs starts with prefix.
func hasEvent(evs []string, prefix string) bool {
	for _, e := range evs {
		if strings.HasPrefix(e, prefix) {
			return true
		}
	}
	return false
}

// recordedEvents drains the events a FakeRecorder has recorded so far, each
// as "<type> <reason> <note>".
func recordedEvents(r *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-r.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

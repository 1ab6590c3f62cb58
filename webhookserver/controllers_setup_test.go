package webhookserver

import (
	"github.com/md-platform/paytoview-operator/controllers"
)

// setupControllers registers the real reconcilers on the harness's manager,
// talking to the harness's emulator. Without purchases, nobody reconciles
// Purchases: tests then set their status themselves.
func setupControllers(h *harness, purchases bool) error {
	if err := (&controllers.CustomerReconciler{
		Client: h.mgr.GetClient(), Stripe: h.stripe, Recorder: h.mgr.GetEventRecorder("customer"),
	}).SetupWithManager(h.mgr); err != nil {
		return err
	}
	if err := (&controllers.ProductReconciler{
		Client: h.mgr.GetClient(), Stripe: h.stripe, Recorder: h.mgr.GetEventRecorder("product"),
	}).SetupWithManager(h.mgr); err != nil {
		return err
	}
	if !purchases {
		return nil
	}
	return (&controllers.PurchaseReconciler{
		Client: h.mgr.GetClient(), APIReader: h.mgr.GetAPIReader(), Stripe: h.stripe, Recorder: h.mgr.GetEventRecorder("purchase"),
		Clock: h.clock,
	}).SetupWithManager(h.mgr)
}

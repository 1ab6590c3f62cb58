package webhookserver

import (
	"github.com/md-platform/paytoview-operator/controllers"
)

// setupControllers registers the real reconcilers on the harness's manager,
// talking to the harness's emulator.
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
	_ = purchases
	return nil
}

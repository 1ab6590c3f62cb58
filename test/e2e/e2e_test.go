//go:build e2e

package e2e

import (
	"testing"
)

// TestPayToView starts the whole system once (control plane, two operator
// replicas as ServiceAccount-authenticated processes, the Stripe emulator
// process) and walks the scenarios over it in order. Each scenario uses
// users and entities of its own; the ones that disturb the system (killing
// the leader, restarting the apiserver) come last, and the final check
// looks at all the money that moved.
func TestPayToView(t *testing.T) {
	s := startSystem(t)

	scenarios := []struct {
		name string
		run  func(*testing.T, *system)
		// localOnly scenarios need the local control plane (they restart
		// its kube-apiserver); they do not run against E2E_KUBECONFIG.
		localOnly bool
	}{
		{"SeedFlow_CreatePayWebhookCompletedListed", testSeedFlow, false},
		{"ForgedWebhook_RejectedAndChangesNothing", testForgedWebhook, false},
		{"CreateWithAccess_ShortCircuitsWithoutStripe", testHasAccessShortCircuit, false},
		{"CreateTwice_ReusesThePendingCheckout", testReuseWithinWindow, false},
		{"AdminRefund_RefundsInStripeAndRevokesAccess", testAdminRefund, false},
		{"LostWebhook_HealedByPollingThePurchase", testLostWebhookHealed, false},
		{"ProductPriceChange_NewPriceForNewPurchasesOnly", testPriceChange, false},
		{"LeaderKilledMidFlow_PurchasesStillComplete", testLeaderKilled, false},
		{"APIServerRestartMidFlow_NoPurchaseLost", testAPIServerRestart, true},
		{"AllMoney_ChargedOnceAndAccountedFor", testMoneyAccountedFor, false},
	}
	for _, sc := range scenarios {
		if sc.localOnly && s.cluster.local == nil {
			t.Logf("%s runs only against the local control plane (it restarts kube-apiserver)", sc.name)
			continue
		}
		t.Run(sc.name, func(t *testing.T) {
			// A replica that exited (e.g. one that lost the Lease while the
			// apiserver was away) is started again, as the kubelet would.
			s.restartExitedReplicas(t)
			sc.run(t, s)
		})
	}
}

// Command manager runs paytoview-operator: the Product, Customer and Purchase
// controllers (on the elected leader), and the client/admin API with the
// Stripe webhook receiver (on every replica).
package main

import (
	"flag"
	"fmt"
	"os"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/md-platform/paytoview-operator/internal/operator"
)

func main() {
	cfg := operator.DefaultConfig()
	fs := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	cfg.BindFlags(fs)
	zapOpts := zap.Options{Development: false, TimeEncoder: zapcore.RFC3339NanoTimeEncoder}
	zapOpts.BindFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage of %s:\n", os.Args[0])
		fs.PrintDefaults()
		fmt.Fprintf(fs.Output(), `
Every flag can also be set with the environment variable %s<FLAG>, e.g.
PAYTOVIEW_PURCHASE_NAMESPACE for --purchase-namespace; a flag given on the
command line wins. Stripe settings come from the environment only (or from
files named by <NAME>_FILE): STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRETS
(comma-separated whsec_ secrets, several during rotation), STRIPE_API_BASE.
`, operator.EnvPrefix)
	}
	_ = fs.Parse(os.Args[1:])
	if err := cfg.ApplyEnv(fs, os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "configuration:", err)
		os.Exit(2)
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "configuration:", err)
		os.Exit(2)
	}
	log := zap.New(zap.UseFlagOptions(&zapOpts))
	ctrl.SetLogger(log)

	restCfg, err := ctrl.GetConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubeconfig:", err)
		os.Exit(1)
	}
	if err := operator.Run(ctrl.SetupSignalHandler(), cfg, restCfg, log); err != nil {
		log.Error(err, "operator stopped")
		os.Exit(1)
	}
}

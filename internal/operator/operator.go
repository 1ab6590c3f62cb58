package operator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/md-platform/paytoview-operator/controllers"
	"github.com/md-platform/paytoview-operator/internal/auth"
	"github.com/md-platform/paytoview-operator/internal/index"
	"github.com/md-platform/paytoview-operator/internal/kube"
	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/webhookserver"
)

// ClientSecretLabel marks the Secrets that hold checkout client secrets; the
// manager caches only those Secrets, never the namespace's others.
const ClientSecretLabel = "paytoview.md-platform.io/client-secret"

// Run starts the operator against the cluster restCfg reaches and blocks until
// ctx is cancelled or a component fails. Controllers run on the elected leader
// only; the HTTP API and the Stripe webhook receiver run on every replica.
func Run(ctx context.Context, cfg Config, restCfg *rest.Config, log logr.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	ctx = logr.NewContext(ctx, log)
	if cfg.KubeAPIQPS > 0 {
		restCfg = rest.CopyConfig(restCfg)
		restCfg.QPS, restCfg.Burst = float32(cfg.KubeAPIQPS), cfg.KubeAPIBurst
	}

	stripeClient, err := stripe.New(stripe.Config{SecretKey: cfg.StripeSecretKey, APIBase: cfg.StripeAPIBase})
	if err != nil {
		return fmt.Errorf("configuring the Stripe client: %w", err)
	}
	verifier, err := stripe.NewVerifier(cfg.StripeWebhookSecrets, stripe.VerifierOptions{
		AllowAPIVersionMismatch: cfg.StripeAllowAPIVersionMismatch,
	})
	if err != nil {
		return fmt.Errorf("configuring webhook verification: %w", err)
	}
	authn, err := newAuthenticator(ctx, cfg)
	if err != nil {
		return err
	}

	metricsOpts := metricsserver.Options{BindAddress: cfg.MetricsBindAddress}
	if cfg.MetricsBindAddress != "0" {
		// As kubebuilder v4 scaffolds it: HTTPS, and only callers the
		// apiserver authenticates and authorizes for /metrics.
		metricsOpts.SecureServing = true
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	clientSecrets := labels.SelectorFromSet(labels.Set{ClientSecretLabel: "true"})
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                        kube.NewScheme(),
		Logger:                        log,
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        cfg.HealthProbeBindAddress,
		LeaderElection:                cfg.LeaderElect,
		LeaderElectionID:              cfg.LeaderElectionID,
		LeaderElectionNamespace:       cfg.PurchaseNamespace,
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       ptrDuration(30 * time.Second),
		Cache: cache.Options{
			DefaultNamespaces: map[string]cache.Config{cfg.PurchaseNamespace: {}},
			// managedFields are never read here; dropping them bounds the
			// memory of a cache holding every Purchase.
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Secret{}: {Label: clientSecrets},
			},
		},
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	if err := index.Setup(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}

	if err := (&controllers.ProductReconciler{
		Client: mgr.GetClient(), Stripe: stripeClient, Recorder: mgr.GetEventRecorder("product-controller"),
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the Product controller: %w", err)
	}
	if err := (&controllers.CustomerReconciler{
		Client: mgr.GetClient(), Stripe: stripeClient, Recorder: mgr.GetEventRecorder("customer-controller"),
		Workers: cfg.Workers,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the Customer controller: %w", err)
	}
	if err := (&controllers.PurchaseReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Stripe: stripeClient, Recorder: mgr.GetEventRecorder("purchase-controller"),
		SessionTTL: cfg.CheckoutSessionTTL, RetentionTerminal: cfg.RetentionTerminal, Workers: cfg.Workers,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the Purchase controller: %w", err)
	}

	createRate, createBurst, maxPending := cfg.createLimits()
	server, err := webhookserver.New(webhookserver.Options{
		Addr:                 cfg.APIBindAddress,
		Namespace:            cfg.PurchaseNamespace,
		Client:               mgr.GetClient(),
		APIReader:            mgr.GetAPIReader(),
		Cache:                mgr.GetCache(),
		Auth:                 authn,
		Verifier:             verifier,
		AllowedReturnOrigins: cfg.AllowedReturnOrigins,
		CORSAllowedOrigins:   cfg.CORSAllowedOrigins,
		PendingReuseWindow:   cfg.PendingReuseWindow,
		CreateTimeout:        cfg.CreateTimeout,
		CreateRate:           createRate,
		CreateBurst:          createBurst,
		MaxPendingPerUser:    maxPending,
		Logger:               log.WithName("api"),
		Recorder:             mgr.GetEventRecorder("paytoview-api"),
	})
	if err != nil {
		return fmt.Errorf("configuring the API server: %w", err)
	}
	if err := mgr.Add(server); err != nil {
		return fmt.Errorf("adding the API server: %w", err)
	}

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("adding the health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("cache", cacheSynced(mgr.GetCache())); err != nil {
		return fmt.Errorf("adding the readiness check: %w", err)
	}

	log.Info("starting", "namespace", cfg.PurchaseNamespace, "api", cfg.APIBindAddress,
		"leaderElection", cfg.LeaderElect, "stripeAPI", stripeAPIName(cfg.StripeAPIBase))
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("running the manager: %w", err)
	}
	return nil
}

func newAuthenticator(ctx context.Context, cfg Config) (*auth.Authenticator, error) {
	ac := auth.Config{
		JWKSURL:    cfg.AuthJWKSURL,
		OIDCIssuer: cfg.AuthOIDCIssuer,
		Audience:   cfg.AuthAudience,
		AdminClaim: cfg.AuthAdminClaim,
		AdminRole:  cfg.AuthAdminRole,
	}
	if cfg.AuthHS256SecretFile != "" {
		secret, err := os.ReadFile(cfg.AuthHS256SecretFile)
		if err != nil {
			return nil, fmt.Errorf("reading --auth-hs256-secret-file: %w", err)
		}
		ac.HS256Secret = []byte(strings.TrimSpace(string(secret)))
	}
	a, err := auth.New(ctx, ac)
	if err != nil {
		return nil, fmt.Errorf("configuring authentication: %w", err)
	}
	return a, nil
}

// cacheSynced is ready once the informers have synced, so a replica does not
// take traffic it would answer from an empty cache.
func cacheSynced(c cache.Cache) healthz.Checker {
	return func(r *http.Request) error {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		if !c.WaitForCacheSync(ctx) {
			return errors.New("cache not synced yet")
		}
		return nil
	}
}

func stripeAPIName(base string) string {
	if base == "" {
		return stripe.DefaultAPIBase
	}
	return base
}

func ptrDuration(d time.Duration) *time.Duration { return &d }

package operator

import (
	"flag"
	"maps"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/md-platform/paytoview-operator/webhookserver"
)

func parse(t *testing.T, args []string, env map[string]string) (Config, error) {
	t.Helper()
	c := DefaultConfig()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parsing %v: %v", args, err)
	}
	if err := c.ApplyEnv(fs, func(k string) string { return env[k] }); err != nil {
		return c, err
	}
	return c, c.Validate()
}

func minimalEnv(t *testing.T) map[string]string {
	secret := filepath.Join(t.TempDir(), "hs256")
	if err := os.WriteFile(secret, []byte(strings.Repeat("s", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"PAYTOVIEW_PURCHASE_NAMESPACE":     "paytoview",
		"PAYTOVIEW_AUTH_HS256_SECRET_FILE": secret,
		"STRIPE_SECRET_KEY":                "sk_test_123",
		"STRIPE_WEBHOOK_SECRETS":           "whsec_a, whsec_b",
		"PAYTOVIEW_ALLOWED_RETURN_ORIGINS": "https://app.example.com",
	}
}

func TestConfig_MinimalSettingsValidateWithDocumentedDefaults(t *testing.T) {
	c, err := parse(t, nil, minimalEnv(t))
	if err != nil {
		t.Fatalf("minimal config rejected: %v", err)
	}
	if c.APIBindAddress != ":8080" || c.MetricsBindAddress != ":8443" || c.HealthProbeBindAddress != ":8081" {
		t.Errorf("bind address defaults = %q %q %q", c.APIBindAddress, c.MetricsBindAddress, c.HealthProbeBindAddress)
	}
	if c.CheckoutSessionTTL != 30*time.Minute || c.PendingReuseWindow != 5*time.Minute ||
		c.CreateTimeout != 10*time.Second || c.RetentionTerminal != 168*time.Hour {
		t.Errorf("duration defaults = %s %s %s %s", c.CheckoutSessionTTL, c.PendingReuseWindow, c.CreateTimeout, c.RetentionTerminal)
	}
	if got := strings.Join(c.StripeWebhookSecrets, "|"); got != "whsec_a|whsec_b" {
		t.Errorf("webhook secrets = %q, want both, trimmed", got)
	}
}

func TestConfig_FlagsWinOverEnvironment(t *testing.T) {
	env := minimalEnv(t)
	env["PAYTOVIEW_CREATE_TIMEOUT"] = "3s"
	env["PAYTOVIEW_API_BIND_ADDRESS"] = ":9000"
	c, err := parse(t, []string{"--api-bind-address=:7000"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.APIBindAddress != ":7000" {
		t.Errorf("api bind address = %q, want the flag's :7000", c.APIBindAddress)
	}
	if c.CreateTimeout != 3*time.Second {
		t.Errorf("create timeout = %s, want the environment's 3s", c.CreateTimeout)
	}
}

func TestConfig_SecretsFromFiles(t *testing.T) {
	env := minimalEnv(t)
	delete(env, "STRIPE_SECRET_KEY")
	f := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(f, []byte("sk_test_fromfile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env["STRIPE_SECRET_KEY_FILE"] = f
	c, err := parse(t, nil, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.StripeSecretKey != "sk_test_fromfile" {
		t.Errorf("secret key = %q, want the file's content trimmed", c.StripeSecretKey)
	}
}

func TestConfig_RejectsMissingAndContradictorySettings(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		edit   func(map[string]string)
		wantIn string
	}{
		{"no namespace", nil, func(e map[string]string) { delete(e, "PAYTOVIEW_PURCHASE_NAMESPACE") }, "--purchase-namespace is required"},
		{"no auth", nil, func(e map[string]string) { delete(e, "PAYTOVIEW_AUTH_HS256_SECRET_FILE") }, "exactly one of --auth-hs256-secret-file"},
		{"two auth modes", []string{"--auth-jwks-url=https://idp.example/jwks"}, nil, "exactly one of --auth-hs256-secret-file"},
		{"no stripe key", nil, func(e map[string]string) { delete(e, "STRIPE_SECRET_KEY") }, "STRIPE_SECRET_KEY"},
		{"publishable key", nil, func(e map[string]string) { e["STRIPE_SECRET_KEY"] = "pk_test_1" }, "not a publishable key"},
		{"no webhook secret", nil, func(e map[string]string) { delete(e, "STRIPE_WEBHOOK_SECRETS") }, "STRIPE_WEBHOOK_SECRETS"},
		{"bad webhook secret", nil, func(e map[string]string) { e["STRIPE_WEBHOOK_SECRETS"] = "secret" }, "not a whsec_"},
		{"ttl below Stripe's minimum", []string{"--checkout-session-ttl=10m"}, nil, "outside Stripe's limits"},
		{"reuse window longer than ttl", []string{"--pending-reuse-window=2h"}, nil, "shorter than --checkout-session-ttl"},
		{"no return origins", nil, func(e map[string]string) { delete(e, "PAYTOVIEW_ALLOWED_RETURN_ORIGINS") }, "--allowed-return-origins is required"},
		{"origin with a path", []string{"--allowed-return-origins=https://app.example.com/shop"}, nil, "is not an origin"},
		{"bad api base", nil, func(e map[string]string) { e["STRIPE_API_BASE"] = "ftp://x" }, "STRIPE_API_BASE"},
		{"unreadable key file", nil, func(e map[string]string) {
			delete(e, "STRIPE_SECRET_KEY")
			e["STRIPE_SECRET_KEY_FILE"] = "/nonexistent/key"
		}, "reading STRIPE_SECRET_KEY_FILE"},
		{"bad duration in env", nil, func(e map[string]string) { e["PAYTOVIEW_CREATE_TIMEOUT"] = "soon" }, "PAYTOVIEW_CREATE_TIMEOUT"},
		{"negative create rate", []string{"--create-rate-per-minute=-1"}, nil, "--create-rate-per-minute=-1 must be a finite number"},
		{"NaN create rate", []string{"--create-rate-per-minute=NaN"}, nil, "--create-rate-per-minute=NaN must be a finite number"},
		{"infinite create rate", []string{"--create-rate-per-minute=+Inf"}, nil, "(0 disables the limit)"},
		{"create rate not a number in env", nil, func(e map[string]string) { e["PAYTOVIEW_CREATE_RATE_PER_MINUTE"] = "lots" }, "PAYTOVIEW_CREATE_RATE_PER_MINUTE"},
		{"zero burst with a rate", []string{"--create-burst=0"}, nil, "--create-burst=0 must be at least 1"},
		{"negative burst in env", nil, func(e map[string]string) { e["PAYTOVIEW_CREATE_BURST"] = "-3" }, "--create-burst=-3 must be at least 1"},
		{"negative pending cap", []string{"--max-pending-per-user=-1"}, nil, "--max-pending-per-user=-1 must be at least 0"},
		{"negative kube API QPS", []string{"--kube-api-qps=-1"}, nil, "--kube-api-qps=-1 must be a finite number"},
		{"kube API QPS not a number in env", nil, func(e map[string]string) { e["PAYTOVIEW_KUBE_API_QPS"] = "fast" }, "PAYTOVIEW_KUBE_API_QPS"},
		{"zero workers", []string{"--workers=0"}, nil, "--workers=0 must be at least 1"},
		{"zero kube API burst with a QPS", []string{"--kube-api-qps=50", "--kube-api-burst=0"}, nil, "--kube-api-burst=0 must be at least 1 while --kube-api-qps is set"},
		{"pending cap not an integer in env", nil, func(e map[string]string) { e["PAYTOVIEW_MAX_PENDING_PER_USER"] = "2.5" }, "PAYTOVIEW_MAX_PENDING_PER_USER"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := minimalEnv(t)
			if c.edit != nil {
				c.edit(env)
			}
			_, err := parse(t, c.args, env)
			if err == nil || !strings.Contains(err.Error(), c.wantIn) {
				t.Fatalf("error = %v, want one mentioning %q", err, c.wantIn)
			}
		})
	}
}

func TestConfig_AbuseLimitsReachTheServerOptions(t *testing.T) {
	cases := []struct {
		name        string
		args        []string
		env         map[string]string
		wantRate    rate.Limit
		wantBurst   int
		wantPending int
	}{
		{"defaults are the server's", nil, nil, webhookserver.DefaultCreateRate, webhookserver.DefaultCreateBurst, webhookserver.DefaultMaxPendingPerUser},
		{"flags", []string{"--create-rate-per-minute=30", "--create-burst=2", "--max-pending-per-user=3"}, nil, rate.Limit(0.5), 2, 3},
		{"environment twins", nil, map[string]string{
			"PAYTOVIEW_CREATE_RATE_PER_MINUTE": "1.5", "PAYTOVIEW_CREATE_BURST": "7", "PAYTOVIEW_MAX_PENDING_PER_USER": "1",
		}, rate.Limit(0.025), 7, 1},
		{"flags win over the environment", []string{"--create-burst=9"}, map[string]string{"PAYTOVIEW_CREATE_BURST": "1"},
			webhookserver.DefaultCreateRate, 9, webhookserver.DefaultMaxPendingPerUser},
		{"zero rate disables the rate limit, whatever the burst", []string{"--create-rate-per-minute=0", "--create-burst=0"}, nil,
			rate.Inf, 1, webhookserver.DefaultMaxPendingPerUser},
		{"zero cap disables the pending cap", []string{"--max-pending-per-user=0"}, nil,
			webhookserver.DefaultCreateRate, webhookserver.DefaultCreateBurst, math.MaxInt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := minimalEnv(t)
			maps.Copy(env, c.env)
			cfg, err := parse(t, c.args, env)
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			gotRate, gotBurst, gotPending := cfg.createLimits()
			if math.Abs(float64(gotRate-c.wantRate)) > 1e-12 || gotBurst != c.wantBurst || gotPending != c.wantPending {
				t.Errorf("limits = rate %v burst %d pending %d, want rate %v burst %d pending %d",
					gotRate, gotBurst, gotPending, c.wantRate, c.wantBurst, c.wantPending)
			}
		})
	}
}

func TestEnvName_IsTheFlagInUpperSnakeCase(t *testing.T) {
	if got := EnvName("auth-hs256-secret-file"); got != "PAYTOVIEW_AUTH_HS256_SECRET_FILE" {
		t.Errorf("EnvName = %q", got)
	}
}

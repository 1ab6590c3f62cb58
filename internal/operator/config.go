// Package operator wires the paytoview manager: controllers (leader-elected),
// the HTTP API and Stripe webhook receiver (on every replica), health probes
// and metrics. main.go and `make run` both start the system through it.
package operator

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// EnvPrefix starts the environment variable twin of every flag: the flag
// --purchase-namespace is also read from PAYTOVIEW_PURCHASE_NAMESPACE.
const EnvPrefix = "PAYTOVIEW_"

// Config is everything the operator needs to start. Flags and environment
// variables fill it (BindFlags, then ApplyEnv), Validate checks it.
type Config struct {
	APIBindAddress         string
	MetricsBindAddress     string
	HealthProbeBindAddress string
	LeaderElect            bool
	LeaderElectionID       string
	PurchaseNamespace      string

	AllowedReturnOrigins []string
	CORSAllowedOrigins   []string
	CheckoutSessionTTL   time.Duration
	PendingReuseWindow   time.Duration
	CreateTimeout        time.Duration
	RetentionTerminal    time.Duration

	// CreateRatePerMinute and CreateBurst are each user's token bucket for
	// creating purchases; 0 purchases a minute disables the limit.
	CreateRatePerMinute float64
	CreateBurst         int
	// MaxPendingPerUser caps each user's unpaid purchases; 0 disables the cap.
	MaxPendingPerUser int

	// KubeAPIQPS and KubeAPIBurst are a client-side rate limit of the
	// operator's requests to the apiserver (a token bucket); 0 keeps the
	// client's own (controller-runtime: none, the apiserver's priority and
	// fairness applies).
	KubeAPIQPS   float64
	KubeAPIBurst int
	// Workers is how many Purchases (and Customers) are reconciled at once.
	Workers int

	AuthHS256SecretFile string
	AuthJWKSURL         string
	AuthOIDCIssuer      string
	AuthAudience        string
	AuthAdminClaim      string
	AuthAdminRole       string

	// Stripe settings come from the environment (or files named by *_FILE),
	// never from flags, so secrets do not show in process listings.
	StripeSecretKey      string
	StripeWebhookSecrets []string
	StripeAPIBase        string
	// StripeAllowAPIVersionMismatch accepts webhook events rendered with
	// another API version than the one stripe-go pins (2023-10-16).
	StripeAllowAPIVersionMismatch bool
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		APIBindAddress:         ":8080",
		MetricsBindAddress:     ":8443",
		HealthProbeBindAddress: ":8081",
		LeaderElectionID:       "paytoview-operator.md-platform.io",
		PurchaseNamespace:      os.Getenv("POD_NAMESPACE"),
		CheckoutSessionTTL:     30 * time.Minute,
		PendingReuseWindow:     5 * time.Minute,
		CreateTimeout:          10 * time.Second,
		RetentionTerminal:      168 * time.Hour,
		CreateRatePerMinute:    10,
		CreateBurst:            5,
		Workers:                16,
		MaxPendingPerUser:      10,
		AuthAdminClaim:         "roles",
		AuthAdminRole:          "admin",
	}
}

type stringList struct{ v *[]string }

func (s stringList) String() string {
	if s.v == nil {
		return ""
	}
	return strings.Join(*s.v, ",")
}

func (s stringList) Set(v string) error {
	*s.v = splitList(v)
	return nil
}

func splitList(v string) []string {
	var out []string
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// BindFlags registers every flag on fs, writing into c.
func (c *Config) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.APIBindAddress, "api-bind-address", c.APIBindAddress, "address of the client/admin API and the Stripe webhook receiver")
	fs.StringVar(&c.MetricsBindAddress, "metrics-bind-address", c.MetricsBindAddress, "address of the secure (HTTPS, authenticated) metrics endpoint; 0 disables it")
	fs.StringVar(&c.HealthProbeBindAddress, "health-probe-bind-address", c.HealthProbeBindAddress, "address of the /healthz and /readyz probes")
	fs.BoolVar(&c.LeaderElect, "leader-elect", c.LeaderElect, "elect one leader among replicas to run the controllers (the API runs on every replica)")
	fs.StringVar(&c.PurchaseNamespace, "purchase-namespace", c.PurchaseNamespace, "namespace of Products, Purchases and Customers (default: the pod's namespace, POD_NAMESPACE)")
	fs.Var(stringList{&c.AllowedReturnOrigins}, "allowed-return-origins", "comma-separated origins (scheme://host[:port]) a purchase's returnUrl may point to")
	fs.Var(stringList{&c.CORSAllowedOrigins}, "cors-allowed-origins", "comma-separated browser origins allowed to call the client API")
	fs.DurationVar(&c.CheckoutSessionTTL, "checkout-session-ttl", c.CheckoutSessionTTL, "how long a Stripe checkout session stays open (Stripe allows 30m to 24h)")
	fs.DurationVar(&c.PendingReuseWindow, "pending-reuse-window", c.PendingReuseWindow, "a pending purchase younger than this is reused instead of creating a new one")
	fs.DurationVar(&c.CreateTimeout, "create-timeout", c.CreateTimeout, "how long POST /purchases waits for the checkout session before answering 503")
	fs.DurationVar(&c.RetentionTerminal, "retention-terminal", c.RetentionTerminal, "how long Canceled and Failed purchases are kept before deletion")
	fs.Float64Var(&c.CreateRatePerMinute, "create-rate-per-minute", c.CreateRatePerMinute, "purchases one user may create a minute, sustained, before POST /purchases answers 429 with Retry-After; 0 disables the limit")
	fs.Float64Var(&c.KubeAPIQPS, "kube-api-qps", c.KubeAPIQPS, "a client-side limit of the requests a second the operator sends the apiserver (each purchase takes about 6 writes); 0 sets none and leaves it to the apiserver's priority and fairness")
	fs.IntVar(&c.Workers, "workers", c.Workers, "purchases (and customers) reconciled at once; each reconcile may wait on Stripe, so this bounds how many Stripe calls are in flight")
	fs.IntVar(&c.KubeAPIBurst, "kube-api-burst", c.KubeAPIBurst, "requests the operator may send the apiserver at once above --kube-api-qps (at least 1 when --kube-api-qps is set)")
	fs.IntVar(&c.CreateBurst, "create-burst", c.CreateBurst, "purchases one user may create at once before --create-rate-per-minute applies (at least 1 while the rate limit is on)")
	fs.IntVar(&c.MaxPendingPerUser, "max-pending-per-user", c.MaxPendingPerUser, "unpaid (Pending) purchases one user may have open before POST /purchases answers 429; 0 disables the cap")
	fs.StringVar(&c.AuthHS256SecretFile, "auth-hs256-secret-file", c.AuthHS256SecretFile, "file holding the shared HS256 JWT secret (development and tests)")
	fs.StringVar(&c.AuthJWKSURL, "auth-jwks-url", c.AuthJWKSURL, "JWKS URL of the identity provider (RS256/ES256 tokens)")
	fs.StringVar(&c.AuthOIDCIssuer, "auth-oidc-issuer", c.AuthOIDCIssuer, "OIDC issuer URL; its discovery document names the JWKS")
	fs.StringVar(&c.AuthAudience, "auth-audience", c.AuthAudience, "required aud claim of user tokens")
	fs.StringVar(&c.AuthAdminClaim, "auth-admin-claim", c.AuthAdminClaim, "claim (dotted path for nested claims) listing a user's roles")
	fs.StringVar(&c.AuthAdminRole, "auth-admin-role", c.AuthAdminRole, "role in the admin claim that grants the admin API")
}

// ApplyEnv sets every flag that was not given on the command line from its
// environment variable twin (PAYTOVIEW_<FLAG_NAME>), and reads the Stripe
// settings from STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRETS and STRIPE_API_BASE
// (each also as <NAME>_FILE naming a file that holds the value).
func (c *Config) ApplyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		name := EnvName(f.Name)
		if v := getenv(name); v != "" {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
			}
		}
	})
	key, err := envOrFile(getenv, "STRIPE_SECRET_KEY")
	errs = append(errs, err)
	secrets, err := envOrFile(getenv, "STRIPE_WEBHOOK_SECRETS")
	errs = append(errs, err)
	base, err := envOrFile(getenv, "STRIPE_API_BASE")
	errs = append(errs, err)
	c.StripeSecretKey, c.StripeWebhookSecrets, c.StripeAPIBase = key, splitList(secrets), base
	c.StripeAllowAPIVersionMismatch = getenv("STRIPE_ALLOW_API_VERSION_MISMATCH") == "true"
	return errors.Join(errs...)
}

// EnvName is the environment variable twin of a flag name.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func envOrFile(getenv func(string) string, name string) (string, error) {
	if v := getenv(name); v != "" {
		return strings.TrimSpace(v), nil
	}
	path := getenv(name + "_FILE")
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading %s_FILE: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Validate reports missing or contradictory settings, all at once, so the
// operator fails at start-up with one clear message rather than at the first
// request.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.PurchaseNamespace == "" {
		add("--purchase-namespace is required (or set POD_NAMESPACE)")
	}
	if c.APIBindAddress == "" || c.APIBindAddress == "0" {
		add("--api-bind-address is required: the API and the Stripe webhook receiver need it")
	}
	if c.CheckoutSessionTTL < 30*time.Minute || c.CheckoutSessionTTL > 24*time.Hour {
		add("--checkout-session-ttl=%s is outside Stripe's limits (30m to 24h)", c.CheckoutSessionTTL)
	}
	if c.PendingReuseWindow <= 0 || c.PendingReuseWindow >= c.CheckoutSessionTTL {
		add("--pending-reuse-window=%s must be positive and shorter than --checkout-session-ttl=%s", c.PendingReuseWindow, c.CheckoutSessionTTL)
	}
	if c.CreateTimeout <= 0 {
		add("--create-timeout must be positive")
	}
	if c.RetentionTerminal <= 0 {
		add("--retention-terminal must be positive")
	}
	switch {
	case math.IsNaN(c.CreateRatePerMinute) || math.IsInf(c.CreateRatePerMinute, 0) || c.CreateRatePerMinute < 0:
		add("--create-rate-per-minute=%v must be a finite number of purchases a minute, at least 0 (0 disables the limit)", c.CreateRatePerMinute)
	case c.CreateRatePerMinute > 0 && c.CreateBurst < 1:
		add("--create-burst=%d must be at least 1 while --create-rate-per-minute is set, or no purchase could ever be created", c.CreateBurst)
	}
	if math.IsNaN(c.KubeAPIQPS) || math.IsInf(c.KubeAPIQPS, 0) || c.KubeAPIQPS < 0 {
		add("--kube-api-qps=%v must be a finite number of requests a second, at least 0 (0 sets no client-side limit)", c.KubeAPIQPS)
	}
	if c.Workers < 1 {
		add("--workers=%d must be at least 1", c.Workers)
	}
	if c.KubeAPIQPS > 0 && c.KubeAPIBurst < 1 {
		add("--kube-api-burst=%d must be at least 1 while --kube-api-qps is set", c.KubeAPIBurst)
	}
	if c.MaxPendingPerUser < 0 {
		add("--max-pending-per-user=%d must be at least 0 (0 disables the cap)", c.MaxPendingPerUser)
	}
	auth := 0
	for _, v := range []string{c.AuthHS256SecretFile, c.AuthJWKSURL, c.AuthOIDCIssuer} {
		if v != "" {
			auth++
		}
	}
	if auth != 1 {
		add("exactly one of --auth-hs256-secret-file, --auth-jwks-url and --auth-oidc-issuer must be set (got %d)", auth)
	}
	if c.AuthAdminClaim == "" || c.AuthAdminRole == "" {
		add("--auth-admin-claim and --auth-admin-role must not be empty")
	}
	if len(c.AllowedReturnOrigins) == 0 {
		add("--allowed-return-origins is required: the frontend origins a purchase's returnUrl may point to")
	}
	for _, o := range c.AllowedReturnOrigins {
		if err := checkOrigin(o); err != nil {
			add("--allowed-return-origins: %v", err)
		}
	}
	for _, o := range c.CORSAllowedOrigins {
		if err := checkOrigin(o); err != nil {
			add("--cors-allowed-origins: %v", err)
		}
	}
	if c.StripeSecretKey == "" {
		add("STRIPE_SECRET_KEY (or STRIPE_SECRET_KEY_FILE) is required")
	} else if !strings.HasPrefix(c.StripeSecretKey, "sk_") && !strings.HasPrefix(c.StripeSecretKey, "rk_") {
		add("STRIPE_SECRET_KEY must be a secret (sk_) or restricted (rk_) key, not a publishable key")
	}
	if len(c.StripeWebhookSecrets) == 0 {
		add("STRIPE_WEBHOOK_SECRETS (or STRIPE_WEBHOOK_SECRETS_FILE) is required: comma-separated whsec_ endpoint secrets")
	}
	for i, s := range c.StripeWebhookSecrets {
		if !strings.HasPrefix(s, "whsec_") {
			add("STRIPE_WEBHOOK_SECRETS entry %d is not a whsec_ endpoint secret", i+1)
		}
	}
	if c.StripeAPIBase != "" {
		if u, err := url.Parse(c.StripeAPIBase); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			add("STRIPE_API_BASE=%q is not an http(s) URL", c.StripeAPIBase)
		}
	}
	return errors.Join(errs...)
}

// createLimits are the webhookserver options for the abuse limits: the rate
// per second (rate.Inf when disabled), the burst, and the cap on Pending
// purchases (math.MaxInt when disabled).
func (c *Config) createLimits() (createRate rate.Limit, createBurst, maxPending int) {
	createRate, createBurst = rate.Inf, max(c.CreateBurst, 1)
	if c.CreateRatePerMinute > 0 {
		createRate = rate.Limit(c.CreateRatePerMinute / 60)
	}
	maxPending = c.MaxPendingPerUser
	if maxPending == 0 {
		maxPending = math.MaxInt
	}
	return createRate, createBurst, maxPending
}

func checkOrigin(o string) error {
	u, err := url.Parse(o)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("%q is not an origin like https://app.example.com", o)
	}
	return nil
}

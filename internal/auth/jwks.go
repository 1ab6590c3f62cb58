package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/go-logr/logr"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

const (
	// unknownKIDRefreshInterval rate-limits the refresh triggered by a token naming a kid we do not
	// know. Rotation needs one refresh per new key; random kids from a hostile client must not turn
	// into a flood of requests to the identity provider.
	unknownKIDRefreshInterval = time.Minute

	// unknownKIDWaitMax bounds how long one request may wait for that refresh (rate limiter plus the
	// HTTP fetch). A request whose wait would be longer fails at once as "unknown signing key".
	unknownKIDWaitMax = 5 * time.Second

	// maxDiscoveryBytes bounds the OIDC discovery document we read.
	maxDiscoveryBytes = 1 << 20
)

// newJWKSKeySource fetches the JWK Set at u once (failing start-up if that fails) and keeps it fresh
// until ctx is done: periodically, and on demand when a token names an unknown kid.
func newJWKSKeySource(ctx context.Context, cfg Config, u string) (_ keySource, err error) {
	log := logr.FromContextOrDiscard(ctx).WithName("auth")
	// The refresh goroutine starts before the first fetch; if New fails, it must not outlive it.
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		if err != nil {
			cancel()
		}
	}()
	remote, err := jwkset.NewStorageFromHTTP(u, jwkset.HTTPClientStorageOptions{
		Client:                    cfg.HTTPClient,
		Ctx:                       ctx,
		HTTPTimeout:               httpTimeout(cfg.HTTPClient),
		NoErrorReturnFirstHTTPReq: false,
		RefreshInterval:           cfg.JWKSRefreshInterval,
		RefreshErrorHandler: func(_ context.Context, err error) {
			log.Error(err, "refreshing JWK Set failed, keeping the previous keys", "url", u)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("auth: fetching JWK Set %s: %w", u, err)
	}
	storage, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs:          map[string]jwkset.Storage{u: remote},
		RateLimitWaitMax:  unknownKIDWaitMax,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(unknownKIDRefreshInterval), 1),
	})
	if err != nil {
		return nil, fmt.Errorf("auth: JWK Set storage for %s: %w", u, err)
	}
	kf, err := keyfunc.New(keyfunc.Options{
		Ctx:     ctx,
		Storage: storage,
		// Keys published for encryption must not verify signatures; keys without "use" are accepted
		// because many providers omit it.
		UseWhitelist: []jwkset.USE{jwkset.UseSig, ""},
	})
	if err != nil {
		return nil, fmt.Errorf("auth: JWK Set key function for %s: %w", u, err)
	}
	return func(ctx context.Context) jwt.Keyfunc { return kf.KeyfuncCtx(ctx) }, nil
}

func httpTimeout(c *http.Client) time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return defaultHTTPTimeout
}

// discoverJWKSURL reads the issuer's OpenID Provider configuration and returns its jwks_uri. The
// document must name the same issuer (OpenID Connect Discovery 1.0 section 4.3), or an attacker who
// can serve a document could make us trust another issuer's keys.
func discoverJWKSURL(ctx context.Context, client *http.Client, issuer string) (string, error) {
	u := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	ctx, cancel := context.WithTimeout(ctx, httpTimeout(client))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("auth: OIDC discovery request for %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("auth: OIDC discovery at %s: %w", u, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("auth: OIDC discovery at %s answered HTTP %d", u, resp.StatusCode)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxDiscoveryBytes)).Decode(&doc); err != nil {
		return "", fmt.Errorf("auth: decoding OIDC discovery document from %s: %w", u, err)
	}
	if doc.Issuer != issuer {
		return "", fmt.Errorf("auth: OIDC discovery document at %s names issuer %q, want %q", u, doc.Issuer, issuer)
	}
	if err := validateHTTPURL(doc.JWKSURI); err != nil {
		return "", fmt.Errorf("auth: OIDC discovery document at %s has a bad jwks_uri: %w", u, err)
	}
	return doc.JWKSURI, nil
}

// validateHTTPURL accepts absolute http and https URLs. Plain http is allowed for in-cluster identity
// providers; use https whenever the traffic leaves a trusted network.
func validateHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %w", s, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("%q must be an http or https URL", s)
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	return nil
}

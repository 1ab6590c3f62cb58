// Package auth authenticates callers of the HTTP API by their bearer JWT.
//
// One Authenticator verifies tokens of exactly one kind, chosen by configuration: HS256 with a shared
// secret (development and tests), or RS256/ES256 with keys from a JWKS URL or from an OIDC issuer's
// discovery document (production). The allowed algorithms are pinned by that choice, so a token can
// never pick its own verification method (no "alg: none", no HS256 token verified with an RSA public key).
package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	// MinHS256SecretLen is the shortest shared secret accepted, in bytes. RFC 7518 section 3.2 requires a
	// key at least as long as the hash output (256 bits) for HS256.
	MinHS256SecretLen = 32

	// MaxTokenLen bounds the bearer token we are willing to parse, so a hostile client cannot make us
	// base64- and JSON-decode megabytes per request. Real access tokens are well under 4 KiB.
	MaxTokenLen = 8 << 10

	// MaxUserIDLen is the longest sub accepted; it matches the CRDs' userId MaxLength.
	MaxUserIDLen = 255

	// DefaultAdminClaim is the claim searched for the admin role when Config.AdminClaim is empty.
	DefaultAdminClaim = "roles"

	// DefaultAdminRole is the role that makes a caller an admin when Config.AdminRole is empty.
	DefaultAdminRole = "admin"

	// DefaultLeeway is the clock skew tolerated on exp, nbf and iat when Config.Leeway is zero.
	DefaultLeeway = 30 * time.Second

	// DefaultJWKSRefreshInterval is how often keys are re-fetched in the background when
	// Config.JWKSRefreshInterval is zero.
	DefaultJWKSRefreshInterval = 15 * time.Minute

	defaultHTTPTimeout = 10 * time.Second
)

// ErrMissingToken is returned by Authenticate when the request carries no Authorization header at all,
// so callers can answer 401 without an error description (RFC 6750 section 3.1).
var ErrMissingToken = errors.New("missing bearer token")

// TokenError is returned when a token is present but not acceptable.
type TokenError struct {
	// Reason says why the token was rejected. It is safe to show to the client: it never contains the
	// token or key material.
	Reason string

	// cause is the library error behind Reason, kept for logs and errors.Is.
	cause error
}

// Error returns the reason and, for logs, the underlying cause. It never contains the token itself.
func (e *TokenError) Error() string {
	if e.cause == nil {
		return "invalid bearer token: " + e.Reason
	}
	return "invalid bearer token: " + e.Reason + ": " + e.cause.Error()
}

// Unwrap exposes the underlying cause (for example jwt.ErrTokenExpired) to errors.Is.
func (e *TokenError) Unwrap() error { return e.cause }

func tokenError(reason string, cause error) *TokenError {
	return &TokenError{Reason: reason, cause: cause}
}

// Principal is the authenticated caller.
type Principal struct {
	// UserID is the token's sub claim. It satisfies the CRDs' userId validation (length and pattern), so
	// it can be written into a Purchase or Customer as is.
	UserID string

	// Admin is true when the configured admin claim contains the configured admin role.
	Admin bool
}

// Config selects and tunes the token verifier. Exactly one of HS256Secret, JWKSURL and OIDCIssuer must
// be set.
type Config struct {
	// HS256Secret selects the shared-secret verifier (HS256 only). At least MinHS256SecretLen bytes.
	// Meant for development and tests; production should use JWKSURL or OIDCIssuer.
	HS256Secret []byte

	// JWKSURL selects the public-key verifier (RS256 and ES256 only) with keys fetched from this JWK Set.
	JWKSURL string

	// OIDCIssuer selects the public-key verifier (RS256 and ES256 only) with keys found through the
	// issuer's discovery document (<issuer>/.well-known/openid-configuration). Tokens must carry this
	// issuer in iss.
	OIDCIssuer string

	// Issuer, when set, is the required iss claim. With OIDCIssuer it may be left empty; if set it must
	// equal OIDCIssuer.
	Issuer string

	// Audience, when set, must be one of the token's aud values.
	Audience string

	// AdminClaim names the claim holding the caller's roles (default "roles"). A dotted path reaches a
	// nested claim, e.g. "realm_access.roles" for Keycloak; a claim whose name itself contains dots (e.g.
	// Auth0's "https://example.com/roles") is found too.
	AdminClaim string

	// AdminRole is the role that makes a caller an admin (default "admin").
	AdminRole string

	// Leeway is the clock skew tolerated on exp, nbf and iat (default 30s). Zero means the default.
	Leeway time.Duration

	// JWKSRefreshInterval is how often JWKS keys are re-fetched in the background, so revoked keys are
	// dropped (default 15m). New keys are also fetched at once, rate-limited, when a token names an
	// unknown kid.
	JWKSRefreshInterval time.Duration

	// HTTPClient fetches discovery documents and JWK Sets (default: a client with a 10s timeout).
	HTTPClient *http.Client

	// Now is the clock used for exp, nbf and iat (default time.Now).
	Now func() time.Time
}

// Authenticator verifies bearer tokens. It is safe for concurrent use.
type Authenticator struct {
	parser    *jwt.Parser
	methods   []string
	keys      keySource
	adminPath string
	adminRole string
	issuer    string // required iss, empty when not checked
}

// keySource yields the jwt.Keyfunc for one verification; ctx bounds any key refresh it triggers.
type keySource func(ctx context.Context) jwt.Keyfunc

// New validates cfg and builds an Authenticator. Configuration errors are reported here, never at the
// first request. For JWKSURL and OIDCIssuer it fetches the discovery document and the keys once, so an
// unreachable or wrong URL fails start-up; after that the keys are refreshed in the background until ctx
// is done.
func New(ctx context.Context, cfg Config) (*Authenticator, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.defaults()

	a := &Authenticator{adminPath: cfg.AdminClaim, adminRole: cfg.AdminRole}
	issuer := cfg.Issuer
	switch {
	case len(cfg.HS256Secret) > 0:
		secret := slices.Clone(cfg.HS256Secret)
		a.methods = []string{jwt.SigningMethodHS256.Alg()}
		a.keys = func(context.Context) jwt.Keyfunc {
			return func(*jwt.Token) (any, error) { return secret, nil }
		}
	case cfg.JWKSURL != "":
		keys, err := newJWKSKeySource(ctx, cfg, cfg.JWKSURL)
		if err != nil {
			return nil, err
		}
		a.methods = publicKeyMethods()
		a.keys = keys
	default:
		jwksURL, err := discoverJWKSURL(ctx, cfg.HTTPClient, cfg.OIDCIssuer)
		if err != nil {
			return nil, err
		}
		keys, err := newJWKSKeySource(ctx, cfg, jwksURL)
		if err != nil {
			return nil, err
		}
		a.methods = publicKeyMethods()
		a.keys = keys
		issuer = cfg.OIDCIssuer
	}

	opts := []jwt.ParserOption{
		jwt.WithValidMethods(a.methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(cfg.Now),
	}
	a.issuer = issuer
	if issuer != "" {
		opts = append(opts, jwt.WithIssuer(issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	a.parser = jwt.NewParser(opts...)
	return a, nil
}

func publicKeyMethods() []string {
	return []string{jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg()}
}

func (cfg *Config) validate() error {
	var set []string
	if len(cfg.HS256Secret) > 0 {
		set = append(set, "HS256Secret")
	}
	if cfg.JWKSURL != "" {
		set = append(set, "JWKSURL")
	}
	if cfg.OIDCIssuer != "" {
		set = append(set, "OIDCIssuer")
	}
	switch len(set) {
	case 0:
		return errors.New("auth: exactly one of HS256Secret, JWKSURL or OIDCIssuer must be set, got none")
	case 1:
	default:
		return fmt.Errorf("auth: exactly one of HS256Secret, JWKSURL or OIDCIssuer must be set, got %s", strings.Join(set, " and "))
	}
	if n := len(cfg.HS256Secret); n > 0 && n < MinHS256SecretLen {
		return fmt.Errorf("auth: HS256Secret is %d bytes, need at least %d", n, MinHS256SecretLen)
	}
	if cfg.JWKSURL != "" {
		if err := validateHTTPURL(cfg.JWKSURL); err != nil {
			return fmt.Errorf("auth: JWKSURL: %w", err)
		}
	}
	if cfg.OIDCIssuer != "" {
		if err := validateHTTPURL(cfg.OIDCIssuer); err != nil {
			return fmt.Errorf("auth: OIDCIssuer: %w", err)
		}
		if cfg.Issuer != "" && cfg.Issuer != cfg.OIDCIssuer {
			return fmt.Errorf("auth: Issuer %q contradicts OIDCIssuer %q (leave Issuer empty with OIDC)", cfg.Issuer, cfg.OIDCIssuer)
		}
	}
	if cfg.Leeway < 0 {
		return fmt.Errorf("auth: Leeway must not be negative, got %s", cfg.Leeway)
	}
	if cfg.JWKSRefreshInterval < 0 {
		return fmt.Errorf("auth: JWKSRefreshInterval must not be negative, got %s", cfg.JWKSRefreshInterval)
	}
	if strings.ContainsFunc(cfg.AdminRole, isSpace) {
		return fmt.Errorf("auth: AdminRole %q must not contain whitespace", cfg.AdminRole)
	}
	return nil
}

func (cfg *Config) defaults() {
	if cfg.AdminClaim == "" {
		cfg.AdminClaim = DefaultAdminClaim
	}
	if cfg.AdminRole == "" {
		cfg.AdminRole = DefaultAdminRole
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.JWKSRefreshInterval == 0 {
		cfg.JWKSRefreshInterval = DefaultJWKSRefreshInterval
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: defaultHTTPTimeout}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
}

// Authenticate verifies the request's "Authorization: Bearer <token>" header. It returns ErrMissingToken
// when there is no Authorization header and a *TokenError for anything else that is wrong. A key refresh
// it triggers (unknown kid) is bounded by the request's context.
func (a *Authenticator) Authenticate(r *http.Request) (Principal, error) {
	values := r.Header.Values("Authorization")
	switch len(values) {
	case 0:
		return Principal{}, ErrMissingToken
	case 1:
	default:
		return Principal{}, tokenError("more than one Authorization header", nil)
	}
	value := values[0]
	if len(value) > len("Bearer ")+MaxTokenLen {
		return Principal{}, tokenError("token too large", nil)
	}
	scheme, token, _ := strings.Cut(strings.TrimSpace(value), " ")
	if scheme == "" {
		return Principal{}, ErrMissingToken
	}
	if !strings.EqualFold(scheme, "Bearer") {
		return Principal{}, tokenError("unsupported authorization scheme, want Bearer", nil)
	}
	return a.authenticate(r.Context(), strings.TrimSpace(token))
}

// AuthenticateToken verifies a raw token (without the "Bearer " prefix).
func (a *Authenticator) AuthenticateToken(token string) (Principal, error) {
	return a.authenticate(context.Background(), token)
}

func (a *Authenticator) authenticate(ctx context.Context, token string) (Principal, error) {
	if token == "" {
		return Principal{}, tokenError("empty bearer token", nil)
	}
	if len(token) > MaxTokenLen {
		return Principal{}, tokenError("token too large", nil)
	}
	claims := jwt.MapClaims{}
	parsed, err := a.parser.ParseWithClaims(token, claims, a.keys(ctx))
	if err != nil {
		return Principal{}, a.classify(parsed, claims, err)
	}
	// RFC 7515 section 4.1.11: a critical header extension we do not understand makes the token invalid.
	if _, ok := parsed.Header["crit"]; ok {
		return Principal{}, tokenError("unsupported critical header", nil)
	}
	userID, err := userIDFrom(claims)
	if err != nil {
		return Principal{}, err
	}
	return Principal{UserID: userID, Admin: hasRole(claims, a.adminPath, a.adminRole)}, nil
}

// classify turns a parse error into a client-safe reason. The order matters: jwt reports several claim
// problems at once, and the first match names the most useful one.
func (a *Authenticator) classify(token *jwt.Token, claims jwt.MapClaims, err error) *TokenError {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return tokenError("malformed token", err)
	case token != nil && token.Method != nil && !slices.Contains(a.methods, token.Method.Alg()):
		return tokenError("unexpected signing algorithm", err)
	case errors.Is(err, jwt.ErrTokenUnverifiable) && token != nil && token.Method == nil:
		return tokenError("unexpected signing algorithm", err)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return tokenError("unknown signing key", err)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return tokenError("signature invalid", err)
	case errors.Is(err, jwt.ErrTokenExpired):
		return tokenError("token expired", err)
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return tokenError("token not valid yet", err)
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return tokenError("token issued in the future", err)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return tokenError("wrong issuer", err)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return tokenError("wrong audience", err)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return tokenError(a.missingClaimReason(claims), err)
	default:
		return tokenError("invalid claims", err)
	}
}

// missingClaimReason names the required claim that is absent. jwt only says "a required claim is
// missing"; the claims tell which. Only exp, iss (when configured) and aud (when configured) are required.
func (a *Authenticator) missingClaimReason(claims jwt.MapClaims) string {
	switch {
	case claims["exp"] == nil:
		return "token has no expiry (exp)"
	case a.issuer != "" && (claims["iss"] == nil || claims["iss"] == ""):
		return "wrong issuer"
	default:
		return "wrong audience"
	}
}

package auth

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

func newJWKS(t testing.TB, idp *testIDP, mutate func(*Config)) *Authenticator {
	t.Helper()
	cfg := Config{JWKSURL: idp.jwksURL(), HTTPClient: idp.srv.Client(), Now: fixedClock}
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

// rsaPublicKeyPEM is what an attacker can download and use as an HMAC secret in an algorithm
// confusion attack.
func rsaPublicKeyPEM(t testing.TB) []byte {
	der, err := x509.MarshalPKIXPublicKey(&rsaKey().PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestAuthenticateToken_JWKS(t *testing.T) {
	idp := newTestIDP(t,
		rsaPublished("rsa-1"),
		ecPublished(ecKeyA(), "ec-1"),
		publishedKey{pub: &ecKeyB().PublicKey, kid: "enc-1", use: jwkset.UseEnc},
	)
	otherEC := mustEC(ecKeyA().Curve)
	user := Principal{UserID: "user-1"}
	tests := []struct {
		name       string
		cfg        func(*Config)
		token      func(t testing.TB) string
		want       Principal
		wantReason string
	}{
		{
			name:  "RS256 token is accepted",
			token: func(t testing.TB) string { return sign(t, jwt.SigningMethodRS256, rsaKey(), "rsa-1", baseClaims()) },
			want:  user,
		},
		{
			name:  "ES256 token is accepted",
			token: func(t testing.TB) string { return sign(t, jwt.SigningMethodES256, ecKeyA(), "ec-1", baseClaims()) },
			want:  user,
		},
		{
			name:  "token without kid is checked against every published key",
			token: func(t testing.TB) string { return sign(t, jwt.SigningMethodES256, ecKeyA(), "", baseClaims()) },
			want:  user,
		},
		{
			name:       "ES256 token signed by another key under a published kid has an invalid signature",
			token:      func(t testing.TB) string { return sign(t, jwt.SigningMethodES256, otherEC, "ec-1", baseClaims()) },
			wantReason: "signature invalid",
		},
		{
			name: "RS256 token with a flipped signature byte is rejected",
			token: func(t testing.TB) string {
				s := sign(t, jwt.SigningMethodRS256, rsaKey(), "rsa-1", baseClaims())
				i := strings.LastIndexByte(s, '.') + 5
				flipped := byte('A')
				if s[i] == 'A' {
					flipped = 'B'
				}
				return s[:i] + string(flipped) + s[i+1:]
			},
			wantReason: "signature invalid",
		},
		{
			name: "algorithm confusion: HS256 signed with the RSA public key PEM is rejected",
			token: func(t testing.TB) string {
				return sign(t, jwt.SigningMethodHS256, rsaPublicKeyPEM(t), "rsa-1", baseClaims())
			},
			wantReason: "unexpected signing algorithm",
		},
		{
			name:       "unsigned alg none token is rejected",
			token:      func(t testing.TB) string { return unsigned(t, baseClaims()) },
			wantReason: "unexpected signing algorithm",
		},
		{
			name:       "PS256 with the published RSA key is rejected",
			token:      func(t testing.TB) string { return sign(t, jwt.SigningMethodPS256, rsaKey(), "rsa-1", baseClaims()) },
			wantReason: "unexpected signing algorithm",
		},
		{
			name:       "RS512 with the published RSA key is rejected",
			token:      func(t testing.TB) string { return sign(t, jwt.SigningMethodRS512, rsaKey(), "rsa-1", baseClaims()) },
			wantReason: "unexpected signing algorithm",
		},
		{
			name:       "ES256 token naming the RS256 key is rejected",
			token:      func(t testing.TB) string { return sign(t, jwt.SigningMethodES256, ecKeyA(), "rsa-1", baseClaims()) },
			wantReason: "unknown signing key",
		},
		{
			name:       "key published for encryption does not verify signatures",
			token:      func(t testing.TB) string { return sign(t, jwt.SigningMethodES256, ecKeyB(), "enc-1", baseClaims()) },
			wantReason: "unknown signing key",
		},
		{
			name: "unknown kid is rejected",
			token: func(t testing.TB) string {
				return sign(t, jwt.SigningMethodES256, otherEC, "never-published", baseClaims())
			},
			wantReason: "unknown signing key",
		},
		{
			name: "expired RS256 token is rejected",
			token: func(t testing.TB) string {
				return sign(t, jwt.SigningMethodRS256, rsaKey(), "rsa-1", with(baseClaims(), "exp", testNow.Add(-time.Hour).Unix()))
			},
			wantReason: "token expired",
		},
		{
			name: "not yet valid ES256 token is rejected",
			token: func(t testing.TB) string {
				return sign(t, jwt.SigningMethodES256, ecKeyA(), "ec-1", with(baseClaims(), "nbf", testNow.Add(time.Hour).Unix()))
			},
			wantReason: "token not valid yet",
		},
		{
			name: "issuer and audience match",
			cfg:  func(c *Config) { c.Issuer, c.Audience = "https://idp.example", "paytoview" },
			token: func(t testing.TB) string {
				return sign(t, jwt.SigningMethodRS256, rsaKey(), "rsa-1", with(baseClaims(), "iss", "https://idp.example", "aud", "paytoview"))
			},
			want: user,
		},
		{
			name: "wrong issuer is rejected",
			cfg:  func(c *Config) { c.Issuer, c.Audience = "https://idp.example", "paytoview" },
			token: func(t testing.TB) string {
				return sign(t, jwt.SigningMethodRS256, rsaKey(), "rsa-1", with(baseClaims(), "iss", "https://evil.example", "aud", "paytoview"))
			},
			wantReason: "wrong issuer",
		},
		{
			name: "wrong audience is rejected",
			cfg:  func(c *Config) { c.Issuer, c.Audience = "https://idp.example", "paytoview" },
			token: func(t testing.TB) string {
				return sign(t, jwt.SigningMethodES256, ecKeyA(), "ec-1", with(baseClaims(), "iss", "https://idp.example", "aud", "other-api"))
			},
			wantReason: "wrong audience",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newJWKS(t, idp, tt.cfg)
			token := tt.token(t)
			got, err := a.AuthenticateToken(token)
			checkResult(t, token, got, err, tt.want, tt.wantReason)
		})
	}
}

func TestJWKS_NewKeyVerifiesAfterRefreshOnUnknownKID(t *testing.T) {
	idp := newTestIDP(t, ecPublished(ecKeyA(), "key-a"))
	a := newJWKS(t, idp, nil) // background refresh far away: only the unknown-kid path can fetch
	tokenA := sign(t, jwt.SigningMethodES256, ecKeyA(), "key-a", baseClaims())
	tokenB := sign(t, jwt.SigningMethodES256, ecKeyB(), "key-b", baseClaims())

	if _, err := a.AuthenticateToken(tokenA); err != nil {
		t.Fatalf("token of the published key: %v", err)
	}
	hits := idp.jwksHits.Load()

	// The provider rotates: it publishes key-b next to key-a and starts signing with it.
	idp.setKeys(ecPublished(ecKeyA(), "key-a"), ecPublished(ecKeyB(), "key-b"))
	if p, err := a.AuthenticateToken(tokenB); err != nil || p.UserID != "user-1" {
		t.Fatalf("token of the rotated-in key: principal %+v, err %v", p, err)
	}
	if got := idp.jwksHits.Load(); got != hits+1 {
		t.Fatalf("JWKS fetched %d times for the unknown kid, want 1", got-hits)
	}
	if _, err := a.AuthenticateToken(tokenA); err != nil {
		t.Fatalf("token of the key still published during the overlap: %v", err)
	}

	// A flood of random kids right after must not reach the provider: the refresh is rate-limited.
	for i := range 20 {
		tok := sign(t, jwt.SigningMethodES256, ecKeyB(), "random-"+string(rune('a'+i)), baseClaims())
		_, err := a.AuthenticateToken(tok)
		if reason := reasonOf(t, err); reason != "unknown signing key" {
			t.Fatalf("random kid: reason %q", reason)
		}
	}
	if got := idp.jwksHits.Load(); got != hits+1 {
		t.Fatalf("random kids caused %d extra JWKS fetches, want 0", got-hits-1)
	}
}

func TestJWKS_RemovedKeyFailsAfterBackgroundRefresh(t *testing.T) {
	idp := newTestIDP(t, ecPublished(ecKeyA(), "key-a"), ecPublished(ecKeyB(), "key-b"))
	a := newJWKS(t, idp, func(c *Config) { c.JWKSRefreshInterval = 10 * time.Millisecond })
	tokenA := sign(t, jwt.SigningMethodES256, ecKeyA(), "key-a", baseClaims())
	tokenB := sign(t, jwt.SigningMethodES256, ecKeyB(), "key-b", baseClaims())
	if _, err := a.AuthenticateToken(tokenA); err != nil {
		t.Fatalf("token of a published key: %v", err)
	}

	// The provider retires key-a (rotation finished, or the key was compromised).
	idp.setKeys(ecPublished(ecKeyB(), "key-b"))
	eventually(t, "the retired key's token to be rejected", func() bool {
		_, err := a.AuthenticateToken(tokenA)
		return err != nil && reasonOf(t, err) == "unknown signing key"
	})
	if _, err := a.AuthenticateToken(tokenB); err != nil {
		t.Fatalf("token of the remaining key: %v", err)
	}
}

func TestJWKS_FailedRefreshKeepsPreviousKeys(t *testing.T) {
	idp := newTestIDP(t, ecPublished(ecKeyA(), "key-a"))
	a := newJWKS(t, idp, func(c *Config) { c.JWKSRefreshInterval = 10 * time.Millisecond })
	token := sign(t, jwt.SigningMethodES256, ecKeyA(), "key-a", baseClaims())

	idp.mu.Lock()
	idp.jwksStatus = http.StatusServiceUnavailable
	idp.mu.Unlock()
	start := idp.jwksHits.Load()
	eventually(t, "failed background refreshes", func() bool { return idp.jwksHits.Load() >= start+3 })
	if _, err := a.AuthenticateToken(token); err != nil {
		t.Fatalf("an identity provider outage must not drop known keys: %v", err)
	}
}

func TestJWKS_ContextCancelStopsBackgroundRefresh(t *testing.T) {
	eventually(t, "refresh goroutines of earlier tests to end", func() bool { return refreshGoroutines() == 0 })
	idp := newTestIDP(t, ecPublished(ecKeyA(), "key-a"))
	ctx, cancel := context.WithCancel(t.Context())
	_, err := New(ctx, Config{JWKSURL: idp.jwksURL(), HTTPClient: idp.srv.Client(), Now: fixedClock})
	if err != nil {
		t.Fatal(err)
	}
	if n := refreshGoroutines(); n != 1 {
		t.Fatalf("%d refresh goroutines after New, want 1", n)
	}
	cancel()
	eventually(t, "the refresh goroutine to stop", func() bool { return refreshGoroutines() == 0 })
}

func TestNew_UnreachableJWKSFailsStartup(t *testing.T) {
	eventually(t, "refresh goroutines of earlier tests to end", func() bool { return refreshGoroutines() == 0 })
	idp := newTestIDP(t)
	idp.jwksStatus = http.StatusNotFound
	_, err := New(t.Context(), Config{JWKSURL: idp.jwksURL(), HTTPClient: idp.srv.Client()})
	if err == nil || !strings.Contains(err.Error(), idp.jwksURL()) {
		t.Fatalf("New error = %v, want a start-up error naming the JWKS URL", err)
	}
	// The refresh goroutine started for the failed fetch must not outlive New.
	eventually(t, "the refresh goroutine of the failed New to stop", func() bool { return refreshGoroutines() == 0 })
}

func TestOIDC_DiscoveryFindsKeysAndPinsIssuer(t *testing.T) {
	idp := newTestIDP(t, rsaPublished("rsa-1"), ecPublished(ecKeyA(), "ec-1"))
	issuer := idp.srv.URL
	a, err := New(t.Context(), Config{OIDCIssuer: issuer, Audience: "paytoview", HTTPClient: idp.srv.Client(), Now: fixedClock})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	tests := []struct {
		name       string
		token      string
		want       Principal
		wantReason string
	}{
		{
			name:  "RS256 token of the issuer is accepted",
			token: sign(t, jwt.SigningMethodRS256, rsaKey(), "rsa-1", with(baseClaims(), "iss", issuer, "aud", "paytoview")),
			want:  Principal{UserID: "user-1"},
		},
		{
			name:  "ES256 token of the issuer is accepted",
			token: sign(t, jwt.SigningMethodES256, ecKeyA(), "ec-1", with(baseClaims(), "iss", issuer, "aud", "paytoview")),
			want:  Principal{UserID: "user-1"},
		},
		{
			name:       "token of another issuer is rejected",
			token:      sign(t, jwt.SigningMethodRS256, rsaKey(), "rsa-1", with(baseClaims(), "iss", "https://evil.example", "aud", "paytoview")),
			wantReason: "wrong issuer",
		},
		{
			name:       "token without issuer is rejected",
			token:      sign(t, jwt.SigningMethodRS256, rsaKey(), "rsa-1", with(baseClaims(), "aud", "paytoview")),
			wantReason: "wrong issuer",
		},
		{
			name:       "token for another audience is rejected",
			token:      sign(t, jwt.SigningMethodRS256, rsaKey(), "rsa-1", with(baseClaims(), "iss", issuer, "aud", "account")),
			wantReason: "wrong audience",
		},
		{
			name:       "algorithm confusion is rejected",
			token:      sign(t, jwt.SigningMethodHS256, rsaPublicKeyPEM(t), "rsa-1", with(baseClaims(), "iss", issuer, "aud", "paytoview")),
			wantReason: "unexpected signing algorithm",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.AuthenticateToken(tt.token)
			checkResult(t, tt.token, got, err, tt.want, tt.wantReason)
		})
	}
}

func TestOIDC_DiscoveryFailuresFailStartup(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(idp *testIDP) (issuer string)
		wantErr string
	}{
		{
			name: "discovery document naming another issuer",
			setup: func(idp *testIDP) string {
				idp.discoveryIssuer = "https://evil.example"
				return idp.srv.URL
			},
			wantErr: `names issuer "https://evil.example"`,
		},
		{
			name:    "issuer with a trailing slash the document does not have",
			setup:   func(idp *testIDP) string { return idp.srv.URL + "/" },
			wantErr: "names issuer",
		},
		{
			name:    "no discovery document",
			setup:   func(idp *testIDP) string { return idp.srv.URL + "/realms/missing" },
			wantErr: "answered HTTP 404",
		},
		{
			name: "discovery fine but JWKS unavailable",
			setup: func(idp *testIDP) string {
				idp.jwksStatus = http.StatusInternalServerError
				return idp.srv.URL
			},
			wantErr: "fetching JWK Set",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idp := newTestIDP(t, ecPublished(ecKeyA(), "ec-1"))
			issuer := tt.setup(idp)
			_, err := New(t.Context(), Config{OIDCIssuer: issuer, HTTPClient: idp.srv.Client()})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

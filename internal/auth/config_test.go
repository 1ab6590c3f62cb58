package auth

import (
	"strings"
	"testing"
	"time"
)

func TestNew_RejectsBadConfiguration(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{
			name:    "no verifier",
			cfg:     Config{},
			wantErr: "exactly one of HS256Secret, JWKSURL or OIDCIssuer must be set, got none",
		},
		{
			name:    "secret and JWKS URL",
			cfg:     Config{HS256Secret: testSecret, JWKSURL: "https://idp.example/jwks"},
			wantErr: "got HS256Secret and JWKSURL",
		},
		{
			name:    "JWKS URL and OIDC issuer",
			cfg:     Config{JWKSURL: "https://idp.example/jwks", OIDCIssuer: "https://idp.example"},
			wantErr: "got JWKSURL and OIDCIssuer",
		},
		{
			name:    "all three",
			cfg:     Config{HS256Secret: testSecret, JWKSURL: "https://idp.example/jwks", OIDCIssuer: "https://idp.example"},
			wantErr: "got HS256Secret and JWKSURL and OIDCIssuer",
		},
		{
			name:    "secret shorter than 32 bytes",
			cfg:     Config{HS256Secret: []byte("0123456789abcdef0123456789abcde")},
			wantErr: "HS256Secret is 31 bytes, need at least 32",
		},
		{
			name:    "JWKS URL that is not http(s)",
			cfg:     Config{JWKSURL: "file:///etc/jwks.json"},
			wantErr: "must be an http or https URL",
		},
		{
			name:    "JWKS URL without host",
			cfg:     Config{JWKSURL: "https:///jwks"},
			wantErr: "has no host",
		},
		{
			name:    "OIDC issuer that is not a URL",
			cfg:     Config{OIDCIssuer: "idp.example"},
			wantErr: "must be an http or https URL",
		},
		{
			name:    "Issuer contradicting the OIDC issuer",
			cfg:     Config{OIDCIssuer: "https://idp.example", Issuer: "https://other.example"},
			wantErr: "contradicts OIDCIssuer",
		},
		{
			name:    "negative leeway",
			cfg:     Config{HS256Secret: testSecret, Leeway: -time.Second},
			wantErr: "Leeway must not be negative",
		},
		{
			name:    "negative refresh interval",
			cfg:     Config{JWKSURL: "https://idp.example/jwks", JWKSRefreshInterval: -time.Second},
			wantErr: "JWKSRefreshInterval must not be negative",
		},
		{
			name:    "admin role with whitespace can never match",
			cfg:     Config{HS256Secret: testSecret, AdminRole: "super admin"},
			wantErr: "must not contain whitespace",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(t.Context(), tt.cfg)
			if err == nil {
				t.Fatalf("New accepted %s: %+v", tt.name, a)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.wantErr) {
				t.Fatalf("error %q does not contain %q", msg, tt.wantErr)
			}
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "auth: ") {
				t.Fatalf("error %q is not one line prefixed with auth:", msg)
			}
			if len(tt.cfg.HS256Secret) > 0 && strings.Contains(msg, string(tt.cfg.HS256Secret)) {
				t.Fatalf("error %q leaks the secret", msg)
			}
		})
	}
}

func TestNew_IssuerEqualToOIDCIssuerIsAccepted(t *testing.T) {
	idp := newTestIDP(t, ecPublished(ecKeyA(), "ec-1"))
	if _, err := New(t.Context(), Config{OIDCIssuer: idp.srv.URL, Issuer: idp.srv.URL, HTTPClient: idp.srv.Client()}); err != nil {
		t.Fatalf("New: %v", err)
	}
}

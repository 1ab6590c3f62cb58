package auth

import (
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func TestAuthenticateToken_AdminClaim(t *testing.T) {
	tests := []struct {
		name      string
		claim     string // Config.AdminClaim; empty means the default "roles"
		role      string // Config.AdminRole; empty means the default "admin"
		claims    jwt.MapClaims
		wantAdmin bool
	}{
		{name: "roles array containing admin", claims: jwt.MapClaims{"roles": []string{"user", "admin"}}, wantAdmin: true},
		{name: "roles array without admin", claims: jwt.MapClaims{"roles": []string{"user", "support"}}},
		{name: "roles string equal to admin", claims: jwt.MapClaims{"roles": "admin"}, wantAdmin: true},
		{name: "roles string merely starting with admin", claims: jwt.MapClaims{"roles": "administrator"}},
		{name: "roles space-separated string containing admin", claims: jwt.MapClaims{"roles": "user  admin\tsupport"}, wantAdmin: true},
		{name: "role comparison is case-sensitive", claims: jwt.MapClaims{"roles": []string{"Admin"}}},
		{name: "non-string array items are ignored", claims: jwt.MapClaims{"roles": []any{42, true, nil, "admin"}}, wantAdmin: true},
		{name: "object instead of array is not a role list", claims: jwt.MapClaims{"roles": map[string]any{"admin": true}}},
		{name: "missing roles claim", claims: jwt.MapClaims{}},
		{name: "admin elsewhere does not count", claims: jwt.MapClaims{"groups": []string{"admin"}}},
		{name: "OAuth scope claim", claim: "scope", role: "paytoview:admin", claims: jwt.MapClaims{"scope": "openid profile paytoview:admin"}, wantAdmin: true},
		{name: "OAuth scope claim without the scope", claim: "scope", role: "paytoview:admin", claims: jwt.MapClaims{"scope": "openid profile"}},
		{
			name:      "Keycloak realm roles through a dotted path",
			claim:     "realm_access.roles",
			claims:    jwt.MapClaims{"realm_access": map[string]any{"roles": []string{"offline_access", "admin"}}},
			wantAdmin: true,
		},
		{
			name:      "Keycloak client roles three levels deep",
			claim:     "resource_access.paytoview.roles",
			role:      "refunds",
			claims:    jwt.MapClaims{"resource_access": map[string]any{"paytoview": map[string]any{"roles": []string{"refunds"}}}},
			wantAdmin: true,
		},
		{
			name:   "dotted path whose parent is missing",
			claim:  "realm_access.roles",
			claims: jwt.MapClaims{"roles": []string{"admin"}},
		},
		{
			name:   "dotted path whose parent is not an object",
			claim:  "realm_access.roles",
			claims: jwt.MapClaims{"realm_access": "admin"},
		},
		{
			name:      "namespaced claim name containing dots (Auth0)",
			claim:     "https://paytoview.example.com/roles",
			claims:    jwt.MapClaims{"https://paytoview.example.com/roles": []string{"admin"}},
			wantAdmin: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newHS256(t, func(c *Config) { c.AdminClaim, c.AdminRole = tt.claim, tt.role })
			claims := baseClaims()
			for k, v := range tt.claims {
				claims[k] = v
			}
			token := signHS256(t, claims)
			got, err := a.AuthenticateToken(token)
			checkResult(t, token, got, err, Principal{UserID: "user-1", Admin: tt.wantAdmin}, "")
		})
	}
}

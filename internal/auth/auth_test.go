package auth

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestAuthenticateToken_HS256(t *testing.T) {
	user := Principal{UserID: "user-1"}
	tests := []struct {
		name       string
		cfg        func(*Config)
		token      func(t testing.TB) string
		want       Principal
		wantReason string
	}{
		{
			name:  "valid token is accepted",
			token: func(t testing.TB) string { return signHS256(t, baseClaims()) },
			want:  user,
		},
		{
			name: "token signed with another secret has an invalid signature",
			token: func(t testing.TB) string {
				return sign(t, jwt.SigningMethodHS256, []byte("another-secret-of-at-least-32-bytes!!"), "", baseClaims())
			},
			wantReason: "signature invalid",
		},
		{
			name: "payload changed after signing has an invalid signature",
			token: func(t testing.TB) string {
				good := strings.Split(signHS256(t, baseClaims()), ".")
				forged := strings.Split(signHS256(t, with(baseClaims(), "sub", "someone-else")), ".")
				return good[0] + "." + forged[1] + "." + good[2]
			},
			wantReason: "signature invalid",
		},
		{
			name: "expired token is rejected",
			token: func(t testing.TB) string {
				return signHS256(t, with(baseClaims(), "exp", testNow.Add(-time.Minute).Unix()))
			},
			wantReason: "token expired",
		},
		{
			name: "token expired within the leeway is accepted",
			token: func(t testing.TB) string {
				return signHS256(t, with(baseClaims(), "exp", testNow.Add(-10*time.Second).Unix()))
			},
			want: user,
		},
		{
			name: "token expired beyond a configured 5s leeway is rejected",
			cfg:  func(c *Config) { c.Leeway = 5 * time.Second },
			token: func(t testing.TB) string {
				return signHS256(t, with(baseClaims(), "exp", testNow.Add(-10*time.Second).Unix()))
			},
			wantReason: "token expired",
		},
		{
			name: "token used before nbf is rejected",
			token: func(t testing.TB) string {
				return signHS256(t, with(baseClaims(), "nbf", testNow.Add(5*time.Minute).Unix()))
			},
			wantReason: "token not valid yet",
		},
		{
			name: "nbf within the leeway is accepted",
			token: func(t testing.TB) string {
				return signHS256(t, with(baseClaims(), "nbf", testNow.Add(20*time.Second).Unix()))
			},
			want: user,
		},
		{
			name: "iat in the future beyond the leeway is rejected",
			token: func(t testing.TB) string {
				return signHS256(t, with(baseClaims(), "iat", testNow.Add(5*time.Minute).Unix()))
			},
			wantReason: "token issued in the future",
		},
		{
			name:       "token without exp is rejected",
			token:      func(t testing.TB) string { return signHS256(t, without(baseClaims(), "exp")) },
			wantReason: "token has no expiry (exp)",
		},
		{
			name:       "exp of the wrong type is rejected",
			token:      func(t testing.TB) string { return signHS256(t, with(baseClaims(), "exp", "tomorrow")) },
			wantReason: "invalid claims",
		},
		{
			name:       "token without sub is rejected",
			token:      func(t testing.TB) string { return signHS256(t, without(baseClaims(), "sub")) },
			wantReason: "token has no subject (sub)",
		},
		{
			name:       "empty sub is rejected",
			token:      func(t testing.TB) string { return signHS256(t, with(baseClaims(), "sub", "")) },
			wantReason: "token has no subject (sub)",
		},
		{
			name:       "sub that is not a string is rejected",
			token:      func(t testing.TB) string { return signHS256(t, with(baseClaims(), "sub", 42)) },
			wantReason: "subject (sub) is not a string",
		},
		{
			name:  "sub using every allowed punctuation character is accepted",
			token: func(t testing.TB) string { return signHS256(t, with(baseClaims(), "sub", "auth0|a.b_c~d:e@f=g+h/i-j")) },
			want:  Principal{UserID: "auth0|a.b_c~d:e@f=g+h/i-j"},
		},
		{
			name:       "sub with a space is rejected",
			token:      func(t testing.TB) string { return signHS256(t, with(baseClaims(), "sub", "user 1")) },
			wantReason: "subject (sub) has characters not allowed in a user id (allowed: A-Z a-z 0-9 . _ ~ : @ | = + / -)",
		},
		{
			name:       "sub with non-ASCII letters is rejected",
			token:      func(t testing.TB) string { return signHS256(t, with(baseClaims(), "sub", "jürgen")) },
			wantReason: "subject (sub) has characters not allowed in a user id (allowed: A-Z a-z 0-9 . _ ~ : @ | = + / -)",
		},
		{
			name:       "sub with a control character is rejected",
			token:      func(t testing.TB) string { return signHS256(t, with(baseClaims(), "sub", "user\n1")) },
			wantReason: "subject (sub) has characters not allowed in a user id (allowed: A-Z a-z 0-9 . _ ~ : @ | = + / -)",
		},
		{
			name:  "sub of 255 characters is accepted",
			token: func(t testing.TB) string { return signHS256(t, with(baseClaims(), "sub", strings.Repeat("a", 255))) },
			want:  Principal{UserID: strings.Repeat("a", 255)},
		},
		{
			name:       "sub of 256 characters is rejected",
			token:      func(t testing.TB) string { return signHS256(t, with(baseClaims(), "sub", strings.Repeat("a", 256))) },
			wantReason: "subject (sub) longer than 255 characters",
		},
		{
			name:       "unsigned alg none token is rejected",
			token:      func(t testing.TB) string { return unsigned(t, baseClaims()) },
			wantReason: "unexpected signing algorithm",
		},
		{
			name: "alg none token carrying a copied HS256 signature is rejected",
			token: func(t testing.TB) string {
				parts := strings.Split(signHS256(t, baseClaims()), ".")
				none := strings.Split(unsigned(t, baseClaims()), ".")
				return none[0] + "." + parts[1] + "." + parts[2]
			},
			wantReason: "unexpected signing algorithm",
		},
		{
			name:       "HS512 token with the right secret is rejected",
			token:      func(t testing.TB) string { return sign(t, jwt.SigningMethodHS512, testSecret, "", baseClaims()) },
			wantReason: "unexpected signing algorithm",
		},
		{
			name:       "RS256 token is rejected by the shared-secret verifier",
			token:      func(t testing.TB) string { return sign(t, jwt.SigningMethodRS256, rsaKey(), "", baseClaims()) },
			wantReason: "unexpected signing algorithm",
		},
		{
			name: "unknown alg is rejected",
			token: func(t testing.TB) string {
				parts := strings.Split(signHS256(t, baseClaims()), ".")
				return "eyJhbGciOiJYWTEyMyIsInR5cCI6IkpXVCJ9." + parts[1] + "." + parts[2] // {"alg":"XY123","typ":"JWT"}
			},
			wantReason: "unexpected signing algorithm",
		},
		{
			name:       "garbage is a malformed token",
			token:      func(testing.TB) string { return "not-a-jwt" },
			wantReason: "malformed token",
		},
		{
			name:       "five-segment JWE is a malformed token",
			token:      func(testing.TB) string { return "a.b.c.d.e" },
			wantReason: "malformed token",
		},
		{
			name:       "empty token is rejected",
			token:      func(testing.TB) string { return "" },
			wantReason: "empty bearer token",
		},
		{
			name: "token over 8 KiB is rejected before parsing",
			token: func(t testing.TB) string {
				return signHS256(t, with(baseClaims(), "pad", strings.Repeat("x", MaxTokenLen)))
			},
			wantReason: "token too large",
		},
		{
			name: "critical header extension is rejected",
			token: func(t testing.TB) string {
				tok := jwt.NewWithClaims(jwt.SigningMethodHS256, baseClaims())
				tok.Header["crit"] = []string{"exp-ext"}
				s, err := tok.SignedString(testSecret)
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
			wantReason: "unsupported critical header",
		},
		{
			name:  "configured issuer matches",
			cfg:   func(c *Config) { c.Issuer = "https://issuer.example" },
			token: func(t testing.TB) string { return signHS256(t, with(baseClaims(), "iss", "https://issuer.example")) },
			want:  user,
		},
		{
			name:       "wrong issuer is rejected",
			cfg:        func(c *Config) { c.Issuer = "https://issuer.example" },
			token:      func(t testing.TB) string { return signHS256(t, with(baseClaims(), "iss", "https://evil.example")) },
			wantReason: "wrong issuer",
		},
		{
			name:       "missing issuer is rejected when one is configured",
			cfg:        func(c *Config) { c.Issuer = "https://issuer.example" },
			token:      func(t testing.TB) string { return signHS256(t, baseClaims()) },
			wantReason: "wrong issuer",
		},
		{
			name: "audience among several is accepted",
			cfg:  func(c *Config) { c.Audience = "paytoview" },
			token: func(t testing.TB) string {
				return signHS256(t, with(baseClaims(), "aud", []string{"account", "paytoview"}))
			},
			want: user,
		},
		{
			name:       "wrong audience is rejected",
			cfg:        func(c *Config) { c.Audience = "paytoview" },
			token:      func(t testing.TB) string { return signHS256(t, with(baseClaims(), "aud", "other-api")) },
			wantReason: "wrong audience",
		},
		{
			name:       "missing audience is rejected when one is configured",
			cfg:        func(c *Config) { c.Audience = "paytoview" },
			token:      func(t testing.TB) string { return signHS256(t, baseClaims()) },
			wantReason: "wrong audience",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newHS256(t, tt.cfg)
			token := tt.token(t)
			got, err := a.AuthenticateToken(token)
			checkResult(t, token, got, err, tt.want, tt.wantReason)
		})
	}
}

func TestTokenError_UnwrapsLibraryCause(t *testing.T) {
	a := newHS256(t, nil)
	_, err := a.AuthenticateToken(signHS256(t, with(baseClaims(), "exp", testNow.Add(-time.Hour).Unix())))
	if !errors.Is(err, jwt.ErrTokenExpired) {
		t.Fatalf("errors.Is(%v, jwt.ErrTokenExpired) = false", err)
	}
}

func TestAuthenticate_ReadsBearerHeader(t *testing.T) {
	a := newHS256(t, nil)
	valid := signHS256(t, baseClaims())
	tests := []struct {
		name        string
		headers     []string
		wantMissing bool
		wantReason  string
	}{
		{name: "no Authorization header means missing token", wantMissing: true},
		{name: "blank Authorization header means missing token", headers: []string{"   "}, wantMissing: true},
		{name: "Bearer scheme is accepted", headers: []string{"Bearer " + valid}},
		{name: "scheme is case-insensitive", headers: []string{"bEARER " + valid}},
		{name: "extra spaces around the token are tolerated", headers: []string{"Bearer   " + valid + " "}},
		{name: "Basic scheme is rejected", headers: []string{"Basic dXNlcjpwYXNz"}, wantReason: "unsupported authorization scheme, want Bearer"},
		{name: "bare token without scheme is rejected", headers: []string{valid}, wantReason: "unsupported authorization scheme, want Bearer"},
		{name: "Bearer without token is rejected", headers: []string{"Bearer"}, wantReason: "empty bearer token"},
		{name: "Bearer with only spaces is rejected", headers: []string{"Bearer    "}, wantReason: "empty bearer token"},
		{name: "two Authorization headers are rejected", headers: []string{"Bearer " + valid, "Bearer " + valid}, wantReason: "more than one Authorization header"},
		{name: "oversize header is rejected", headers: []string{"Bearer " + strings.Repeat("a", MaxTokenLen+1)}, wantReason: "token too large"},
		{name: "invalid token is rejected", headers: []string{"Bearer " + valid + "x"}, wantReason: "signature invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/client/v1/pay-to-view/purchases", nil)
			for _, h := range tt.headers {
				r.Header.Add("Authorization", h)
			}
			got, err := a.Authenticate(r)
			switch {
			case tt.wantMissing:
				if !errors.Is(err, ErrMissingToken) {
					t.Fatalf("err = %v, want ErrMissingToken", err)
				}
			case tt.wantReason != "":
				checkResult(t, valid, got, err, Principal{}, tt.wantReason)
			default:
				checkResult(t, valid, got, err, Principal{UserID: "user-1"}, "")
			}
		})
	}
}

func TestMintHS256_TokensVerify(t *testing.T) {
	a, err := New(t.Context(), Config{HS256Secret: testSecret}) // real clock, like `make run`
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		roles      []string
		ttl        time.Duration
		want       Principal
		wantReason string
	}{
		{name: "user token", ttl: time.Hour, want: Principal{UserID: "dev-user"}},
		{name: "admin token", roles: []string{"admin"}, ttl: time.Hour, want: Principal{UserID: "dev-user", Admin: true}},
		{name: "negative ttl gives an expired token", ttl: -time.Hour, wantReason: "token expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, err := MintHS256(testSecret, "dev-user", tt.roles, tt.ttl)
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.AuthenticateToken(token)
			checkResult(t, token, got, err, tt.want, tt.wantReason)
		})
	}
}

func TestMintHS256_RejectsShortSecret(t *testing.T) {
	if _, err := MintHS256([]byte("short"), "dev-user", nil, time.Hour); err == nil {
		t.Fatal("MintHS256 accepted a 5-byte secret")
	}
}

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

// FuzzAuthenticateToken feeds arbitrary strings to the verifier: none may panic and none may
// authenticate, because a valid token needs an HMAC under a secret the fuzzer does not know. The
// checked-in corpus (testdata/fuzz/FuzzAuthenticateToken) holds well-formed tokens signed with other
// secrets, unsigned and confused-algorithm tokens, so mutations start close to real attacks.
func FuzzAuthenticateToken(f *testing.F) {
	other := []byte("not-the-verifier-secret-but-32-bytes-long")
	f.Add("")
	f.Add("..")
	f.Add(sign(f, jwt.SigningMethodHS256, other, "", baseClaims()))
	f.Add(unsigned(f, with(baseClaims(), "roles", []string{"admin"})))
	f.Add(sign(f, jwt.SigningMethodHS256, other, "kid-1", with(baseClaims(), "roles", "admin", "nbf", testNow.Unix())))

	a := newHS256(f, nil)
	f.Fuzz(func(t *testing.T, token string) {
		p, err := a.AuthenticateToken(token)
		if err == nil {
			t.Fatalf("arbitrary input authenticated as %+v", p)
		}
		var te *TokenError
		if !errors.As(err, &te) || te.Reason == "" {
			t.Fatalf("error %v is not a *TokenError with a reason", err)
		}
		if len(token) >= 16 && strings.Contains(te.Reason, token) {
			t.Fatalf("reason %q echoes the token", te.Reason)
		}

		// The same string through the header path (no CR/LF: net/http never delivers those).
		if strings.ContainsAny(token, "\r\n") {
			return
		}
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", "Bearer "+token)
		if p, err := a.Authenticate(r); err == nil {
			t.Fatalf("arbitrary header authenticated as %+v", p)
		}
	})
}

func BenchmarkAuthenticateToken_HS256(b *testing.B) {
	a, err := New(b.Context(), Config{HS256Secret: testSecret, Now: fixedClock})
	if err != nil {
		b.Fatal(err)
	}
	token := signHS256(b, with(baseClaims(), "roles", []string{"user", "admin"}))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.AuthenticateToken(token); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthenticateToken_RS256(b *testing.B) {
	benchmarkJWKS(b, jwt.SigningMethodRS256, rsaKey(), rsaPublished("rsa-1"))
}

func BenchmarkAuthenticateToken_ES256(b *testing.B) {
	benchmarkJWKS(b, jwt.SigningMethodES256, ecKeyA(), ecPublished(ecKeyA(), "ec-1"))
}

func benchmarkJWKS(b *testing.B, method jwt.SigningMethod, key any, pub publishedKey) {
	idp := newTestIDP(b, pub)
	a, err := New(b.Context(), Config{JWKSURL: idp.jwksURL(), HTTPClient: idp.srv.Client(), Now: fixedClock})
	if err != nil {
		b.Fatal(err)
	}
	token := sign(b, method, key, pub.kid, baseClaims())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.AuthenticateToken(token); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticate_RejectsExpired measures the cost of a rejected token, the path a client retrying
// with a stale token hits on every request.
func BenchmarkAuthenticate_RejectsExpired(b *testing.B) {
	a, err := New(b.Context(), Config{HS256Secret: testSecret, Now: fixedClock})
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Authorization", "Bearer "+signHS256(b, with(baseClaims(), "exp", testNow.Add(-time.Hour).Unix())))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Authenticate(r); err == nil {
			b.Fatal("expired token accepted")
		}
	}
}

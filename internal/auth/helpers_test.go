package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// testNow is the injected clock of every authenticator under test; tokens are issued relative to it.
var testNow = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

var testSecret = []byte("0123456789abcdef0123456789abcdef-dev-secret")

func fixedClock() time.Time { return testNow }

// baseClaims is a valid claim set at testNow; cases change or delete single claims.
func baseClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"sub": "user-1",
		"iat": testNow.Unix(),
		"exp": testNow.Add(time.Hour).Unix(),
	}
}

func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	for i := 0; i < len(kv); i += 2 {
		c[kv[i].(string)] = kv[i+1]
	}
	return c
}

func without(c jwt.MapClaims, keys ...string) jwt.MapClaims {
	for _, k := range keys {
		delete(c, k)
	}
	return c
}

func sign(t testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("signing test token: %v", err)
	}
	return s
}

func signHS256(t testing.TB, claims jwt.MapClaims) string {
	return sign(t, jwt.SigningMethodHS256, testSecret, "", claims)
}

// unsigned builds an "alg: none" token by hand, the way an attacker would.
func unsigned(t testing.TB, claims jwt.MapClaims) string {
	return sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", claims)
}

func newHS256(t testing.TB, mutate func(*Config)) *Authenticator {
	t.Helper()
	cfg := Config{HS256Secret: testSecret, Now: fixedClock}
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

// reasonOf returns the TokenError reason of err, failing the test for any other kind of error.
func reasonOf(t testing.TB, err error) string {
	t.Helper()
	var te *TokenError
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T) is not a *TokenError", err, err)
	}
	return te.Reason
}

// checkResult compares an authentication outcome with the expected principal or rejection reason.
func checkResult(t testing.TB, token string, got Principal, err error, want Principal, wantReason string) {
	t.Helper()
	if wantReason == "" {
		if err != nil {
			t.Fatalf("want accepted as %+v, got error: %v", want, err)
		}
		if got != want {
			t.Fatalf("principal = %+v, want %+v", got, want)
		}
		return
	}
	if err == nil {
		t.Fatalf("want rejected with %q, got accepted as %+v", wantReason, got)
	}
	if reason := reasonOf(t, err); reason != wantReason {
		t.Fatalf("reason = %q, want %q (error: %v)", reason, wantReason, err)
	}
	if got != (Principal{}) {
		t.Fatalf("rejected token still yielded principal %+v", got)
	}
	if len(token) > 16 && strings.Contains(err.Error(), token) {
		t.Fatalf("error echoes the token: %v", err)
	}
}

var (
	rsaKey = sync.OnceValue(mustRSA)
	ecKeyA = sync.OnceValue(func() *ecdsa.PrivateKey { return mustEC(elliptic.P256()) })
	ecKeyB = sync.OnceValue(func() *ecdsa.PrivateKey { return mustEC(elliptic.P256()) })
)

func mustRSA() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
}

func mustEC(c elliptic.Curve) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

// publishedKey is one entry of the test identity provider's JWK Set.
type publishedKey struct {
	pub any
	kid string
	alg jwkset.ALG
	use jwkset.USE
}

// testIDP is a real HTTPS identity provider: a JWK Set at /jwks and an OIDC discovery document. Its
// keys can be switched at run time to exercise rotation.
type testIDP struct {
	srv *httptest.Server

	mu              sync.Mutex
	keys            []publishedKey
	discoveryIssuer string // issuer named by the discovery document; the server URL when empty
	jwksStatus      int

	jwksHits atomic.Int32
}

func newTestIDP(t testing.TB, keys ...publishedKey) *testIDP {
	t.Helper()
	idp := &testIDP{keys: keys, jwksStatus: http.StatusOK}
	idp.srv = httptest.NewTLSServer(http.HandlerFunc(idp.serve))
	t.Cleanup(idp.srv.Close)
	return idp
}

func (idp *testIDP) serve(w http.ResponseWriter, r *http.Request) {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	switch r.URL.Path {
	case "/jwks":
		idp.jwksHits.Add(1)
		if idp.jwksStatus != http.StatusOK {
			http.Error(w, "unavailable", idp.jwksStatus)
			return
		}
		var set jwkset.JWKSMarshal
		for _, k := range idp.keys {
			jwk, err := jwkset.NewJWKFromKey(k.pub, jwkset.JWKOptions{
				Metadata: jwkset.JWKMetadataOptions{KID: k.kid, ALG: k.alg, USE: k.use},
			})
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			set.Keys = append(set.Keys, jwk.Marshal())
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	case "/.well-known/openid-configuration":
		issuer := idp.discoveryIssuer
		if issuer == "" {
			issuer = idp.srv.URL
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": issuer, "jwks_uri": idp.srv.URL + "/jwks"})
	default:
		http.NotFound(w, r)
	}
}

func (idp *testIDP) setKeys(keys ...publishedKey) {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	idp.keys = keys
}

func (idp *testIDP) jwksURL() string { return idp.srv.URL + "/jwks" }

func rsaPublished(kid string) publishedKey {
	return publishedKey{pub: &rsaKey().PublicKey, kid: kid, alg: jwkset.AlgRS256, use: jwkset.UseSig}
}

func ecPublished(k *ecdsa.PrivateKey, kid string) publishedKey {
	return publishedKey{pub: &k.PublicKey, kid: kid, alg: jwkset.AlgES256, use: jwkset.UseSig}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// refreshGoroutines counts the JWK Set background refresh goroutines alive in this process.
func refreshGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "jwkset.NewStorageFromHTTP.func") {
			n++
		}
	}
	return n
}

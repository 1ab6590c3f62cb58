package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// FuzzAuthenticateSignedToken fuzzes the JOSE header and the claims of
// tokens correctly signed with the verifier's own secret, so inputs reach
// the header and claim checks that FuzzAuthenticateToken's unsigned inputs
// never pass. Properties: no panic; a rejection is a *TokenError whose
// reason is clean text; an acceptance is exactly what the rules allow, as
// read back from the same JSON: alg HS256 and no crit header, a string sub
// of the allowed characters, exp after now and nbf and iat not after it
// (with the leeway), the configured issuer and audience, and the admin
// flag exactly when the roles claim holds "admin". Seeds:
// testdata/fuzz/FuzzAuthenticateSignedToken.
func FuzzAuthenticateSignedToken(f *testing.F) {
	const (
		issuer   = "https://idp.example.com"
		audience = "paytoview"
	)
	valid := `{"sub":"user-1","iss":"https://idp.example.com","aud":"paytoview","iat":1906459200,"exp":1906462800}`
	f.Add([]byte(`{"alg":"HS256","typ":"JWT"}`), []byte(valid))
	f.Add([]byte(`{"alg":"HS256"}`), []byte(`{"sub":"user-1","iss":"https://idp.example.com","aud":["x","paytoview"],"exp":1906462800,"roles":"reader admin"}`))
	f.Add([]byte(`{"alg":"none"}`), []byte(valid))
	f.Add([]byte(`{"alg":"HS256","crit":["b64"],"b64":false}`), []byte(valid))
	f.Add([]byte(`{"alg":"HS256"}`), []byte(`{"sub":"user-1","sub":7,"iss":"https://idp.example.com","aud":"paytoview","exp":1906462800}`))
	f.Add([]byte(`{"alg":"HS256"}`), []byte(`{"sub":"user-1","iss":"https://idp.example.com","aud":"paytoview","exp":"1906462800"}`))
	f.Add([]byte(`{"alg":"HS256"}`), []byte(`{"sub":"user\u0000-1","iss":"https://idp.example.com","aud":"paytoview","exp":1e400}`))

	a := newHS256(f, func(c *Config) { c.Issuer, c.Audience = issuer, audience })
	const leeway = 30 * time.Second
	f.Fuzz(func(t *testing.T, header, payload []byte) {
		enc := base64.RawURLEncoding
		signingInput := enc.EncodeToString(header) + "." + enc.EncodeToString(payload)
		mac := hmac.New(sha256.New, testSecret)
		mac.Write([]byte(signingInput))
		token := signingInput + "." + enc.EncodeToString(mac.Sum(nil))

		p, err := a.AuthenticateToken(token)
		if err != nil {
			var te *TokenError
			if !errors.As(err, &te) || te.Reason == "" || !utf8.ValidString(te.Reason) ||
				strings.IndexFunc(te.Reason, unicode.IsControl) >= 0 || len(te.Reason) > 200 {
				t.Fatalf("rejection %v is not a *TokenError with a clean reason", err)
			}
			return
		}
		var hdr, claims map[string]any
		if json.Unmarshal(header, &hdr) != nil || json.Unmarshal(payload, &claims) != nil {
			t.Fatalf("accepted a token whose header or claims are not JSON objects: %s %s", header, payload)
		}
		if hdr["alg"] != "HS256" {
			t.Fatalf("accepted alg %v", hdr["alg"])
		}
		if _, ok := hdr["crit"]; ok {
			t.Fatalf("accepted a crit header: %s", header)
		}
		if sub, _ := claims["sub"].(string); sub != p.UserID || sub == "" || len(sub) > MaxUserIDLen || !userIDPattern.MatchString(sub) {
			t.Fatalf("accepted sub %#v as user %q", claims["sub"], p.UserID)
		}
		// In float seconds, as the JSON has them, with a second's slack for
		// the library's rounding to whole seconds.
		now := float64(testNow.Unix())
		slack := leeway.Seconds() + 1
		if exp, ok := claims["exp"].(float64); !ok || exp < now-slack {
			t.Fatalf("accepted exp %#v at %s", claims["exp"], testNow)
		}
		for _, name := range []string{"nbf", "iat"} {
			if _, present := claims[name]; !present {
				continue
			}
			if v, ok := claims[name].(float64); !ok || v > now+slack {
				t.Fatalf("accepted %s %#v at %s", name, claims[name], testNow)
			}
		}
		if claims["iss"] != issuer {
			t.Fatalf("accepted iss %#v", claims["iss"])
		}
		switch aud := claims["aud"].(type) {
		case string:
			if aud != audience {
				t.Fatalf("accepted aud %q", aud)
			}
		case []any:
			if !slices.Contains(aud, any(audience)) {
				t.Fatalf("accepted aud %v", aud)
			}
		default:
			t.Fatalf("accepted aud %#v", claims["aud"])
		}
		wantAdmin := false
		switch roles := claims["roles"].(type) {
		case string:
			wantAdmin = slices.Contains(strings.FieldsFunc(roles, unicode.IsSpace), "admin")
		case []any:
			wantAdmin = slices.Contains(roles, any("admin"))
		}
		if p.Admin != wantAdmin {
			t.Fatalf("admin = %v for roles %#v", p.Admin, claims["roles"])
		}
	})
}

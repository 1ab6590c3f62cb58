package auth

import (
	"regexp"
	"strings"
	"unicode"

	"github.com/golang-jwt/jwt/v5"
)

// userIDPattern is the CRDs' userId pattern (api/v1alpha1 Purchase and Customer). The user id ends up in
// a Kubernetes resource, so a sub the apiserver would refuse is rejected here, with a reason the client
// can read, instead of failing later as an opaque 500.
var userIDPattern = regexp.MustCompile(`^[A-Za-z0-9._~:@|=+/-]+$`)

func userIDFrom(claims jwt.MapClaims) (string, error) {
	raw, ok := claims["sub"]
	if !ok || raw == nil {
		return "", tokenError("token has no subject (sub)", nil)
	}
	sub, ok := raw.(string)
	if !ok {
		return "", tokenError("subject (sub) is not a string", nil)
	}
	switch {
	case sub == "":
		return "", tokenError("token has no subject (sub)", nil)
	case len(sub) > MaxUserIDLen:
		return "", tokenError("subject (sub) longer than 255 characters", nil)
	case !userIDPattern.MatchString(sub):
		return "", tokenError("subject (sub) has characters not allowed in a user id (allowed: A-Z a-z 0-9 . _ ~ : @ | = + / -)", nil)
	}
	return sub, nil
}

// hasRole reports whether the claim at path contains role. The claim may be an array of strings or a
// string of space-separated values (OAuth scope style; a single role is the one-element case).
func hasRole(claims jwt.MapClaims, path, role string) bool {
	switch v := lookupClaim(claims, path).(type) {
	case string:
		for _, f := range strings.FieldsFunc(v, isSpace) {
			if f == role {
				return true
			}
		}
	case []any:
		for _, item := range v {
			if s, ok := item.(string); ok && s == role {
				return true
			}
		}
	}
	return false
}

// lookupClaim resolves a dotted path. An exact key wins over splitting at a dot, so namespaced claim
// names that contain dots ("https://example.com/roles") still work; otherwise each dot is tried as a
// separator into a nested object ("realm_access.roles").
func lookupClaim(claims map[string]any, path string) any {
	if v, ok := claims[path]; ok {
		return v
	}
	for i := 0; i < len(path); i++ {
		if path[i] != '.' {
			continue
		}
		nested, ok := claims[path[:i]].(map[string]any)
		if !ok {
			continue
		}
		if v := lookupClaim(nested, path[i+1:]); v != nil {
			return v
		}
	}
	return nil
}

func isSpace(r rune) bool { return unicode.IsSpace(r) }

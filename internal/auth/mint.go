package auth

import (
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MintHS256 signs a development token for sub with the given roles (in the default "roles" claim),
// issued now and expiring after ttl (a negative ttl yields an already expired token, for tests). It is
// for `make run` and tests only: production tokens come from the identity provider, and a shared-secret
// verifier should never face real users. The secret must be at least MinHS256SecretLen bytes, like the
// verifier's; sub is not checked, so tests can mint tokens the verifier must refuse.
func MintHS256(secret []byte, sub string, roles []string, ttl time.Duration) (string, error) {
	if len(secret) < MinHS256SecretLen {
		return "", fmt.Errorf("auth: HS256 secret is %d bytes, need at least %d", len(secret), MinHS256SecretLen)
	}
	now := time.Now()
	claims := jwt.MapClaims{
		"sub": sub,
		"iat": now.Unix(),
		"exp": now.Add(ttl).Unix(),
	}
	if len(roles) > 0 {
		claims[DefaultAdminClaim] = roles
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("auth: signing development token: %w", err)
	}
	return token, nil
}

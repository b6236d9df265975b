// Package auth checks the broker's bearer credentials. The broker stores
// only each credential's SHA-256 and compares in constant time; the
// credentials' shape is the wire contract's (api.ParseCredential).
package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strings"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// Hash returns the hex SHA-256 of a token, the form that is stored.
func Hash(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// Match reports in constant time whether tok hashes to storedHash.
func Match(tok, storedHash string) bool {
	h := Hash(tok)
	return len(storedHash) == len(h) && subtle.ConstantTimeCompare([]byte(h), []byte(storedHash)) == 1
}

// FromHeader parses an Authorization header value "Bearer <token>". The
// scheme is case-insensitive (RFC 9110, section 11.1).
func FromHeader(h string) (api.Credential, error) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return api.Credential{}, api.ErrMalformedCredential
	}
	return api.ParseCredential(strings.TrimSpace(tok))
}

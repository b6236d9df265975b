// Package auth makes and checks the broker's bearer secrets. Every secret
// is 256 random bits; the broker stores only its SHA-256 and compares in
// constant time.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
)

// Kinds of secret, the first dot-separated part of a token.
const (
	PrefixAdmin   = "tma" // tma.<secret>
	PrefixJoin    = "tmj" // tmj.<token id>.<secret>
	PrefixCluster = "tmc" // tmc.<cluster id>.<secret>
)

// Parsed is a bearer secret split into its parts.
type Parsed struct {
	Prefix string
	// ID is the token ID (join) or cluster ID (cluster); empty for admin.
	ID string
	// Raw is the whole token, the thing that is hashed.
	Raw string
}

// ErrMalformed is returned for a token that is not one of ours.
var ErrMalformed = errors.New("malformed credential")

func secret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand: " + err.Error()) // never fails on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// NewAdmin returns a fresh admin token.
func NewAdmin() string { return PrefixAdmin + "." + secret() }

// NewJoin returns a fresh join token and its ID.
func NewJoin() (token, id string) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand: " + err.Error())
	}
	id = hex.EncodeToString(b)
	return PrefixJoin + "." + id + "." + secret(), id
}

// NewCluster returns a fresh credential for a cluster.
func NewCluster(clusterID string) string {
	return PrefixCluster + "." + clusterID + "." + secret()
}

// Parse splits a token. It checks the shape only, not the secret.
func Parse(tok string) (Parsed, error) {
	if len(tok) > 512 {
		return Parsed{}, ErrMalformed
	}
	parts := strings.Split(tok, ".")
	switch {
	case len(parts) == 2 && parts[0] == PrefixAdmin && len(parts[1]) == 43:
		return Parsed{Prefix: PrefixAdmin, Raw: tok}, nil
	case len(parts) == 3 && (parts[0] == PrefixJoin || parts[0] == PrefixCluster) &&
		parts[1] != "" && len(parts[2]) == 43:
		return Parsed{Prefix: parts[0], ID: parts[1], Raw: tok}, nil
	}
	return Parsed{}, ErrMalformed
}

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
func FromHeader(h string) (Parsed, error) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return Parsed{}, ErrMalformed
	}
	return Parse(strings.TrimSpace(tok))
}

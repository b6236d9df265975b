package api

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
)

// Bearer credentials: the first dot-separated part says the kind. Every
// secret is 256 random bits, base64url without padding (43 characters).
// Making and parsing live together so that they agree on the shape; the
// broker stores and compares only hashes (package auth).
const (
	PrefixAdmin   = "tma" // tma.<secret>
	PrefixJoin    = "tmj" // tmj.<token id>.<secret>
	PrefixCluster = "tmc" // tmc.<cluster id>.<secret>
)

// secretLen is the length of an encoded 256-bit secret.
const secretLen = 43

// Credential is a bearer credential split into its parts.
type Credential struct {
	Prefix string
	// ID is the token ID (join) or cluster ID (cluster); empty for admin.
	ID string
	// Raw is the whole credential, the thing that is hashed.
	Raw string
}

// ErrMalformedCredential is returned for a credential that is not one of ours.
var ErrMalformedCredential = errors.New("malformed credential")

func secret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand: " + err.Error()) // never fails on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// NewAdminCredential returns a fresh admin credential.
func NewAdminCredential() string { return PrefixAdmin + "." + secret() }

// NewJoinToken returns a fresh join token and its ID.
func NewJoinToken() (token, id string) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand: " + err.Error())
	}
	id = hex.EncodeToString(b)
	return PrefixJoin + "." + id + "." + secret(), id
}

// NewClusterCredential returns a fresh credential for a cluster.
func NewClusterCredential(clusterID string) string {
	return PrefixCluster + "." + clusterID + "." + secret()
}

// ParseCredential splits a credential. It checks the shape only, not the secret.
func ParseCredential(tok string) (Credential, error) {
	if len(tok) > 512 {
		return Credential{}, ErrMalformedCredential
	}
	parts := strings.Split(tok, ".")
	switch {
	case len(parts) == 2 && parts[0] == PrefixAdmin && len(parts[1]) == secretLen:
		return Credential{Prefix: PrefixAdmin, Raw: tok}, nil
	case len(parts) == 3 && (parts[0] == PrefixJoin || parts[0] == PrefixCluster) &&
		parts[1] != "" && len(parts[2]) == secretLen:
		return Credential{Prefix: parts[0], ID: parts[1], Raw: tok}, nil
	}
	return Credential{}, ErrMalformedCredential
}

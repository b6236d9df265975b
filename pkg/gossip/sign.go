package gossip

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"fmt"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Announcements are signed with the cluster's WireGuard key itself, by
// XEdDSA: the X25519 private key is used as an Ed25519 signing scalar
// (its public point's sign bit forced to 0), and a signature verifies with
// plain Ed25519 against the Edwards form of the X25519 public key. So the
// key that authenticates a cluster's gossip is exactly the key the broker
// holds for it, set with that cluster's own credential; nothing new has to
// be issued, stored or rotated, and the broker needs no change.

// sigNonce is hash1's prefix: 0xFE then 31 bytes 0xFF (the XEdDSA
// construction's domain separation from Ed25519's own nonce derivation).
var sigNonce = func() []byte {
	b := make([]byte, 32)
	b[0] = 0xfe
	for i := 1; i < 32; i++ {
		b[i] = 0xff
	}
	return b
}()

// sign signs msg with the X25519 private key k.
func sign(k wgtypes.Key, msg []byte) ([]byte, error) {
	a, err := edwards25519.NewScalar().SetBytesWithClamping(k[:])
	if err != nil {
		return nil, err
	}
	A := new(edwards25519.Point).ScalarBaseMult(a)
	pub := A.Bytes()
	if pub[31]&0x80 != 0 { // use -A, whose encoding has the sign bit clear
		a.Negate(a)
		pub[31] &^= 0x80
	}
	z := make([]byte, 64)
	if _, err := rand.Read(z); err != nil {
		return nil, err
	}
	h := sha512.New()
	h.Write(sigNonce)
	h.Write(a.Bytes())
	h.Write(msg)
	h.Write(z)
	r, err := edwards25519.NewScalar().SetUniformBytes(h.Sum(nil))
	if err != nil {
		return nil, err
	}
	R := new(edwards25519.Point).ScalarBaseMult(r).Bytes()
	h.Reset()
	h.Write(R)
	h.Write(pub)
	h.Write(msg)
	c, err := edwards25519.NewScalar().SetUniformBytes(h.Sum(nil))
	if err != nil {
		return nil, err
	}
	s := edwards25519.NewScalar().MultiplyAdd(c, a, r)
	return append(R, s.Bytes()...), nil
}

// verify reports whether sig is a signature of msg by the holder of the
// private half of the X25519 public key pub.
func verify(pub wgtypes.Key, msg, sig []byte) bool {
	ed, err := edwardsKey(pub)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(ed, msg, sig)
}

// edwardsKey is the Ed25519 public key with sign bit 0 of the X25519
// public key u: y = (u - 1) / (u + 1).
func edwardsKey(u wgtypes.Key) (ed25519.PublicKey, error) {
	var ue, one, num, den field.Element
	if _, err := ue.SetBytes(u[:]); err != nil {
		return nil, err
	}
	one.One()
	den.Add(&ue, &one)
	if den.Equal(new(field.Element).Zero()) == 1 {
		return nil, errors.New("X25519 public key u = -1 has no Edwards form")
	}
	num.Subtract(&ue, &one)
	y := new(field.Element).Multiply(&num, den.Invert(&den))
	b := y.Bytes()
	b[31] &^= 0x80
	if _, err := new(edwards25519.Point).SetBytes(b); err != nil {
		return nil, fmt.Errorf("X25519 public key is not on the curve: %w", err)
	}
	return ed25519.PublicKey(b), nil
}

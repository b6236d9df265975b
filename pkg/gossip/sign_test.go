package gossip

import (
	"bytes"
	"testing"

	"filippo.io/edwards25519"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestXEdDSAWithWireGuardKeys(t *testing.T) {
	for i := 0; i < 50; i++ {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		other, _ := wgtypes.GeneratePrivateKey()
		msg := []byte{byte(i), 'm', 's', 'g'}
		sig, err := sign(k, msg)
		if err != nil {
			t.Fatal(err)
		}
		if !verify(k.PublicKey(), msg, sig) {
			t.Fatalf("key %d: a signature does not verify with its own public key", i)
		}
		if verify(other.PublicKey(), msg, sig) {
			t.Fatal("a signature verifies with another key")
		}
		if verify(k.PublicKey(), append(msg, 'x'), sig) {
			t.Fatal("a signature verifies for another message")
		}
		bad := bytes.Clone(sig)
		bad[40] ^= 1
		if verify(k.PublicKey(), msg, bad) {
			t.Fatal("a changed signature verifies")
		}
		// The Edwards key is the X25519 key's point: its Montgomery form is
		// the WireGuard public key.
		ed, err := edwardsKey(k.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		p, err := new(edwards25519.Point).SetBytes(ed)
		if err != nil {
			t.Fatal(err)
		}
		pub := k.PublicKey()
		if !bytes.Equal(p.BytesMontgomery(), pub[:]) {
			t.Fatal("the Edwards form does not map back to the WireGuard public key")
		}
	}
}

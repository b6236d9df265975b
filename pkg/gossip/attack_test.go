package gossip

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
)

// rawMeta is a memberlist delegate giving fixed metadata: a member that
// runs memberlist itself, not this package.
type rawMeta []byte

func (r rawMeta) NodeMeta(int) []byte                  { return r }
func (rawMeta) NotifyMsg([]byte)                       {}
func (rawMeta) GetBroadcasts(int, int) [][]byte        { return nil }
func (rawMeta) LocalState(bool) []byte                 { return nil }
func (rawMeta) MergeRemoteState(buf []byte, join bool) {}

// raw starts a bare memberlist node named name with the clusterset's key
// and meta as its announcement, and joins it to addr.
func raw(t *testing.T, name string, key []byte, meta any, addr string) (*memberlist.Memberlist, error) {
	t.Helper()
	b, err := json.Marshal(meta)
	if err != nil {
		t.Fatal(err)
	}
	c := memberlist.DefaultLANConfig()
	c.Name, c.BindAddr, c.BindPort, c.AdvertisePort = name, "127.0.0.1", 0, 0
	c.SecretKey, c.Delegate = key, rawMeta(b)
	c.LogOutput = nil
	c.Logger = nil
	ml, err := memberlist.Create(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	_, err = ml.Join([]string{addr})
	return ml, err
}

// A member holding the clusterset's gossip key announces cluster b with
// its own endpoint and an epoch of 2^62, signed with its own WireGuard
// key. Nobody takes it, and the real b is then heard at its real epoch.
func TestMemberCannotAnnounceAnotherCluster(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	a := start(t, Gateway{ClusterID: "a", Epoch: 1, Hostname: "a-gw1", Endpoint: "192.0.2.1:51820"}, 0, key)
	forged := Gateway{ClusterID: "b", Epoch: 1 << 62, Hostname: "evil", Endpoint: "203.0.113.66:51820"}
	sig, err := sign(wgKey(t, "mallory"), forged.payload())
	if err != nil {
		t.Fatal(err)
	}
	forged.Sig = sig
	_, _ = raw(t, "b", key, forged, a.Addr())
	time.Sleep(time.Second) // probe and gossip rounds for it to do harm
	if r, ok := a.Remotes()["b"]; ok {
		t.Fatalf("a took the forged announcement of b: %+v", r)
	}
	b := start(t, Gateway{ClusterID: "b", Epoch: 3, Hostname: "b-gw1", Endpoint: "192.0.2.2:51820"}, 0, key)
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	testkit.Until(t, 5*time.Second, "a hears the real b at epoch 3", sees(a, "b", "b-gw1", 3, true))
	if got := a.Remotes()["b"].PublicKey; got != pub(t, "b") {
		t.Fatalf("b's key as a knows it: %s; want the broker's %s", got, pub(t, "b"))
	}
}

// A genuine announcement of b (epoch 9, signed with b's key) arrives from
// another address while b's active is alive: memberlist refuses it (an
// address conflict). The fence must not have moved: b's active then
// announces epoch 5, and it is taken.
func TestFenceMovesOnlyOnAcceptedState(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	a := start(t, Gateway{ClusterID: "a", Epoch: 1, Hostname: "a-gw1", Endpoint: "192.0.2.1:51820"}, 0, key)
	b := start(t, Gateway{ClusterID: "b", Epoch: 3, Hostname: "b-gw1", Endpoint: "192.0.2.2:51820"}, 0, key)
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	testkit.Until(t, 5*time.Second, "a hears b at epoch 3", sees(a, "b", "b-gw1", 3, true))
	other := Gateway{ClusterID: "b", Epoch: 9, Hostname: "b-gw9", Endpoint: "192.0.2.9:51820"}
	sig, err := sign(wgKey(t, "b"), other.payload())
	if err != nil {
		t.Fatal(err)
	}
	other.Sig = sig
	_, _ = raw(t, "b", key, other, a.Addr())
	time.Sleep(time.Second)
	if !sees(a, "b", "b-gw1", 3, true)() {
		t.Fatalf("b is now %+v; memberlist should have refused the conflicting b", a.Remotes()["b"])
	}
	if err := b.Update(Gateway{ClusterID: "b", Epoch: 5, Hostname: "b-gw1", Endpoint: "192.0.2.5:51820"}); err != nil {
		t.Fatal(err)
	}
	testkit.Until(t, 5*time.Second, "a takes b's epoch 5 (the refused epoch 9 moved no fence)", sees(a, "b", "b-gw1", 5, true))
}

// b's own key cannot put its entry beyond the broker's reach.
func TestGossipedEpochIsBoundedByTheBroker(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	a := start(t, Gateway{ClusterID: "a", Epoch: 1, Hostname: "a-gw1", Endpoint: "192.0.2.1:51820"}, 0, key)
	b := start(t, Gateway{ClusterID: "b", Epoch: MaxEpochLead + 1, Hostname: "b-gw1", Endpoint: "192.0.2.2:51820"}, 0, key)
	_, _ = b.Join([]string{a.Addr()})
	time.Sleep(time.Second)
	if r, ok := a.Remotes()["b"]; ok {
		t.Fatalf("a took epoch %d, beyond the broker's 0 + %d: %+v", r.Epoch, MaxEpochLead, r)
	}
}

package gateway

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/gossip"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// brokerOnce is a broker watch that says one snapshot and then nothing.
type brokerOnce api.Snapshot

func (b brokerOnce) Follow(ctx context.Context, onChange func(api.Snapshot)) error {
	onChange(api.Snapshot(b))
	<-ctx.Done()
	return nil
}

func gatewayOf(s api.Snapshot, id string) api.Gateway {
	var best api.Gateway
	for _, g := range s.Gateways {
		if g.ClusterID == id && g.Epoch >= best.Epoch {
			best = g
		}
	}
	return best
}

// What gossip says reaches the data plane, but is never kept as if the
// broker had said it: the state file holds the broker's record of b, a
// stored view keeps the gossip apart, and gossip signed by another
// cluster's key — live or from a stored view — changes nothing.
func TestGossipIsNeverPersistedAsTheBrokers(t *testing.T) {
	kb, _ := wgtypes.GeneratePrivateKey()
	km, _ := wgtypes.GeneratePrivateKey() // another member's key
	base := api.Snapshot{Revision: 5,
		Clusters: []api.Cluster{{ID: "a", TunnelIP: "100.64.0.1"}, {ID: "b", TunnelIP: "100.64.0.2", PodCIDRs: []string{"10.2.0.0/16"}}},
		Gateways: []api.Gateway{{ClusterID: "b", Hostname: "b-gw1", PrivateIP: "192.0.2.2", Port: 51820,
			PublicKey: kb.PublicKey().String(), Active: true, Epoch: 2}}}
	state := filepath.Join(t.TempDir(), "state.json")
	src := NewSource(SourceConfig{Broker: brokerOnce(base), StateFile: state, Local: Local{ClusterID: "a", Interface: "tmesh0"}})
	var mu sync.Mutex
	var last api.Snapshot
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		_ = src.Follow(ctx, func(s api.Snapshot) { mu.Lock(); last = s; mu.Unlock() })
	}()
	view := func() api.Snapshot { mu.Lock(); defer mu.Unlock(); return last }
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s; view's b: %+v", what, gatewayOf(view(), "b"))
			}
		}
	}
	waitFor("the broker's snapshot reaches the engine", func() bool { return view().Revision == 5 })

	announce := func(k wgtypes.Key, epoch int64, ep string) gossip.Remote {
		g, err := gossip.Sign(k, gossip.Gateway{ClusterID: "b", Epoch: epoch, Hostname: "b-gw2", Endpoint: ep})
		if err != nil {
			t.Fatal(err)
		}
		return gossip.Remote{Gateway: g, Alive: true}
	}
	src.SetRemotes(map[string]gossip.Remote{"b": announce(kb, 3, "192.0.2.22:51820")})
	waitFor("b's gossiped failover reaches the engine", func() bool { return gatewayOf(view(), "b").Epoch == 3 })
	if g := gatewayOf(view(), "b"); g.PublicIP != "192.0.2.22" || g.PublicKey != kb.PublicKey().String() {
		t.Fatalf("b in the view: %+v; want the gossiped endpoint with the broker's key", g)
	}
	var saved api.Snapshot
	b, err := os.ReadFile(state)
	if err != nil || json.Unmarshal(b, &saved) != nil {
		t.Fatalf("state file: %v", err)
	}
	if g := gatewayOf(saved, "b"); g.Epoch != 2 || g.Hostname != "b-gw1" {
		t.Fatalf("the state file holds b as %+v; want the broker's record (epoch 2, b-gw1)", g)
	}
	stored, ok := src.Stored()
	if !ok || gatewayOf(stored.Base, "b").Epoch != 2 || stored.Gossip["b"].Epoch != 3 {
		t.Fatalf("stored view: base b %+v, gossip %+v; want them apart", gatewayOf(stored.Base, "b"), stored.Gossip)
	}
	if g := gatewayOf(stored.View(), "b"); g.Epoch != 3 {
		t.Fatalf("the stored view, used: b %+v; want the verified gossip laid over", g)
	}

	// Announcements of b signed with another member's key: live, and in a
	// stored view another gateway adopts.
	src.SetRemotes(map[string]gossip.Remote{"b": announce(km, 9, "203.0.113.9:51820")})
	waitFor("a forged announcement changes nothing", func() bool { return gatewayOf(view(), "b").Epoch == 2 })
	other := NewSource(SourceConfig{Local: Local{ClusterID: "a", Interface: "tmesh0"}})
	other.Adopt(StoredView{Base: base, Gossip: map[string]gossip.Remote{"b": announce(km, 9, "203.0.113.9:51820")}})
	if v, _ := other.View(); gatewayOf(v, "b").Epoch != 2 {
		t.Fatalf("a stored forged announcement was used: b %+v", gatewayOf(v, "b"))
	}
}

package gossip

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

var logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level()}))

func level() slog.Level {
	if os.Getenv("GOSSIP_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}

// wgKeys are the clusters' WireGuard keys; brokerSays is what the broker's
// records give each cluster (its gateways' public keys, epoch 0).
var wgKeys = map[string]wgtypes.Key{}

func wgKey(t testing.TB, cluster string) wgtypes.Key {
	if k, ok := wgKeys[cluster]; ok {
		return k
	}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	wgKeys[cluster] = k
	return k
}

func brokerSays(id string) (Trust, bool) {
	k, ok := wgKeys[id]
	if !ok {
		return Trust{}, false
	}
	return Trust{Keys: []wgtypes.Key{k.PublicKey()}}, true
}

func pub(t testing.TB, cluster string) string { return wgKey(t, cluster).PublicKey().String() }

func start(t *testing.T, g Gateway, port int, key []byte) *Mesh {
	t.Helper()
	m, err := Start(Config{Self: g, BindAddr: "127.0.0.1", BindPort: port, SecretKey: key, ProbeInterval: 200 * time.Millisecond,
		Key: wgKey(t, g.ClusterID), Trust: brokerSays, Logger: logger.With("member", g.ClusterID+"/"+g.Hostname)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func port(t *testing.T, m *Mesh) int {
	_, p, _ := net.SplitHostPort(m.Addr())
	n, _ := strconv.Atoi(p)
	return n
}

func sees(m *Mesh, cluster, host string, epoch int64, alive bool) func() bool {
	return func() bool {
		r, ok := m.Remotes()[cluster]
		return ok && r.Hostname == host && r.Epoch == epoch && r.Alive == alive
	}
}

func TestActiveGatewaysOfThreeClustersKnowEachOtherThroughFailover(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	a := start(t, Gateway{ClusterID: "a", Epoch: 3, Hostname: "a-gw1", Endpoint: "192.0.2.1:51820"}, 0, key)
	b := start(t, Gateway{ClusterID: "b", Epoch: 1, Hostname: "b-gw1", Endpoint: "192.0.2.2:51820"}, testkit.DualPort(t), key) // bound again below by b2: below the ephemeral range
	c := start(t, Gateway{ClusterID: "c", Epoch: 7, Hostname: "c-gw1", Endpoint: "192.0.2.3:51820"}, 0, key)
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Join([]string{b.Addr()}); err != nil {
		t.Fatal(err)
	}
	testkit.Until(t, 5*time.Second, "a sees b and c with their metadata", func() bool {
		r := a.Remotes()
		return len(r) == 2 && r["b"].Endpoint == "192.0.2.2:51820" && r["b"].PublicKey == pub(t, "b") && r["c"].Epoch == 7 && r["c"].Alive
	})
	testkit.Until(t, 5*time.Second, "c sees a", sees(c, "a", "a-gw1", 3, true))

	// Cluster b fails over: its active crashes; the new active holds the
	// same tunnel address (same port here) and announces epoch 2. No broker
	// is involved anywhere.
	bPort := port(t, b)
	_ = b.Close()
	testkit.Until(t, 5*time.Second, "a notices b's active is gone but keeps the last known", sees(a, "b", "b-gw1", 1, false))
	start2 := time.Now()
	b2 := start(t, Gateway{ClusterID: "b", Epoch: 2, Hostname: "b-gw2", Endpoint: "192.0.2.22:51820"}, bPort, key)
	if _, err := b2.Join([]string{a.Addr(), c.Addr()}); err != nil {
		t.Fatal(err)
	}
	testkit.Until(t, 5*time.Second, "a learns b's new active", sees(a, "b", "b-gw2", 2, true))
	testkit.Until(t, 5*time.Second, "c learns b's new active", sees(c, "b", "b-gw2", 2, true))
	t.Logf("b's new active known to a and c %v after it started", time.Since(start2).Round(time.Millisecond))
	testkit.Until(t, 5*time.Second, "b2 sees a and c", func() bool { return len(b2.Remotes()) == 2 })

	// b's new active goes quiet, and the old one (a partition healed) comes
	// back from another address with its old epoch. memberlist alone would
	// let it reclaim the dead name; the epoch refuses it everywhere.
	_ = b2.Close()
	testkit.Until(t, 5*time.Second, "a notices b2 is gone", sees(a, "b", "b-gw2", 2, false))
	testkit.Until(t, 5*time.Second, "c notices b2 is gone", sees(c, "b", "b-gw2", 2, false))
	stale := start(t, Gateway{ClusterID: "b", Epoch: 1, Hostname: "b-gw1", Endpoint: "192.0.2.2:51820"}, 0, key)
	_, _ = stale.Join([]string{a.Addr(), c.Addr()})
	time.Sleep(2 * time.Second) // several probe and gossip rounds for it to do harm
	for name, m := range map[string]*Mesh{"a": a, "c": c} {
		if !sees(m, "b", "b-gw2", 2, false)() {
			t.Fatalf("%s: b is now %+v; the stale epoch 1 must not replace epoch 2", name, m.Remotes()["b"])
		}
	}

	// Nor does it hold the name against b's next active (epoch 3, yet
	// another address): memberlist would refuse that as a name conflict if
	// it had let the stale member in.
	b3 := start(t, Gateway{ClusterID: "b", Epoch: 3, Hostname: "b-gw3", Endpoint: "192.0.2.23:51820"}, 0, key)
	if _, err := b3.Join([]string{a.Addr(), c.Addr()}); err != nil {
		t.Fatal(err)
	}
	testkit.Until(t, 5*time.Second, "a learns b's third active", sees(a, "b", "b-gw3", 3, true))
	testkit.Until(t, 5*time.Second, "c learns b's third active", sees(c, "b", "b-gw3", 3, true))

	// An endpoint change is announced with Update.
	if err := c.Update(Gateway{ClusterID: "c", Epoch: 7, Hostname: "c-gw1", Endpoint: "198.51.100.3:51820"}); err != nil {
		t.Fatal(err)
	}
	testkit.Until(t, 5*time.Second, "a sees c's new endpoint", func() bool { return a.Remotes()["c"].Endpoint == "198.51.100.3:51820" })
	if err := c.Update(Gateway{ClusterID: "c", Epoch: 6}); err == nil {
		t.Fatal("Update to an older epoch accepted")
	}
}

func TestWrongKeyCannotJoin(t *testing.T) {
	a := start(t, Gateway{ClusterID: "a", Epoch: 1}, 0, []byte("0123456789abcdef0123456789abcdef"))
	x := start(t, Gateway{ClusterID: "x", Epoch: 1}, 0, []byte("fedcba9876543210fedcba9876543210"))
	if _, err := x.Join([]string{a.Addr()}); err == nil {
		t.Fatal("a member with another key joined")
	}
	if len(a.Remotes()) != 0 {
		t.Fatalf("a knows %v", a.Remotes())
	}
}

func TestRejoinFindsGatewaysThatCameUpLater(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	a := start(t, Gateway{ClusterID: "a", Epoch: 1, Hostname: "a1"}, 0, key)
	b := start(t, Gateway{ClusterID: "b", Epoch: 1, Hostname: "b1"}, 0, key)
	// a knows b's address (from the last broker state) but b was down when
	// a started; neither joins by hand.
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	go a.Rejoin(ctx, 100*time.Millisecond, func() []string { return []string{b.Addr()} })
	testkit.Until(t, 5*time.Second, "a and b find each other", func() bool {
		return sees(a, "b", "b1", 1, true)() && sees(b, "a", "a1", 1, true)()
	})
}

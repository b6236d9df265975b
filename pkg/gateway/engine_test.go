package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/testbed"
	"github.com/tunnelmesh/tunnelmesh/pkg/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func ino(t *testing.T, path string) uint64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatalf("state file: %v", err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

// TestEngine runs an engine against a real broker on loopback: snapshots
// that change nothing the data plane needs (heartbeats, exports) neither
// re-apply nor rewrite the state file; a change of a peer does both; and
// SetRole demotes and promotes in well under a second.
func TestEngine(t *testing.T) {
	testbed.RequireNetns(t)
	br := brokertest.Start(t, brokertest.Options{})
	ca, _ := br.Join("a", "10.1.0.0/16", "10.101.0.0/16")
	cb, _ := br.Join("b", "10.2.0.0/16", "10.102.0.0/16")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	gb := api.Gateway{ClusterID: "b", Hostname: "b1", PrivateIP: "192.0.2.2", Port: 51820, PublicKey: key(t), Active: true, Epoch: 1}
	if err := cb.RegisterGateway(ctx, gb); err != nil {
		t.Fatal(err)
	}
	priv, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	dev := testbed.UniqueName("tme")
	state := filepath.Join(t.TempDir(), "state.json")
	local := Local{ClusterID: "a", Interface: dev, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")},
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.101.0.0/16")}, BrokerAddrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	eng := New(Config{
		Local: local, Hostname: "a1", PrivateKey: priv, ListenPort: 41821, PrivateIP: "192.0.2.1", MTU: 1420, Mode: wg.ModeUserspace,
		Role: RoleActive, Epoch: 1, HeartbeatInterval: 100 * time.Millisecond, ProbeInterval: 100 * time.Millisecond, Log: log,
	}, ca, NewSource(SourceConfig{Broker: ca, StateFile: state, Local: local, Log: log}))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- eng.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("engine: %v", err)
		}
	})
	want := func(peers int, endpoint string) func() error {
		return func() error {
			s, err := tryObserve(dev)
			if err != nil {
				return err
			}
			if s.peers != peers {
				return fmt.Errorf("%d peers, want %d", s.peers, peers)
			}
			if peers == 0 {
				if s.addrs != 0 || s.routes != 0 || s.table {
					return fmt.Errorf("standby shape expected, have %+v", s)
				}
				return engineRecorded(eng, peers)
			}
			stats, err := eng.dp.Stats()
			if err != nil {
				return err
			}
			for _, st := range stats {
				if st.Endpoint.String() != endpoint {
					return fmt.Errorf("endpoint %s, want %s", st.Endpoint, endpoint)
				}
			}
			if s.addrs != 1 || s.routes != 3 || !s.table {
				return fmt.Errorf("active shape expected, have %+v", s)
			}
			return engineRecorded(eng, peers)
		}
	}
	if err := testkit.Poll(20*time.Second, 50*time.Millisecond, want(1, "192.0.2.2:51820")); err != nil {
		t.Fatal(err)
	}
	// The broker knows us as active with our epoch.
	if err := testkit.Poll(10*time.Second, 50*time.Millisecond, func() error { return registered(ctx, br.Admin(), true, 1) }); err != nil {
		t.Fatal(err)
	}
	applies, inode := eng.Applies(), ino(t, state)

	// Heartbeats and exports: new revisions, nothing for the data plane.
	var last int64
	for i := 0; i < 10; i++ {
		if err := cb.Heartbeat(ctx, "b", "b1", nil); err != nil {
			t.Fatal(err)
		}
		if err := cb.PublishExport(ctx, api.Export{ClusterID: "b", Namespace: "default", Name: fmt.Sprintf("svc%d", i),
			Type: api.TypeClusterSetIP, IPs: []string{"10.102.0.10"}, IPFamilies: []string{"IPv4"},
			Ports: []api.ServicePort{{Protocol: "TCP", Port: 80}}, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := br.Admin().Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last = snap.Revision
	if err := testkit.Poll(10*time.Second, 20*time.Millisecond, func() error {
		if eng.Revision() < last {
			return fmt.Errorf("engine at revision %d, broker at %d", eng.Revision(), last)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := eng.Applies(); got != applies {
		t.Errorf("%d data-plane applies for snapshots that change nothing it needs, want 0", got-applies)
	}
	if got := ino(t, state); got != inode {
		t.Error("state file rewritten for snapshots that change nothing the data plane needs")
	}

	// A peer's port changes: applied and saved.
	gb.Port = 51830
	if err := cb.RegisterGateway(ctx, gb); err != nil {
		t.Fatal(err)
	}
	if err := testkit.Poll(10*time.Second, 20*time.Millisecond, want(1, "192.0.2.2:51830")); err != nil {
		t.Fatal(err)
	}
	// The engine counts an apply after the device is set: wait for the count.
	_ = testkit.Poll(5*time.Second, 20*time.Millisecond, func() error {
		if eng.Applies() <= applies || ino(t, state) == inode {
			return fmt.Errorf("not recorded yet")
		}
		return nil
	})
	if eng.Applies() != applies+1 || ino(t, state) == inode {
		t.Errorf("a changed peer: %d applies (want 1), state file rewritten %v", eng.Applies()-applies, ino(t, state) != inode)
	}

	// Demotion and promotion by the caller.
	for i, role := range []Role{RoleStandby, RoleActive, RoleStandby, RoleActive} {
		epoch := int64(2 + i)
		start := time.Now()
		eng.SetRole(role, epoch)
		peers := 0
		if role == RoleActive {
			peers = 1
		}
		if err := testkit.Poll(5*time.Second, 2*time.Millisecond, want(peers, "192.0.2.2:51830")); err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		t.Logf("SetRole(%s, %d): data plane in shape after %s", role, epoch, time.Since(start))
		if err := testkit.Poll(10*time.Second, 20*time.Millisecond, func() error {
			return registered(ctx, br.Admin(), role == RoleActive, epoch)
		}); err != nil {
			t.Fatal(err)
		}
		st := eng.Status()
		if st.Role != role || st.Epoch != epoch || st.Peers != peers || st.TunnelIP.IsValid() != (role == RoleActive) {
			t.Errorf("status %+v after SetRole(%s, %d)", st, role, epoch)
		}
	}
	// Health is probed while active (the peer is unreachable here).
	if err := testkit.Poll(5*time.Second, 20*time.Millisecond, func() error {
		if h := eng.Status().Health; len(h) != 1 || h[0].Cluster != "b" || h[0].Status != api.StatusConnecting {
			return fmt.Errorf("health %+v", h)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// engineRecorded reports whether the engine has recorded the data plane it
// set (what Status and Applies show): the engine records an apply after the
// device is set, so a device already in shape may not be recorded yet.
func engineRecorded(eng *Engine, peers int) error {
	st := eng.Status()
	if st.Peers != peers || st.TunnelIP.IsValid() != (peers > 0) {
		return fmt.Errorf("the device is in shape, the engine has not recorded it yet: status shows %d peers, tunnel IP %s", st.Peers, st.TunnelIP)
	}
	return nil
}

type snapshotter interface {
	Snapshot(ctx context.Context) (*api.Snapshot, error)
}

func registered(ctx context.Context, c snapshotter, active bool, epoch int64) error {
	s, err := c.Snapshot(ctx)
	if err != nil {
		return err
	}
	for _, g := range s.Gateways {
		if g.ClusterID == "a" && g.Hostname == "a1" {
			if g.Active != active || g.Epoch != epoch {
				return fmt.Errorf("broker has a1 active=%v epoch=%d, want %v %d", g.Active, g.Epoch, active, epoch)
			}
			return nil
		}
	}
	return fmt.Errorf("a1 not registered")
}

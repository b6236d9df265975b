package node

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/gateway"
	"github.com/tunnelmesh/tunnelmesh/pkg/gossip"
	"github.com/tunnelmesh/tunnelmesh/pkg/membership"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// tenure is what the active gateway runs beside its data plane for one
// epoch: it takes over the view the previous active stored in the cluster,
// keeps storing its own, and gossips with the other clusters' active
// gateways over the tunnel addresses. Cancelling ctx ends it (step-down).
type tenure struct {
	r         *runner
	eng       *gateway.Engine
	src       *gateway.Source
	floor     *epochFloor
	store     ViewStore
	self      gossip.Gateway // Epoch set per tenure
	gossipKey []byte         // nil: no cross-cluster gossip
	key       wgtypes.Key    // the cluster's WireGuard key: signs our announcements
	log       *slog.Logger
}

func (t tenure) run(ctx context.Context, epoch int64) {
	var workers sync.WaitGroup
	defer workers.Wait()
	workers.Add(2)
	go func() { defer workers.Done(); t.keepView(ctx, epoch) }()
	go func() { defer workers.Done(); t.gossip(ctx, epoch) }()
}

// keepView loads the stored view (a standby taking over during a broker
// outage builds its tunnels from it), then stores the view whenever it
// changes, at most once a second.
func (t tenure) keepView(ctx context.Context, epoch int64) {
	for ctx.Err() == nil {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, by, ok, err := t.store.Load(lctx)
		cancel()
		if err == nil {
			if ok {
				t.floor.raise(by)
			}
			if ok && t.src.Adopt(s) {
				t.log.Info("took over the view stored by the previous active gateway", "revision", s.Base.Revision,
					"gossiped", len(s.Gossip), "storedAtEpoch", by)
			}
			break
		}
		t.log.Warn("read the stored gateway view (will retry)", "err", err)
		sleep(ctx, time.Second)
	}
	var last []byte
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		v, ok := t.src.Stored()
		if !ok {
			continue
		}
		b, err := encodeView(v)
		if err != nil || bytes.Equal(b, last) {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = t.store.Save(sctx, v, epoch)
		cancel()
		switch {
		case errors.Is(err, ErrStaleView):
			t.log.Warn("a newer active gateway stores the view; not writing it", "epoch", epoch)
			// Or the Lease was reset below it: the elector then takes a higher epoch.
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if _, by, ok, lerr := t.store.Load(lctx); lerr == nil && ok {
				t.floor.raise(by)
			}
			cancel()
			return
		case err != nil:
			t.log.Warn("store the gateway view (will retry)", "err", err)
		default:
			last = b
		}
	}
}

// gossip joins the clusterset's memberlist on the tunnel address once the
// data plane holds it (the engine announces it), seeded with the remote
// clusters' tunnel addresses of the current view, and feeds what it learns
// into the Source's gossip layer.
func (t tenure) gossip(ctx context.Context, epoch int64) {
	if t.gossipKey == nil {
		return
	}
	port := t.r.cfg.ClustersetGossipPort
	// Only the other clusters' tunnel addresses may talk to our gossip
	// port: it is reachable from every pod of every member through the
	// tunnels.
	var sources membership.Sources
	peers := func() []string {
		v, ok := t.src.View()
		if !ok {
			return nil
		}
		var out []string
		var addrs []netip.Addr
		for _, c := range v.Clusters {
			if a, err := netip.ParseAddr(c.TunnelIP); err == nil && c.ID != t.self.ClusterID {
				out = append(out, net.JoinHostPort(c.TunnelIP, strconv.Itoa(port)))
				addrs = append(addrs, a)
			}
		}
		sources.Set(addrs)
		return out
	}
	peers()
	var m *gossip.Mesh
	for m == nil {
		changed := t.eng.Changed() // before Status: no change is missed
		var retry <-chan time.Time
		if st := t.eng.Status(); st.Role == gateway.RoleActive && st.TunnelIP.IsValid() {
			self := t.self
			self.Epoch = epoch
			var err error
			m, err = gossip.Start(gossip.Config{Self: self, BindAddr: st.TunnelIP.String(), BindPort: port,
				SecretKey: t.gossipKey, Allow: sources.Allow, Key: t.key, Trust: t.trust, Logger: t.log})
			if err != nil {
				t.log.Warn("start cross-cluster gossip (will retry)", "err", err)
				retry = time.After(200 * time.Millisecond) // e.g. the last tenure's memberlist still leaving
			}
		}
		if m != nil {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-retry:
		}
	}
	t.log.Info("gossiping with the other clusters' active gateways", "addr", m.Addr(), "epoch", epoch)
	defer func() {
		if err := m.Leave(time.Second); err != nil {
			t.log.Debug("leave cross-cluster gossip", "err", err)
		}
	}()
	go m.Rejoin(ctx, 2*time.Second, peers)
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.Changes():
			t.src.SetRemotes(m.Remotes())
		}
	}
}

// trust is what the broker's records (the Source's base, never gossip)
// say of a cluster: what its announcements are checked against.
func (t tenure) trust(id string) (gossip.Trust, bool) {
	b := t.src.Base()
	if b == nil {
		return gossip.Trust{}, false
	}
	return gossip.TrustOf(*b, id)
}

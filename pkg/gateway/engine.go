package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/routes"
	"github.com/tunnelmesh/tunnelmesh/pkg/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Broker is what the engine needs of the broker client.
type Broker interface {
	RegisterGateway(ctx context.Context, g api.Gateway) error
	Heartbeat(ctx context.Context, clusterID, hostname string, health []api.PeerHealth) error
	// Follow calls onChange with the full state after every change and keeps
	// resuming across broker outages until ctx ends.
	Follow(ctx context.Context, onChange func(api.Snapshot)) error
}

// Config configures an Engine.
type Config struct {
	Local      Local
	Hostname   string
	PrivateKey wgtypes.Key
	ListenPort int
	PublicIP   string
	PrivateIP  string
	MTU        int
	Mode       wg.Mode
	// StateFile keeps the last broker snapshot so a gateway restarted during
	// a broker outage comes back with its tunnels; empty disables it.
	StateFile         string
	HeartbeatInterval time.Duration
	ProbeInterval     time.Duration
	Log               *slog.Logger
}

// Engine runs the gateway's data plane.
type Engine struct {
	cfg    Config
	broker Broker
	log    *slog.Logger

	dev   *wg.Device
	wgc   *wg.Configurator
	table *routes.Table
	probe *prober

	fwApplied *routes.Firewall
	problems  []string

	mu      sync.Mutex
	desired Desired
	health  []api.PeerHealth
}

// New returns an Engine; Run does the work.
func New(cfg Config, b Broker) *Engine {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = 10 * time.Second
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = time.Second
	}
	if cfg.Local.Interface == "" {
		cfg.Local.Interface = "tmesh0"
	}
	return &Engine{cfg: cfg, broker: b, log: cfg.Log}
}

// Run creates the device, follows the broker and keeps the data plane
// converged until ctx ends, then removes everything it made.
func (e *Engine) Run(ctx context.Context) (err error) {
	name := e.cfg.Local.Interface
	if err := enableForwarding(); err != nil {
		return err
	}
	e.dev, err = wg.Open(wg.Options{Name: name, MTU: e.cfg.MTU, Mode: e.cfg.Mode, Log: e.log})
	if err != nil {
		return err
	}
	e.table = routes.NewTable(e.log)
	defer func() {
		if terr := e.teardown(); terr != nil {
			e.log.Error("teardown", "err", terr)
			err = errors.Join(err, terr)
		}
	}()
	e.log.Info("WireGuard device up", "interface", name, "mode", e.dev.Mode, "mtu", e.cfg.MTU,
		"publicKey", e.cfg.PrivateKey.PublicKey().String())
	if e.wgc, err = wg.NewConfigurator(name); err != nil {
		return err
	}
	if err := e.wgc.Apply(wg.Config{PrivateKey: e.cfg.PrivateKey, ListenPort: e.cfg.ListenPort}); err != nil {
		return err
	}
	if e.probe, err = newProber(); err != nil {
		return fmt.Errorf("health probe socket: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	snaps := make(chan api.Snapshot, 1)
	offer := func(s api.Snapshot) {
		select {
		case <-snaps:
		default:
		}
		snaps <- s
	}
	if s, ok := e.loadState(); ok {
		e.log.Info("applying last known broker state until the broker answers", "revision", s.Revision)
		offer(s)
	}
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := e.table.Run(ctx, 30*time.Second); err != nil {
			e.log.Error("route watcher stopped", "err", err)
		}
	}()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			err := e.broker.Follow(ctx, func(s api.Snapshot) { offer(s) })
			if ctx.Err() == nil {
				e.log.Warn("broker watch ended, retrying", "err", err)
				sleep(ctx, 2*time.Second)
			}
		}
	}()
	go func() {
		defer wg.Done()
		e.registerLoop(ctx)
	}()

	probeTick := time.NewTicker(e.cfg.ProbeInterval)
	defer probeTick.Stop()
	resync := time.NewTicker(30 * time.Second)
	defer resync.Stop()
	var last api.Snapshot
	dirty := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-e.dev.Wait():
			return errors.New("WireGuard device stopped")
		case s := <-snaps:
			last, dirty = s, true
			e.saveState(s)
		case now := <-probeTick.C:
			e.probeAndAssess(now)
		case <-resync.C:
			// Routes are watched through netlink events; the nft table and
			// the peers are re-checked here.
			if ok, err := routes.FirewallExists(); err == nil && !ok && e.fwApplied != nil {
				e.log.Info("nftables table removed by someone else, putting it back")
				e.fwApplied = nil
			}
			dirty = dirty || last.Revision != 0 || len(last.Clusters) > 0
		}
		if dirty {
			if err := e.apply(last); err != nil {
				e.log.Warn("apply desired state (will retry)", "err", err)
			} else {
				dirty = false
			}
		}
	}
}

func (e *Engine) apply(s api.Snapshot) error {
	d := Compute(e.cfg.Local, s)
	if !slices.Equal(d.Problems, e.problems) {
		for _, p := range d.Problems {
			e.log.Warn("remote cluster skipped", "problem", p)
		}
		e.problems = d.Problems
	}
	peers := make([]wg.Peer, 0, len(d.Peers))
	for _, p := range d.Peers {
		peers = append(peers, p.Peer)
	}
	var errs []error
	if err := e.wgc.Apply(wg.Config{PrivateKey: e.cfg.PrivateKey, ListenPort: e.cfg.ListenPort, Peers: peers}); err != nil {
		errs = append(errs, err)
	}
	if err := e.table.Set(d.Routes); err != nil {
		errs = append(errs, err)
	}
	if e.fwApplied == nil || !reflect.DeepEqual(*e.fwApplied, d.Firewall) {
		if err := routes.ApplyFirewall(d.Firewall); err != nil {
			errs = append(errs, err)
		} else {
			fw := d.Firewall
			e.fwApplied = &fw
		}
	}
	e.mu.Lock()
	changed := len(e.desired.Peers) != len(d.Peers) || e.desired.TunnelIP != d.TunnelIP
	e.desired = d
	e.mu.Unlock()
	if changed {
		e.log.Info("data plane converged", "revision", s.Revision, "tunnelIP", d.TunnelIP, "peers", len(d.Peers), "routes", len(d.Routes.Routes))
	}
	return errors.Join(errs...)
}

func (e *Engine) registerLoop(ctx context.Context) {
	registered := false
	backoff := time.Second
	for ctx.Err() == nil {
		var err error
		if !registered {
			err = e.broker.RegisterGateway(ctx, api.Gateway{
				ClusterID: e.cfg.Local.ClusterID, Hostname: e.cfg.Hostname,
				PublicIP: e.cfg.PublicIP, PrivateIP: e.cfg.PrivateIP, Port: e.cfg.ListenPort,
				PublicKey: e.cfg.PrivateKey.PublicKey().String(), Active: true,
			})
			registered = err == nil
			if registered {
				e.log.Info("registered with broker", "cluster", e.cfg.Local.ClusterID, "hostname", e.cfg.Hostname)
			}
		} else {
			err = e.broker.Heartbeat(ctx, e.cfg.Local.ClusterID, e.cfg.Hostname, e.Health())
			if err != nil {
				registered = false // re-register: the broker may have lost or expired us
			}
		}
		wait := e.cfg.HeartbeatInterval
		if err != nil {
			if ctx.Err() == nil {
				e.log.Warn("broker registration/heartbeat failed", "err", err)
			}
			wait, backoff = backoff, min(2*backoff, e.cfg.HeartbeatInterval)
		} else {
			backoff = time.Second
		}
		sleep(ctx, wait)
	}
}

// probeAndAssess sends probes and recomputes each peer's health.
func (e *Engine) probeAndAssess(now time.Time) {
	e.mu.Lock()
	d := e.desired
	e.mu.Unlock()
	var targets []netip.Addr
	if d.TunnelIP.IsValid() {
		for _, p := range d.Peers {
			targets = append(targets, p.TunnelIP)
		}
	}
	e.probe.tick(targets, now)
	stats, err := e.wgc.Stats()
	if err != nil {
		e.log.Warn("read WireGuard stats", "err", err)
	}
	hs := make([]api.PeerHealth, 0, len(d.Peers))
	for _, p := range d.Peers {
		r, _ := e.probe.result(p.TunnelIP)
		st := stats[p.Peer.PublicKey]
		hs = append(hs, assess(p, r, st, d.TunnelIP.IsValid(), now))
	}
	e.mu.Lock()
	e.health = hs
	e.mu.Unlock()
}

// handshakeTimeout: WireGuard rekeys every 2 min; no handshake for longer
// than this means the peer is unreachable.
const handshakeTimeout = 3 * time.Minute

func assess(p RemotePeer, r result, st wg.PeerStats, haveTunnelIP bool, now time.Time) api.PeerHealth {
	h := api.PeerHealth{Cluster: p.Cluster, RxBytes: st.RxBytes, TxBytes: st.TxBytes, LastHandshake: st.LastHandshake}
	if !r.LastReply.IsZero() {
		h.RTTMillis = float64(r.RTT.Microseconds()) / 1000
	}
	h.LossPercent = 100 * r.Loss
	switch {
	case !haveTunnelIP:
		h.Status, h.Reason = api.StatusConnecting, "waiting for the broker to assign our tunnel IP"
	case !r.LastReply.IsZero() && now.Sub(r.LastReply) <= 5*time.Second:
		h.Status = api.StatusConnected
	case r.LastReply.IsZero() && now.Sub(r.FirstSeen) < 30*time.Second:
		h.Status, h.Reason = api.StatusConnecting, "waiting for the first probe reply"
	case st.LastHandshake.IsZero() || now.Sub(st.LastHandshake) > handshakeTimeout:
		h.Status, h.Reason = api.StatusError, fmt.Sprintf("no WireGuard handshake with %s (%s)", p.Gateway, p.Peer.Endpoint)
	default:
		h.Status, h.Reason = api.StatusError, "handshake ok but health probes unanswered (firewall on UDP 51899 or routes?)"
	}
	if p.Stale && h.Status != api.StatusConnected {
		h.Reason += "; the broker marks the remote gateway stale"
	}
	return h
}

// Health returns the latest health of every peer.
func (e *Engine) Health() []api.PeerHealth {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]api.PeerHealth(nil), e.health...)
}

func (e *Engine) teardown() error {
	var errs []error
	if e.probe != nil {
		e.probe.close()
	}
	if err := routes.DeleteFirewall(); err != nil {
		errs = append(errs, err)
	}
	if err := e.table.Teardown(); err != nil {
		errs = append(errs, err)
	}
	if e.wgc != nil {
		e.wgc.Close()
	}
	if err := e.dev.Close(); err != nil {
		errs = append(errs, err)
	}
	e.log.Info("data plane removed")
	return errors.Join(errs...)
}

func (e *Engine) saveState(s api.Snapshot) {
	if e.cfg.StateFile == "" {
		return
	}
	b, err := json.Marshal(s)
	if err == nil {
		tmp := e.cfg.StateFile + ".tmp"
		if err = os.MkdirAll(filepath.Dir(tmp), 0o700); err == nil {
			if err = os.WriteFile(tmp, b, 0o600); err == nil {
				err = os.Rename(tmp, e.cfg.StateFile)
			}
		}
	}
	if err != nil {
		e.log.Warn("save state file", "err", err)
	}
}

func (e *Engine) loadState() (api.Snapshot, bool) {
	var s api.Snapshot
	if e.cfg.StateFile == "" {
		return s, false
	}
	b, err := os.ReadFile(e.cfg.StateFile)
	if err != nil {
		return s, false
	}
	if err := json.Unmarshal(b, &s); err != nil {
		e.log.Warn("ignoring unreadable state file", "file", e.cfg.StateFile, "err", err)
		return s, false
	}
	return s, true
}

func enableForwarding() error {
	for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		if b, err := os.ReadFile(f); err == nil && len(b) > 0 && b[0] == '1' {
			continue
		}
		if err := os.WriteFile(f, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("enable forwarding (%s): %w", f, err)
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/nft"
	"github.com/tunnelmesh/tunnelmesh/pkg/routes"
	"github.com/tunnelmesh/tunnelmesh/pkg/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// DataPlaneConfig describes the WireGuard device a DataPlane owns.
type DataPlaneConfig struct {
	Interface  string
	PrivateKey wgtypes.Key
	ListenPort int // 1-65535; the port remote gateways know from the broker
	MTU        int
	Mode       wg.Mode
	Log        *slog.Logger
	// Resync is how often Run re-reads the device's peers and re-checks
	// routes (default 30 s); FirewallCheck how often it checks the nftables
	// table is still there (default 2 s).
	Resync, FirewallCheck time.Duration
}

// DataPlane is one gateway's WireGuard device, routes and nftables table,
// converged to one desired state at a time. Opened, it is in the standby
// shape: the device is up with the cluster's key and listen port but has no
// peer and no address, so it never handshakes. Set(desired) makes it active,
// Set(Standby) makes it stand by again; both take milliseconds.
type DataPlane struct {
	cfg   DataPlaneConfig
	log   *slog.Logger
	dev   *wg.Device
	table *routes.Table
	fw    *nft.Table

	mu      sync.Mutex // serialises Set, the resync and wgctrl use
	wgc     *wg.Configurator
	want    Desired
	applied bool // want is fully applied
	fwd     forwarding
	closed  bool
}

// OpenDataPlane creates the device in the standby shape.
func OpenDataPlane(cfg DataPlaneConfig) (*DataPlane, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Interface == "" {
		cfg.Interface = defaults.Interface
	}
	if cfg.ListenPort < 1 || cfg.ListenPort > 65535 {
		return nil, fmt.Errorf("WireGuard listen port %d: want a fixed port in 1-65535 (remote gateways find this gateway on the port announced to the broker)", cfg.ListenPort)
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.FirewallCheck <= 0 {
		cfg.FirewallCheck = 2 * time.Second
	}
	dev, err := wg.Open(wg.Options{Name: cfg.Interface, MTU: cfg.MTU, Mode: cfg.Mode, Log: cfg.Log})
	if err != nil {
		return nil, err
	}
	p := &DataPlane{cfg: cfg, log: cfg.Log, dev: dev, table: routes.NewTable(cfg.Log), fw: nft.NewTable(cfg.Log)}
	if p.wgc, err = wg.NewConfigurator(cfg.Interface); err == nil {
		err = p.wgc.Apply(p.wgConfig(nil))
	}
	if err != nil {
		return nil, errors.Join(err, p.Teardown())
	}
	p.applied = true
	p.log.Info("WireGuard device up", "interface", cfg.Interface, "mode", dev.Mode, "mtu", cfg.MTU,
		"publicKey", cfg.PrivateKey.PublicKey().String())
	return p, nil
}

// Mode is the WireGuard implementation the device runs on.
func (p *DataPlane) Mode() wg.Mode { return p.dev.Mode }

func (p *DataPlane) wgConfig(peers []wg.Peer) wg.Config {
	return wg.Config{PrivateKey: p.cfg.PrivateKey, ListenPort: p.cfg.ListenPort, Peers: peers}
}

// Set converges WireGuard peers, the tunnel address, routes and the
// nftables table to d. On a partial failure the rest is still applied and
// Run retries.
func (p *DataPlane) Set(d Desired) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.want = d
	return p.apply()
}

func (p *DataPlane) apply() error {
	d := p.want
	var errs []error
	if len(d.Peers) > 0 {
		if err := p.fwd.enable(d.IPv6(), p.cfg.Interface); err != nil {
			errs = append(errs, err)
		}
	}
	if err := p.applyPeers(); err != nil {
		errs = append(errs, err)
	}
	if err := p.table.Set(d.Routes); err != nil {
		errs = append(errs, err)
	}
	fw := d.Firewall
	if len(d.Peers) == 0 && !d.TunnelIP.IsValid() {
		fw = nft.Desired{} // standby: no table
	}
	if err := p.fw.Set(fw); err != nil {
		errs = append(errs, err)
	}
	p.applied = len(errs) == 0
	return errors.Join(errs...)
}

// applyPeers sets the device's peers to the desired ones; p.mu is held.
func (p *DataPlane) applyPeers() error {
	peers := make([]wg.Peer, 0, len(p.want.Peers))
	for _, rp := range p.want.Peers {
		peers = append(peers, rp.Peer)
	}
	return p.wgc.Apply(p.wgConfig(peers))
}

// Problems are what the data plane refused to do (routes owned by someone else).
func (p *DataPlane) Problems() []string { return p.table.Problems() }

// Run keeps the desired state applied until ctx ends: routes and addresses
// removed by someone else come back on netlink events (routes.Table.Run),
// the nftables table when deleted (nft.Table.Run), and peers on every
// resync; a Set that failed in part is retried every second. It returns an error when the
// device stops on its own.
func (p *DataPlane) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var workers sync.WaitGroup
	defer workers.Wait()
	workers.Add(2)
	go func() {
		defer workers.Done()
		if err := p.table.Run(ctx, p.cfg.Resync); err != nil {
			p.log.Error("route watcher stopped", "err", err)
		}
	}()
	go func() {
		defer workers.Done()
		_ = p.fw.Run(ctx, p.cfg.FirewallCheck)
	}()
	tick := time.NewTicker(p.cfg.Resync)
	defer tick.Stop()
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.dev.Wait():
			return errors.New("WireGuard device stopped")
		case <-tick.C:
			// Routes and the table keep themselves (their own Run); only
			// the peers are re-read here: peers someone removed come back.
			p.mu.Lock()
			err := p.applyPeers()
			p.mu.Unlock()
			if err != nil {
				p.log.Warn("resync data plane (will retry)", "err", err)
			}
		case <-retry.C:
			p.mu.Lock()
			var err error
			if !p.applied {
				err = p.apply()
			}
			p.mu.Unlock()
			if err != nil {
				p.log.Warn("apply desired state (will retry)", "err", err)
			}
		}
	}
}

// Stats reads the device's peers.
func (p *DataPlane) Stats() (map[wgtypes.Key]wg.PeerStats, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.wgc.Stats()
}

// Teardown removes the nftables table, our routes and address, and the device.
func (p *DataPlane) Teardown() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	var errs []error
	if err := p.fw.Teardown(); err != nil {
		errs = append(errs, err)
	}
	if err := p.table.Teardown(); err != nil {
		errs = append(errs, err)
	}
	if p.wgc != nil {
		p.wgc.Close()
	}
	if err := p.dev.Close(); err != nil {
		errs = append(errs, err)
	}
	p.log.Info("data plane removed")
	return errors.Join(errs...)
}

package wg

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Peer is the desired configuration of one remote gateway.
type Peer struct {
	Cluster    string // remote cluster ID, for status and metrics
	PublicKey  wgtypes.Key
	Endpoint   netip.AddrPort // zero: none known, WireGuard learns it from the peer
	AllowedIPs []netip.Prefix
	Keepalive  time.Duration
}

// Equal reports whether two peers need the same device configuration.
func (p Peer) Equal(q Peer) bool {
	return p.Cluster == q.Cluster && p.PublicKey == q.PublicKey && p.Endpoint == q.Endpoint &&
		p.Keepalive == q.Keepalive && slices.Equal(p.AllowedIPs, q.AllowedIPs)
}

// Config is the desired device configuration.
type Config struct {
	PrivateKey wgtypes.Key
	ListenPort int
	Peers      []Peer
}

// Configurator applies Configs to one device through wgctrl, touching only
// peers that changed so established sessions are never reset.
type Configurator struct {
	Name   string
	client *wgctrl.Client
	last   map[wgtypes.Key]Peer
}

// NewConfigurator opens a wgctrl client for the named device.
func NewConfigurator(name string) (*Configurator, error) {
	c, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("open wgctrl: %w", err)
	}
	return &Configurator{Name: name, client: c}, nil
}

// Close releases the wgctrl client.
func (c *Configurator) Close() error { return c.client.Close() }

// Apply converges the device to cfg. Peers the device has that cfg lacks are
// removed; a desired peer is rewritten only when its desired form changed
// since the last Apply or the device lost it, and its endpoint only when the
// desired endpoint itself changed (or the peer is new to the device): an
// endpoint WireGuard learned by roaming — how a remote cluster's new active
// gateway is found during a failover — is never undone by another change.
func (c *Configurator) Apply(cfg Config) error {
	dev, err := c.client.Device(c.Name)
	if err != nil {
		return fmt.Errorf("read %s: %w", c.Name, err)
	}
	want := make(map[wgtypes.Key]Peer, len(cfg.Peers))
	for _, p := range cfg.Peers {
		want[p.PublicKey] = p
	}
	have := make(map[wgtypes.Key]bool, len(dev.Peers))
	var pcs []wgtypes.PeerConfig
	for _, p := range dev.Peers {
		have[p.PublicKey] = true
		if _, ok := want[p.PublicKey]; !ok {
			pcs = append(pcs, wgtypes.PeerConfig{PublicKey: p.PublicKey, Remove: true})
		}
	}
	for _, p := range cfg.Peers {
		last, known := c.last[p.PublicKey]
		if known && have[p.PublicKey] && last.Equal(p) {
			continue
		}
		ka := p.Keepalive
		pc := wgtypes.PeerConfig{
			PublicKey:                   p.PublicKey,
			PersistentKeepaliveInterval: &ka,
			ReplaceAllowedIPs:           true,
		}
		for _, a := range p.AllowedIPs {
			pc.AllowedIPs = append(pc.AllowedIPs, net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())})
		}
		if p.Endpoint.IsValid() && (!known || !have[p.PublicKey] || last.Endpoint != p.Endpoint) {
			pc.Endpoint = net.UDPAddrFromAddrPort(p.Endpoint)
		}
		pcs = append(pcs, pc)
	}
	needKey := dev.PrivateKey != cfg.PrivateKey || dev.ListenPort != cfg.ListenPort
	if len(pcs) == 0 && !needKey {
		return nil
	}
	wc := wgtypes.Config{Peers: pcs}
	if needKey {
		wc.PrivateKey = &cfg.PrivateKey
		wc.ListenPort = &cfg.ListenPort
	}
	if err := c.client.ConfigureDevice(c.Name, wc); err != nil {
		return fmt.Errorf("configure %s: %w", c.Name, err)
	}
	c.last = want
	return nil
}

// PeerStats is what the device reports of one peer.
type PeerStats struct {
	PublicKey     wgtypes.Key
	Endpoint      *net.UDPAddr
	LastHandshake time.Time
	RxBytes       int64
	TxBytes       int64
}

// Stats reads the device's peers.
func (c *Configurator) Stats() (map[wgtypes.Key]PeerStats, error) {
	dev, err := c.client.Device(c.Name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", c.Name, err)
	}
	out := make(map[wgtypes.Key]PeerStats, len(dev.Peers))
	for _, p := range dev.Peers {
		out[p.PublicKey] = PeerStats{PublicKey: p.PublicKey, Endpoint: p.Endpoint,
			LastHandshake: p.LastHandshakeTime, RxBytes: p.ReceiveBytes, TxBytes: p.TransmitBytes}
	}
	return out, nil
}

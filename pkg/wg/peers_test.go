package wg

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/testbed"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestApplyKeepsRoamedEndpoint: an endpoint the device learned by roaming
// survives Applies that change other fields of the peer; only a change of
// the broker's endpoint rewrites it.
func TestApplyKeepsRoamedEndpoint(t *testing.T) {
	testbed.RequireNetns(t)
	for _, mode := range []Mode{ModeUserspace, ModeKernel} {
		t.Run(string(mode), func(t *testing.T) {
			if mode == ModeKernel {
				if err := KernelAvailable(); err != nil {
					t.Skipf("kernel WireGuard: %v", err)
				}
			}
			name := testbed.UniqueName("tmw")
			dev, err := Open(Options{Name: name, Mode: mode, MTU: 1420})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = dev.Close() })
			c, err := NewConfigurator(name)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			priv, _ := wgtypes.GeneratePrivateKey()
			peerKey, _ := wgtypes.GeneratePrivateKey()
			peer := Peer{Cluster: "b", PublicKey: peerKey.PublicKey(), Endpoint: netip.MustParseAddrPort("192.0.2.2:51820"),
				AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")}, Keepalive: 10 * time.Second}
			apply := func(p Peer) {
				t.Helper()
				if err := c.Apply(Config{PrivateKey: priv, ListenPort: 41822, Peers: []Peer{p}}); err != nil {
					t.Fatal(err)
				}
			}
			endpoint := func() string {
				t.Helper()
				wc, err := wgctrl.New()
				if err != nil {
					t.Fatal(err)
				}
				defer wc.Close()
				d, err := wc.Device(name)
				if err != nil || len(d.Peers) != 1 {
					t.Fatalf("device %v: %v", d, err)
				}
				return d.Peers[0].Endpoint.String()
			}
			apply(peer)
			if got := endpoint(); got != "192.0.2.2:51820" {
				t.Fatalf("endpoint %s", got)
			}
			// Roaming: an authenticated packet from another address moves the
			// endpoint (set here the way the device itself would).
			wc, err := wgctrl.New()
			if err != nil {
				t.Fatal(err)
			}
			defer wc.Close()
			if err := wc.ConfigureDevice(name, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: peer.PublicKey, UpdateOnly: true,
				Endpoint: &net.UDPAddr{IP: net.ParseIP("198.51.100.7"), Port: 40000}}}}); err != nil {
				t.Fatal(err)
			}
			peer.AllowedIPs = append(peer.AllowedIPs, netip.MustParsePrefix("10.102.0.0/16"))
			apply(peer)
			if got := endpoint(); got != "198.51.100.7:40000" {
				t.Errorf("a change of AllowedIPs undid the roamed endpoint: %s", got)
			}
			peer.Endpoint = netip.MustParseAddrPort("192.0.2.9:51820")
			apply(peer)
			if got := endpoint(); got != "192.0.2.9:51820" {
				t.Errorf("a new endpoint from the broker was not applied: %s", got)
			}
		})
	}
}

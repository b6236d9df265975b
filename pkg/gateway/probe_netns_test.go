package gateway

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/nsenter"
	"github.com/tunnelmesh/tunnelmesh/pkg/testbed"
	"github.com/tunnelmesh/tunnelmesh/pkg/wg"
	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The attack: remote cluster b's gateway is dead (its endpoint answers
// nothing), and a local pod sends probe replies to our tunnel address with
// b's tunnel IP as their source, for every sequence number. They reach
// the probe socket — but not through the tunnel, so none counts and b
// never looks "connected" (which would keep its endpoints imported).
func TestSpoofedProbeRepliesFromAPodDoNotCount(t *testing.T) {
	testbed.RequireNetns(t)
	priv, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	dev := testbed.UniqueName("tmp")
	dp, err := OpenDataPlane(DataPlaneConfig{Interface: dev, PrivateKey: priv, ListenPort: 41899, MTU: 1420, Mode: wg.ModeUserspace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dp.Teardown() })
	local := Local{ClusterID: "a", Interface: dev, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}
	snap := api.Snapshot{Clusters: []api.Cluster{{ID: "a", PodCIDRs: []string{"10.1.0.0/16"}, TunnelIP: "100.64.0.1"},
		{ID: "b", PodCIDRs: []string{"10.2.0.0/16"}, TunnelIP: "100.64.0.2"}},
		Gateways: []api.Gateway{{ClusterID: "b", Hostname: "b1", PrivateIP: "192.0.2.200", Port: 51820, PublicKey: key(t), Active: true, Epoch: 1}}}
	d := Compute(local, snap)
	if err := dp.Set(d); err != nil {
		t.Fatal(err)
	}
	p, err := newProber(d.TunnelIP, dev, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	bTunnel := netip.MustParseAddr("100.64.0.2")

	// A pod on this node: a veth, its own address, and b's tunnel IP on it
	// (as good as a spoofed source).
	bed := testbed.New(t)
	pod := bed.NS("pod")
	host := testbed.UniqueName("vp")
	bed.Veth(pod, "eth0", testbed.SelfNS(), host)
	bed.MustIP(testbed.SelfNS(), "addr", "add", "10.1.7.1/24", "dev", host)
	bed.MustIP(pod, "addr", "add", "10.1.7.2/24", "dev", "eth0")
	bed.MustIP(pod, "addr", "add", bTunnel.String()+"/32", "dev", "eth0")
	bed.MustIP(pod, "route", "add", "100.64.0.1/32", "via", "10.1.7.1", "src", bTunnel.String())
	h, err := netns.GetFromName(pod)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	var spoof *net.UDPConn
	if err := nsenter.Do(h, func() (err error) {
		spoof, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(bTunnel, ProbePort)),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(d.TunnelIP, ProbePort)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { spoof.Close() })

	for i := 0; i < 20; i++ {
		now := time.Now()
		p.tick([]netip.Addr{bTunnel}, now)
		for seq := uint64(0); seq < 64; seq++ {
			_, _ = spoof.Write(probe{Type: probeReply, Seq: seq, SentNs: now.UnixNano()}.encode())
		}
		time.Sleep(20 * time.Millisecond)
	}
	r, _ := p.result(bTunnel)
	if !r.LastReply.IsZero() {
		t.Fatalf("a spoofed reply from a local pod counted (last reply %v): b would look connected", r.LastReply)
	}
	if h := assess(d.Peers[0], r, wg.PeerStats{}, true, time.Now()); h.Status == api.StatusConnected {
		t.Fatalf("b is %s with its gateway dead", h.Status)
	}
}

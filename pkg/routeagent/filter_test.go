package routeagent

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/nft"
	"github.com/tunnelmesh/tunnelmesh/pkg/nsenter"
	"github.com/tunnelmesh/tunnelmesh/pkg/nsenter/nstest"
	"github.com/tunnelmesh/tunnelmesh/pkg/vxlan"
)

// datagrams records what arrives at a UDP listener on the remote cluster:
// "payload from source".
type datagrams struct {
	mu  sync.Mutex
	got []string
}

func (d *datagrams) has(payload string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, g := range d.got {
		if p, from, _ := strings.Cut(g, " from "); p == payload {
			return from, true
		}
	}
	return "", false
}

func recordUDP(t *testing.T, ns nstest.NS, addr string) *datagrams {
	var pc net.PacketConn
	if err := nsenter.Do(ns.Handle, func() (err error) {
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	d := &datagrams{}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			d.mu.Lock()
			d.got = append(d.got, string(buf[:n])+" from "+from.(*net.UDPAddr).IP.String())
			d.mu.Unlock()
		}
	}()
	return d
}

// sendUDP sends payload from ns (bound to src when valid) with an ordinary
// UDP socket: what any unprivileged process can do.
func sendUDP(t *testing.T, ns nstest.NS, src netip.Addr, dst netip.AddrPort, payload []byte) {
	t.Helper()
	if err := nsenter.Do(ns.Handle, func() error {
		var laddr *net.UDPAddr
		if src.IsValid() {
			laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		}
		c, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(payload)
		return err
	}); err != nil {
		t.Fatalf("send from %s to %s: %v", ns.Name, dst, err)
	}
}

// vxlanFrame is a VXLAN payload carrying an Ethernet frame to dstMAC with an
// IPv4/UDP packet from src to dst: what the kernel of the receiving node
// decapsulates and routes like any packet of its own pods.
func vxlanFrame(vni uint32, dstMAC net.HardwareAddr, src, dst netip.AddrPort, payload string) []byte {
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload) // checksum 0: none, allowed over IPv4
	ip := make([]byte, 20, 20+len(udp))
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	binary.BigEndian.PutUint16(ip[6:], 0x4000)
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	ip = append(ip, udp...)
	eth := append(append(append([]byte{}, dstMAC...), 0x0e, 0x74, 0xde, 0xad, 0xbe, 0xef), 0x08, 0x00)
	hdr := []byte{0x08, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0}
	return append(append(hdr, eth...), ip...)
}

// TestVXLANInjection is the attack on the route agents' VXLAN port and on
// the tunnel's ingress: a pod (an ordinary UDP socket, no privilege) sends
// VXLAN frames to the active gateway node's UDP 4803 carrying packets with a
// spoofed source, and a host on the nodes' network that is not a node
// (the Internet, for a gateway with a public address) routes packets and
// frames through the gateway. None may come out of the tunnel; the pod's own
// traffic and the nodes' host traffic still do.
func TestVXLANInjection(t *testing.T) {
	nstest.Need(t)
	c := newCluster(t)
	// A default route on the gateway node, as every real node has: loose
	// reverse-path filtering then passes any source, as it would there.
	c.g.IP(t, "route", "add", "default", "via", "172.30.0.1", "dev", "eth0")
	// An outsider on the nodes' network: not a node of the cluster.
	out := nstest.New(t, "x")
	nstest.Run(t, "ip", "link", "add", "eth0", "netns", out.Name, "type", "veth", "peer", "name", "px", "netns", c.lan.Name)
	c.lan.IP(t, "link", "set", "px", "master", "br0", "up")
	out.IP(t, "addr", "add", "172.30.0.9/24", "dev", "eth0")
	out.IP(t, "link", "set", "eth0", "up")
	out.IP(t, "route", "add", "10.50.0.0/16", "via", "172.30.0.2")

	// The active gateway's own table, as Compute makes it for this cluster.
	fw := nft.NewTable(slog.New(slog.NewTextHandler(io.Discard, nil)))
	tunnelIP := netip.MustParseAddr("192.168.50.1")
	if err := nsenter.Do(c.g.Handle, func() error {
		return fw.Set(nft.Desired{Interface: "tmesh0", SNAT4: tunnelIP,
			Local:  []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd44::/48"), netip.MustParsePrefix("10.96.0.0/16")},
			Remote: []netip.Prefix{netip.MustParsePrefix("10.50.0.0/16"), netip.MustParsePrefix("10.51.0.0/16"), netip.MustParsePrefix("fd50::/64")},
			Nodes:  c.nodeAddrs()})
	}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []nstest.NS{c.g, c.g2, c.w} {
		a, _ := startAgent(t, n, time.Hour)
		if err := a.Set(c.input(t, n, c.g, ModeVXLAN)); err != nil {
			t.Fatalf("set %s: %v", n.Name, err)
		}
	}
	got := recordUDP(t, c.r, "10.50.0.1:9999")
	target := netip.MustParseAddrPort("10.50.0.1:9999")
	gwVXLAN := netip.AddrPortFrom(c.nodeIP[c.g.Name], vxlan.DefaultPort)
	gwMAC := vxlan.MACFor(c.nodeIP[c.g.Name])
	frame := func(src, payload string) []byte {
		return vxlanFrame(vxlan.DefaultVNI, gwMAC, netip.AddrPortFrom(netip.MustParseAddr(src), 40000), target, payload)
	}

	// The attacks, then (on the same paths) the traffic that must pass: once
	// that has arrived, anything injected before it would have too.
	attacks := []struct{ payload, what string }{
		{"pod-spoofs-a-pod", "a frame from a pod with another local pod's source"},
		{"pod-spoofs-public", "a frame from a pod with a public source (SNATed: a relay)"},
		{"outsider-frame", "a frame from a non-node with a local pod's source"},
		{"outsider-routed", "a packet a non-node routes through the gateway (SNATed: a relay)"},
	}
	sendUDP(t, c.pod, netip.Addr{}, gwVXLAN, frame("10.244.4.77", attacks[0].payload))
	sendUDP(t, c.pod, netip.Addr{}, gwVXLAN, frame("203.0.113.7", attacks[1].payload))
	sendUDP(t, out, netip.Addr{}, gwVXLAN, frame("10.244.4.77", attacks[2].payload))
	sendUDP(t, out, netip.Addr{}, target, []byte(attacks[3].payload))
	sendUDP(t, c.pod, netip.Addr{}, target, []byte("pod"))
	sendUDP(t, c.w, c.nodeIP[c.w.Name], target, []byte("node"))
	testkit.Until(t, 5*time.Second, "the pod's and the node's own datagrams to arrive", func() bool {
		_, pod := got.has("pod")
		_, node := got.has("node")
		return pod && node
	})
	if from, _ := got.has("pod"); from != "10.244.4.2" {
		t.Errorf("the pod's datagram arrived from %s, want its own address 10.244.4.2", from)
	}
	if from, _ := got.has("node"); from != tunnelIP.String() {
		t.Errorf("the node's datagram arrived from %s, want the tunnel address %s", from, tunnelIP)
	}
	for _, a := range attacks {
		if from, ok := got.has(a.payload); ok {
			t.Errorf("%s came out of the tunnel, from %s", a.what, from)
		}
	}
}

func (c *cluster) nodeAddrs() []netip.Prefix {
	var out []netip.Prefix
	for _, a := range c.nodeAddrs4and6() {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

func (c *cluster) nodeAddrs4and6() []netip.Addr {
	var out []netip.Addr
	for _, n := range []nstest.NS{c.g, c.g2, c.w} {
		out = append(out, c.nodeIP[n.Name], c.nodeIP6[n.Name])
	}
	return out
}

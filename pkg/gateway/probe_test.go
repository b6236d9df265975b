package gateway

import (
	"fmt"
	"net"
	"net/netip"
	osexec "os/exec"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/testbed"
	"github.com/tunnelmesh/tunnelmesh/pkg/wg"
)

var peerIP = netip.MustParseAddr("100.127.0.2")

func newTestProber(now time.Time) *prober {
	p := &prober{by: map[netip.Addr]*probeStats{}}
	p.setTargets([]netip.Addr{peerIP}, now)
	return p
}

// A reply whose sequence number has the top bit set once indexed the window
// with a negative number and crashed the gateway.
func TestProbeHandleHostile(t *testing.T) {
	now := time.Unix(5000, 0)
	p := newTestProber(now)
	for _, seq := range []uint64{1 << 63, 1<<63 + 3, ^uint64(0), 0, 3} {
		b := probe{Type: probeReply, Seq: seq, SentNs: now.UnixNano()}.encode()
		if r := p.handle(b, peerIP, now); r != nil {
			t.Errorf("reply to a reply: %v", r)
		}
	}
	if r, _ := p.result(peerIP); !r.LastReply.IsZero() {
		t.Error("an unsolicited reply counted as an answer")
	}
}

func TestProbeHandle(t *testing.T) {
	now := time.Unix(5000, 0)
	p := newTestProber(now)
	req := probe{Type: probeReq, Seq: 42, SentNs: 7}.encode()
	if r := p.handle(req, netip.MustParseAddr("192.0.2.99"), now); r != nil {
		t.Error("answered a probe from an address that is not a peer's tunnel IP")
	}
	if r := p.handle(req[:16], peerIP, now); r != nil {
		t.Error("answered a short packet")
	}
	r := p.handle(req, netip.AddrFrom16(peerIP.As16()), now) // IPv4-mapped form of a peer
	if got, ok := decodeProbe(r); !ok || got != (probe{Type: probeReply, Seq: 42, SentNs: 7, Size: probeLen}) {
		t.Fatalf("reply %v (%v)", got, ok)
	}
	// Our own probe answered 3 ms later.
	p.tick([]netip.Addr{peerIP}, now)
	seq := p.by[peerIP].next - 1
	rep := probe{Type: probeReply, Seq: seq, SentNs: now.UnixNano()}.encode()
	if p.handle(rep, netip.MustParseAddr("192.0.2.99"), now.Add(3*time.Millisecond)); !p.by[peerIP].lastReply.IsZero() {
		t.Error("a reply from a stranger counted")
	}
	p.handle(rep, peerIP, now.Add(3*time.Millisecond))
	if res, _ := p.result(peerIP); res.RTT != 3*time.Millisecond || res.LastReply != now.Add(3*time.Millisecond) {
		t.Errorf("result %+v", res)
	}
}

// FuzzProbe feeds arbitrary packets from a known peer and from a stranger
// to the probe handler: it must never panic, never answer a stranger and
// only ever answer with a well-formed reply.
func FuzzProbe(f *testing.F) {
	f.Add(probe{Type: probeReply, Seq: 1<<63 + 3}.encode(), true)
	f.Add(probe{Type: probeReq, Seq: 12, SentNs: -1}.encode(), true)
	f.Add([]byte{probeReply}, false)
	f.Add([]byte{}, true)
	f.Fuzz(func(t *testing.T, b []byte, known bool) {
		now := time.Unix(5000, 0)
		p := newTestProber(now)
		p.tick([]netip.Addr{peerIP}, now)
		from := netip.MustParseAddr("192.0.2.99")
		if known {
			from = peerIP
		}
		r := p.handle(b, from, now)
		if r == nil {
			return
		}
		if !known {
			t.Fatal("answered a stranger")
		}
		got, ok := decodeProbe(r)
		if !ok || (got.Type != probeReply && got.Type != probeMTUReply) {
			t.Fatalf("malformed reply %x", r)
		}
		if len(r) > len(b) {
			t.Fatalf("a %d-byte reply to a %d-byte packet: the probe port must not amplify", len(r), len(b))
		}
		p.result(peerIP)
	})
}

// TestProberSocket: the socket listens on the tunnel address only and
// answers only known peers' tunnel IPs (loopback addresses stand in here).
func TestProberSocket(t *testing.T) {
	testbed.RequireNetns(t)
	tunnel, peer := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")
	p, err := newProber(tunnel, "lo", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	ask := func(to netip.Addr) bool {
		t.Helper()
		c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(peer, 0)),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(to, ProbePort)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(probe{Type: probeReq, Seq: 99}.encode()); err != nil {
			return false
		}
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		b := make([]byte, 64)
		n, err := c.Read(b)
		return err == nil && n == probeLen
	}
	if ask(tunnel) {
		t.Error("answered an address that is not a known peer")
	}
	p.setTargets([]netip.Addr{peer}, time.Now())
	if !ask(tunnel) {
		t.Error("no answer to a known peer")
	}
	if ask(netip.MustParseAddr("127.0.0.3")) {
		t.Error("the probe port answers on an address other than the tunnel address")
	}
}

// TestProbeFullSize: a full-size probe goes out on the first tick and every
// mtuEvery ticks; only an answer of the same size and sequence vouches for
// the path, and full-size probes lost in a row are counted.
func TestProbeFullSize(t *testing.T) {
	now := time.Unix(5000, 0)
	p := newTestProber(now)
	p.mtu, p.mtuSize = 1420, mtuProbeSize(peerIP, 1420)
	if p.mtuSize != 1392 {
		t.Fatalf("full-size probe of %d bytes for an IPv4 tunnel MTU of 1420; want 1392", p.mtuSize)
	}
	p.tick([]netip.Addr{peerIP}, now)
	s := p.by[peerIP]
	if s.mtuSeq == 0 {
		t.Fatal("no full-size probe on the first tick")
	}
	small := probe{Type: probeMTUReply, Seq: s.mtuSeq, Size: 1000}.encode()
	p.handle(small, peerIP, now)
	if res, _ := p.result(peerIP); !res.MTULastOK.IsZero() {
		t.Fatal("a shorter answer vouched for the full size")
	}
	// A peer echoes a request whole.
	req := probe{Type: probeMTUReq, Seq: 77, Size: 1392}.encode()
	if r := p.handle(req, peerIP, now); len(r) != 1392 || r[0] != probeMTUReply {
		t.Fatalf("answer to a full-size probe: %d bytes, type %d", len(r), r[0])
	}
	p.handle(probe{Type: probeMTUReply, Seq: s.mtuSeq, Size: 1392}.encode(), peerIP, now)
	res, _ := p.result(peerIP)
	if res.MTULastOK != now || res.MTU != 1420 || res.MTUMissed != 0 {
		t.Fatalf("after the answer: %+v", res)
	}
	for i := 1; i <= 4*mtuEvery; i++ { // four more full-size probes, none answered
		p.tick([]netip.Addr{peerIP}, now.Add(time.Duration(i)*time.Second))
	}
	if res, _ := p.result(peerIP); res.MTUMissed != 3 {
		t.Fatalf("%d full-size probes counted lost; want 3 (the newest is still in flight)", res.MTUMissed)
	}
}

// TestProberPathMTU: two probers on loopback measure the full size through
// a real socket with don't-fragment; then a filter drops large datagrams
// (a hop with a smaller MTU whose ICMP is blocked) and the loss of full-size
// probes is seen while small ones are still answered.
func TestProberPathMTU(t *testing.T) {
	testbed.RequireNetns(t)
	a, b := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")
	pa, err := newProber(a, "lo", 1420)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pa.close)
	pb, err := newProber(b, "lo", 1420)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pb.close)
	pb.setTargets([]netip.Addr{a}, time.Now())
	tick := func(n int) result {
		for range n {
			pa.tick([]netip.Addr{b}, time.Now())
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		r, _ := pa.result(b)
		return r
	}
	tick(1)
	// Both probers' receivers must run for the answer: wait for it.
	if err := testkit.Poll(5*time.Second, 20*time.Millisecond, func() error {
		if r, _ := pa.result(b); r.MTULastOK.IsZero() || r.MTU != 1420 {
			return fmt.Errorf("no full-size answer over loopback: %+v", r)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	out, err := osexec.Command("nft", "add table inet mtutest; add chain inet mtutest in { type filter hook input priority 0; }; "+
		"add rule inet mtutest in udp dport 51899 ip length > 1000 drop").CombinedOutput()
	if err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = osexec.Command("nft", "delete table inet mtutest").Run() })
	r := tick(4*mtuEvery + 1)
	if r.MTUMissed < mtuLostAfter || time.Since(r.LastReply) > time.Second {
		t.Fatalf("large datagrams dropped: %d full-size probes counted lost, last small answer %v ago; want ≥ %d and fresh", r.MTUMissed, time.Since(r.LastReply), mtuLostAfter)
	}
	h := assess(RemotePeer{Cluster: "b"}, r, wg.PeerStats{}, true, time.Now())
	if h.PathMTULost != 1420 || h.PathMTU != 1420 {
		t.Errorf("health %+v: want the loss reported (and the last success, under a minute old)", h)
	}
}

package gateway

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/testbed"
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
	if got, ok := decodeProbe(r); !ok || got != (probe{Type: probeReply, Seq: 42, SentNs: 7}) {
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
		if got, ok := decodeProbe(r); !ok || got.Type != probeReply {
			t.Fatalf("malformed reply %x", r)
		}
		p.result(peerIP)
	})
}

// TestProberSocket: the socket listens on the tunnel address only and
// answers only known peers' tunnel IPs (loopback addresses stand in here).
func TestProberSocket(t *testing.T) {
	testbed.RequireNetns(t)
	tunnel, peer := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")
	p, err := newProber(tunnel, "lo")
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

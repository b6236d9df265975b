package gateway

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// ProbePort is the UDP port of the health-probe echo between tunnel IPs.
const ProbePort = 51899

const (
	probeReq   = 1
	probeReply = 2
	probeLen   = 17 // type, seq, send time
	window     = 10 // probes the loss figure covers
)

// probe is one decoded probe packet.
type probe struct {
	Type   byte
	Seq    uint64
	SentNs int64 // sender's clock, echoed back unchanged
}

// decodeProbe parses a probe packet; ok is false for anything else.
func decodeProbe(b []byte) (p probe, ok bool) {
	if len(b) != probeLen || (b[0] != probeReq && b[0] != probeReply) {
		return probe{}, false
	}
	return probe{Type: b[0], Seq: binary.BigEndian.Uint64(b[1:]), SentNs: int64(binary.BigEndian.Uint64(b[9:]))}, true
}

func (p probe) encode() []byte {
	b := make([]byte, probeLen)
	b[0] = p.Type
	binary.BigEndian.PutUint64(b[1:], p.Seq)
	binary.BigEndian.PutUint64(b[9:], uint64(p.SentNs))
	return b
}

// probeStats is the health of the path to one remote tunnel IP.
type probeStats struct {
	sent      [window]uint64 // seq of the probes in the window
	got       [window]bool
	next      uint64
	lastReply time.Time
	rtt       time.Duration
	firstSeen time.Time
}

// prober answers probes from known peers' tunnel IPs and sends one per
// tick to each of them over the same socket, bound to our tunnel address.
type prober struct {
	conn  *net.UDPConn
	local netip.Addr
	dev   int // index of the tunnel device: the only one replies may arrive on
	mu    sync.Mutex
	by    map[netip.Addr]*probeStats
}

// newProber listens on the tunnel address only: nothing outside the mesh
// (nor any other local address) reaches the probe socket. A packet counts
// only if it arrived on dev, the tunnel device: a local pod can send to the
// tunnel address with a remote tunnel IP as its source, but not through
// the tunnel, so it cannot keep a dead tunnel "connected".
func newProber(tunnelIP netip.Addr, dev string) (*prober, error) {
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return nil, fmt.Errorf("health probes: tunnel device %s: %w", dev, err)
	}
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tunnelIP, ProbePort)))
	if err != nil {
		return nil, fmt.Errorf("health probe socket on %s: %w", tunnelIP, err)
	}
	p := &prober{conn: c, local: tunnelIP, dev: ifi.Index, by: map[netip.Addr]*probeStats{}}
	read, err := p.reader()
	if err != nil {
		c.Close()
		return nil, err
	}
	go p.read(read)
	return p, nil
}

func (p *prober) close() { p.conn.Close() }

// reader returns a read that also gives the index of the device the packet
// arrived on (IP_PKTINFO / IPV6_PKTINFO).
func (p *prober) reader() (func([]byte) (int, netip.AddrPort, int, error), error) {
	if p.local.Is4() {
		pc := ipv4.NewPacketConn(p.conn)
		if err := pc.SetControlMessage(ipv4.FlagInterface, true); err != nil {
			return nil, fmt.Errorf("health probe socket: ask for the arrival device: %w", err)
		}
		return func(b []byte) (int, netip.AddrPort, int, error) {
			n, cm, src, err := pc.ReadFrom(b)
			return n, addrOf(src), ifIndex(cm != nil, func() int { return cm.IfIndex }), err
		}, nil
	}
	pc := ipv6.NewPacketConn(p.conn)
	if err := pc.SetControlMessage(ipv6.FlagInterface, true); err != nil {
		return nil, fmt.Errorf("health probe socket: ask for the arrival device: %w", err)
	}
	return func(b []byte) (int, netip.AddrPort, int, error) {
		n, cm, src, err := pc.ReadFrom(b)
		return n, addrOf(src), ifIndex(cm != nil, func() int { return cm.IfIndex }), err
	}, nil
}

func ifIndex(ok bool, f func() int) int {
	if !ok {
		return 0
	}
	return f()
}

func addrOf(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

func (p *prober) read(read func([]byte) (int, netip.AddrPort, int, error)) {
	buf := make([]byte, 64)
	for {
		n, from, dev, err := read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if dev != p.dev {
			continue // not through the tunnel: spoofed from this host
		}
		if reply := p.handle(buf[:n], from.Addr(), time.Now()); reply != nil {
			_, _ = p.conn.WriteToUDPAddrPort(reply, from)
		}
	}
}

// handle processes one packet from a sender and returns the reply to send,
// if any. Packets from addresses that are not a known peer's tunnel IP are
// dropped.
func (p *prober) handle(b []byte, from netip.Addr, now time.Time) []byte {
	pr, ok := decodeProbe(b)
	if !ok {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.by[from.Unmap()]
	if s == nil {
		return nil
	}
	switch pr.Type {
	case probeReq:
		pr.Type = probeReply
		return pr.encode()
	case probeReply:
		i := pr.Seq % window
		if s.sent[i] == pr.Seq && pr.Seq >= window {
			s.got[i] = true
			s.lastReply = now
			if rtt := now.Sub(time.Unix(0, pr.SentNs)); rtt >= 0 {
				s.rtt = rtt
			}
		}
	}
	return nil
}

// setTargets sets the known peers, keeping the figures of those that stay.
func (p *prober) setTargets(targets []netip.Addr, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := map[netip.Addr]bool{}
	for _, t := range targets {
		keep[t] = true
		if p.by[t] == nil {
			p.by[t] = &probeStats{firstSeen: now, next: window} // start past 0 so empty slots never match
		}
	}
	for a := range p.by {
		if !keep[a] {
			delete(p.by, a)
		}
	}
}

// tick sends one probe to each target and forgets targets no longer wanted.
func (p *prober) tick(targets []netip.Addr, now time.Time) {
	p.setTargets(targets, now)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range targets {
		s := p.by[t]
		seq := s.next
		s.next++
		s.sent[seq%window], s.got[seq%window] = seq, false
		b := probe{Type: probeReq, Seq: seq, SentNs: now.UnixNano()}.encode()
		if p.conn != nil {
			_, _ = p.conn.WriteToUDPAddrPort(b, netip.AddrPortFrom(t, ProbePort))
		}
	}
}

// result is one target's probe figures.
type result struct {
	RTT       time.Duration
	Loss      float64 // 0..1 over the last window probes, the newest excluded (still in flight)
	LastReply time.Time
	FirstSeen time.Time
}

func (p *prober) result(t netip.Addr) (result, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.by[t]
	if s == nil {
		return result{}, false
	}
	sent, lost := 0, 0
	for seq := s.next - window; seq < s.next-1; seq++ {
		if seq < window || s.sent[seq%window] != seq {
			continue
		}
		sent++
		if !s.got[seq%window] {
			lost++
		}
	}
	r := result{RTT: s.rtt, LastReply: s.lastReply, FirstSeen: s.firstSeen}
	if sent > 0 {
		r.Loss = float64(lost) / float64(sent)
	}
	return r, true
}

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
	"golang.org/x/sys/unix"
)

// ProbePort is the UDP port of the health-probe echo between tunnel IPs.
const ProbePort = 51899

const (
	probeReq   = 1
	probeReply = 2
	// Full-size probes measure the path MTU: as large as the tunnel MTU
	// allows, sent with don't-fragment and echoed back whole, so an answer
	// proves that full-size packets cross the tunnel both ways.
	probeMTUReq   = 3
	probeMTUReply = 4
	probeLen      = 17 // type, seq, send time (full-size probes are padded)
	window        = 10 // probes the loss figure covers
	// mtuEvery: one full-size probe per this many ticks (the first at once).
	mtuEvery = 10
	// mtuLostAfter full-size probes unanswered in a row, while small
	// ones are answered, mean packets that large are lost.
	mtuLostAfter = 3
	maxProbe     = 65507
)

// probe is one decoded probe packet.
type probe struct {
	Type   byte
	Seq    uint64
	SentNs int64 // sender's clock, echoed back unchanged
	Size   int   // full-size probes: the packet's length
}

// decodeProbe parses a probe packet; ok is false for anything else. Size
// is the whole packet's (a full-size probe's padding included).
func decodeProbe(b []byte) (p probe, ok bool) {
	switch {
	case len(b) < probeLen || len(b) > maxProbe:
		return probe{}, false
	case b[0] == probeReq || b[0] == probeReply:
		if len(b) != probeLen {
			return probe{}, false
		}
	case b[0] != probeMTUReq && b[0] != probeMTUReply:
		return probe{}, false
	}
	return probe{Type: b[0], Seq: binary.BigEndian.Uint64(b[1:]), SentNs: int64(binary.BigEndian.Uint64(b[9:])), Size: len(b)}, true
}

func (p probe) encode() []byte {
	n := probeLen
	if p.Type == probeMTUReq || p.Type == probeMTUReply {
		n = max(p.Size, probeLen)
	}
	b := make([]byte, n)
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
	// Full-size probes: the last one's seq, whether it was answered, when
	// one last was, and how many in a row were not.
	mtuSeq              uint64
	mtuAnswered         bool
	mtuLastOK           time.Time
	mtuMissed, mtuTicks int
}

// prober answers probes from known peers' tunnel IPs and sends one per
// tick to each of them over the same socket, bound to our tunnel address.
type prober struct {
	conn  *net.UDPConn
	local netip.Addr
	dev   int // index of the tunnel device: the only one packets may arrive on
	// mtuSize is the full-size probe's length: the tunnel MTU (mtu) less
	// the IP and UDP headers (0: none sent).
	mtu, mtuSize int
	mu           sync.Mutex
	by           map[netip.Addr]*probeStats
}

// newProber listens on the tunnel address only: nothing outside the mesh
// (nor any other local address) reaches the probe socket. A packet counts
// only if it arrived on dev, the tunnel device: a local pod can send to the
// tunnel address with a remote tunnel IP as its source, but not through
// the tunnel, so it cannot keep a dead tunnel "connected". Its datagrams
// never fragment, so that full-size probes for a tunnel MTU of mtu (0:
// none) measure what the path carries.
func newProber(tunnelIP netip.Addr, dev string, mtu int) (*prober, error) {
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return nil, fmt.Errorf("health probes: tunnel device %s: %w", dev, err)
	}
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tunnelIP, ProbePort)))
	if err != nil {
		return nil, fmt.Errorf("health probe socket on %s: %w", tunnelIP, err)
	}
	if err := dontFragment(c, tunnelIP.Is4()); err != nil {
		c.Close()
		return nil, fmt.Errorf("health probe socket on %s: %w", tunnelIP, err)
	}
	p := &prober{conn: c, local: tunnelIP, dev: ifi.Index, by: map[netip.Addr]*probeStats{}, mtu: mtu, mtuSize: mtuProbeSize(tunnelIP, mtu)}
	read, err := p.reader()
	if err != nil {
		c.Close()
		return nil, err
	}
	go p.read(read)
	return p, nil
}

// mtuProbeSize is the UDP payload that fills a tunnel MTU of mtu. Pure.
func mtuProbeSize(tunnelIP netip.Addr, mtu int) int {
	hdr := 40 + 8
	if tunnelIP.Is4() {
		hdr = 20 + 8
	}
	if mtu-hdr < probeLen {
		return 0
	}
	return min(mtu-hdr, maxProbe)
}

// dontFragment sets the don't-fragment flag on every datagram of c (and
// makes a datagram larger than the route's MTU fail instead of fragmenting).
func dontFragment(c *net.UDPConn, v4 bool) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if v4 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO)
		}
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set don't-fragment: %w", serr)
	}
	return nil
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
	buf := make([]byte, maxProbe+1)
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
	case probeMTUReq:
		pr.Type = probeMTUReply // echoed whole: the way back is measured too
		return pr.encode()
	case probeMTUReply:
		if pr.Seq == s.mtuSeq && pr.Size == p.mtuSize && p.mtuSize > 0 {
			s.mtuAnswered, s.mtuLastOK, s.mtuMissed = true, now, 0
		}
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
		if p.mtuSize == 0 || s.mtuTicks%mtuEvery != 0 {
			s.mtuTicks++
			continue
		}
		s.mtuTicks++
		if s.mtuSeq != 0 && !s.mtuAnswered {
			s.mtuMissed++
		}
		s.mtuSeq, s.mtuAnswered = seq, false
		b = probe{Type: probeMTUReq, Seq: seq, SentNs: now.UnixNano(), Size: p.mtuSize}.encode()
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
	// MTU is the tunnel MTU full-size probes fill (0: none sent);
	// MTULastOK when one was last answered; MTUMissed how many in a row
	// were not.
	MTU       int
	MTULastOK time.Time
	MTUMissed int
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
	r := result{RTT: s.rtt, LastReply: s.lastReply, FirstSeen: s.firstSeen, MTULastOK: s.mtuLastOK, MTUMissed: s.mtuMissed}
	if p.mtuSize > 0 {
		r.MTU = p.mtu
	}
	if sent > 0 {
		r.Loss = float64(lost) / float64(sent)
	}
	return r, true
}

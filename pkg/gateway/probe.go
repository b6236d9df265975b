package gateway

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// ProbePort is the UDP port of the health-probe echo between tunnel IPs.
const ProbePort = 51899

const (
	probeReq   = 1
	probeReply = 2
	probeLen   = 17 // type, seq, send time
	window     = 10 // probes the loss figure covers
)

// probeStats is the health of the path to one remote tunnel IP.
type probeStats struct {
	sent      [window]int64 // seq of the probes in the window
	got       [window]bool
	next      int64
	lastReply time.Time
	rtt       time.Duration
	firstSeen time.Time
}

// prober answers probes from remote gateways and sends one per second to
// each remote tunnel IP over the same socket.
type prober struct {
	conn *net.UDPConn
	mu   sync.Mutex
	by   map[netip.Addr]*probeStats
}

func newProber() (*prober, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{Port: ProbePort})
	if err != nil {
		return nil, err
	}
	p := &prober{conn: c, by: map[netip.Addr]*probeStats{}}
	go p.read()
	return p, nil
}

func (p *prober) close() { p.conn.Close() }

func (p *prober) read() {
	buf := make([]byte, 64)
	for {
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n != probeLen {
			continue
		}
		switch buf[0] {
		case probeReq:
			buf[0] = probeReply
			_, _ = p.conn.WriteToUDPAddrPort(buf[:n], from)
		case probeReply:
			seq := int64(binary.BigEndian.Uint64(buf[1:]))
			sentAt := time.Unix(0, int64(binary.BigEndian.Uint64(buf[9:])))
			p.mu.Lock()
			if s := p.by[from.Addr().Unmap()]; s != nil && s.sent[seq%window] == seq {
				s.got[seq%window] = true
				s.lastReply = time.Now()
				s.rtt = time.Since(sentAt)
			}
			p.mu.Unlock()
		}
	}
}

// tick sends one probe to each target and forgets targets no longer wanted.
func (p *prober) tick(targets []netip.Addr, now time.Time) {
	p.mu.Lock()
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
	var b [probeLen]byte
	for _, t := range targets {
		s := p.by[t]
		seq := s.next
		s.next++
		s.sent[seq%window], s.got[seq%window] = seq, false
		b[0] = probeReq
		binary.BigEndian.PutUint64(b[1:], uint64(seq))
		binary.BigEndian.PutUint64(b[9:], uint64(now.UnixNano()))
		_, _ = p.conn.WriteToUDPAddrPort(b[:], netip.AddrPortFrom(t, ProbePort))
	}
	p.mu.Unlock()
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

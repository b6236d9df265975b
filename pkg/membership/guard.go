package membership

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// guard is memberlist's network transport with the door kept: a stream or
// packet from a source Allow refuses is dropped before memberlist sees it,
// and inbound streams beyond the bounds are closed at once. Memberlist
// handles each accepted stream in a goroutine until its TCPTimeout, so
// without a bound anyone who can reach the port exhausts the member's
// memory with idle connections.
type guard struct {
	*memberlist.NetTransport
	allow         func(netip.Addr) bool
	dialer        net.Dialer // from the bound address: what the others allow
	max, maxPer   int
	streams       chan net.Conn
	packets       chan *memberlist.Packet
	done          chan struct{}
	stop          sync.Once
	mu            sync.Mutex
	open          int
	perSource     map[netip.Addr]int
	refused, shed atomic.Int64
}

func newGuard(nt *memberlist.NetTransport, bind string, allow func(netip.Addr) bool, max, maxPer int) *guard {
	if max <= 0 {
		max = DefaultMaxStreams
	}
	if maxPer <= 0 {
		maxPer = DefaultMaxStreamsPerSource
	}
	g := &guard{NetTransport: nt, allow: allow, max: max, maxPer: maxPer, streams: make(chan net.Conn),
		packets: make(chan *memberlist.Packet), done: make(chan struct{}), perSource: map[netip.Addr]int{}}
	if ip := net.ParseIP(bind); ip != nil && !ip.IsUnspecified() {
		g.dialer.LocalAddr = &net.TCPAddr{IP: ip}
	}
	go g.pumpStreams()
	go g.pumpPackets()
	return g
}

func (g *guard) StreamCh() <-chan net.Conn           { return g.streams }
func (g *guard) PacketCh() <-chan *memberlist.Packet { return g.packets }

// DialTimeout and DialAddressTimeout connect from the bound address (UDP
// already leaves from the bound socket), so the others see the source
// they allow whatever other addresses this node has.
func (g *guard) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := g.dialer
	d.Timeout = timeout
	return d.Dial("tcp", addr)
}

func (g *guard) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return g.DialTimeout(a.Addr, timeout)
}

func (g *guard) Shutdown() error {
	err := g.NetTransport.Shutdown()
	g.stop.Do(func() { close(g.done) })
	return err
}

func (g *guard) allowed(a net.Addr) (netip.Addr, bool) {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	}
	ip = ip.Unmap()
	return ip, ip.IsValid() && (g.allow == nil || g.allow(ip))
}

func (g *guard) pumpStreams() {
	for {
		var c net.Conn
		select {
		case <-g.done:
			return
		case c = <-g.NetTransport.StreamCh():
		}
		src, ok := g.allowed(c.RemoteAddr())
		if !ok {
			g.refused.Add(1)
			_ = c.Close()
			continue
		}
		g.mu.Lock()
		if g.open >= g.max || g.perSource[src] >= g.maxPer {
			g.mu.Unlock()
			g.shed.Add(1)
			_ = c.Close()
			continue
		}
		g.open++
		g.perSource[src]++
		g.mu.Unlock()
		tc := &trackedConn{Conn: c}
		tc.release = func() {
			g.mu.Lock()
			g.open--
			if g.perSource[src]--; g.perSource[src] <= 0 {
				delete(g.perSource, src)
			}
			g.mu.Unlock()
		}
		select {
		case <-g.done:
			_ = tc.Close()
			return
		case g.streams <- tc:
		}
	}
}

func (g *guard) pumpPackets() {
	for {
		var p *memberlist.Packet
		select {
		case <-g.done:
			return
		case p = <-g.NetTransport.PacketCh():
		}
		if _, ok := g.allowed(p.From); !ok {
			g.refused.Add(1)
			continue
		}
		select {
		case <-g.done:
			return
		case g.packets <- p:
		}
	}
}

// trackedConn frees its slot once, when memberlist closes it.
type trackedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

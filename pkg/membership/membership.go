// Package membership is tunnelmesh's one wrapper of hashicorp/memberlist,
// used by the cluster's gateway candidates (pkg/k8s/election, the fast
// failure detector) and by the active gateways of all clusters (pkg/gossip,
// over the tunnel addresses). It fixes what both need the same way: a
// memberlist encrypted and authenticated with SecretKey (the gateway always
// gives one), streams and packets only from allowed sources and a bound on
// the streams open at once (guard.go), a member that may come back at once
// from another port or address (DeadNodeReclaimTime), and memberlist's log
// lines routed to slog at debug level.
package membership

import (
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Profile is the timing a memberlist runs with.
type Profile struct {
	ProbeInterval, ProbeTimeout time.Duration
	SuspicionMult               int
	SuspicionMaxTimeoutMult     int
	GossipInterval              time.Duration
	PushPullInterval            time.Duration
	TCPTimeout                  time.Duration // 0: memberlist's
}

// Config of a memberlist.
type Config struct {
	// Name is this member's name (a node name, a cluster ID).
	Name string
	// BindAddr and BindPort are where it listens (TCP and UDP); BindPort 0
	// picks a free port (tests). AdvertiseAddr is what the others reach it
	// at; empty: memberlist's choice (BindAddr unless that is 0.0.0.0).
	BindAddr      string
	BindPort      int
	AdvertiseAddr string
	// SecretKey (16, 24 or 32 bytes) encrypts and authenticates every
	// message; nil only in tests.
	SecretKey []byte
	// WAN starts from memberlist's WAN defaults instead of its LAN ones.
	WAN     bool
	Profile Profile
	// Meta returns this member's metadata (at most limit bytes).
	Meta func(limit int) []byte
	// Events and Alive, when set, are told of members and may refuse alive messages.
	Events memberlist.EventDelegate
	Alive  memberlist.AliveDelegate
	// Allow says whether a source address may talk to this member (nil:
	// any); MaxStreams and MaxStreamsPerSource bound the inbound streams
	// open at once (0: the defaults).
	Allow                           func(netip.Addr) bool
	MaxStreams, MaxStreamsPerSource int
	Log                             *slog.Logger
}

// Start creates the memberlist.
func Start(cfg Config) (*memberlist.Memberlist, error) {
	if cfg.Name == "" {
		return nil, errors.New("membership: Name is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	c := memberlist.DefaultLANConfig()
	if cfg.WAN {
		c = memberlist.DefaultWANConfig()
	}
	c.Name = cfg.Name
	c.BindAddr, c.BindPort = cfg.BindAddr, cfg.BindPort
	c.AdvertiseAddr, c.AdvertisePort = cfg.AdvertiseAddr, cfg.BindPort
	p := cfg.Profile
	c.ProbeInterval, c.ProbeTimeout = p.ProbeInterval, p.ProbeTimeout
	c.SuspicionMult, c.SuspicionMaxTimeoutMult = p.SuspicionMult, p.SuspicionMaxTimeoutMult
	c.GossipInterval, c.PushPullInterval = p.GossipInterval, p.PushPullInterval
	if p.TCPTimeout > 0 {
		c.TCPTimeout = p.TCPTimeout
	}
	// A restarted member keeps its name and may come back on another port
	// or (a new active gateway) from another address.
	c.DeadNodeReclaimTime = time.Millisecond
	c.SecretKey = cfg.SecretKey
	c.Delegate = delegate{cfg.Meta}
	c.Events = cfg.Events
	c.Alive = cfg.Alive
	c.Logger = log.New(slogWriter{cfg.Log}, "", 0)
	c.LogOutput = nil
	where := net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.BindPort))
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{cfg.BindAddr}, BindPort: cfg.BindPort, Logger: c.Logger})
	if err != nil {
		return nil, fmt.Errorf("start memberlist %s on %s: %w", cfg.Name, where, err)
	}
	if c.BindPort == 0 {
		c.BindPort = nt.GetAutoBindPort()
		c.AdvertisePort = c.BindPort
	}
	g := newGuard(nt, cfg.BindAddr, cfg.Allow, cfg.MaxStreams, cfg.MaxStreamsPerSource)
	c.Transport = g
	ml, err := memberlist.Create(c)
	if err != nil {
		_ = g.Shutdown()
		return nil, fmt.Errorf("start memberlist %s on %s: %w", cfg.Name, where, err)
	}
	return ml, nil
}

// Addr is host:port of n.
func Addr(n *memberlist.Node) string {
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// delegate gives memberlist the member's metadata; nothing else is carried.
type delegate struct{ meta func(int) []byte }

func (d delegate) NodeMeta(limit int) []byte {
	if d.meta == nil {
		return nil
	}
	b := d.meta(limit)
	if len(b) > limit {
		return nil
	}
	return b
}
func (delegate) NotifyMsg([]byte)                           {}
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}

// slogWriter routes memberlist's log.Logger lines to slog at debug level.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	w.l.Debug(string(p), "component", "memberlist")
	return n, nil
}

var _ io.Writer = slogWriter{}

// Bounds of inbound streams when Config leaves them zero.
const (
	DefaultMaxStreams          = 64
	DefaultMaxStreamsPerSource = 8
)

// Sources is a set of source addresses allowed to talk to a member,
// replaced as a whole; safe for concurrent use. The zero value allows none.
type Sources struct {
	set atomic.Pointer[map[netip.Addr]bool]
}

// Set replaces the allowed addresses.
func (s *Sources) Set(addrs []netip.Addr) {
	m := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		m[a.Unmap()] = true
	}
	s.set.Store(&m)
}

// Allow reports whether a is allowed.
func (s *Sources) Allow(a netip.Addr) bool {
	m := s.set.Load()
	return m != nil && (*m)[a.Unmap()]
}

package election

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// GossipConfig tunes the memberlist of the cluster's candidates.
type GossipConfig struct {
	// BindAddr and BindPort are where memberlist listens (TCP and UDP);
	// BindPort 0 picks a free port (tests).
	BindAddr string
	BindPort int
	// AdvertiseAddr is the address the others reach this candidate at
	// (the node's InternalIP); empty means BindAddr.
	AdvertiseAddr string
	// Peers returns the addresses (host:port) of the other candidates. It is
	// called at start and then every RejoinInterval while some are missing.
	Peers func(ctx context.Context) ([]string, error)
	// SecretKey (16, 24 or 32 bytes) encrypts and authenticates gossip so that
	// nobody else on the node network can declare the holder dead.
	SecretKey []byte
	// ProbeInterval, ProbeTimeout and SuspicionMult set how fast a dead
	// candidate is declared: about ProbeInterval + SuspicionMult*ProbeInterval.
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	SuspicionMult  int
	RejoinInterval time.Duration
}

func (g *GossipConfig) defaults() {
	if g.BindAddr == "" {
		g.BindAddr = "0.0.0.0"
	}
	if g.ProbeInterval == 0 {
		g.ProbeInterval = 200 * time.Millisecond
	}
	if g.ProbeTimeout == 0 {
		g.ProbeTimeout = 100 * time.Millisecond
	}
	if g.SuspicionMult == 0 {
		g.SuspicionMult = 4
	}
	if g.RejoinInterval == 0 {
		g.RejoinInterval = 2 * time.Second
	}
}

// minDetection is the quickest a crashed member can be declared dead: one
// probe timeout then the suspicion timeout (which SuspicionMaxTimeoutMult=1
// keeps from growing in a small cluster with no confirmations).
func (g *GossipConfig) minDetection() time.Duration {
	return g.ProbeTimeout + time.Duration(g.SuspicionMult)*g.ProbeInterval
}

// members tracks which candidates memberlist has seen alive and which it has
// since declared dead or departed.
type members struct {
	ml      *memberlist.Memberlist
	changed chan struct{} // poked on every join/leave
	mu      sync.Mutex
	state   map[string]bool      // name -> alive; present only once seen alive
	deadAt  map[string]time.Time // when memberlist last declared it dead or gone
}

type eventDelegate struct{ m *members }

func (d eventDelegate) NotifyJoin(n *memberlist.Node)   { d.m.set(n.Name, true) }
func (d eventDelegate) NotifyLeave(n *memberlist.Node)  { d.m.set(n.Name, false) }
func (d eventDelegate) NotifyUpdate(n *memberlist.Node) {}

func (m *members) set(name string, alive bool) {
	m.mu.Lock()
	m.state[name] = alive
	if !alive {
		m.deadAt[name] = time.Now()
	}
	m.mu.Unlock()
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// deadSince reports whether name was seen alive and has since been declared
// dead or has left, and when. A member never seen is not dead: memberlist may
// not have joined yet, and only the Lease's expiry may then decide.
func (m *members) deadSince(name string) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	alive, seen := m.state[name]
	if !seen || alive {
		return time.Time{}, false
	}
	return m.deadAt[name], true
}

func (m *members) alive() map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]bool{}
	for n, a := range m.state {
		if a {
			out[n] = true
		}
	}
	return out
}

func startMembers(name string, g GossipConfig, logger *slog.Logger) (*members, error) {
	m := &members{changed: make(chan struct{}, 1), state: map[string]bool{}, deadAt: map[string]time.Time{}}
	c := memberlist.DefaultLANConfig()
	c.Name = name
	c.BindAddr = g.BindAddr
	c.BindPort = g.BindPort
	c.AdvertiseAddr = g.AdvertiseAddr
	c.AdvertisePort = g.BindPort
	c.ProbeInterval = g.ProbeInterval
	c.ProbeTimeout = g.ProbeTimeout
	c.SuspicionMult = g.SuspicionMult
	c.SuspicionMaxTimeoutMult = 1
	c.GossipInterval = 50 * time.Millisecond
	c.TCPTimeout = 2 * time.Second
	c.PushPullInterval = 5 * time.Second
	// A restarted candidate keeps its name and may come back on another port.
	c.DeadNodeReclaimTime = time.Millisecond
	c.SecretKey = g.SecretKey
	c.Events = eventDelegate{m}
	c.Logger = log.New(slogWriter{logger}, "", 0)
	c.LogOutput = nil
	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("start memberlist of gateway candidates on %s: %w", net.JoinHostPort(g.BindAddr, strconv.Itoa(g.BindPort)), err)
	}
	m.ml = ml
	return m, nil
}

// join contacts the peers not yet alive; errors only mean they are not up yet.
func (m *members) join(ctx context.Context, name string, peers func(context.Context) ([]string, error), logger *slog.Logger) {
	if peers == nil {
		return
	}
	addrs, err := peers(ctx)
	if err != nil {
		logger.Warn("list gateway candidates", "err", err)
		return
	}
	self := m.ml.LocalNode().Address()
	var todo []string
	known := map[string]bool{}
	for _, n := range m.ml.Members() {
		known[n.Address()] = true
	}
	for _, a := range addrs {
		if a != self && !known[a] {
			todo = append(todo, a)
		}
	}
	if len(todo) == 0 {
		return
	}
	if _, err := m.ml.Join(todo); err != nil {
		logger.Debug("join gateway candidates", "node", name, "peers", todo, "err", err)
	}
}

// slogWriter routes memberlist's log.Logger lines to slog at debug level.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug(string(trimNL(p)), "component", "memberlist")
	return len(p), nil
}

func trimNL(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}

var _ io.Writer = slogWriter{}

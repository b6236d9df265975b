package election

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/tunnelmesh/tunnelmesh/pkg/membership"
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
// since declared dead or departed, what each says of itself (its metadata:
// active or not, whether it reaches the apiserver) and when each last
// answered a direct ping.
type members struct {
	ml      *memberlist.Memberlist
	name    string
	changed chan struct{} // poked on every join/leave/update
	metas   chan selfMeta // latest own metadata to announce
	mu      sync.Mutex
	state   map[string]bool      // name -> alive; present only once seen alive
	deadAt  map[string]time.Time // when memberlist last declared it dead or gone
	self    selfMeta
	said    map[string]selfMeta  // what the others announce
	apiFrom map[string]time.Time // since when (local clock) another says it reaches the apiserver
	acked   map[string]time.Time // last answered ping
	joined  map[string]time.Time // when last seen joining (alive again)
	// sources are the candidates' addresses (the last Peers listing): the
	// only ones memberlist accepts streams and packets from.
	sources   membership.Sources
	peers     func(context.Context) ([]string, error)
	relisting atomic.Int64 // unix ns of the last listing a refusal started
}

// selfMeta is a candidate's memberlist metadata.
type selfMeta struct {
	Active bool  `json:"active,omitempty"`
	Epoch  int64 `json:"epoch,omitempty"`
	// API: its Lease watch is open (it reaches the apiserver).
	API bool `json:"api,omitempty"`
}

type eventDelegate struct{ m *members }

func (d eventDelegate) NotifyJoin(n *memberlist.Node)   { d.m.heard(n); d.m.set(n.Name, true) }
func (d eventDelegate) NotifyLeave(n *memberlist.Node)  { d.m.set(n.Name, false) }
func (d eventDelegate) NotifyUpdate(n *memberlist.Node) { d.m.heard(n); d.m.poke() }

// meta is this candidate's metadata for memberlist.
func (m *members) meta(limit int) []byte {
	m.mu.Lock()
	b, _ := json.Marshal(m.self)
	m.mu.Unlock()
	return b
}

// heard records what another candidate announces.
func (m *members) heard(n *memberlist.Node) {
	if n.Name == m.name {
		return
	}
	var sm selfMeta
	_ = json.Unmarshal(n.Meta, &sm) // empty or foreign metadata: claims nothing
	m.mu.Lock()
	defer m.mu.Unlock()
	if sm.API && !m.said[n.Name].API {
		m.apiFrom[n.Name] = time.Now()
	}
	m.said[n.Name] = sm
}

func (m *members) poke() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// announce sets this candidate's metadata; it is spread in the background.
func (m *members) announce(sm selfMeta) {
	m.mu.Lock()
	if m.self == sm {
		m.mu.Unlock()
		return
	}
	m.self = sm
	m.mu.Unlock()
	select {
	case <-m.metas:
	default:
	}
	m.metas <- sm
}

// spread pushes metadata changes to the others until ctx ends (UpdateNode
// waits for the broadcast, so it stays off the election's loop).
func (m *members) spread(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.metas:
			_ = m.ml.UpdateNode(time.Second)
		}
	}
}

// pingLoop pings every other live candidate directly every interval and
// records the answers: fresh two-way contact is what lets a holder that
// cannot reach the apiserver keep its role (holdable).
func (m *members) pingLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, n := range m.ml.Members() {
			if n.Name == m.name {
				continue
			}
			go func(name string, addr net.Addr) {
				sent := time.Now() // the answer proves contact after this
				if _, err := m.ml.Ping(name, addr); err == nil {
					m.mu.Lock()
					if sent.After(m.acked[name]) {
						m.acked[name] = sent
					}
					m.mu.Unlock()
				}
			}(n.Name, &net.UDPAddr{IP: n.Addr, Port: int(n.Port)})
		}
	}
}

// holdable says whether a holder that cannot reach the apiserver, and has
// not renewed for silent, may keep its role at now: every labelled
// candidate has been seen, and every other candidate ever seen is alive and answered a ping within fresh, none claims to be
// active, and none reaches the apiserver — judged once silent exceeds twice
// fresh (the others needed fresh to notice the silence and a moment to say
// so), and only if it has been saying so for longer than fresh (the holder
// had time to renew too: the apiserver may just have come back). Otherwise
// it says why not.
func (m *members) holdable(now time.Time, fresh, silent time.Duration, labelled []string) (bool, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, name := range labelled {
		if _, seen := m.state[name]; !seen && name != m.name {
			return false, fmt.Sprintf("labelled candidate %q was never seen in memberlist (gossip blocked, or another gossip key?)", name)
		}
	}
	for name, alive := range m.state {
		switch sm := m.said[name]; {
		case name == m.name:
		case !alive:
			return false, fmt.Sprintf("candidate %q is gone from memberlist", name)
		case now.Sub(m.acked[name]) > fresh:
			return false, fmt.Sprintf("candidate %q has not answered a ping for %v", name, now.Sub(m.acked[name]).Round(time.Millisecond))
		case sm.Active:
			return false, fmt.Sprintf("candidate %q claims to be active at epoch %d", name, sm.Epoch)
		case sm.API && silent > 2*fresh && now.Sub(m.apiFrom[name]) > fresh:
			return false, fmt.Sprintf("candidate %q reaches the apiserver", name)
		}
	}
	return true, ""
}

// contactBound is until when no other candidate can have declared this
// one dead: fresh after the last contact with each other candidate that
// could (see Elector.actUntil), the earliest of them; bounded is false
// when none could, and name is the one that sets the bound.
//   - One alive and never declared dead during the tenure (begun at since):
//     its last answer to a ping, or its (re)join — a candidate that meets
//     this one alive needs a whole death verdict of silence after that.
//   - One declared dead during the tenure may hold this one dead too, even
//     after it came back, until this one's refutation has reached it: only
//     answers to pings sent fresh after its return count.
//   - One gone since before the tenure, or never seen, sets no bound.
func (m *members) contactBound(since time.Time, fresh time.Duration) (until time.Time, name string, bounded bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for n, alive := range m.state {
		if n == m.name {
			continue
		}
		gone, seenDead := m.deadAt[n]
		duringTenure := seenDead && !gone.Before(since)
		if !alive && !duringTenure {
			continue
		}
		var c time.Time
		switch {
		case !duringTenure:
			c = m.acked[n]
			if m.joined[n].After(c) {
				c = m.joined[n]
			}
		case !alive:
			c = m.acked[n]
		case !m.acked[n].Before(m.joined[n].Add(fresh)):
			c = m.acked[n]
		}
		if b := c.Add(fresh); !bounded || b.Before(until) {
			until, name, bounded = b, n, true
		}
	}
	return until, name, bounded
}

// activeClaim returns the live candidate other than except that announces
// itself active at the highest epoch.
func (m *members) activeClaim(except string) (name string, epoch int64, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for n, sm := range m.said {
		if n != except && m.state[n] && sm.Active && (!ok || sm.Epoch > epoch) {
			name, epoch, ok = n, sm.Epoch, true
		}
	}
	return name, epoch, ok
}

// claimsActive reports whether name is alive and announces itself active.
func (m *members) claimsActive(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state[name] && m.said[name].Active
}

func (m *members) set(name string, alive bool) {
	m.mu.Lock()
	if alive && !m.state[name] {
		m.joined[name] = time.Now()
	}
	m.state[name] = alive
	if !alive {
		m.deadAt[name] = time.Now()
		delete(m.said, name)
		delete(m.apiFrom, name)
	}
	m.mu.Unlock()
	m.poke()
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
	m := &members{name: name, peers: g.Peers, changed: make(chan struct{}, 1), metas: make(chan selfMeta, 1), state: map[string]bool{},
		deadAt: map[string]time.Time{}, said: map[string]selfMeta{}, apiFrom: map[string]time.Time{}, acked: map[string]time.Time{},
		joined: map[string]time.Time{}}
	ml, err := membership.Start(membership.Config{
		Name: name, BindAddr: g.BindAddr, BindPort: g.BindPort, AdvertiseAddr: g.AdvertiseAddr, SecretKey: g.SecretKey,
		Profile: membership.Profile{ProbeInterval: g.ProbeInterval, ProbeTimeout: g.ProbeTimeout, SuspicionMult: g.SuspicionMult,
			SuspicionMaxTimeoutMult: 1, GossipInterval: 50 * time.Millisecond, PushPullInterval: 5 * time.Second, TCPTimeout: 2 * time.Second},
		Meta: m.meta, Events: eventDelegate{m}, Allow: m.allow, Log: logger,
	})
	if err != nil {
		return nil, fmt.Errorf("gateway candidates: %w", err)
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
	m.sources.Set(hosts(addrs))
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

// hosts are the addresses of host:port strings (those that parse).
func hosts(addrs []string) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if ap, err := netip.ParseAddrPort(a); err == nil {
			out = append(out, ap.Addr())
		}
	}
	return out
}

// allow lets the candidates' addresses in. A refused source makes the
// candidates be listed again (at most once a second), so a new candidate
// is let in at once rather than at the next rejoin.
func (m *members) allow(a netip.Addr) bool {
	if m.sources.Allow(a) {
		return true
	}
	now := time.Now().UnixNano()
	if last := m.relisting.Load(); m.peers != nil && now-last > int64(time.Second) && m.relisting.CompareAndSwap(last, now) {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if addrs, err := m.peers(ctx); err == nil {
				m.sources.Set(hosts(addrs))
			}
		}()
	}
	return false
}

// Package gossip joins the active gateways of all clusters into one
// hashicorp/memberlist cluster over their tunnel addresses, so that each
// knows every other cluster's current active gateway (node, endpoint, key,
// epoch) without the broker: after a failover the new active gateway holds
// its cluster's tunnel address and announces itself here, and remote
// gateways learn of it even while the broker is down.
//
// A member's name is its cluster ID; its metadata is the Gateway below. The
// epoch fences: an alive message for a cluster with an epoch lower than the
// highest seen for that cluster is refused, so a partitioned old active
// cannot take its cluster's entry back.
package gossip

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/tunnelmesh/tunnelmesh/pkg/membership"
)

// DefaultPort is the gateways' memberlist port on their tunnel addresses.
const DefaultPort = 7948

// Gateway is what an active gateway announces of itself.
type Gateway struct {
	ClusterID string `json:"-"` // the member name
	Epoch     int64  `json:"epoch"`
	Hostname  string `json:"hostname"`
	Endpoint  string `json:"endpoint"` // host:port of its WireGuard socket
	PublicKey string `json:"publicKey"`
}

// Remote is what this gateway knows of another cluster's active gateway.
type Remote struct {
	Gateway
	Addr  string // memberlist address (the cluster's tunnel address)
	Alive bool   // false: last known, memberlist says it is gone for now
	Since time.Time
}

// Config of a Mesh.
type Config struct {
	Self Gateway
	// BindAddr is the cluster's tunnel address; BindPort 0 picks a port (tests).
	BindAddr string
	BindPort int
	// SecretKey (16, 24 or 32 bytes) authenticates and encrypts gossip.
	SecretKey []byte
	// ProbeInterval defaults to 1 s: across clusters the WireGuard tunnel
	// carries the probes, and a dead remote is not urgent (its successor
	// announces itself).
	ProbeInterval time.Duration
	// Allow says which source addresses may talk to this member: the other
	// clusters' tunnel addresses (nil: any, tests).
	Allow  func(netip.Addr) bool
	Logger *slog.Logger
}

// Mesh is this gateway's membership in the cross-cluster memberlist.
type Mesh struct {
	ml      *memberlist.Memberlist
	name    string // our cluster ID (usable before ml is set)
	log     *slog.Logger
	changes chan struct{}

	mu       sync.Mutex
	self     Gateway
	remotes  map[string]Remote
	maxEpoch map[string]int64
}

// Start creates the memberlist (Join adds peers).
func Start(cfg Config) (*Mesh, error) {
	if cfg.Self.ClusterID == "" {
		return nil, errors.New("gossip: Self.ClusterID is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Mesh{name: cfg.Self.ClusterID, log: cfg.Logger, changes: make(chan struct{}, 1), self: cfg.Self,
		remotes: map[string]Remote{}, maxEpoch: map[string]int64{cfg.Self.ClusterID: cfg.Self.Epoch}}
	if _, err := m.meta(cfg.Self); err != nil {
		return nil, err
	}
	probe := cmpOr(cfg.ProbeInterval, time.Second)
	ml, err := membership.Start(membership.Config{
		Name: cfg.Self.ClusterID, BindAddr: cfg.BindAddr, BindPort: cfg.BindPort, AdvertiseAddr: cfg.BindAddr,
		SecretKey: cfg.SecretKey, WAN: true,
		Profile: membership.Profile{ProbeInterval: probe, ProbeTimeout: probe / 2, SuspicionMult: 3, SuspicionMaxTimeoutMult: 2,
			GossipInterval: 100 * time.Millisecond, PushPullInterval: 10 * time.Second},
		Meta: m.nodeMeta, Events: events{m}, Alive: alive{m}, Allow: cfg.Allow, Log: cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	m.ml = ml
	return m, nil
}

// Addr is this member's host:port.
func (m *Mesh) Addr() string {
	n := m.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Join contacts other clusters' gateways (their tunnel address:port, from
// the last broker state seen); it succeeds if any answers.
func (m *Mesh) Join(addrs []string) (int, error) {
	n, err := m.ml.Join(addrs)
	if err != nil && n == 0 {
		return 0, fmt.Errorf("gossip: join %v: %w", addrs, err)
	}
	return n, nil
}

// Rejoin contacts, every interval until ctx ends, the addresses peers
// returns (e.g. the remote tunnel addresses of the last broker state) that
// memberlist does not see alive: after a partition heals or a remote
// gateway restarts, the mesh joins up again without the broker.
func (m *Mesh) Rejoin(ctx context.Context, interval time.Duration, peers func() []string) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		alive := map[string]bool{}
		for _, n := range m.ml.Members() {
			alive[net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))] = true
		}
		var todo []string
		for _, a := range peers() {
			if !alive[a] && a != m.Addr() {
				todo = append(todo, a)
			}
		}
		if len(todo) > 0 {
			if _, err := m.ml.Join(todo); err != nil {
				m.log.Debug("gossip: rejoin", "peers", todo, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Update announces a new self (new epoch after a failover, new endpoint).
func (m *Mesh) Update(self Gateway) error {
	m.mu.Lock()
	if self.ClusterID != m.self.ClusterID {
		m.mu.Unlock()
		return fmt.Errorf("gossip: cluster ID is %q, cannot become %q", m.self.ClusterID, self.ClusterID)
	}
	if self.Epoch < m.maxEpoch[self.ClusterID] {
		cur := m.maxEpoch[self.ClusterID]
		m.mu.Unlock()
		return fmt.Errorf("gossip: epoch %d is older than %d already announced for cluster %q", self.Epoch, cur, self.ClusterID)
	}
	m.self, m.maxEpoch[self.ClusterID] = self, self.Epoch
	m.mu.Unlock()
	return m.ml.UpdateNode(5 * time.Second)
}

// Remotes returns the other clusters' active gateways, alive or last known.
func (m *Mesh) Remotes() map[string]Remote {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Remote, len(m.remotes))
	for k, v := range m.remotes {
		out[k] = v
	}
	return out
}

// Changes is poked (coalesced) whenever Remotes changes.
func (m *Mesh) Changes() <-chan struct{} { return m.changes }

// Leave says goodbye (a graceful stop) and closes.
func (m *Mesh) Leave(timeout time.Duration) error {
	err := m.ml.Leave(timeout)
	if serr := m.ml.Shutdown(); err == nil {
		err = serr
	}
	return err
}

// Close stops without a goodbye (the others notice by probing).
func (m *Mesh) Close() error { return m.ml.Shutdown() }

func (m *Mesh) meta(g Gateway) ([]byte, error) {
	b, err := json.Marshal(g)
	if err != nil {
		return nil, err
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("gossip: metadata of %d bytes exceeds memberlist's %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

func decode(n *memberlist.Node) (Gateway, error) {
	var g Gateway
	if err := json.Unmarshal(n.Meta, &g); err != nil {
		return g, fmt.Errorf("metadata of %s: %w", n.Name, err)
	}
	g.ClusterID = n.Name
	return g, nil
}

func (m *Mesh) record(n *memberlist.Node, aliveNow bool) {
	if n.Name == m.name {
		return
	}
	m.mu.Lock()
	prev, known := m.remotes[n.Name]
	r := prev
	addr := net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	g, err := decode(n)
	switch {
	case err == nil && (!known || g.Epoch >= prev.Epoch):
		r.Gateway, r.Addr = g, addr
	case aliveNow || addr != r.Addr:
		// News of an older tenure (or of an address the entry no longer
		// points at): it says nothing about the current active.
		m.mu.Unlock()
		return
	}
	r.Alive = aliveNow
	if r != prev || !known {
		r.Since = time.Now()
		m.remotes[n.Name] = r
		m.mu.Unlock()
		select {
		case m.changes <- struct{}{}:
		default:
		}
		return
	}
	m.mu.Unlock()
}

// nodeMeta is our metadata for memberlist.
func (m *Mesh) nodeMeta(limit int) []byte {
	m.mu.Lock()
	self := m.self
	m.mu.Unlock()
	b, err := m.meta(self)
	if err != nil || len(b) > limit {
		m.log.Error("gossip: metadata too large", "err", err, "limit", limit)
		return nil
	}
	return b
}

type events struct{ m *Mesh }

func (e events) NotifyJoin(n *memberlist.Node)   { e.m.record(n, true) }
func (e events) NotifyUpdate(n *memberlist.Node) { e.m.record(n, true) }
func (e events) NotifyLeave(n *memberlist.Node)  { e.m.record(n, false) }

// alive refuses announcements of a cluster at an epoch older than the newest
// seen: the old active of a failed-over cluster cannot come back as current.
type alive struct{ m *Mesh }

func (a alive) NotifyAlive(n *memberlist.Node) error {
	if n.Name == a.m.name {
		return nil // our own name: memberlist refutes on its own
	}
	g, err := decode(n)
	if err != nil {
		return err
	}
	a.m.mu.Lock()
	defer a.m.mu.Unlock()
	if maxEp := a.m.maxEpoch[n.Name]; g.Epoch < maxEp {
		return fmt.Errorf("cluster %s announced at epoch %d, older than epoch %d already seen", n.Name, g.Epoch, maxEp)
	}
	a.m.maxEpoch[n.Name] = g.Epoch
	return nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Package gossip joins the active gateways of all clusters into one
// hashicorp/memberlist cluster over their tunnel addresses, so that each
// knows every other cluster's current active gateway (node, endpoint,
// epoch) without the broker: after a failover the new active gateway holds
// its cluster's tunnel address and announces itself here, and remote
// gateways learn of it even while the broker is down.
//
// # What gossip may say, and who may say it
//
// Every member holds the clusterset's gossip key, so the key only keeps
// outsiders out; it says nothing about which cluster a message speaks for.
// The broker is the one authority for who a cluster is, and gossip may only
// carry what the broker would accept from that cluster:
//
//   - An announcement is signed with its cluster's WireGuard key (XEdDSA,
//     sign.go) over (cluster, epoch, hostname, endpoint), and checked against
//     the WireGuard public keys the broker's records give that cluster's
//     gateways (Trust). A member naming another cluster cannot sign for it:
//     its announcement is refused before memberlist takes it (NotifyAlive).
//     No broker change was needed: the key that authenticates a cluster's
//     gossip is the one the cluster registered with its own credential.
//     (A per-cluster signing key stored at join, or broker-signed grants,
//     would have needed a new record field and a step at every join; a
//     grant for a new epoch cannot be signed while the broker is down,
//     which is exactly when gossip matters.)
//   - A gossiped record never carries or changes a WireGuard key: the
//     overlay keeps the broker's key and takes only the endpoint and epoch.
//   - A gossiped epoch is bounded: at most MaxEpochLead above the newest
//     epoch the broker's records give the cluster, so even a cluster's own
//     key cannot put its entry out of the broker's reach for good.
//   - The epoch fence (refusing an older epoch than the newest seen, so a
//     partitioned old active cannot take its cluster's entry back) moves
//     only on state memberlist accepted (NotifyJoin/NotifyUpdate), never on
//     a message it may still reject (an address conflict).
//   - Gossip is learned, not said by the broker: the gateway keeps it apart
//     from the broker's snapshot wherever it is stored (gateway.Source's
//     StoredView) and verifies it again against the broker's records each
//     time it is laid over them (Overlay); the state file holds the
//     broker's snapshot only.
//
// What a member holding the gossip key can still do: announce its own
// cluster (it can already do so through the broker), replay another
// cluster's genuine announcement (an epoch the fence already has, or one
// the broker's records outrank), and take part in failure detection.
//
// A member's name is its cluster ID; its metadata is the signed Gateway.
package gossip

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/tunnelmesh/tunnelmesh/pkg/membership"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// DefaultPort is the gateways' memberlist port on their tunnel addresses.
const DefaultPort = 7948

// Gateway is what an active gateway announces of itself.
type Gateway struct {
	ClusterID string `json:"-"` // the member name
	Epoch     int64  `json:"epoch"`
	Hostname  string `json:"hostname"`
	Endpoint  string `json:"endpoint"` // host:port of its WireGuard socket
	// PublicKey is, on a Remote, the broker's WireGuard key of the cluster
	// that verified the announcement; it is never sent.
	PublicKey string `json:"-"`
	// Sig signs payload() with the cluster's WireGuard key.
	Sig []byte `json:"sig,omitempty"`
}

// payload is what Sig signs: every field that is used, with the cluster.
func (g Gateway) payload() []byte {
	b, _ := json.Marshal([]any{"tunnelmesh-gossip/1", g.ClusterID, g.Epoch, g.Hostname, g.Endpoint})
	return b
}

// Remote is what this gateway knows of another cluster's active gateway.
type Remote struct {
	Gateway
	Addr  string    `json:"addr"`  // memberlist address (the cluster's tunnel address)
	Alive bool      `json:"alive"` // false: last known, memberlist says it is gone for now
	Since time.Time `json:"since"`
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
	Allow func(netip.Addr) bool
	// Key is this cluster's WireGuard private key: it signs Self.
	Key wgtypes.Key
	// Trust gives what the broker last said of a cluster (nil or not ok:
	// every announcement of it is refused).
	Trust  func(cluster string) (Trust, bool)
	Logger *slog.Logger
}

// Mesh is this gateway's membership in the cross-cluster memberlist.
type Mesh struct {
	ml      *memberlist.Memberlist
	name    string // our cluster ID (usable before ml is set)
	key     wgtypes.Key
	trust   func(string) (Trust, bool)
	log     *slog.Logger
	changes chan struct{}

	mu       sync.Mutex
	self     Gateway
	selfMeta []byte // self, signed
	remotes  map[string]Remote
	maxEpoch map[string]int64 // fences: moved only on accepted state
}

// Start creates the memberlist (Join adds peers).
func Start(cfg Config) (*Mesh, error) {
	if cfg.Self.ClusterID == "" {
		return nil, errors.New("gossip: Self.ClusterID is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Mesh{name: cfg.Self.ClusterID, key: cfg.Key, trust: cfg.Trust, log: cfg.Logger, changes: make(chan struct{}, 1),
		remotes: map[string]Remote{}, maxEpoch: map[string]int64{cfg.Self.ClusterID: cfg.Self.Epoch}}
	if err := m.setSelf(cfg.Self); err != nil {
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
	m.mu.Unlock()
	if err := m.setSelf(self); err != nil {
		return err
	}
	m.mu.Lock()
	m.maxEpoch[self.ClusterID] = self.Epoch
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

// Sign returns g signed with its cluster's WireGuard private key k.
func Sign(k wgtypes.Key, g Gateway) (Gateway, error) {
	sig, err := sign(k, g.payload())
	if err != nil {
		return g, fmt.Errorf("gossip: sign the announcement: %w", err)
	}
	g.Sig = sig
	return g, nil
}

// setSelf signs self and keeps it as this member's metadata.
func (m *Mesh) setSelf(self Gateway) error {
	self, err := Sign(m.key, self)
	if err != nil {
		return err
	}
	b, err := json.Marshal(self)
	if err != nil {
		return err
	}
	if len(b) > memberlist.MetaMaxSize {
		return fmt.Errorf("gossip: metadata of %d bytes exceeds memberlist's %d", len(b), memberlist.MetaMaxSize)
	}
	m.mu.Lock()
	m.self, m.selfMeta = self, b
	m.mu.Unlock()
	return nil
}

func decode(n *memberlist.Node) (Gateway, error) {
	var g Gateway
	if err := json.Unmarshal(n.Meta, &g); err != nil {
		return g, fmt.Errorf("metadata of %s: %w", n.Name, err)
	}
	g.ClusterID = n.Name
	return g, nil
}

// check verifies an announcement against what the broker said of its cluster.
func (m *Mesh) check(g Gateway) (wgtypes.Key, error) {
	if m.trust == nil {
		return wgtypes.Key{}, fmt.Errorf("cluster %s: no broker state to check its announcement against", g.ClusterID)
	}
	t, ok := m.trust(g.ClusterID)
	if !ok {
		return wgtypes.Key{}, fmt.Errorf("cluster %s: the broker lists no gateway key for it", g.ClusterID)
	}
	return t.Check(g)
}

// record takes state memberlist accepted: a member joined or updated
// (aliveNow), or left. Only here do fences move.
func (m *Mesh) record(n *memberlist.Node, aliveNow bool) {
	if n.Name == m.name {
		return
	}
	g, err := decode(n)
	var key wgtypes.Key
	if err == nil && aliveNow {
		// NotifyAlive checked it; the broker's records may have changed since.
		key, err = m.check(g)
	}
	m.mu.Lock()
	prev, known := m.remotes[n.Name]
	r := prev
	addr := net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	switch {
	case err == nil && aliveNow && g.Epoch >= m.maxEpoch[n.Name]:
		g.PublicKey = key.String()
		r.Gateway, r.Addr = g, addr
		m.maxEpoch[n.Name] = g.Epoch
	case aliveNow || addr != r.Addr || !known:
		// Not verifiable, older than the fence, or news of an address the
		// entry no longer points at: it says nothing about the current active.
		m.mu.Unlock()
		return
	}
	r.Alive = aliveNow
	if !reflect.DeepEqual(r, prev) || !known {
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

// nodeMeta is our signed metadata for memberlist.
func (m *Mesh) nodeMeta(limit int) []byte {
	m.mu.Lock()
	b := m.selfMeta
	m.mu.Unlock()
	if len(b) > limit {
		m.log.Error("gossip: metadata too large", "size", len(b), "limit", limit)
		return nil
	}
	return b
}

type events struct{ m *Mesh }

func (e events) NotifyJoin(n *memberlist.Node)   { e.m.record(n, true) }
func (e events) NotifyUpdate(n *memberlist.Node) { e.m.record(n, true) }
func (e events) NotifyLeave(n *memberlist.Node)  { e.m.record(n, false) }

// alive refuses, before memberlist takes it, an announcement that is not
// signed by its cluster's key as the broker knows it, whose epoch is out of
// the broker's bound, or older than the fence: the old active of a
// failed-over cluster cannot come back as current, and no member can speak
// for another cluster. It moves no fence (memberlist may still refuse).
type alive struct{ m *Mesh }

func (a alive) NotifyAlive(n *memberlist.Node) error {
	if n.Name == a.m.name {
		return nil // our own name: memberlist refutes on its own
	}
	g, err := decode(n)
	if err != nil {
		return err
	}
	if _, err := a.m.check(g); err != nil {
		return err
	}
	a.m.mu.Lock()
	defer a.m.mu.Unlock()
	if maxEp := a.m.maxEpoch[n.Name]; g.Epoch < maxEp {
		return fmt.Errorf("cluster %s announced at epoch %d, older than epoch %d already seen", n.Name, g.Epoch, maxEp)
	}
	return nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Config configures an Engine.
type Config struct {
	Local      Local
	Hostname   string
	PrivateKey wgtypes.Key
	ListenPort int
	PublicIP   string
	PrivateIP  string
	MTU        int
	Mode       wg.Mode
	// Role and Epoch are the starting role; SetRole changes them.
	Role              Role
	Epoch             int64
	HeartbeatInterval time.Duration
	ProbeInterval     time.Duration
	Log               *slog.Logger
}

// Engine ties a DataPlane to its view of the broker: it follows a view (a
// Source), computes the desired state, applies it while active (the
// standby shape otherwise), registers and heartbeats through a Member, and
// probes peers. It announces what it applied (Changed) rather than being
// polled.
type Engine struct {
	cfg    Config
	views  Follower
	log    *slog.Logger
	member *Member
	roles  chan struct{}
	nodes  chan struct{} // SetNodeAddrs or SetAPIServerAddrs happened

	mu        sync.Mutex
	nodeAddrs []netip.Addr // Local.NodeAddrs as last set
	apiAddrs  []netip.Addr // Local.APIServerAddrs as last set
	role      Role
	desired   Desired // latest computed from the view (whatever the role)
	applied   *Desired
	changed   chan struct{} // closed when applied or the role changes
	health    []api.PeerHealth
	problems  []string
	applies   int
	revision  int64 // of the last snapshot computed
	dp        *DataPlane
}

// New returns an Engine that registers through reg and follows views
// (normally a Source); Run does the work.
func New(cfg Config, reg Registrar, views Follower) *Engine {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = ProbeInterval
	}
	if cfg.Local.Interface == "" {
		cfg.Local.Interface = defaults.Interface
	}
	if cfg.Local.Hostname == "" {
		cfg.Local.Hostname = cfg.Hostname
	}
	if cfg.Role == "" {
		cfg.Role = RoleActive
	}
	e := &Engine{cfg: cfg, views: views, log: cfg.Log, role: cfg.Role, roles: make(chan struct{}, 1), nodes: make(chan struct{}, 1),
		nodeAddrs: cfg.Local.NodeAddrs, apiAddrs: cfg.Local.APIServerAddrs, changed: make(chan struct{})}
	e.member = NewMember(MemberConfig{
		Gateway: api.Gateway{ClusterID: cfg.Local.ClusterID, Hostname: cfg.Hostname, PublicIP: cfg.PublicIP,
			PrivateIP: cfg.PrivateIP, Port: cfg.ListenPort, PublicKey: cfg.PrivateKey.PublicKey().String()},
		Interval: cfg.HeartbeatInterval, Health: e.Health, Log: cfg.Log,
	}, reg, cfg.Role, cfg.Epoch)
	return e
}

// Changed is closed at the next change of what Status reports of the data
// plane (the applied tunnel IP and peers) or of the role, and when a remote
// link's health status (connected, connecting, error) changes: the MCS
// importers withdraw a cluster whose link is in error, so the MeshGateway
// must say so at once, not at its next periodic write.
func (e *Engine) Changed() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changed
}

// announceLocked wakes the Changed waiters; e.mu is held.
func (e *Engine) announceLocked() {
	close(e.changed)
	e.changed = make(chan struct{})
}

// SetRole promotes or demotes the gateway: the data plane is set to the
// desired state (active) or the standby shape at once, and the broker is
// told the new role and epoch.
func (e *Engine) SetRole(role Role, epoch int64) {
	e.member.SetRole(role, epoch)
	e.mu.Lock()
	e.role = role
	e.announceLocked()
	e.mu.Unlock()
	select {
	case e.roles <- struct{}{}:
	default:
	}
}

// SetNodeAddrs replaces Local.NodeAddrs (the cluster's nodes come and go):
// the desired state is computed again from the last snapshot.
func (e *Engine) SetNodeAddrs(addrs []netip.Addr) {
	e.mu.Lock()
	e.nodeAddrs = slices.Clone(addrs)
	e.mu.Unlock()
	e.recompute()
}

// SetAPIServerAddrs replaces Local.APIServerAddrs (the local API server's
// endpoints): the desired state is computed again from the last snapshot.
func (e *Engine) SetAPIServerAddrs(addrs []netip.Addr) {
	e.mu.Lock()
	e.apiAddrs = slices.Clone(addrs)
	e.mu.Unlock()
	e.recompute()
}

func (e *Engine) recompute() {
	select {
	case e.nodes <- struct{}{}:
	default:
	}
}

// Run opens the data plane, follows the broker and keeps the data plane
// converged until ctx ends, then removes everything it made.
func (e *Engine) Run(ctx context.Context) (err error) {
	dp, err := OpenDataPlane(DataPlaneConfig{Interface: e.cfg.Local.Interface, PrivateKey: e.cfg.PrivateKey,
		ListenPort: e.cfg.ListenPort, MTU: e.cfg.MTU, Mode: e.cfg.Mode, Log: e.log})
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.dp = dp
	e.mu.Unlock()
	var probe *prober
	defer func() {
		if probe != nil {
			probe.close()
		}
		if terr := dp.Teardown(); terr != nil {
			e.log.Error("teardown", "err", terr)
			err = errors.Join(err, terr)
		}
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var workers sync.WaitGroup
	defer workers.Wait()
	defer cancel()

	snaps := make(chan api.Snapshot, 1)
	offer := func(s api.Snapshot) {
		select {
		case <-snaps:
		default:
		}
		snaps <- s
	}
	dpErr := make(chan error, 1)
	workers.Add(3)
	go func() {
		defer workers.Done()
		dpErr <- dp.Run(ctx)
	}()
	go func() {
		defer workers.Done()
		if err := e.views.Follow(ctx, offer); err != nil && ctx.Err() == nil {
			e.log.Error("the gateway's view ended", "err", err)
		}
	}()
	go func() {
		defer workers.Done()
		_ = e.member.Run(ctx)
	}()

	probeTick := time.NewTicker(e.cfg.ProbeInterval)
	defer probeTick.Stop()
	var last *api.Snapshot
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-dpErr:
			if ctx.Err() == nil {
				return err
			}
			return nil
		case s := <-snaps:
			last = &s
			e.onSnapshot(s)
		case <-e.nodes:
			if last != nil {
				e.onSnapshot(*last)
			}
		case <-e.roles:
		case now := <-probeTick.C:
			probe = e.probeAndAssess(probe, now)
		}
		e.converge()
		e.updateProblems()
	}
}

// updateProblems logs the problems of the computation and the data plane when they change.
func (e *Engine) updateProblems() {
	e.mu.Lock()
	problems := slices.Concat(e.desired.Problems, e.dp.Problems())
	changed := !slices.Equal(problems, e.problems)
	e.problems = problems
	e.mu.Unlock()
	if changed {
		for _, p := range problems {
			e.log.Warn("left out of the data plane", "problem", p)
		}
	}
}

// onSnapshot computes the desired state.
func (e *Engine) onSnapshot(s api.Snapshot) {
	local := e.cfg.Local
	e.mu.Lock()
	local.NodeAddrs, local.APIServerAddrs = e.nodeAddrs, e.apiAddrs
	e.mu.Unlock()
	d := Compute(local, s)
	e.mu.Lock()
	e.desired = d
	e.revision = s.Revision
	e.mu.Unlock()
}

// converge applies the desired state for the current role unless it is
// already applied.
func (e *Engine) converge() {
	e.mu.Lock()
	target, role := e.desired, e.role // the role the target is for (SetRole may change e.role meanwhile)
	if role != RoleActive {
		target = Standby
	}
	if e.applied != nil && e.applied.Equal(target) {
		e.mu.Unlock()
		return
	}
	e.mu.Unlock()
	start := time.Now()
	err := e.dp.Set(target)
	e.mu.Lock()
	e.applies++
	if err == nil {
		e.applied = &target
		e.announceLocked()
	}
	e.mu.Unlock()
	if err != nil {
		e.log.Warn("apply desired state (will retry)", "err", err)
		return
	}
	e.log.Info("data plane converged", "role", role, "tunnelIP", addrOrNone(target.TunnelIP), "peers", len(target.Peers),
		"routes", len(target.Routes.Routes), "took", time.Since(start).Round(time.Microsecond))
}

func addrOrNone(a netip.Addr) string {
	if !a.IsValid() {
		return "none"
	}
	return a.String()
}

// Status is what a status writer (a CRD, meshctl) shows of a gateway.
type Status struct {
	Role     Role
	Epoch    int64
	Revision int64      // broker revision of the last snapshot computed
	TunnelIP netip.Addr // applied; invalid while standing by
	Peers    int        // applied WireGuard peers
	Problems []string   // clusters, CIDRs or routes left out, and why
	Refused  []RefusedCIDR
	Health   []api.PeerHealth
}

// Status returns the engine's current status.
func (e *Engine) Status() Status {
	role, epoch := e.member.Role()
	e.mu.Lock()
	defer e.mu.Unlock()
	s := Status{Role: role, Epoch: epoch, Revision: e.revision, Problems: slices.Clone(e.problems),
		Refused: slices.Clone(e.desired.Refused), Health: slices.Clone(e.health)}
	if e.applied != nil {
		s.TunnelIP, s.Peers = e.applied.TunnelIP, len(e.applied.Peers)
	}
	return s
}

// Revision is the broker revision of the last snapshot the engine computed.
func (e *Engine) Revision() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.revision
}

// Applies counts the times the engine set the data plane.
func (e *Engine) Applies() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.applies
}

// Problems are the current reasons a cluster, CIDR or route is left out.
func (e *Engine) Problems() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.problems)
}

// Refused are the remote CIDRs currently refused.
func (e *Engine) Refused() []RefusedCIDR {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.desired.Refused)
}

// probeAndAssess (active only) keeps a probe socket on the tunnel address,
// sends probes and recomputes each peer's health.
func (e *Engine) probeAndAssess(probe *prober, now time.Time) *prober {
	e.mu.Lock()
	d, active := e.desired, e.role == RoleActive && e.applied != nil && e.applied.TunnelIP == e.desired.TunnelIP
	e.mu.Unlock()
	if probe != nil && (!active || probe.local != d.TunnelIP) {
		probe.close()
		probe = nil
	}
	if !active {
		e.mu.Lock()
		e.health = nil
		e.mu.Unlock()
		return probe
	}
	if probe == nil && d.TunnelIP.IsValid() {
		var err error
		if probe, err = newProber(d.TunnelIP, e.cfg.Local.Interface, e.cfg.MTU); err != nil {
			e.log.Warn("health probes", "err", err)
		}
	}
	var targets []netip.Addr
	for _, p := range d.Peers {
		targets = append(targets, p.TunnelIP)
	}
	var res func(netip.Addr) (result, bool)
	if probe != nil {
		probe.tick(targets, now)
		res = probe.result
	}
	stats, err := e.dp.Stats()
	if err != nil {
		e.log.Warn("read WireGuard stats", "err", err)
	}
	hs := make([]api.PeerHealth, 0, len(d.Peers))
	for _, p := range d.Peers {
		var r result
		if res != nil {
			r, _ = res(p.TunnelIP)
		} else {
			r.FirstSeen = now
		}
		hs = append(hs, assess(p, r, stats[p.Peer.PublicKey], d.TunnelIP.IsValid(), now))
	}
	e.mu.Lock()
	if healthFlipped(e.health, hs) {
		e.announceLocked()
	}
	e.health = hs
	e.mu.Unlock()
	return probe
}

// healthFlipped reports whether a link's status differs between two
// assessments (a link added or gone counts). Pure.
func healthFlipped(old, cur []api.PeerHealth) bool {
	if len(old) != len(cur) {
		return true
	}
	was := make(map[string]string, len(old))
	for _, h := range old {
		was[h.Cluster] = h.Status
	}
	for _, h := range cur {
		if st, ok := was[h.Cluster]; !ok || st != h.Status {
			return true
		}
	}
	return false
}

// mtuFresh: a full-size probe goes out every mtuEvery probe ticks; an
// answer older than this no longer vouches for the path.
const mtuFresh = time.Minute

// handshakeTimeout: WireGuard rekeys every 2 min; no handshake for longer
// than this means the peer is unreachable.
const handshakeTimeout = 3 * time.Minute

// Health probes: one every ProbeInterval to each remote gateway; a link
// whose probes have gone unanswered for ProbeDownAfter (four probes) is in
// error. The verdict feeds the MCS importers, which withdraw a cluster in
// error from every import: a dead cluster must be out within seconds (the
// budget is 3 s from its death to kube-proxy's rules, of which kube-proxy
// itself may take 1 s), and one late reply on a busy node must not be
// enough to withdraw it. A probe is 17 bytes; four a second per peer cost
// nothing.
const (
	ProbeInterval  = 250 * time.Millisecond
	ProbeDownAfter = time.Second
)

func assess(p RemotePeer, r result, st wg.PeerStats, haveTunnelIP bool, now time.Time) api.PeerHealth {
	h := api.PeerHealth{Cluster: p.Cluster, RxBytes: st.RxBytes, TxBytes: st.TxBytes, LastHandshake: st.LastHandshake}
	if st.Endpoint != nil {
		h.PeerEndpoint = st.Endpoint.String()
	}
	if !r.LastReply.IsZero() {
		h.RTTMillis = float64(r.RTT.Microseconds()) / 1000
	}
	h.LossPercent = 100 * r.Loss
	if r.MTU > 0 && !r.MTULastOK.IsZero() && now.Sub(r.MTULastOK) <= mtuFresh {
		h.PathMTU = r.MTU
	}
	if r.MTU > 0 && r.MTUMissed >= mtuLostAfter && !r.LastReply.IsZero() && now.Sub(r.LastReply) <= 5*time.Second {
		h.PathMTULost = r.MTU
	}
	switch {
	case !haveTunnelIP:
		h.Status, h.Reason = api.StatusConnecting, "waiting for the broker to assign our tunnel IP"
	case !r.LastReply.IsZero() && now.Sub(r.LastReply) <= ProbeDownAfter:
		h.Status = api.StatusConnected
	case r.LastReply.IsZero() && now.Sub(r.FirstSeen) < 30*time.Second:
		h.Status, h.Reason = api.StatusConnecting, "waiting for the first probe reply"
	case st.LastHandshake.IsZero() || now.Sub(st.LastHandshake) > handshakeTimeout:
		h.Status, h.Reason = api.StatusError, fmt.Sprintf("no WireGuard handshake with %s (%s)", p.Gateway, p.Peer.Endpoint)
	default:
		h.Status, h.Reason = api.StatusError, "handshake ok but health probes unanswered (firewall on UDP 51899 or routes?)"
	}
	if p.Stale && h.Status != api.StatusConnected {
		h.Reason += "; the broker marks the remote gateway stale"
	}
	return h
}

// Health returns the latest health of every peer (none while standing by).
func (e *Engine) Health() []api.PeerHealth {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]api.PeerHealth(nil), e.health...)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

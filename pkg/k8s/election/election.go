package election

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// Names fixed by the design.
const (
	// DefaultGossipPort is the candidates' memberlist port (TCP and UDP, host network).
	DefaultGossipPort = 7947
	DefaultLeaseName  = "tunnelmesh-gateway"
	// CandidateLabel marks the nodes that may run the active gateway (value "true").
	CandidateLabel = "tunnelmesh.io/gateway"
)

// The Lease's timing when Config leaves it zero (doc.go argues it).
const (
	DefaultLeaseDuration = 3 * time.Second
	DefaultRenewInterval = 200 * time.Millisecond
	DefaultRenewDeadline = 650 * time.Millisecond
)

// MaxClockSkew is the clock difference between candidates the election
// tolerates where it reads another's clock (a Lease's renewTime at start);
// meshctl diagnose fails beyond it (candidates share a WireGuard key, whose
// handshakes need agreeing clocks anyway).
const MaxClockSkew = 3 * time.Second

// Role is what this candidate is now.
type Role string

const (
	Active  Role = "active"
	Standby Role = "standby"
)

// State is what a candidate is told whenever its role, the cluster's epoch or
// the holder changes. Consumers keep only the latest: a new Epoch while Active
// is a new tenure (re-register with the broker).
type State struct {
	Role Role
	// Epoch is the Lease's leaseTransitions: it grows with every acquisition.
	// While standby it is the current holder's epoch (0: none yet).
	Epoch int64
	// Holder is the node holding the Lease ("" when none).
	Holder string
}

// Config of an Elector. Client, Identity, Labelled and Gossip.Peers are
// required; zero durations take the defaults (3 s lease, 200 ms renewals,
// 650 ms deadline: 250 ms short of memberlist's quickest verdict, a margin
// for a loaded node; 30 s of holding without renewal at most).
type Config struct {
	Client    kubernetes.Interface
	Namespace string // defaults.Namespace when empty
	LeaseName string // DefaultLeaseName when empty
	Identity  string // node name; also the memberlist name
	// LeaseDuration is the backstop when memberlist says nothing (e.g. the
	// holder is alive for its peers but cut off from the apiserver).
	LeaseDuration time.Duration
	RenewInterval time.Duration
	// RenewDeadline: a holder that has not renewed for this long steps down.
	// It must be shorter than LeaseDuration and than the quickest memberlist
	// death verdict, so that a partitioned holder is gone before a standby
	// takes over.
	RenewDeadline time.Duration
	// MaxHold bounds how long a holder keeps the role without a renewal
	// (an apiserver outage it holds through, doc.go): past it the holder
	// steps down whatever memberlist says.
	MaxHold time.Duration
	// Labelled returns the names of the nodes labelled as candidates
	// (CandidateNames in a cluster). A holder that cannot renew judges who
	// could take over from these, not from whom memberlist happened to see.
	Labelled func(ctx context.Context) ([]string, error)
	// EpochFloor, when set, returns the highest epoch of this cluster
	// recorded outside the Lease (the broker's records, the MeshGateway
	// status, the stored view). A new tenure's epoch is above it, and a
	// holder whose epoch it exceeds takes a new one at its next renewal, so
	// a deleted or rolled-back Lease never restarts the epochs below what
	// the fences have seen. It must not block (a cached value).
	EpochFloor func() int64
	// Entitled, when set, is told (synchronously, from the election's
	// loop, before the State that depends on it is sent) until when this
	// candidate may act as the active gateway: a little past the point at
	// which it would step down unless it renews or holds again; the zero
	// time once it may not. A kernel-side fence fed with it (pkg/nft.Fence)
	// keeps a frozen-then-thawed or starved old active from sending a
	// single WireGuard packet before its loop has run.
	Entitled func(until time.Time)
	Gossip   GossipConfig
	Logger   *slog.Logger
}

func (c *Config) defaults() error {
	if c.Client == nil || c.Identity == "" {
		return errors.New("election: Client and Identity (the node name) are required")
	}
	if c.Gossip.Peers == nil {
		return errors.New("election: Gossip.Peers is required (election.CandidatePeers in a cluster); without it a crashed holder is only replaced when its Lease expires")
	}
	if c.Labelled == nil {
		return errors.New("election: Labelled is required (election.CandidateNames in a cluster); without it a holder cannot tell who could take over")
	}
	if c.Namespace == "" {
		c.Namespace = defaults.Namespace
	}
	if c.LeaseName == "" {
		c.LeaseName = DefaultLeaseName
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = DefaultLeaseDuration
	}
	if c.RenewInterval == 0 {
		c.RenewInterval = DefaultRenewInterval
	}
	if c.RenewDeadline == 0 {
		c.RenewDeadline = DefaultRenewDeadline
	}
	if c.MaxHold == 0 {
		c.MaxHold = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Gossip.defaults()
	if c.LeaseDuration < time.Second || c.LeaseDuration%time.Second != 0 {
		return fmt.Errorf("election: LeaseDuration %v must be a whole number of seconds ≥ 1 s (the Lease stores seconds)", c.LeaseDuration)
	}
	if c.RenewInterval >= c.RenewDeadline {
		return fmt.Errorf("election: RenewInterval %v must be shorter than RenewDeadline %v", c.RenewInterval, c.RenewDeadline)
	}
	if c.RenewDeadline >= c.LeaseDuration {
		return fmt.Errorf("election: RenewDeadline %v must be shorter than LeaseDuration %v", c.RenewDeadline, c.LeaseDuration)
	}
	if c.MaxHold <= c.RenewDeadline {
		return fmt.Errorf("election: MaxHold %v must be longer than RenewDeadline %v", c.MaxHold, c.RenewDeadline)
	}
	if d := c.Gossip.minDetection(); c.RenewDeadline >= d {
		return fmt.Errorf("election: RenewDeadline %v must be shorter than memberlist's quickest death verdict %v (ProbeTimeout + SuspicionMult×ProbeInterval); lower it or slow memberlist down", c.RenewDeadline, d)
	}
	return nil
}

// Elector runs one candidate's side of the election.
type Elector struct {
	cfg     Config
	members *members
	metrics *metrics
	states  chan State
	release chan chan error
	done    chan struct{}

	// Owned by Run's goroutine.
	lease      *coordinationv1.Lease // latest seen; nil when absent
	synced     bool                  // lease reflects the apiserver at least once
	observedAt time.Time             // local time the holder last showed life in the Lease
	tenureAt   time.Time             // local time the current (holder, epoch) was first seen
	held       bool
	epoch      int64     // our tenure's epoch while held
	lastRenew  time.Time // start of our last successful write while held
	published  State
	sentOnce   bool
	nextTry    time.Time // acquisition backoff after an apiserver error
	heldSince  time.Time // local time this candidate's current run of tenures began
	// holding: the renewal deadline passed with the apiserver unreachable,
	// and the role is kept because no other candidate can take it (doc.go).
	holding bool
	lastTry time.Time // start of the last renewal attempt
	// A renewal runs beside the loop (renew → renewed), so that a slow
	// apiserver does not stop it: the loop keeps the entitlement moving
	// with memberlist's contact and steps down on time meanwhile.
	renewing    bool
	renewEpoch  int64 // the epoch the renewal in flight writes
	renewCancel context.CancelFunc
	renewDone   chan renewResult
	// apiSeen (unix ns) is when the apiserver last answered: a list, a
	// watch event, a write. probing: a standby checks it (see probeAPI).
	apiSeen atomic.Int64
	probing atomic.Bool
	fatal   error // a permission the election needs is missing
	// Log an apiserver failure once per run of failures, not every tick.
	renewFailing, acquireFailing bool
	// maxEpoch is the highest epoch seen in any Lease or own tenure, and
	// topHolder the holder the Lease named at it.
	maxEpoch  int64
	topHolder string

	labelled labelled // written by watchLabelled
	// entitledUntil is what Entitled was last told.
	entitledUntil time.Time
}

// labelled is the latest list of the nodes labelled as candidates.
type labelled struct {
	mu    sync.Mutex
	names []string
	known bool // listed at least once
}

func (l *labelled) set(names []string) {
	l.mu.Lock()
	l.names, l.known = slices.Clone(names), true
	l.mu.Unlock()
}

func (l *labelled) get() ([]string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.names), l.known
}

// New validates cfg and starts the candidate's memberlist (so Addr is known);
// call Run next.
func New(cfg Config) (*Elector, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	m, err := startMembers(cfg.Identity, cfg.Gossip, cfg.Logger)
	if err != nil {
		return nil, err
	}
	return &Elector{
		cfg:       cfg,
		members:   m,
		metrics:   newMetrics(),
		states:    make(chan State, 1),
		release:   make(chan chan error),
		done:      make(chan struct{}),
		renewDone: make(chan renewResult, 1),
		published: State{Role: Standby},
	}, nil
}

// Addr is host:port of this candidate's memberlist.
func (e *Elector) Addr() string {
	n := e.members.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// States delivers the latest State each time it changes; a slow reader sees
// only the newest. The first value is sent once the Lease has been read.
func (e *Elector) States() <-chan State { return e.states }

// Run campaigns until ctx ends or Release is called. When ctx ends it stops
// renewing and leaves memberlist without a goodbye and without touching the
// Lease: to the other candidates that is a crash.
func (e *Elector) Run(ctx context.Context) error {
	defer close(e.done)
	defer func() { _ = e.members.ml.Shutdown() }()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	leases := make(chan leaseEvent, 1)
	denied := make(chan error, 1)
	go e.watchLease(ctx, leases, denied)
	go e.members.join(ctx, e.cfg.Identity, e.cfg.Gossip.Peers, e.cfg.Logger)
	go e.members.spread(ctx)
	go e.members.pingLoop(ctx, e.cfg.Gossip.ProbeInterval/2)
	go e.watchLabelled(ctx)

	tick := time.NewTicker(e.cfg.RenewInterval / 5)
	defer tick.Stop()
	rejoin := time.NewTicker(e.cfg.Gossip.RejoinInterval)
	defer rejoin.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-leases:
			e.observe(ev.lease, time.Now())
			e.synced = true
		case r := <-e.renewDone:
			e.renewed(ctx, r)
		case <-e.members.changed:
		case <-tick.C:
		case <-rejoin.C:
			go e.members.join(ctx, e.cfg.Identity, e.cfg.Gossip.Peers, e.cfg.Logger)
		case reply := <-e.release:
			reply <- e.giveUp(ctx)
			return nil
		case err := <-denied:
			e.fatal = err
		}
		if e.synced && e.fatal == nil {
			e.step(ctx, time.Now())
		}
		if e.fatal != nil {
			// A missing permission is not transient: stop loudly (the pod
			// restarts and its events show why) rather than limp along.
			if e.held {
				e.stepDown(reasonForbidden, "permission denied")
				e.entitle(time.Now())
				e.publish()
			}
			return e.fatal
		}
	}
}

// Release hands the Lease over (if held) and leaves memberlist, then Run
// returns. Call it after the data plane is torn down.
func (e *Elector) Release(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case e.release <- reply:
	case <-e.done:
		return errors.New("election: Release after Run returned")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Candidate is one gateway candidate as this one sees it.
type Candidate struct {
	Name string
	// Ready: alive in the candidates' memberlist, so its elector runs and it
	// can take over at once; a labelled candidate that is not (its gateway
	// restarting, its node down, 7947 blocked) cannot, and a failover then
	// waits for it.
	Ready bool
	// Labelled: the node carries the candidate label (in the latest list).
	Labelled bool
}

// Candidates lists the labelled candidates and any other memberlist has
// seen alive, this one included, sorted by name. Safe from any goroutine.
func (e *Elector) Candidates() []Candidate {
	names, _ := e.labelled.get()
	alive := e.members.alive()
	by := map[string]*Candidate{}
	for _, n := range names {
		by[n] = &Candidate{Name: n, Labelled: true, Ready: alive[n]}
	}
	for n := range alive {
		if by[n] == nil {
			by[n] = &Candidate{Name: n, Ready: true}
		}
	}
	out := make([]Candidate, 0, len(by))
	for _, c := range by {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b Candidate) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Done is closed when Run has returned.
func (e *Elector) Done() <-chan struct{} { return e.done }

// LeaseHolder reads the holder node and epoch from a Lease written by an Elector.
func LeaseHolder(l *coordinationv1.Lease) (holder string, epoch int64) {
	if l == nil {
		return "", 0
	}
	if l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	if l.Spec.LeaseTransitions != nil {
		epoch = int64(*l.Spec.LeaseTransitions)
	}
	return holder, epoch
}

func (e *Elector) leases() leaseClient {
	return e.cfg.Client.CoordinationV1().Leases(e.cfg.Namespace)
}

type leaseClient interface {
	Create(ctx context.Context, l *coordinationv1.Lease, opts metav1.CreateOptions) (*coordinationv1.Lease, error)
	Update(ctx context.Context, l *coordinationv1.Lease, opts metav1.UpdateOptions) (*coordinationv1.Lease, error)
	List(ctx context.Context, opts metav1.ListOptions) (*coordinationv1.LeaseList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// step is the whole decision, taken after every event and tick.
func (e *Elector) step(ctx context.Context, now time.Time) {
	if e.held {
		silent := now.Sub(e.lastRenew)
		switch {
		case e.lease == nil || e.rolledBack():
			// Deleted or rolled back (a recreated namespace, a restored
			// etcd): nobody took the role, so rewrite the Lease with a
			// higher epoch and keep it; step down only if that cannot be
			// done in time.
			if silent > e.cfg.RenewDeadline {
				e.stepDown(reasonLost, "the Lease was deleted or rolled back and could not be rewritten in time")
				break
			}
			if !now.Before(e.nextTry) {
				e.acquire(ctx, reasonRewritten, "the Lease was deleted or rolled back below this tenure's epoch: rewritten with a higher one")
			}
		case !e.ours(e.lease):
			h, ep := LeaseHolder(e.lease)
			e.stepDown(reasonLost, fmt.Sprintf("the Lease is held by %q at epoch %d", h, ep))
		case silent > e.cfg.MaxHold:
			e.stepDown(reasonRenewDeadline, fmt.Sprintf("no renewal for %v, longer than the %v a holder may keep the role without one", silent.Round(time.Millisecond), e.cfg.MaxHold))
		case silent > e.cfg.RenewDeadline:
			if name, ep, ok := e.members.activeClaim(e.cfg.Identity); ok {
				e.stepDown(reasonRenewDeadline, fmt.Sprintf("no renewal for %v and candidate %q claims to be active at epoch %d", silent.Round(time.Millisecond), name, ep))
				break
			}
			hold, why := e.holdable(now, silent)
			if hold && e.renewFailing {
				// An outage: hold on until the apiserver answers (MaxHold).
				if !e.holding {
					e.holding = true
					e.metrics.holding.Set(1)
					e.cfg.Logger.Warn("the apiserver is unreachable: keeping the active role, since every labelled candidate answers, none claims the role and none reaches the apiserver",
						"node", e.cfg.Identity, "epoch", e.epoch, "lastRenewal", silent.Round(time.Millisecond), "atMost", e.cfg.MaxHold)
				}
			} else {
				if e.holding {
					e.holding = false
					e.metrics.holding.Set(0)
				}
				// Slow or failing renewals: keep the tenure while no other
				// candidate can take the role (actUntil); stepping down
				// sooner only tears the data plane down for nothing.
				if until, bound := e.actUntil(); !now.Before(until) {
					if why == "" {
						why = "the apiserver answers too slowly"
					}
					e.stepDown(reasonRenewDeadline, fmt.Sprintf("no renewal for %v and %s; %s", silent.Round(time.Millisecond), why, bound))
					break
				}
			}
			if now.Sub(e.lastTry) >= e.cfg.RenewInterval {
				e.renew(ctx)
			}
		case silent >= e.cfg.RenewInterval:
			e.renew(ctx)
		}
	} else if reason, why := e.acquirable(now); reason != "" && !now.Before(e.nextTry) {
		e.acquire(ctx, reason, why)
	} else {
		e.probeAPI(ctx, now)
	}
	e.entitle(now)
	e.publish()
}

// entitlement is until when the holder may act: actUntil; or, while it
// holds through an outage, RenewDeadline after its last contact with each
// other candidate (none can declare it dead meanwhile, and none takes an
// expired Lease from a holder that claims the role) — up to MaxHold when
// there is no other; never past MaxHold without a renewal. The fence holds
// the holder to it even when its loop does not run. Half a RenewInterval
// more lets the loop's next tick decide before it runs out.
func (e *Elector) entitlement(now time.Time) time.Time {
	if !e.held {
		return time.Time{}
	}
	var until time.Time
	if e.holding {
		until = e.lastRenew.Add(e.cfg.RenewDeadline)
		if c, _, bounded := e.members.contactBound(e.heldSince, e.cfg.RenewDeadline); !bounded {
			until = e.lastRenew.Add(e.cfg.MaxHold)
		} else if c.After(until) {
			until = c
		}
	} else {
		until, _ = e.actUntil()
	}
	until = until.Add(e.cfg.RenewInterval / 2)
	if m := e.lastRenew.Add(e.cfg.MaxHold); until.After(m) {
		until = m
	}
	return until
}

// actUntil is until when a holder that is not holding through an outage
// may act on its last renewal, and what bounds it. A standby takes over
// on memberlist's death verdict (at least its quickest, 0.9 s, of silence)
// once renewals stopped, or on the Lease's expiry:
//   - a renewal vouches for RenewDeadline;
//   - fresh two-way contact with a live candidate (its last answer to this
//     holder's pings) for RenewDeadline more: it cannot declare the holder
//     dead meanwhile — a slow apiserver then costs nothing;
//   - a candidate that left memberlist during this tenure may have declared
//     the holder dead already: nothing more;
//   - one gone since before the tenure began (the crashed holder this one
//     replaced, a node down) or never seen cannot preempt: restarted, it
//     either rejoins memberlist (and counts as live) or, never having heard
//     this holder, can only take the Lease once it expires;
//   - but never past the point where the Lease nears expiry.
func (e *Elector) actUntil() (time.Time, string) {
	until, why := e.lastRenew.Add(e.cfg.RenewDeadline), "the renew deadline passed"
	nearExpiry := e.lastRenew.Add(e.cfg.LeaseDuration - e.cfg.RenewDeadline)
	contact, name, bounded := e.members.contactBound(e.heldSince, e.cfg.RenewDeadline)
	if !bounded {
		contact = nearExpiry
	}
	if contact.After(until) {
		until, why = contact, fmt.Sprintf("candidate %q answered no ping for a renew deadline", name)
	}
	if !until.Before(nearExpiry) {
		until, why = nearExpiry, "the Lease nears expiry"
	}
	return until, why
}

// entitle tells Entitled when the entitlement ends, moves back or has
// moved on by RenewInterval/2 (not every tick).
func (e *Elector) entitle(now time.Time) {
	if e.cfg.Entitled == nil {
		return
	}
	until := e.entitlement(now)
	if until.IsZero() == e.entitledUntil.IsZero() && !until.Before(e.entitledUntil) && until.Sub(e.entitledUntil) < e.cfg.RenewInterval/2 {
		return
	}
	e.entitledUntil = until
	e.cfg.Entitled(until)
}

// holdable: may a holder that has not renewed for silent keep the role?
// Every labelled candidate (and any other memberlist has seen) must vouch
// for it (members.holdable); a list of the labelled ones is needed first.
func (e *Elector) holdable(now time.Time, silent time.Duration) (bool, string) {
	names, known := e.labelled.get()
	if !known {
		return false, "the labelled candidates are not known yet (listing the nodes failed)"
	}
	return e.members.holdable(now, e.cfg.RenewDeadline, silent, names)
}

// rolledBack: the Lease names an epoch below this tenure's. Every
// acquisition writes a higher epoch than the Lease had, so that is no
// takeover: the Lease was restored or recreated under the holder.
func (e *Elector) rolledBack() bool {
	_, ep := LeaseHolder(e.lease)
	return ep < e.epoch
}

// floor is the highest epoch recorded outside the Lease (0 without a source).
func (e *Elector) floor() int64 {
	if e.cfg.EpochFloor == nil {
		return 0
	}
	return e.cfg.EpochFloor()
}

// nextEpoch is a new tenure's epoch: above the Lease's, every epoch this
// candidate has seen and every one recorded elsewhere.
func (e *Elector) nextEpoch() int64 {
	_, ep := LeaseHolder(e.lease)
	return max(ep, e.maxEpoch, e.floor()) + 1
}

// watchLabelled keeps the list of labelled candidates fresh (every
// RejoinInterval) until ctx ends; a failed list keeps the last one.
func (e *Elector) watchLabelled(ctx context.Context) {
	failing := false
	for ctx.Err() == nil {
		lctx, cancel := context.WithTimeout(ctx, e.cfg.Gossip.RejoinInterval)
		names, err := e.cfg.Labelled(lctx)
		cancel()
		switch {
		case err == nil:
			e.labelled.set(names)
			failing = false
		case ctx.Err() == nil && !failing:
			e.cfg.Logger.Warn("list the labelled gateway candidates (keeping the last list)", "err", err)
			failing = true
		}
		sleep(ctx, e.cfg.Gossip.RejoinInterval)
	}
}

func (e *Elector) ours(l *coordinationv1.Lease) bool {
	h, ep := LeaseHolder(l)
	// The watch may show a renewal that takes a higher epoch (floor)
	// before its answer arrives.
	return h == e.cfg.Identity && (ep == e.epoch || e.renewing && ep == e.renewEpoch)
}

// acquirable says why a standby may take the Lease now (a metric label and
// a message), or "" if it may not.
func (e *Elector) acquirable(now time.Time) (reason, why string) {
	if e.lease == nil {
		if e.deferToHolder(now) {
			return "", ""
		}
		return reasonNoLease, "no Lease yet"
	}
	holder, ep := LeaseHolder(e.lease)
	if ep < e.maxEpoch && e.deferToHolder(now) {
		return "", ""
	}
	switch {
	case holder == "":
		return reasonReleased, "the Lease was released"
	case holder == e.cfg.Identity:
		// A previous run of this node, or this run's tenure that stepped
		// down: either way over; a new tenure gets a new epoch.
		return reasonOwnTenure, "the Lease names this node from an ended tenure"
	}
	// Memberlist's verdict preempts only a holder whose renewals stopped
	// too: one that renews is alive for the apiserver, and only gossip
	// between the two is cut (7947 dropped) — taking over would flap the
	// role back and forth at every verdict.
	if at, dead := e.members.deadSince(holder); dead && at.After(e.tenureAt) && now.Sub(e.observedAt) > e.cfg.RenewDeadline {
		return reasonHolderDead, fmt.Sprintf("memberlist declared holder %q dead and it has not renewed for %v", holder, now.Sub(e.observedAt).Round(time.Millisecond))
	}
	if d := leaseDuration(e.lease, e.cfg.LeaseDuration); now.Sub(e.observedAt) > d {
		if e.members.claimsActive(holder) {
			// Alive and still active: it holds the role through an
			// apiserver outage (doc.go), and it renews once it can.
			return "", ""
		}
		return reasonExpired, fmt.Sprintf("holder %q did not renew for %v", holder, d)
	}
	return "", ""
}

// deferToHolder: the Lease was deleted or rolled back below the epochs seen,
// and the holder of the newest one is alive in memberlist (or another
// candidate claims the role at that epoch). It rewrites the Lease itself
// (step): a standby taking it instead would be a failover nobody needed.
// Only for LeaseDuration, as if the Lease had stayed.
func (e *Elector) deferToHolder(now time.Time) bool {
	if e.maxEpoch == 0 || now.Sub(e.observedAt) > e.cfg.LeaseDuration {
		return false
	}
	if _, ep, ok := e.members.activeClaim(e.cfg.Identity); ok && ep >= e.maxEpoch {
		return true
	}
	return e.topHolder != "" && e.topHolder != e.cfg.Identity && e.members.alive()[e.topHolder]
}

func leaseDuration(l *coordinationv1.Lease, def time.Duration) time.Duration {
	if l.Spec.LeaseDurationSeconds != nil && *l.Spec.LeaseDurationSeconds > 0 {
		return time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	return def
}

func (e *Elector) acquire(ctx context.Context, reason, why string) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, e.cfg.RenewDeadline)
	defer cancel()
	now := metav1.NewMicroTime(start)
	dur := int32(e.cfg.LeaseDuration / time.Second)
	id := e.cfg.Identity
	var (
		got *coordinationv1.Lease
		err error
	)
	epoch := ptr(int32(e.nextEpoch()))
	if e.lease == nil {
		l := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: e.cfg.LeaseName, Namespace: e.cfg.Namespace},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &id, LeaseDurationSeconds: &dur,
				AcquireTime: &now, RenewTime: &now, LeaseTransitions: epoch},
		}
		got, err = e.leases().Create(ctx, l, metav1.CreateOptions{})
	} else {
		l := e.lease.DeepCopy()
		l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds = &id, &dur
		l.Spec.AcquireTime, l.Spec.RenewTime = &now, &now
		l.Spec.LeaseTransitions = epoch
		// resourceVersion makes this a compare-and-swap: of several
		// standbys acting on the same observation exactly one wins.
		got, err = e.leases().Update(ctx, l, metav1.UpdateOptions{})
	}
	if err != nil {
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			e.cfg.Logger.Debug("lost the race for the gateway Lease", "node", id, "err", err)
			e.refresh(ctx)
			e.nextTry = time.Now().Add(e.cfg.RenewInterval / 5)
			return
		}
		if apierrors.IsForbidden(err) {
			e.fatal = denied("take the gateway Lease", err)
			return
		}
		if !e.acquireFailing {
			e.cfg.Logger.Warn("acquire the gateway Lease; retrying", "node", id, "err", err)
		}
		e.acquireFailing = true
		e.nextTry = time.Now().Add(e.cfg.RenewInterval)
		return
	}
	wasHeld := e.held
	if !wasHeld {
		e.heldSince = start
	}
	e.held, e.acquireFailing, e.renewFailing = true, false, false
	if e.holding {
		e.holding = false
		e.metrics.holding.Set(0)
	}
	e.apiAnswered()
	_, e.epoch = LeaseHolder(got)
	e.metrics.acquiredFor(reason)
	e.lastRenew = start
	e.observe(got, time.Now())
	if wasHeld {
		e.cfg.Logger.Warn("kept the active role with a new epoch", "node", id, "epoch", e.epoch, "reason", why)
		return
	}
	e.cfg.Logger.Info("active gateway", "node", id, "epoch", e.epoch, "reason", why)
}

func (e *Elector) renew(ctx context.Context) {
	if e.renewing {
		return
	}
	start := time.Now()
	e.lastTry = start
	// Up to when the holder may act anyway: a slow apiserver's answer
	// still counts until then.
	until, _ := e.actUntil()
	timeout := until.Sub(start)
	if e.holding || timeout < e.cfg.RenewInterval {
		timeout = e.cfg.RenewInterval // keep re-checking holdable meanwhile
	}
	l := e.lease.DeepCopy()
	now := metav1.NewMicroTime(start)
	l.Spec.RenewTime = &now
	epoch := e.epoch
	if f := e.floor(); f > epoch {
		// Another record carries a newer epoch than this tenure's (the
		// Lease was reset while nobody ran, or read before the broker
		// answered): take one above it, or every fence refuses this holder.
		epoch = f + 1
		l.Spec.LeaseTransitions = ptr(int32(epoch))
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	e.renewing, e.renewEpoch, e.renewCancel = true, epoch, cancel
	r := renewResult{start: start, tenure: e.epoch, epoch: epoch}
	go func() {
		defer cancel()
		r.got, r.err = e.leases().Update(rctx, l, metav1.UpdateOptions{})
		e.renewDone <- r // buffered: the loop takes it, or Run has ended
	}()
}

// renewResult is the outcome of one renewal.
type renewResult struct {
	start         time.Time
	tenure, epoch int64 // the tenure's epoch when it started, the epoch written
	got           *coordinationv1.Lease
	err           error
}

// renewed applies a renewal's outcome in the loop.
func (e *Elector) renewed(ctx context.Context, r renewResult) {
	e.renewing, e.renewCancel = false, nil
	if !e.held || r.tenure != e.epoch {
		// The tenure ended (or a new one began) meanwhile: only what the
		// Lease now says counts; step and acquirable judge it.
		if r.err == nil {
			e.apiAnswered()
			e.observe(r.got, time.Now())
		}
		return
	}
	if r.err != nil && e.landed(r) {
		// The answer was lost (a timeout) but the watch showed the write.
		r.err, r.got = nil, e.lease
	}
	if err := r.err; err != nil {
		if ctx.Err() != nil {
			return // Run is ending
		}
		if apierrors.IsConflict(err) {
			// Someone else wrote the Lease: read it; step() steps down
			// unless it is still ours.
			rctx, cancel := context.WithTimeout(ctx, e.cfg.RenewDeadline)
			defer cancel()
			e.refresh(rctx)
			if e.lease == nil || !e.ours(e.lease) {
				e.stepDown(reasonLost, "the Lease changed under this holder")
			}
			return
		}
		if apierrors.IsForbidden(err) {
			e.fatal = denied("renew the gateway Lease", err)
			return
		}
		if !e.renewFailing {
			e.cfg.Logger.Warn("renew the gateway Lease; retrying until the deadline", "node", e.cfg.Identity, "took", time.Since(r.start).Round(time.Millisecond), "err", err)
		}
		e.renewFailing = true
		return
	}
	e.lastRenew, e.renewFailing = r.start, false
	if r.epoch != e.epoch {
		e.cfg.Logger.Warn("a record outside the Lease carries a newer epoch than this tenure's: took a higher one", "node", e.cfg.Identity, "from", e.epoch, "to", r.epoch)
		e.epoch = r.epoch
	}
	e.apiAnswered()
	if e.holding {
		e.holding = false
		e.metrics.holding.Set(0)
		e.cfg.Logger.Info("the apiserver answers again: renewed the Lease", "node", e.cfg.Identity, "epoch", e.epoch)
	}
	e.observe(r.got, time.Now())
}

// landed: the Lease seen is this renewal's write.
func (e *Elector) landed(r renewResult) bool {
	if e.lease == nil || e.lease.Spec.RenewTime == nil {
		return false
	}
	h, ep := LeaseHolder(e.lease)
	return h == e.cfg.Identity && ep == r.epoch && e.lease.Spec.RenewTime.Time.Equal(r.start.Truncate(time.Microsecond))
}

// settleRenewal waits for a renewal in flight (cancelled) and applies it,
// so that what follows writes over the Lease it left.
func (e *Elector) settleRenewal(ctx context.Context) {
	if !e.renewing {
		return
	}
	e.renewCancel()
	e.renewed(ctx, <-e.renewDone)
}

func (e *Elector) giveUp(ctx context.Context) error {
	var err error
	e.settleRenewal(ctx)
	if e.held {
		l := e.lease.DeepCopy()
		empty := ""
		now := metav1.NewMicroTime(time.Now())
		l.Spec.HolderIdentity, l.Spec.RenewTime = &empty, &now
		if _, uerr := e.leases().Update(ctx, l, metav1.UpdateOptions{}); uerr != nil && !apierrors.IsConflict(uerr) {
			err = fmt.Errorf("release the gateway Lease: %w", uerr)
		}
		e.held = false
		e.entitle(time.Now())
		e.published = State{Role: Standby, Epoch: e.epoch}
		e.metrics.state(e.published)
		e.send(e.published)
		e.cfg.Logger.Info("released the gateway Lease", "node", e.cfg.Identity, "epoch", e.epoch)
	}
	if lerr := e.members.ml.Leave(time.Second); lerr != nil && err == nil {
		err = fmt.Errorf("leave the gateway candidates' memberlist: %w", lerr)
	}
	return err
}

func (e *Elector) stepDown(reason, why string) {
	e.held = false
	if e.renewing {
		e.renewCancel() // its outcome no longer counts (renewed)
	}
	if e.holding {
		e.holding = false
		e.metrics.holding.Set(0)
	}
	e.metrics.stepDown(reason)
	e.cfg.Logger.Warn("stepping down as active gateway", "node", e.cfg.Identity, "epoch", e.epoch, "reason", why)
}

// refresh reads the Lease again (a list by name: the same permission as the
// watch, so the Role needs no separate get).
func (e *Elector) refresh(ctx context.Context) {
	list, err := e.leases().List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", e.cfg.LeaseName).String()})
	switch {
	case err != nil:
		e.cfg.Logger.Warn("read the gateway Lease", "err", err)
	case len(list.Items) == 0:
		e.observe(nil, time.Now())
	default:
		// Read after a conflict: authoritative even when its
		// resourceVersion is lower than ours (etcd restored from a backup).
		l := &list.Items[0]
		if e.lease != nil && olderRV(l.ResourceVersion, e.lease.ResourceVersion) {
			e.lease = e.lease.DeepCopy()
			e.lease.ResourceVersion = ""
		}
		e.observe(l, time.Now())
	}
}

// observe records a Lease seen at now, ignoring one older than what we have
// (a watch event can trail the answer to our own write).
func (e *Elector) observe(l *coordinationv1.Lease, now time.Time) {
	if l != nil && e.lease != nil && olderRV(l.ResourceVersion, e.lease.ResourceVersion) {
		return
	}
	if l == nil {
		if e.lease != nil || !e.synced {
			e.observedAt, e.tenureAt = now, now
		}
		e.lease = nil
		return
	}
	oh, oep := LeaseHolder(e.lease)
	nh, nep := LeaseHolder(l)
	if nep >= e.maxEpoch {
		e.maxEpoch, e.topHolder = nep, nh
	}
	if e.lease == nil || oh != nh || oep != nep {
		e.tenureAt = now
	}
	if e.lease == nil || l.ResourceVersion != e.lease.ResourceVersion {
		e.observedAt = now
	}
	if !e.synced && l.Spec.RenewTime != nil {
		// First read since this process started: a holder that stopped
		// renewing long before (it died while this candidate was itself
		// restarting) is judged by the Lease's own renewTime, less the
		// clock skew candidates may have, instead of a whole LeaseDuration
		// from now — a failover costs no more than this candidate's restart.
		if t := l.Spec.RenewTime.Time.Add(MaxClockSkew); t.Before(e.observedAt) {
			e.observedAt = t
		}
	}
	e.lease = l
}

// olderRV compares resourceVersions numerically, as etcd writes them; when
// they are not numbers nothing is treated as older.
func olderRV(a, b string) bool {
	x, err1 := strconv.ParseUint(a, 10, 64)
	y, err2 := strconv.ParseUint(b, 10, 64)
	return err1 == nil && err2 == nil && x < y
}

func (e *Elector) publish() {
	s := State{Role: Standby}
	s.Holder, s.Epoch = LeaseHolder(e.lease)
	if e.held {
		s = State{Role: Active, Epoch: e.epoch, Holder: e.cfg.Identity}
	}
	if s != e.published || !e.sentOnce {
		e.published, e.sentOnce = s, true
		e.metrics.state(s)
		e.send(s)
	}
	e.members.announce(selfMeta{Active: e.held, Epoch: e.epoch, API: e.reachesAPI(time.Now())})
}

func (e *Elector) apiAnswered() { e.apiSeen.Store(time.Now().UnixNano()) }

// reachesAPI: the apiserver answered this candidate within RenewDeadline.
func (e *Elector) reachesAPI(now time.Time) bool {
	return now.Sub(time.Unix(0, e.apiSeen.Load())) < e.cfg.RenewDeadline
}

// probeAPI: a standby whose Lease watch has gone quiet (the holder's
// renewals stopped: either the apiserver is down or the holder is cut off
// from it) reads the Lease, so that it can tell the holder, through its
// memberlist metadata, whether it still reaches the apiserver.
func (e *Elector) probeAPI(ctx context.Context, now time.Time) {
	if now.Sub(time.Unix(0, e.apiSeen.Load())) < 2*e.cfg.RenewInterval || !e.probing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer e.probing.Store(false)
		pctx, cancel := context.WithTimeout(ctx, e.cfg.RenewInterval)
		defer cancel()
		sel := fields.OneTermEqualSelector("metadata.name", e.cfg.LeaseName).String()
		if _, err := e.leases().List(pctx, metav1.ListOptions{FieldSelector: sel}); err == nil {
			e.apiAnswered()
		}
		sleep(ctx, e.cfg.RenewInterval)
	}()
}

func (e *Elector) send(s State) {
	select {
	case <-e.states:
	default:
	}
	e.states <- s
}

type leaseEvent struct{ lease *coordinationv1.Lease }

// watchLease feeds the Run loop with the Lease, newest only.
func (e *Elector) watchLease(ctx context.Context, out chan leaseEvent, deniedc chan<- error) {
	err := streamLease(ctx, e.leases(), e.cfg.LeaseName, e.cfg.Logger, func(l *coordinationv1.Lease) {
		e.apiAnswered()
		select {
		case <-out:
		default:
		}
		select {
		case out <- leaseEvent{l}:
		case <-ctx.Done():
		}
	})
	if err != nil {
		deniedc <- err
	}
}

// streamLease calls send with the Lease (nil when absent) at start and on
// every change until ctx ends, listing again whenever the watch breaks. It
// returns only a permission error (or nil when ctx ends).
func streamLease(ctx context.Context, lc leaseClient, name string, log *slog.Logger, send func(*coordinationv1.Lease)) error {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	for ctx.Err() == nil {
		list, err := lc.List(ctx, metav1.ListOptions{FieldSelector: sel})
		if apierrors.IsForbidden(err) {
			return denied("read the gateway Lease", err)
		}
		if err != nil {
			log.Debug("list the gateway Lease", "err", err)
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		if len(list.Items) == 0 {
			send(nil)
		} else {
			send(&list.Items[0])
		}
		w, err := lc.Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: list.ResourceVersion})
		if apierrors.IsForbidden(err) {
			return denied("watch the gateway Lease", err)
		}
		if err != nil {
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		for ev := range w.ResultChan() {
			l, ok := ev.Object.(*coordinationv1.Lease)
			if !ok {
				break // an error status: list again
			}
			if ev.Type == watch.Deleted {
				send(nil)
			} else {
				send(l)
			}
		}
		w.Stop()
	}
	return nil
}

func denied(what string, err error) error {
	return fmt.Errorf("election: not allowed to %s (check the gateway's RBAC in deploy/gateway/rbac.yaml): %w", what, err)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func ptr[T any](v T) *T { return &v }

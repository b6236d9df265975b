package election

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
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

// Config of an Elector. Client, Identity and Gossip.Peers are required; zero
// durations take the defaults (3 s lease, 200 ms renewals, 650 ms deadline: 250 ms short of memberlist's quickest verdict, a margin for a loaded node).
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
	Gossip        GossipConfig
	Logger        *slog.Logger
}

func (c *Config) defaults() error {
	if c.Client == nil || c.Identity == "" {
		return errors.New("election: Client and Identity (the node name) are required")
	}
	if c.Gossip.Peers == nil {
		return errors.New("election: Gossip.Peers is required (election.CandidatePeers in a cluster); without it a crashed holder is only replaced when its Lease expires")
	}
	if c.Namespace == "" {
		c.Namespace = defaults.Namespace
	}
	if c.LeaseName == "" {
		c.LeaseName = DefaultLeaseName
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = 3 * time.Second
	}
	if c.RenewInterval == 0 {
		c.RenewInterval = 200 * time.Millisecond
	}
	if c.RenewDeadline == 0 {
		c.RenewDeadline = 650 * time.Millisecond
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
	// holding: the renewal deadline passed with the apiserver unreachable,
	// and the role is kept because no other candidate can take it (doc.go).
	holding bool
	lastTry time.Time // start of the last renewal attempt
	// apiSeen (unix ns) is when the apiserver last answered: a list, a
	// watch event, a write. probing: a standby checks it (see probeAPI).
	apiSeen atomic.Int64
	probing atomic.Bool
	fatal   error // a permission the election needs is missing
	// Log an apiserver failure once per run of failures, not every tick.
	renewFailing, acquireFailing bool
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
		switch {
		case e.lease == nil:
			e.stepDown(reasonLost, "the Lease was deleted")
		case !e.ours(e.lease):
			h, ep := LeaseHolder(e.lease)
			e.stepDown(reasonLost, fmt.Sprintf("the Lease is held by %q at epoch %d", h, ep))
		case now.Sub(e.lastRenew) > e.cfg.RenewDeadline:
			hold, why := e.members.holdable(now, e.cfg.RenewDeadline, now.Sub(e.lastRenew))
			if !hold || handOverForSlowness(e.renewFailing, e.members.lone(), now.Sub(e.lastRenew), e.cfg) {
				if why == "" {
					why = "the apiserver answers too slowly"
				}
				e.stepDown(reasonRenewDeadline, fmt.Sprintf("no renewal for %v and %s", now.Sub(e.lastRenew).Round(time.Millisecond), why))
				break
			}
			if !e.holding {
				e.holding = true
				e.metrics.holding.Set(1)
				e.cfg.Logger.Warn("the apiserver is unreachable: keeping the active role, since every other candidate answers, none claims the role and none reaches the apiserver",
					"node", e.cfg.Identity, "epoch", e.epoch, "lastRenewal", now.Sub(e.lastRenew).Round(time.Millisecond))
			}
			if now.Sub(e.lastTry) >= e.cfg.RenewInterval {
				e.renew(ctx)
			}
		case now.Sub(e.lastRenew) >= e.cfg.RenewInterval:
			e.renew(ctx)
		}
	} else if reason, why := e.acquirable(now); reason != "" && !now.Before(e.nextTry) {
		e.acquire(ctx, reason, why)
	} else {
		e.probeAPI(ctx, now)
	}
	e.publish()
}

// handOverForSlowness: a holder past its renew deadline with no failed
// renewal (it was not scheduled in time, or the apiserver is slow, not
// gone) steps down so that a candidate that may do better takes over. A
// lone candidate has nobody to hand over to — stepping down would only tear
// its data plane down and rebuild it a moment later — so it holds until
// the Lease would expire, when a candidate that has just appeared could
// take it.
func handOverForSlowness(renewFailing, lone bool, silent time.Duration, cfg Config) bool {
	if renewFailing {
		return false // the outage case: holdable decides
	}
	return !lone || silent >= cfg.LeaseDuration-cfg.RenewDeadline
}

func (e *Elector) ours(l *coordinationv1.Lease) bool {
	h, ep := LeaseHolder(l)
	return h == e.cfg.Identity && ep == e.epoch
}

// acquirable says why a standby may take the Lease now (a metric label and
// a message), or "" if it may not.
func (e *Elector) acquirable(now time.Time) (reason, why string) {
	if e.lease == nil {
		return reasonNoLease, "no Lease yet"
	}
	holder, _ := LeaseHolder(e.lease)
	switch {
	case holder == "":
		return reasonReleased, "the Lease was released"
	case holder == e.cfg.Identity:
		// A previous run of this node, or this run's tenure that stepped
		// down: either way over; a new tenure gets a new epoch.
		return reasonOwnTenure, "the Lease names this node from an ended tenure"
	}
	if at, dead := e.members.deadSince(holder); dead && at.After(e.tenureAt) {
		return reasonHolderDead, fmt.Sprintf("memberlist declared holder %q dead", holder)
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
	if e.lease == nil {
		l := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: e.cfg.LeaseName, Namespace: e.cfg.Namespace},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &id, LeaseDurationSeconds: &dur,
				AcquireTime: &now, RenewTime: &now, LeaseTransitions: ptr(int32(1))},
		}
		got, err = e.leases().Create(ctx, l, metav1.CreateOptions{})
	} else {
		l := e.lease.DeepCopy()
		_, ep := LeaseHolder(l)
		l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds = &id, &dur
		l.Spec.AcquireTime, l.Spec.RenewTime = &now, &now
		l.Spec.LeaseTransitions = ptr(int32(ep + 1))
		// resourceVersion makes this a compare-and-swap: of several
		// standbys acting on the same observation exactly one wins.
		got, err = e.leases().Update(ctx, l, metav1.UpdateOptions{})
	}
	if err != nil {
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			e.cfg.Logger.Debug("lost the race for the gateway Lease", "node", id, "err", err)
			e.refresh(ctx)
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
	e.held, e.acquireFailing, e.renewFailing = true, false, false
	e.apiAnswered()
	_, e.epoch = LeaseHolder(got)
	e.metrics.acquiredFor(reason)
	e.lastRenew = start
	e.observe(got, time.Now())
	e.cfg.Logger.Info("active gateway", "node", id, "epoch", e.epoch, "reason", why)
}

func (e *Elector) renew(ctx context.Context) {
	start := time.Now()
	e.lastTry = start
	timeout := e.cfg.RenewDeadline - start.Sub(e.lastRenew)
	if e.holding {
		timeout = e.cfg.RenewInterval // keep re-checking holdable meanwhile
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	l := e.lease.DeepCopy()
	now := metav1.NewMicroTime(start)
	l.Spec.RenewTime = &now
	got, err := e.leases().Update(ctx, l, metav1.UpdateOptions{})
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return // Run is ending
		}
		if apierrors.IsConflict(err) {
			// Someone else wrote the Lease: read it; step() steps down
			// unless it is still ours.
			e.refresh(ctx)
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
			e.cfg.Logger.Warn("renew the gateway Lease; retrying until the deadline", "node", e.cfg.Identity, "deadline", e.cfg.RenewDeadline, "err", err)
		}
		e.renewFailing = true
		return
	}
	e.lastRenew, e.renewFailing = start, false
	e.apiAnswered()
	if e.holding {
		e.holding = false
		e.metrics.holding.Set(0)
		e.cfg.Logger.Info("the apiserver answers again: renewed the Lease", "node", e.cfg.Identity, "epoch", e.epoch)
	}
	e.observe(got, time.Now())
}

// giveUp empties the holder (keeping the epoch, which the next holder
// increments) and leaves memberlist.
func (e *Elector) giveUp(ctx context.Context) error {
	var err error
	if e.held {
		l := e.lease.DeepCopy()
		empty := ""
		now := metav1.NewMicroTime(time.Now())
		l.Spec.HolderIdentity, l.Spec.RenewTime = &empty, &now
		if _, uerr := e.leases().Update(ctx, l, metav1.UpdateOptions{}); uerr != nil && !apierrors.IsConflict(uerr) {
			err = fmt.Errorf("release the gateway Lease: %w", uerr)
		}
		e.held = false
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
		e.observe(&list.Items[0], time.Now())
	}
}

// observe records a Lease seen at now, ignoring one older than what we have
// (a watch event can trail the answer to our own write).
func (e *Elector) observe(l *coordinationv1.Lease, now time.Time) {
	if l != nil && e.lease != nil && olderRV(l.ResourceVersion, e.lease.ResourceVersion) {
		return
	}
	if l == nil {
		e.lease = nil
		e.observedAt, e.tenureAt = now, now
		return
	}
	oh, oep := LeaseHolder(e.lease)
	nh, nep := LeaseHolder(l)
	if e.lease == nil || oh != nh || oep != nep {
		e.tenureAt = now
	}
	if e.lease == nil || l.ResourceVersion != e.lease.ResourceVersion {
		e.observedAt = now
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

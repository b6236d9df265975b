package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/gateway"
	"github.com/tunnelmesh/tunnelmesh/pkg/gossip"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/brokersecret"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/discovery"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/election"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/keysecret"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	"github.com/tunnelmesh/tunnelmesh/pkg/routeagent"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// follower is the broker as the engine sees it: the latest base snapshot
// (from the broker, the state file or the view a previous active stored in
// the cluster) with what cross-cluster gossip knows laid over it
// (gossip.Overlay). It keeps the base for the status the active writes.
type follower struct {
	*brokerclient.Client
	local string
	seen  func(api.Snapshot)

	mu       sync.Mutex
	snap     *api.Snapshot
	remotes  map[string]gossip.Remote
	overlaid []string
	onChange func(api.Snapshot)
	log      *slog.Logger
}

func (f *follower) Follow(ctx context.Context, onChange func(api.Snapshot)) error {
	f.mu.Lock()
	f.onChange = onChange
	f.mu.Unlock()
	f.push()
	return f.Client.Follow(ctx, func(s api.Snapshot) {
		f.set(s)
		f.push()
	})
}

func (f *follower) set(s api.Snapshot) {
	f.mu.Lock()
	f.snap = &s
	f.mu.Unlock()
	if f.seen != nil {
		f.seen(s)
	}
}

// adopt makes a stored view the base unless ours is newer.
func (f *follower) adopt(s api.Snapshot) bool {
	f.mu.Lock()
	if f.snap != nil && f.snap.Revision > s.Revision {
		f.mu.Unlock()
		return false
	}
	f.snap = &s
	f.mu.Unlock()
	f.push()
	return true
}

// setRemotes takes gossip's current knowledge of the other clusters.
func (f *follower) setRemotes(r map[string]gossip.Remote) {
	f.mu.Lock()
	f.remotes = r
	f.mu.Unlock()
	f.push()
}

func (f *follower) latest() *api.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap
}

// view is the base with gossip laid over it; ok is false without a base.
func (f *follower) view() (api.Snapshot, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.snap == nil {
		return api.Snapshot{}, false
	}
	v, over := gossip.Overlay(*f.snap, f.local, f.remotes)
	if !slices.Equal(over, f.overlaid) && f.log != nil {
		if len(over) > 0 {
			f.log.Info("endpoints of remote clusters' new active gateways from gossip (newer than the broker's records)", "clusters", over)
		} else {
			f.log.Info("the broker's records of every remote cluster are current again; gossip overrides nothing")
		}
	}
	f.overlaid = over
	return v, true
}

func (f *follower) push() {
	v, ok := f.view()
	f.mu.Lock()
	cb := f.onChange
	f.mu.Unlock()
	if ok && cb != nil {
		cb(v)
	}
}

// runCandidate runs the gateway candidate: standby data plane, elector,
// role changes, status while active; graceful stop on ctx end.
func (r *runner) runCandidate(ctx context.Context, self routeagent.Self, ips []netip.Addr) error {
	log := r.log.With("role", "gateway")
	bi, err := r.waitBrokerSecret(ctx)
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	cidrs, err := discovery.Discover(dctx, r.cfg.Client, r.cfg.Overrides)
	cancel()
	if err != nil {
		return fmt.Errorf("discover the cluster's CIDRs (or pass --pod-cidr and --service-cidr): %w", err)
	}
	for _, w := range cidrs.Warnings {
		log.Warn("CIDR discovery", "warning", w)
	}
	log.Info("cluster CIDRs", "pod", discovery.Join(cidrs.Pod), "podFrom", cidrs.PodFrom,
		"service", discovery.Join(cidrs.Service), "serviceFrom", cidrs.ServiceFrom)

	bc, err := brokerclient.New(bi.URL, bi.CA, bi.Credential)
	if err != nil {
		return fmt.Errorf("broker client for %s: %w", bi.URL, err)
	}
	bc.Logger = log
	privateIP, ok := firstAddr(ips, true)
	if !ok {
		privateIP = ips[0]
	}
	mtu := r.cfg.MTU
	if mtu == 0 {
		mtu = self.MTU - defaults.WireGuardOverhead
	}
	local := gateway.Local{ClusterID: bi.ClusterID, Interface: r.cfg.Interface, PodCIDRs: cidrs.Pod, ServiceCIDRs: cidrs.Service,
		UnderlayAddrs: ips, BrokerAddrs: brokerAddrs(bi.URL)}

	key, err := r.clusterKey(ctx)
	if err != nil {
		return err
	}
	var lastMismatch string
	floor := &epochFloor{}
	f := &follower{Client: bc, local: bi.ClusterID, log: log, seen: func(s api.Snapshot) {
		floor.raise(recordedEpoch(s, bi.ClusterID))
		for _, c := range s.Clusters {
			if c.ID != bi.ClusterID {
				continue
			}
			msg := ""
			if err := mismatch(bi.ClusterID, cidrs, &c); err != nil {
				msg = err.Error()
			}
			if msg != lastMismatch && msg != "" {
				log.Error("the cluster's CIDRs differ from the broker's record; routes follow the broker's record", "err", msg)
			}
			lastMismatch = msg
		}
	}}
	if s, ok := loadState(r.cfg.StateFile); ok {
		f.set(s)
	}
	eng := gateway.New(gateway.Config{
		Local: local, Hostname: r.cfg.NodeName, PrivateKey: key, ListenPort: r.cfg.ListenPort, PublicIP: r.cfg.PublicIP,
		PrivateIP: privateIP.String(), MTU: mtu, Mode: r.cfg.WireGuard, Role: gateway.RoleStandby,
		StateFile: r.cfg.StateFile, HeartbeatInterval: r.cfg.HeartbeatInterval, Log: log,
	}, f)
	if r.cfg.Metrics != nil {
		if err := r.cfg.Metrics.Register(eng.Collector()); err != nil {
			log.Warn("register gateway metrics", "err", err)
		}
	}
	// Only the local CIDRs and the nodes may send into the tunnel.
	nodesCtx, stopNodes := context.WithCancel(ctx)
	defer stopNodes()
	go func() { _ = followNodeAddrs(nodesCtx, r.cfg.Client, eng.SetNodeAddrs) }()
	el, err := r.elector(ips, keysecret.GossipKey(key), floor.get)
	if err != nil {
		return err
	}
	go r.readRecordedEpochs(ctx, floor, bi.ClusterID)

	// The engine and the elector outlive ctx: a graceful stop tears the data
	// plane down first and releases the Lease after.
	engCtx, stopEng := context.WithCancel(context.Background())
	defer stopEng()
	engDone := make(chan error, 1)
	go func() { engDone <- eng.Run(engCtx) }()
	elCtx, stopEl := context.WithCancel(context.Background())
	defer stopEl()
	elDone := make(chan error, 1)
	go func() { elDone <- el.Run(elCtx) }()

	endpoint := net.JoinHostPort(endpointIP(r.cfg.PublicIP, privateIP), strconv.Itoa(r.cfg.ListenPort))
	sw := &statusLoop{r: r, floor: floor, w: status.Writer{Client: r.cfg.Dynamic, Namespace: r.cfg.Namespace, ClusterID: bi.ClusterID},
		bc: bc, f: f, eng: eng, cidrs: cidrs, clusterID: bi.ClusterID, publicKey: key.PublicKey().String(), endpoint: endpoint}
	// The clusterset gossip key must be one secret shared by every member
	// cluster. Nothing the gateway has qualifies: the WireGuard key is per
	// cluster, the broker CA is public, credentials are per cluster and join
	// tokens expire. The broker makes it once and hands it only to members
	// (GET /v1/clusterset); `meshctl join` copies it into the broker Secret
	// (gossip-key), so every broker-info file, however issued, leads to the
	// same key. Without it the gateways do not gossip (gossip is what can
	// move a peer's endpoint, so it is never run unauthenticated).
	if bi.GossipKey == nil {
		log.Warn("the broker Secret has no " + brokersecret.KeyGossip + ": not gossiping with other clusters' gateways, so a remote " +
			"cluster's failover during a broker outage is learned only when its gateway reaches this one; re-run `meshctl join` to add it")
	}
	ten := tenure{r: r, eng: eng, f: f, floor: floor, store: ViewStore{Client: r.cfg.Client, Namespace: r.cfg.Namespace}, gossipKey: bi.GossipKey,
		self: gossip.Gateway{ClusterID: bi.ClusterID, Hostname: r.cfg.NodeName, Endpoint: endpoint, PublicKey: key.PublicKey().String()},
		log:  log.With("part", "tenure")}
	// One tenure per epoch while active, cancelled on step-down without
	// waiting (a store or a gossip goodbye must never delay the data plane);
	// waited for on return.
	var tenures sync.WaitGroup
	defer tenures.Wait()
	stopTenure := func() {}
	defer func() { stopTenure() }()
	startTenure := func(epoch int64) {
		stopTenure()
		tctx, cancel := context.WithCancel(ctx)
		tenures.Add(1)
		go func() { defer tenures.Done(); ten.run(tctx, epoch) }()
		stopTenure = cancel
	}
	// Status writes run apart so that a slow apiserver or broker never
	// delays a role change; the loop is told the epoch while active, 0 else.
	epochs := make(chan int64, 1)
	statusCtx, stopStatus := context.WithCancel(ctx)
	statusDone := make(chan struct{})
	go func() { defer close(statusDone); sw.run(statusCtx, epochs, r.cfg.StatusInterval) }()
	defer func() { stopStatus(); <-statusDone }()
	tell := func(e int64) {
		select {
		case <-epochs:
		default:
		}
		epochs <- e
	}
	// The first State is always applied and logged: "" is no role yet.
	role, epoch := election.Role(""), int64(0)
	stop := func(graceful bool) error {
		stopEng()
		err := <-engDone
		if graceful {
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if rerr := el.Release(rctx); rerr != nil {
				err = errors.Join(err, fmt.Errorf("release the Lease: %w", rerr))
			}
			cancel()
		}
		stopEl()
		<-elDone
		return err
	}
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping: tearing the data plane down, then releasing the Lease", "wasActive", role == election.Active)
			stopTenure()
			err := stop(true)
			log.Info("stopped", "err", err)
			return err
		case err := <-engDone:
			engDone <- err
			return errors.Join(fmt.Errorf("gateway data plane stopped: %w", err), stop(true))
		case err := <-elDone:
			elDone <- err
			return errors.Join(fmt.Errorf("election stopped: %w", err), stop(false))
		case st := <-el.States():
			changed := st.Role != role || (st.Role == election.Active && st.Epoch != epoch)
			role, epoch = st.Role, st.Epoch
			if !changed {
				continue
			}
			if role == election.Active {
				log.Info("active", "epoch", epoch)
				eng.SetRole(gateway.RoleActive, epoch)
				tell(epoch)
				startTenure(epoch)
			} else {
				log.Info("standby", "holder", st.Holder, "epoch", epoch)
				stopTenure()
				eng.SetRole(gateway.RoleStandby, epoch)
				tell(0)
			}
		}
	}
}

// waitBrokerSecret waits for `meshctl join` to have written the broker Secret.
func (r *runner) waitBrokerSecret(ctx context.Context) (brokersecret.Info, error) {
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		bi, err := brokersecret.Read(rctx, r.cfg.Client, r.cfg.Namespace)
		cancel()
		if err == nil {
			return bi, nil
		}
		if !errors.Is(err, brokersecret.ErrNotFound) && ctx.Err() == nil {
			r.log.Error("broker connection", "err", err)
		} else if ctx.Err() == nil {
			r.log.Warn("waiting for the broker Secret", "err", err)
		}
		sleep(ctx, 5*time.Second)
		if ctx.Err() != nil {
			return brokersecret.Info{}, ctx.Err()
		}
	}
}

func (r *runner) elector(ips []netip.Addr, gossipKey []byte, floor func() int64) (*election.Elector, error) {
	bind := ips[0].String()
	el, err := election.New(election.Config{
		Client: r.cfg.Client, Namespace: r.cfg.Namespace, LeaseName: r.leaseName(), Identity: r.cfg.NodeName,
		LeaseDuration: r.cfg.LeaseDuration, RenewInterval: r.cfg.RenewInterval, RenewDeadline: r.cfg.RenewDeadline,
		Labelled: election.CandidateNames(r.cfg.Client), EpochFloor: floor,
		Gossip: election.GossipConfig{BindAddr: bind, BindPort: r.cfg.GossipPort, SecretKey: gossipKey,
			Peers: election.CandidatePeers(r.cfg.Client, r.cfg.GossipPort)},
		Logger: r.log.With("role", "election"),
	})
	if err != nil {
		return nil, fmt.Errorf("election: %w", err)
	}
	return el, nil
}

// clusterKey reads the cluster's WireGuard key, creating it if this is the
// first candidate ever: keysecret's create-or-conflict lets exactly one of
// several racing candidates create it and the others read the winner's, so
// no election is needed first. Retried until it works or ctx ends (a
// starting apiserver, a slow one).
func (r *runner) clusterKey(ctx context.Context) (wgtypes.Key, error) {
	store := keysecret.Store{Client: r.cfg.Client, Namespace: r.cfg.Namespace}
	for {
		ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
		k, err := store.Ensure(ectx)
		cancel()
		if err == nil {
			r.log.Info("the cluster's WireGuard key", "publicKey", k.PublicKey().String())
			return k, nil
		}
		if ctx.Err() != nil {
			return wgtypes.Key{}, ctx.Err()
		}
		if apierrors.IsForbidden(err) {
			return wgtypes.Key{}, fmt.Errorf("the cluster's key Secret (check the gateway's RBAC in deploy/gateway/rbac.yaml): %w", err)
		}
		r.log.Warn("read or create the cluster's key Secret (will retry)", "err", err)
		sleep(ctx, 2*time.Second)
	}
}

// statusLoop writes the MeshGateway status while active.
type statusLoop struct {
	r                              *runner
	w                              status.Writer
	bc                             *brokerclient.Client
	f                              *follower
	eng                            *gateway.Engine
	floor                          *epochFloor
	cidrs                          discovery.CIDRs
	clusterID, publicKey, endpoint string
	conds                          []metav1.Condition
	staleEpoch                     int64
}

// run writes at once when told an epoch, then every interval while active.
func (s *statusLoop) run(ctx context.Context, epochs <-chan int64, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var epoch int64
	for {
		select {
		case <-ctx.Done():
			return
		case epoch = <-epochs:
		case <-t.C:
		}
		if epoch > 0 {
			s.write(ctx, epoch)
		}
	}
}

func (s *statusLoop) write(ctx context.Context, epoch int64) {
	if epoch <= s.staleEpoch {
		return
	}
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	reachable := s.bc.Healthy(hctx) == nil
	cancel()
	st := BuildStatus(StatusInput{ClusterID: s.clusterID, Node: s.r.cfg.NodeName, Epoch: epoch, PublicKey: s.publicKey,
		Endpoint: s.endpoint, CIDRs: s.cidrs, Snapshot: s.f.latest(), Health: s.eng.Health(), BrokerReachable: reachable})
	for _, c := range st.Conditions {
		meta.SetStatusCondition(&s.conds, c)
	}
	st.Conditions = append([]metav1.Condition(nil), s.conds...)
	if st.Remotes == nil && s.f.latest() == nil {
		// No broker state at all: keep the predecessor's remote CIDRs for the route agents.
		if old, err := status.Get(ctx, s.r.cfg.Dynamic, s.r.cfg.Namespace, s.clusterID); err == nil {
			st.Remotes = old.Status.Remotes
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := s.w.Write(wctx, st)
	switch {
	case errors.Is(err, status.ErrStale):
		s.staleEpoch = epoch
		s.r.log.Warn("a newer active gateway owns the status; not writing it", "epoch", epoch)
		// Or the Lease was reset below it: the elector then takes a higher epoch.
		if rerr := s.r.readStatusEpoch(ctx, s.floor, s.clusterID); rerr != nil {
			s.r.log.Debug("read the status's epoch", "err", rerr)
		}
	case err != nil:
		s.r.log.Warn("write MeshGateway status", "err", err)
	}
}

func loadState(file string) (api.Snapshot, bool) {
	var s api.Snapshot
	if file == "" {
		return s, false
	}
	b, err := os.ReadFile(file)
	if err != nil || json.Unmarshal(b, &s) != nil {
		return s, false
	}
	return s, true
}

func brokerAddrs(raw string) []netip.Addr {
	u, err := url.Parse(raw)
	if err != nil {
		return nil
	}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil {
		return []netip.Addr{a.Unmap()}
	}
	ips, err := net.LookupIP(u.Hostname())
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ip := range ips {
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func endpointIP(public string, private netip.Addr) string {
	if public != "" {
		return public
	}
	return private.String()
}

package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/gateway"
	"github.com/tunnelmesh/tunnelmesh/pkg/gossip"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/brokersecret"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/discovery"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/election"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/keysecret"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	"github.com/tunnelmesh/tunnelmesh/pkg/nft"
	"github.com/tunnelmesh/tunnelmesh/pkg/routeagent"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// runCandidate wires the gateway candidate: its inputs (one gateway.Source),
// the engine, the elector, the status writer and the tenure, then runs
// their roles (roles.go) until ctx ends.
func (r *runner) runCandidate(ctx context.Context, self routeagent.Self, ips []netip.Addr) error {
	log := r.log.With("role", "gateway")
	g, err := r.prepareGateway(ctx, log, self, ips)
	if err != nil {
		return err
	}
	src := gateway.NewSource(gateway.SourceConfig{Broker: g.broker, StateFile: r.cfg.StateFile, Local: g.local, Log: log})
	// The epochs recorded outside the Lease (the broker's records in the
	// Source's base, the status, the stored view) keep the elector's above them.
	floor := &epochFloor{}
	go followRecordedEpoch(ctx, src, g.info.ClusterID, floor)
	go r.readRecordedEpochs(ctx, floor, g.info.ClusterID)
	eng := gateway.New(gateway.Config{
		Local: g.local, Hostname: r.cfg.NodeName, PrivateKey: g.key, ListenPort: r.cfg.ListenPort, PublicIP: r.cfg.PublicIP,
		PrivateIP: g.privateIP.String(), MTU: g.mtu, Mode: r.cfg.WireGuard, Role: gateway.RoleStandby,
		HeartbeatInterval: r.cfg.HeartbeatInterval, Log: log,
	}, g.broker, src)
	if r.cfg.Metrics != nil {
		if err := r.cfg.Metrics.Register(eng.Collector()); err != nil {
			log.Warn("register gateway metrics", "err", err)
		}
	}
	// Only the local CIDRs and the nodes may send into the tunnel.
	nodesCtx, stopNodes := context.WithCancel(ctx)
	defer stopNodes()
	go func() { _ = followNodeAddrs(nodesCtx, r.cfg.Client, eng.SetNodeAddrs) }()
	// A remote CIDR covering the API server is refused (its endpoints change rarely).
	go r.followAPIServerAddrs(nodesCtx, 30*time.Second, eng.SetAPIServerAddrs)
	// The fence lets WireGuard send only while the elector says this node
	// may act as the active one (nft.Fence): built closed, before the device.
	fence, err := nft.OpenFence(r.cfg.ListenPort)
	if err != nil {
		return fmt.Errorf("the gateway's WireGuard fence (nftables): %w", err)
	}
	entitled := func(until time.Time) {
		if err := fence.Allow(until); err != nil {
			log.Error("open or close the WireGuard fence", "until", until, "err", err)
		}
	}
	el, err := r.elector(ips, keysecret.GossipKey(g.key), floor.get, entitled)
	if err != nil {
		return err
	}
	clusterID, publicKey := g.info.ClusterID, g.key.PublicKey().String()
	sw := &statusLoop{r: r, floor: floor, candidates: el.Candidates, w: status.Writer{Client: r.cfg.Dynamic, Namespace: r.cfg.Namespace, ClusterID: clusterID},
		bc: g.broker, src: src, eng: eng, cidrs: g.cidrs, clusterID: clusterID, publicKey: publicKey, endpoint: g.endpoint,
		log: log}
	ten := tenure{r: r, eng: eng, src: src, floor: floor, store: ViewStore{Client: r.cfg.Client, Namespace: r.cfg.Namespace},
		gossipKey: g.info.GossipKey, key: g.key, log: log.With("part", "tenure"),
		self: gossip.Gateway{ClusterID: clusterID, Hostname: r.cfg.NodeName, Endpoint: g.endpoint, PublicKey: publicKey}}
	return roles{log: log, eng: eng, el: el, fence: fence, status: sw, tenure: ten, statusEvery: r.cfg.StatusInterval}.run(ctx)
}

// gatewaySetup is what a candidate learns before it can open its data plane.
type gatewaySetup struct {
	info      brokersecret.Info
	cidrs     discovery.CIDRs
	broker    *brokerclient.Client
	key       wgtypes.Key
	local     gateway.Local
	privateIP netip.Addr
	mtu       int
	endpoint  string // host:port remote gateways reach this one at
}

// prepareGateway waits for the broker Secret, discovers the cluster's CIDRs
// and reads (or makes) the cluster's key.
func (r *runner) prepareGateway(ctx context.Context, log *slog.Logger, self routeagent.Self, ips []netip.Addr) (gatewaySetup, error) {
	var g gatewaySetup
	var err error
	if g.info, err = r.waitBrokerSecret(ctx); err != nil {
		return g, err
	}
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	g.cidrs, err = discovery.Discover(dctx, r.cfg.Client, r.cfg.Overrides)
	cancel()
	if err != nil {
		return g, fmt.Errorf("discover the cluster's CIDRs (or pass --pod-cidr and --service-cidr): %w", err)
	}
	for _, w := range g.cidrs.Warnings {
		log.Warn("CIDR discovery", "warning", w)
	}
	log.Info("cluster CIDRs", "pod", discovery.Join(g.cidrs.Pod), "podFrom", g.cidrs.PodFrom,
		"service", discovery.Join(g.cidrs.Service), "serviceFrom", g.cidrs.ServiceFrom)
	if g.broker, err = brokerclient.New(g.info.URL, g.info.CA, g.info.Credential); err != nil {
		return g, fmt.Errorf("broker client for %s: %w", g.info.URL, err)
	}
	g.broker.Logger = log
	var ok bool
	if g.privateIP, ok = firstAddr(ips, true); !ok {
		g.privateIP = ips[0]
	}
	if g.mtu = r.cfg.MTU; g.mtu == 0 {
		g.mtu = self.MTU - defaults.WireGuardOverhead
	}
	g.local = gateway.Local{ClusterID: g.info.ClusterID, Interface: r.cfg.Interface, PodCIDRs: g.cidrs.Pod,
		ServiceCIDRs: g.cidrs.Service, UnderlayAddrs: ips, BrokerAddrs: brokerAddrs(g.info.URL),
		DNSAddrs: gateway.Nameservers(r.cfg.ResolvConf...)}
	g.endpoint = net.JoinHostPort(endpointIP(r.cfg.PublicIP, g.privateIP), strconv.Itoa(r.cfg.ListenPort))
	// The clusterset gossip key must be one secret shared by every member
	// cluster. Nothing the gateway has qualifies: the WireGuard key is per
	// cluster, the broker CA is public, credentials are per cluster and join
	// tokens expire. The broker makes it once and hands it only to members
	// (GET /v1/clusterset); `meshctl join` copies it into the broker Secret
	// (gossip-key), so every broker-info file, however issued, leads to the
	// same key. Without it the gateways do not gossip (gossip is what can
	// move a peer's endpoint, so it is never run unauthenticated).
	if g.info.GossipKey == nil {
		log.Warn("the broker Secret has no " + brokersecret.KeyGossip + ": not gossiping with other clusters' gateways, so a remote " +
			"cluster's failover during a broker outage is learned only when its gateway reaches this one; re-run `meshctl join` to add it")
	}
	g.key, err = r.clusterKey(ctx)
	return g, err
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

func (r *runner) elector(ips []netip.Addr, gossipKey []byte, floor func() int64, entitled func(time.Time)) (*election.Elector, error) {
	bind := ips[0].String()
	el, err := election.New(election.Config{
		Client: r.cfg.Client, Namespace: r.cfg.Namespace, LeaseName: r.leaseName(), Identity: r.cfg.NodeName,
		LeaseDuration: r.cfg.LeaseDuration, RenewInterval: r.cfg.RenewInterval, RenewDeadline: r.cfg.RenewDeadline,
		Labelled: election.CandidateNames(r.cfg.Client), EpochFloor: floor, Entitled: entitled,
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

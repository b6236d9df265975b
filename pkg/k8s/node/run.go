package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/gossip"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/discovery"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/election"
	"github.com/tunnelmesh/tunnelmesh/pkg/routeagent"
	"github.com/tunnelmesh/tunnelmesh/pkg/wg"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// Config configures one node's roles.
type Config struct {
	Client    kubernetes.Interface
	Dynamic   dynamic.Interface
	Namespace string // defaults.Namespace when empty
	NodeName  string
	// NodeIPs, when set, are this node's underlay addresses (e.g. the pod's
	// status.hostIP); otherwise the Node's InternalIPs.
	NodeIPs []netip.Addr
	// Overrides of the discovered CIDRs (flags).
	Overrides discovery.Overrides

	// Gateway data plane (candidates only).
	Interface  string // defaults.Interface when empty
	ListenPort int    // defaults.ListenPort when 0
	MTU        int    // 0: the underlay device's MTU - defaults.WireGuardOverhead
	WireGuard  wg.Mode
	PublicIP   string
	// StateFile keeps the last broker state on the node (a hostPath), so that
	// a gateway restarted during a broker outage still has its tunnels.
	StateFile string
	// GossipPort is the candidates' memberlist port (election.DefaultGossipPort when 0).
	GossipPort int
	// ClustersetGossipPort is the active gateways' cross-cluster memberlist
	// port on the tunnel addresses, the same in every cluster (gossip.DefaultPort when 0).
	ClustersetGossipPort int
	// Election tunes the Lease (zero: the election package's defaults).
	LeaseDuration, RenewInterval, RenewDeadline time.Duration
	// HeartbeatInterval to the broker (default 10 s); StatusInterval between
	// MeshGateway writes while active (default 5 s).
	HeartbeatInterval, StatusInterval time.Duration

	// Route agent.
	AgentMode    routeagent.Mode
	ReplyDevices []string

	Metrics prometheus.Registerer // nil: none
	Log     *slog.Logger
}

type runner struct {
	cfg Config
	log *slog.Logger
}

// Run runs the node's roles until ctx ends. A candidate then tears its data
// plane down and releases the Lease (graceful stop); the route agent leaves
// its routes in place for the next process.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Client == nil || cfg.Dynamic == nil {
		return errors.New("node: Kubernetes clients are required")
	}
	if cfg.NodeName == "" {
		return errors.New("node name is empty: pass --node-name (in a pod: the downward API's spec.nodeName as NODE_NAME)")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = defaults.Namespace
	}
	if cfg.Interface == "" {
		cfg.Interface = defaults.Interface
	}
	if cfg.ListenPort == 0 {
		cfg.ListenPort = defaults.ListenPort
	}
	if cfg.ListenPort < 1 || cfg.ListenPort > 65535 {
		return fmt.Errorf("listen port %d: want a fixed UDP port in 1-65535", cfg.ListenPort)
	}
	if cfg.GossipPort == 0 {
		cfg.GossipPort = election.DefaultGossipPort
	}
	if cfg.ClustersetGossipPort == 0 {
		cfg.ClustersetGossipPort = gossip.DefaultPort
	}
	if cfg.StatusInterval == 0 {
		cfg.StatusInterval = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if _, err := routeagent.ParseMode(string(cfg.AgentMode)); err != nil {
		return err
	}
	r := &runner{cfg: cfg, log: cfg.Log.With("node", cfg.NodeName)}

	gctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	n, err := r.cfg.Client.CoreV1().Nodes().Get(gctx, cfg.NodeName, metav1.GetOptions{})
	cancel()
	if err != nil {
		return fmt.Errorf("read node %s (is --node-name right, and may this ServiceAccount get nodes?): %w", cfg.NodeName, err)
	}
	ips := InternalIPs(n)
	if len(cfg.NodeIPs) > 0 {
		ips = cfg.NodeIPs
	}
	if len(ips) == 0 {
		return fmt.Errorf("node %s has no InternalIP address in its status: pass --node-ip", cfg.NodeName)
	}
	self, err := routeagent.Discover(cfg.NodeName, ips)
	if err != nil {
		return fmt.Errorf("this node's underlay: %w", err)
	}
	candidate := n.Labels[election.CandidateLabel] == "true"
	r.log.Info("starting", "candidate", candidate, "internalIPs", ips, "underlay", self.Interface, "mtu", self.MTU)

	var wg sync.WaitGroup
	agentCtx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	errs := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := r.runAgent(agentCtx, self); err != nil {
			errs <- err
		}
	}()
	if candidate {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.runCandidate(ctx, self, ips); err != nil {
				errs <- err
			}
		}()
	}
	var first error
	select {
	case <-ctx.Done():
	case first = <-errs:
	}
	stopAgent()
	wg.Wait()
	close(errs)
	for err := range errs {
		first = errors.Join(first, err)
	}
	return first
}

func (r *runner) leaseName() string { return election.DefaultLeaseName }

func firstAddr(ips []netip.Addr, v4 bool) (netip.Addr, bool) {
	for _, ip := range ips {
		if ip.Is4() == v4 {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

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
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/discovery"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/election"
	"github.com/tunnelmesh/tunnelmesh/pkg/routeagent"
	"github.com/tunnelmesh/tunnelmesh/pkg/wg"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// Role is which of a node's roles a process runs.
type Role string

const (
	// RoleAuto runs the route agent, and the candidate too on a labelled
	// node: one process and one account for both (the layout of old).
	RoleAuto Role = ""
	// RoleAgent runs the route agent only (every node, a read-only account).
	RoleAgent Role = "agent"
	// RoleCandidate runs the gateway candidate only (labelled nodes).
	RoleCandidate Role = "candidate"
)

// ParseRole parses a --role value; "auto" and "" are RoleAuto.
func ParseRole(s string) (Role, error) {
	switch Role(s) {
	case "", "auto":
		return RoleAuto, nil
	case RoleAgent, RoleCandidate:
		return Role(s), nil
	}
	return "", fmt.Errorf("role %q: want %q, %q or auto", s, RoleAgent, RoleCandidate)
}

// Config configures one node's roles.
type Config struct {
	// Role picks the roles (RoleAuto: by the node's label).
	Role Role
	// ClusterID is the cluster's ID: the route agent follows only the
	// MeshGateway of that name (required with RoleAgent).
	ClusterID string
	Client    kubernetes.Interface
	Dynamic   dynamic.Interface
	Namespace string
	NodeName  string
	// NodeIPs, when set, are this node's underlay addresses (e.g. the pod's
	// status.hostIP); otherwise the Node's InternalIPs.
	NodeIPs []netip.Addr
	// Overrides of the discovered CIDRs (flags).
	Overrides discovery.Overrides

	// Gateway data plane (candidates only).
	Interface  string
	ListenPort int
	MTU        int // 0: the underlay device's MTU - defaults.WireGuardOverhead
	WireGuard  wg.Mode
	PublicIP   string
	// StateFile keeps the last broker state on the node (a hostPath), so that
	// a gateway restarted during a broker outage still has its tunnels.
	StateFile string
	// GossipPort is the candidates' memberlist port.
	GossipPort int
	// ClustersetGossipPort is the active gateways' cross-cluster memberlist
	// port on the tunnel addresses, the same in every cluster.
	ClustersetGossipPort int
	// Election tunes the Lease (zero: the election package's defaults).
	LeaseDuration, RenewInterval, RenewDeadline time.Duration
	// HeartbeatInterval to the broker (0: gateway.DefaultHeartbeatInterval);
	// StatusInterval between MeshGateway writes while active.
	HeartbeatInterval, StatusInterval time.Duration

	// ResolvConf are the node's resolv.conf files (its DNS upstreams: a
	// remote CIDR covering one is refused); missing ones are skipped.
	ResolvConf []string

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
	var missing []string
	for _, f := range []struct {
		name string
		zero bool
	}{{"Namespace", cfg.Namespace == ""}, {"Interface", cfg.Interface == ""}, {"GossipPort", cfg.GossipPort == 0},
		{"ClustersetGossipPort", cfg.ClustersetGossipPort == 0}, {"StatusInterval", cfg.StatusInterval <= 0}} {
		if f.zero {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("node: Config lacks %v (cmd/gateway's config sets every default)", missing)
	}
	if cfg.ListenPort < 1 || cfg.ListenPort > 65535 {
		return fmt.Errorf("listen port %d: want a fixed UDP port in 1-65535", cfg.ListenPort)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if _, err := routeagent.ParseMode(string(cfg.AgentMode)); err != nil {
		return err
	}
	if cfg.Role == RoleAgent && cfg.ClusterID == "" {
		return errors.New("the route agent needs the cluster's ID (--cluster-id): it follows only the MeshGateway of that name")
	}
	r := &runner{cfg: cfg, log: cfg.Log.With("node", cfg.NodeName)}

	n, err := r.readNode(ctx)
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
	candidate := cfg.Role == RoleCandidate || (cfg.Role == RoleAuto && n.Labels[election.CandidateLabel] == "true")
	agent := cfg.Role != RoleCandidate
	r.log.Info("starting", "candidate", candidate, "routeAgent", agent, "internalIPs", ips, "underlay", self.Interface, "mtu", self.MTU)

	var workers sync.WaitGroup
	agentCtx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	errs := make(chan error, 2)
	if agent {
		workers.Add(1)
		go func() {
			defer workers.Done()
			if err := r.runAgent(agentCtx, self); err != nil {
				errs <- err
			}
		}()
	}
	if candidate {
		workers.Add(1)
		go func() {
			defer workers.Done()
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
	workers.Wait()
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

// nodeReadTimeout bounds how long start-up keeps asking for its Node.
const nodeReadTimeout = 2 * time.Minute

// readNode reads this node's Node object. Right after a node (re)starts
// the apiserver's Service address may not lead to the apiserver yet
// (kube-proxy has not programmed it: connections fail or reach something
// else), so failures are retried within nodeReadTimeout; only a missing
// Node or a refused permission ends start-up at once. Exiting instead
// would leave the node without mesh routes for the kubelet's back-off.
func (r *runner) readNode(ctx context.Context) (*corev1.Node, error) {
	final := func(err error) bool {
		return apierrors.IsNotFound(err) || apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err)
	}
	var n *corev1.Node
	var last error
	err := wait.PollUntilContextTimeout(ctx, time.Second, nodeReadTimeout, true, func(ctx context.Context) (bool, error) {
		gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		got, err := r.cfg.Client.CoreV1().Nodes().Get(gctx, r.cfg.NodeName, metav1.GetOptions{})
		if err == nil || final(err) {
			n = got
			return true, err
		}
		if last == nil {
			r.log.Warn("cannot read this node yet; retrying", "err", err)
		}
		last = err
		return false, nil
	})
	if err != nil && !final(err) && last != nil {
		err = fmt.Errorf("%w (last: %v)", err, last)
	}
	return n, err
}

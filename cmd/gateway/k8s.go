package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/gossip"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/discovery"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/election"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/node"
	"github.com/tunnelmesh/tunnelmesh/pkg/routeagent"
	"github.com/tunnelmesh/tunnelmesh/pkg/wg"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

type k8sFlags struct {
	kubeconfig, nodeName, namespace, iface, mode, runDir, stateFile, publicIP, agentMode, metrics, logLevel string
	podCIDRs, svcCIDRs, replyDevices, nodeIPs                                                               []string
	listenPort, mtu, gossipPort, csGossipPort                                                               int
	leaseDuration, renewInterval, renewDeadline, heartbeat, statusInterval                                  time.Duration
}

func k8sCmd() *cobra.Command {
	var f k8sFlags
	c := &cobra.Command{
		Use:   "k8s",
		Short: "Run this node's roles in Kubernetes: route agent on every node, active/standby gateway on candidates",
		Long: `Run as the gateway DaemonSet does on every node. Every node runs the route agent;
nodes labelled ` + election.CandidateLabel + `=true are also gateway candidates, of which one is
elected active (Lease ` + election.DefaultLeaseName + `). SIGTERM tears the data plane down, then releases the Lease.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return runK8s(cmd.Context(), f) },
	}
	fl := c.Flags()
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: the pod's in-cluster configuration)")
	fl.StringVar(&f.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME, from the downward API)")
	fl.StringSliceVar(&f.nodeIPs, "node-ip", nil, "this node's underlay address (repeatable; default: the Node's InternalIPs; in the DaemonSet: status.hostIP)")
	fl.StringVar(&f.namespace, "namespace", defaults.Namespace, "namespace of the Lease, Secrets and MeshGateway")
	fl.StringSliceVar(&f.podCIDRs, "pod-cidr", nil, "this cluster's pod CIDR, overriding discovery (repeatable)")
	fl.StringSliceVar(&f.svcCIDRs, "service-cidr", nil, "this cluster's service CIDR, overriding discovery (repeatable)")
	fl.StringVar(&f.iface, "interface", defaults.Interface, "WireGuard interface name")
	fl.IntVar(&f.listenPort, "listen-port", defaults.ListenPort, "WireGuard UDP port (1-65535)")
	fl.IntVar(&f.mtu, "mtu", 0, fmt.Sprintf("tunnel MTU (default: the node's underlay MTU - %d)", defaults.WireGuardOverhead))
	fl.StringVar(&f.mode, "wireguard", "auto", "WireGuard implementation: auto, kernel or userspace")
	fl.StringVar(&f.runDir, "run-dir", wg.DefaultRunDir, "directory for the UAPI socket; another directory is bound over "+wg.DefaultRunDir+" in a private mount namespace")
	fl.StringVar(&f.stateFile, "state-file", "/var/lib/tunnelmesh/state.json", "last broker state (keep it on a hostPath), reused when restarting during a broker outage")
	fl.StringVar(&f.publicIP, "public-ip", "", "public address remote gateways should use (default: the node's InternalIP)")
	fl.IntVar(&f.gossipPort, "gossip-port", election.DefaultGossipPort, "memberlist port of the gateway candidates (TCP and UDP)")
	fl.IntVar(&f.csGossipPort, "clusterset-gossip-port", gossip.DefaultPort, "memberlist port of the active gateways of all clusters on their tunnel addresses (TCP and UDP; the same in every cluster)")
	fl.DurationVar(&f.leaseDuration, "lease-duration", 0, "Lease duration (default: the election's, 3s)")
	fl.DurationVar(&f.renewInterval, "renew-interval", 0, "Lease renewal interval (default 250ms)")
	fl.DurationVar(&f.renewDeadline, "renew-deadline", 0, "an active that cannot renew for this long steps down (default 800ms)")
	fl.DurationVar(&f.heartbeat, "heartbeat-interval", 0, "broker heartbeat interval (default 10s)")
	fl.DurationVar(&f.statusInterval, "status-interval", 0, "MeshGateway status writes while active (default 5s)")
	fl.StringVar(&f.agentMode, "agent-mode", string(routeagent.ModeVXLAN), "how nodes reach the active gateway node: vxlan or direct")
	fl.StringSliceVar(&f.replyDevices, "reply-device", nil, "a CNI overlay device replies may arrive on (e.g. flannel.1), loosened like the underlay (repeatable)")
	fl.StringVar(&f.metrics, "metrics", ":9570", "Prometheus metrics listen address (empty disables)")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	return c
}

func runK8s(ctx context.Context, f k8sFlags) error {
	log, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	if f.nodeName == "" {
		return errors.New("--node-name is required (in the DaemonSet: env NODE_NAME from fieldRef spec.nodeName)")
	}
	agentMode, err := routeagent.ParseMode(f.agentMode)
	if err != nil {
		return fmt.Errorf("--agent-mode: %w", err)
	}
	pods, err := discovery.ParsePrefixes(f.podCIDRs)
	if err != nil {
		return fmt.Errorf("--pod-cidr: %w", err)
	}
	svcs, err := discovery.ParsePrefixes(f.svcCIDRs)
	if err != nil {
		return fmt.Errorf("--service-cidr: %w", err)
	}
	var nodeIPs []netip.Addr
	for _, s := range f.nodeIPs {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("--node-ip %q: want an IP address: %w", s, err)
		}
		nodeIPs = append(nodeIPs, ip.Unmap())
	}
	// Before anything else: this may re-execute the process.
	if err := wg.UseRunDir(f.runDir); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", f.kubeconfig)
	if err != nil {
		return fmt.Errorf("client configuration (outside a pod pass --kubeconfig): %w", err)
	}
	cfg.UserAgent = "tunnelmesh-gateway/" + f.nodeName
	// client-go's default (5/s, burst 10) would queue the Lease renewals
	// (4/s) behind the watches and status writes and make them late.
	cfg.QPS, cfg.Burst = 50, 100
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if f.metrics != "" {
		ln, err := net.Listen("tcp", f.metrics)
		if err != nil {
			return fmt.Errorf("--metrics %s: %w", f.metrics, err)
		}
		srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "err", err)
			}
		}()
		defer srv.Close()
	}
	return node.Run(ctx, node.Config{
		Client: client, Dynamic: dyn, Namespace: f.namespace, NodeName: f.nodeName, NodeIPs: nodeIPs,
		Overrides: discovery.Overrides{Pod: pods, Service: svcs},
		Interface: f.iface, ListenPort: f.listenPort, MTU: f.mtu, WireGuard: wg.Mode(f.mode), PublicIP: f.publicIP,
		StateFile: f.stateFile, GossipPort: f.gossipPort, ClustersetGossipPort: f.csGossipPort,
		LeaseDuration: f.leaseDuration, RenewInterval: f.renewInterval, RenewDeadline: f.renewDeadline,
		HeartbeatInterval: f.heartbeat, StatusInterval: f.statusInterval,
		AgentMode: agentMode, ReplyDevices: f.replyDevices, Metrics: reg, Log: log,
	})
}

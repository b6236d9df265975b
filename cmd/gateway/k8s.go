package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/discovery"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/election"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/node"
	"github.com/tunnelmesh/tunnelmesh/pkg/wg"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func k8sCmd() *cobra.Command {
	c := defaultConfig()
	cmd := &cobra.Command{
		Use:   "k8s",
		Short: "Run this node's roles in Kubernetes: route agent on every node, active/standby gateway on candidates",
		Long: `Run as the DaemonSets do. --role agent (DaemonSet tunnelmesh-route-agent, every node)
runs the route agent; --role candidate (DaemonSet tunnelmesh-gateway, nodes labelled
` + election.CandidateLabel + `=true) a gateway candidate, of which one is elected active (Lease
` + election.DefaultLeaseName + `); --role auto both, by the node's label. SIGTERM tears a
candidate's data plane down, then releases the Lease.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return runK8s(cmd.Context(), c) },
	}
	c.register(cmd.Flags(), modeK8s)
	return cmd
}

func runK8s(ctx context.Context, f config) error {
	log, err := newLogger(f.LogLevel)
	if err != nil {
		return err
	}
	p, err := f.check(modeK8s)
	if err != nil {
		return err
	}
	// Before anything else: this may re-execute the process.
	if err := wg.UseRunDir(f.RunDir); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", f.Kubeconfig)
	if err != nil {
		return fmt.Errorf("client configuration (outside a pod pass --kubeconfig): %w", err)
	}
	cfg.UserAgent = "tunnelmesh-gateway/" + f.NodeName
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
	nodeIPs := p.nodeIPs
	if len(nodeIPs) == 0 {
		gctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		n, err := client.CoreV1().Nodes().Get(gctx, f.NodeName, metav1.GetOptions{})
		cancel()
		if err != nil {
			return fmt.Errorf("read node %s for its address (or pass --node-ip): %w", f.NodeName, err)
		}
		nodeIPs = node.InternalIPs(n)
	}
	closeMetrics, err := serveMetrics(f.Metrics, nodeIPs, reg, log)
	if err != nil {
		return err
	}
	defer closeMetrics()
	return node.Run(ctx, node.Config{
		Role: p.role, ClusterID: f.ClusterID,
		Client: client, Dynamic: dyn, Namespace: f.Namespace, NodeName: f.NodeName, NodeIPs: p.nodeIPs,
		Overrides: discovery.Overrides{Pod: p.pods, Service: p.services},
		Interface: f.Interface, ListenPort: f.ListenPort, MTU: f.MTU, WireGuard: wg.Mode(f.WireGuard), PublicIP: f.PublicIP,
		StateFile: f.StateFile, GossipPort: f.GossipPort, ClustersetGossipPort: f.ClustersetGossipPort,
		LeaseDuration: f.LeaseDuration, RenewInterval: f.RenewInterval, RenewDeadline: f.RenewDeadline,
		HeartbeatInterval: f.HeartbeatInterval, StatusInterval: f.StatusInterval,
		AgentMode: p.agentMode, ReplyDevices: f.ReplyDevices, ResolvConf: f.ResolvConf, Metrics: reg, Log: log,
	})
}

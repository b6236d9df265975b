package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/export"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/brokersecret"
)

type controllerFlags struct {
	kubeconfig, brokerDir, clusterSetID, identity, namespace, leaseNamespace, logLevel string
	workers                                                                            int
}

// controllerCmd runs the Multi-Cluster Services controller (pkg/export) of
// one cluster, leader-elected so that one replica is active.
func controllerCmd() *cobra.Command {
	var f controllerFlags
	c := &cobra.Command{
		Use:   "controller",
		Short: "Run the MCS export controller: ServiceExports to the broker, the clusterset's exports to ServiceImports",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runController(cmd.Context(), f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster configuration)")
	fl.StringVar(&f.brokerDir, "broker-dir", "/etc/tunnelmesh/broker",
		"directory holding the keys of Secret tunnelmesh-broker: url, ca.crt, credential, cluster-id")
	fl.StringVar(&f.clusterSetID, "clusterset-id", "", "clusterset ID written to ClusterProperty clusterset.k8s.io (default: none written)")
	fl.StringVar(&f.identity, "identity", os.Getenv("POD_NAME"), "leader-election identity, unique per replica (default: $POD_NAME, else the host name)")
	fl.StringVar(&f.namespace, "namespace", defaults.Namespace, "tunnelmesh's namespace, where the active gateway writes the MeshGateway status")
	fl.StringVar(&f.leaseNamespace, "lease-namespace", defaults.Namespace, "namespace of the controller Lease "+export.LeaseName)
	fl.IntVar(&f.workers, "workers", export.DefaultWorkers, "workers per queue")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	return c
}

// controllerKeys are the keys of the broker Secret the controller reads,
// in this order; its Deployment mounts exactly these.
var controllerKeys = []string{brokersecret.KeyURL, brokersecret.KeyCA, brokersecret.KeyCredential, brokersecret.KeyClusterID}

func runController(ctx context.Context, f controllerFlags) error {
	log, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	read := func(key string) (string, error) {
		b, err := os.ReadFile(filepath.Join(f.brokerDir, key))
		if err != nil {
			return "", fmt.Errorf("broker connection: %w (mount Secret tunnelmesh-broker at --broker-dir)", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	var vals [4]string
	for i, k := range controllerKeys {
		v, err := read(k)
		if err != nil {
			return err
		}
		if v == "" {
			return fmt.Errorf("broker connection: %s in %s is empty", k, f.brokerDir)
		}
		vals[i] = v
	}
	url, ca, cred, clusterID := vals[0], vals[1], vals[2], vals[3]
	broker, err := brokerclient.New(url, []byte(ca+"\n"), cred)
	if err != nil {
		return err
	}
	broker.Logger = log

	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = f.kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return fmt.Errorf("kubernetes configuration: %w", err)
	}
	cfg.QPS, cfg.Burst = export.DefaultQPS, export.DefaultBurst
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	mcs, err := mcsclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	// The Lease's own client: renewals never wait behind import writes.
	electionKube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if f.identity == "" {
		if f.identity, err = os.Hostname(); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Endpoints of a cluster whose tunnel the active gateway reports broken
	// leave the imports until it recovers.
	reach := export.NewTunnels()
	go export.FollowMeshGateway(ctx, dyn, f.namespace, clusterID, reach, log)
	err = export.Run(ctx, export.Config{ClusterID: clusterID, ClusterSetID: f.clusterSetID, Kube: kube, MCS: mcs, Dynamic: dyn,
		Broker: broker, Logger: log, Workers: f.workers, Reachability: reach},
		export.Election{Namespace: f.leaseNamespace, Identity: f.identity, Client: electionKube})
	if errors.Is(err, export.ErrLostLease) {
		log.Error("lost the controller lease; exiting so that a fresh replica takes over")
	}
	return err
}

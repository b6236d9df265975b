package member

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/dns"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/discovery"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/progress"
)

// Discovery detects CIDRs the way the gateway does (pkg/k8s/discovery:
// kubeadm's configuration, Node podCIDRs, ServiceCIDR objects, the
// apiserver's flag), so join and the gateway never disagree.
type Discovery struct{}

// Detect implements CIDRDetector.
func (Discovery) Detect(ctx context.Context, c *kube.Cluster) (pods, services []string, err error) {
	d, err := discovery.Discover(ctx, c.Client, discovery.Overrides{})
	if err != nil {
		return nil, nil, err
	}
	for _, p := range d.Pod {
		pods = append(pods, p.String())
	}
	for _, p := range d.Service {
		services = append(services, p.String())
	}
	return pods, services, nil
}

// EnableClustersetDNS is the CorefileEditor: CoreDNS's own multicluster
// option for clusterset.local (pkg/dns), every other line kept.
func EnableClustersetDNS(corefile string) (string, bool, error) {
	return dns.EnableMulticluster(corefile, dns.Zone)
}

// TunnelsUp waits until the DaemonSets are ready and then until the
// cluster's MeshGateway names an active gateway connected to every other
// member it knows of.
type TunnelsUp struct{}

// Wait implements Waiter.
func (TunnelsUp) Wait(ctx context.Context, c *kube.Cluster, clusterID string, s *progress.Step) error {
	if err := (DaemonSetsReady{}).Wait(ctx, c, clusterID, s); err != nil {
		return err
	}
	for {
		m, err := status.Get(ctx, c.Dynamic, kube.Namespace, clusterID)
		switch {
		case err != nil:
			s.Status("waiting for the active gateway to report (%v)", err)
		case m.Status.ActiveNode == "":
			s.Status("no active gateway yet")
		case m.Status.Connected < m.Status.Total:
			s.Status("active gateway %s (epoch %d): %d/%d tunnels up", m.Status.ActiveNode, m.Status.Epoch, m.Status.Connected, m.Status.Total)
		default:
			s.Status("active gateway %s: %d/%d tunnels up", m.Status.ActiveNode, m.Status.Connected, m.Status.Total)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for tunnels: %w", ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

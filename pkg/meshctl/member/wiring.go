package member

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/dns"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/discovery"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/access"
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
// member that the broker lists with a live active gateway. The MeshGateway
// alone cannot tell: a gateway that has not seen the others yet reports 0/0.
type TunnelsUp struct{}

// Wait implements Waiter.
func (TunnelsUp) Wait(ctx context.Context, c *kube.Cluster, clusterID string, s *progress.Step) error {
	if err := (DaemonSetsReady{}).Wait(ctx, c, clusterID, s); err != nil {
		return err
	}
	m, err := access.ReadMember(ctx, c)
	if err != nil || m == nil {
		return fmt.Errorf("read the cluster's broker Secret: %v", err)
	}
	bc, err := m.Client()
	if err != nil {
		return err
	}
	for {
		var st *status.GatewayStatus
		mg, err := status.Get(ctx, c.Dynamic, defaults.Namespace, clusterID)
		if err == nil {
			st = &mg.Status
		}
		bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		snap, berr := bc.Snapshot(bctx)
		cancel()
		done, line := TunnelsReady(clusterID, st, snap)
		switch {
		case err != nil:
			line = fmt.Sprintf("waiting for the active gateway to report (%v)", err)
		case berr != nil:
			line += fmt.Sprintf(" (cannot read the broker's members: %v)", berr)
		}
		s.Status("%s", line)
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for tunnels: %s: %w", line, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// TunnelsReady tells whether st (the cluster's MeshGateway status) shows a
// tunnel up to every other member of snap that has a live active gateway,
// and says where things stand. Without the broker's members (snap nil) it
// cannot tell, and waits. Pure.
func TunnelsReady(self string, st *status.GatewayStatus, snap *api.Snapshot) (bool, string) {
	if st == nil || st.ActiveNode == "" {
		return false, "no active gateway yet"
	}
	head := fmt.Sprintf("active gateway %s (epoch %d)", st.ActiveNode, st.Epoch)
	if snap == nil {
		return false, fmt.Sprintf("%s: %d/%d tunnels up as it sees them", head, st.Connected, st.Total)
	}
	live := map[string]bool{}
	for _, g := range snap.Gateways {
		if g.Active && !g.Stale {
			live[g.ClusterID] = true
		}
	}
	up := map[string]bool{}
	for _, r := range st.Remotes {
		if r.Status == api.StatusConnected {
			up[r.Cluster] = true
		}
	}
	var want, waiting, noGateway []string
	for _, c := range snap.Clusters {
		switch {
		case c.ID == self:
		case !live[c.ID]:
			noGateway = append(noGateway, c.ID)
		default:
			want = append(want, c.ID)
			if !up[c.ID] {
				waiting = append(waiting, c.ID)
			}
		}
	}
	sort.Strings(waiting)
	sort.Strings(noGateway)
	line := fmt.Sprintf("%s: %d/%d tunnels up", head, len(want)-len(waiting), len(want))
	if len(waiting) > 0 {
		line += "; waiting for " + strings.Join(waiting, ", ")
	}
	if len(noGateway) > 0 {
		line += "; no active gateway yet in " + strings.Join(noGateway, ", ") + " (not waited for)"
	}
	return len(waiting) == 0, line
}

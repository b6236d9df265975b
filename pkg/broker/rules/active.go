package rules

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// Members is what a registration is decided against.
type Members struct {
	// Clusters and Gateways are every cluster's records.
	Clusters []api.Cluster
	Gateways []api.Gateway
	// Tunnel is the broker's pool of tunnel IPs.
	Tunnel netip.Prefix
	// MaxGatewaysPerCluster caps the gateway records of one cluster.
	MaxGatewaysPerCluster int
}

// Registration decides what storing gateway g means for the gateways
// already registered. It returns the records to write: g itself (unless
// nothing changed) and, when g is active, every other active gateway of
// its cluster set inactive. It refuses
//   - an endpoint address inside any cluster's pod or service CIDRs or
//     the tunnel pool: every gateway would refuse that CIDR or this peer,
//     so a member could cut another off (or loop its own traffic);
//   - a new gateway beyond m.MaxGatewaysPerCluster (each one's heartbeats
//     are kept by every broker replica);
//   - a WireGuard key already used by another cluster (peers are told
//     apart by key), and
//   - an active registration whose epoch is lower than the cluster's
//     current active epoch: a gateway that lost the cluster's lease (a
//     partitioned old active) may not take "active" back. An equal or
//     higher epoch wins, so the newest holder of the lease is the one
//     active gateway.
func Registration(m Members, g api.Gateway) ([]api.Gateway, *api.Error) {
	if g.Epoch < 0 {
		return nil, &api.Error{Code: api.CodeInvalid, Field: "epoch",
			Message: fmt.Sprintf("epoch: %d is negative; epochs count up from 0", g.Epoch)}
	}
	if err := endpointOutsideCIDRs(m, g); err != nil {
		return nil, err
	}
	sorted := append([]api.Gateway(nil), m.Gateways...)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].ClusterID != sorted[j].ClusterID {
			return sorted[i].ClusterID < sorted[j].ClusterID
		}
		return sorted[i].Hostname < sorted[j].Hostname
	})
	own, known := 0, false
	for _, o := range sorted {
		if o.ClusterID != g.ClusterID && o.PublicKey == g.PublicKey {
			return nil, &api.Error{Code: api.CodeConflict, Field: "publicKey", Cluster: o.ClusterID,
				Message: fmt.Sprintf("WireGuard public key is already used by gateway %s of cluster %q", o.Hostname, o.ClusterID)}
		}
		if o.ClusterID == g.ClusterID {
			own++
			known = known || o.Hostname == g.Hostname
		}
	}
	if !known && own >= m.MaxGatewaysPerCluster {
		return nil, &api.Error{Code: api.CodeQuotaExceeded, Field: "hostname", Cluster: g.ClusterID, Message: fmt.Sprintf(
			"cluster %q already has %d gateways, the most one cluster may register; delete departed ones (DELETE .../gateways/HOST, or meshctl leave), or ask the broker's admin to raise --max-gateways-per-cluster",
			g.ClusterID, own)}
	}
	if g.Active {
		if cur, holder, ok := ActiveEpoch(sorted, g.ClusterID); ok && g.Epoch < cur {
			return nil, &api.Error{Code: api.CodeConflict, Field: "epoch", Cluster: g.ClusterID,
				Message: fmt.Sprintf("epoch %d is older than epoch %d of cluster %q's active gateway %s; "+
					"this gateway lost the cluster's lease: stand by, or take the lease again to get a newer epoch",
					g.Epoch, cur, g.ClusterID, holder)}
		}
	}
	var same *api.Gateway
	var out []api.Gateway
	for i := range sorted {
		o := sorted[i]
		if o.ClusterID != g.ClusterID {
			continue
		}
		if o.Hostname == g.Hostname {
			same = &sorted[i]
			continue
		}
		if g.Active && o.Active {
			o.Active = false
			out = append(out, o)
		}
	}
	if same != nil && *same == g && len(out) == 0 {
		return nil, nil // re-registering an unchanged gateway makes no revision
	}
	return append(out, g), nil
}

// ActiveEpoch returns the highest epoch among cluster's active gateways and
// the hostname holding it; ok is false when the cluster has none.
func ActiveEpoch(gateways []api.Gateway, cluster string) (epoch int64, hostname string, ok bool) {
	for _, o := range gateways {
		if o.ClusterID != cluster || !o.Active {
			continue
		}
		if !ok || o.Epoch > epoch || o.Epoch == epoch && o.Hostname < hostname {
			epoch, hostname, ok = o.Epoch, o.Hostname, true
		}
	}
	return epoch, hostname, ok
}

// endpointOutsideCIDRs refuses a gateway whose private or public address
// lies inside a cluster's CIDRs (its own included), real or mapped, or the
// tunnel pool.
func endpointOutsideCIDRs(m Members, g api.Gateway) *api.Error {
	clusters := append([]api.Cluster(nil), m.Clusters...)
	sort.Slice(clusters, func(i, j int) bool { return clusters[i].ID < clusters[j].ID })
	for _, f := range []struct{ field, addr string }{{"privateIP", g.PrivateIP}, {"publicIP", g.PublicIP}} {
		a, err := netip.ParseAddr(f.addr)
		if err != nil {
			continue
		}
		if m.Tunnel.IsValid() && m.Tunnel.Contains(a) {
			return &api.Error{Code: api.CodeConflict, Field: f.field, Message: fmt.Sprintf(
				"%s: %s is inside the broker's tunnel CIDR %s; give the address other gateways reach this node on", f.field, f.addr, m.Tunnel)}
		}
		for _, c := range clusters {
			for _, s := range slices.Concat(c.PodCIDRs, c.ServiceCIDRs, c.MeshCIDRs()) {
				if p, err := netip.ParsePrefix(s); err == nil && p.Contains(a) {
					return &api.Error{Code: api.CodeConflict, Field: f.field, Cluster: c.ID, Message: fmt.Sprintf(
						"%s: %s is inside %s, a CIDR of cluster %q: gateways would refuse that CIDR or this gateway; give the address other gateways reach this node on",
						f.field, f.addr, s, c.ID)}
				}
			}
		}
	}
	return nil
}

package rules

import (
	"fmt"
	"sort"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// Registration decides what storing gateway g means for the gateways
// already registered (all clusters' records). It returns the records to
// write: g itself (unless nothing changed) and, when g is active, every
// other active gateway of its cluster set inactive. It refuses
//   - a WireGuard key already used by another cluster (peers are told
//     apart by key), and
//   - an active registration whose epoch is lower than the cluster's
//     current active epoch: a gateway that lost the cluster's lease (a
//     partitioned old active) may not take "active" back. An equal or
//     higher epoch wins, so the newest holder of the lease is the one
//     active gateway.
func Registration(existing []api.Gateway, g api.Gateway) ([]api.Gateway, *api.Error) {
	if g.Epoch < 0 {
		return nil, &api.Error{Code: api.CodeInvalid, Field: "epoch",
			Message: fmt.Sprintf("epoch: %d is negative; epochs count up from 0", g.Epoch)}
	}
	sorted := append([]api.Gateway(nil), existing...)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].ClusterID != sorted[j].ClusterID {
			return sorted[i].ClusterID < sorted[j].ClusterID
		}
		return sorted[i].Hostname < sorted[j].Hostname
	})
	for _, o := range sorted {
		if o.ClusterID != g.ClusterID && o.PublicKey == g.PublicKey {
			return nil, &api.Error{Code: api.CodeConflict, Field: "publicKey", Cluster: o.ClusterID,
				Message: fmt.Sprintf("WireGuard public key is already used by gateway %s of cluster %q", o.Hostname, o.ClusterID)}
		}
	}
	var same *api.Gateway
	var out []api.Gateway
	if g.Active {
		if cur, holder, ok := ActiveEpoch(sorted, g.ClusterID); ok && g.Epoch < cur {
			return nil, &api.Error{Code: api.CodeConflict, Field: "epoch", Cluster: g.ClusterID,
				Message: fmt.Sprintf("epoch %d is older than epoch %d of cluster %q's active gateway %s; "+
					"this gateway lost the cluster's lease: stand by, or take the lease again to get a newer epoch",
					g.Epoch, cur, g.ClusterID, holder)}
		}
	}
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

package export

import (
	"sync"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// Withdrawals decides which remote clusters' endpoints leave every import
// of this cluster (local), and why: a cluster with exports but no record
// in the clusterset (it left), one whose tunnel this cluster's active
// gateway reports broken, one whose gateways the broker all marks stale.
// exporters are the clusters that export anything; tunnelUp answers for
// the tunnels (nil: all up). Evidence is needed: a cluster that never had a
// gateway, or whose tunnel status is unknown, stays in. Pure.
func Withdrawals(local string, snap api.Snapshot, exporters []string, tunnelUp func(string) bool) map[string]Withholding {
	known := map[string]bool{}
	for _, c := range snap.Clusters {
		known[c.ID] = true
	}
	gateways, fresh := map[string]int{}, map[string]int{}
	for _, g := range snap.Gateways {
		gateways[g.ClusterID]++
		if !g.Stale {
			fresh[g.ClusterID]++
		}
	}
	out := map[string]Withholding{}
	for _, c := range exporters {
		switch {
		case c == local:
		case !known[c]:
			out[c] = Withholding{Reason: WithheldClusterLeft, Message: "cluster " + c + " is no longer in the clusterset"}
		case tunnelUp != nil && !tunnelUp(c):
			out[c] = Withholding{Reason: WithheldTunnelDown,
				Message: "this cluster's active gateway reports the tunnel to " + c + " down (health probes unanswered; see meshctl show connections)"}
		case gateways[c] > 0 && fresh[c] == 0:
			out[c] = Withholding{Reason: WithheldGatewaysStale,
				Message: "the broker marks every gateway of " + c + " stale (no heartbeat)"}
		}
	}
	return out
}

// Reachability says whether a remote cluster's endpoints can be used now
// (its tunnel is up). The gateway feeds it from its health probes; the
// controller imports the endpoints of unreachable clusters again when they
// come back. The local cluster is always reachable and never asked.
type Reachability interface {
	Reachable(cluster string) bool
	// Changed receives a value (coalesced) whenever an answer may have changed.
	Changed() <-chan struct{}
}

// Tunnels is a Reachability that callers set: every cluster is reachable
// until marked down.
type Tunnels struct {
	mu      sync.Mutex
	down    map[string]bool
	changed chan struct{}
}

// NewTunnels returns a Tunnels with every cluster reachable.
func NewTunnels() *Tunnels {
	return &Tunnels{down: map[string]bool{}, changed: make(chan struct{}, 1)}
}

// SetUp marks cluster's tunnel up or down.
func (t *Tunnels) SetUp(cluster string, up bool) {
	t.mu.Lock()
	was := !t.down[cluster]
	if up {
		delete(t.down, cluster)
	} else {
		t.down[cluster] = true
	}
	t.mu.Unlock()
	if was != up {
		select {
		case t.changed <- struct{}{}:
		default:
		}
	}
}

// Reachable implements Reachability.
func (t *Tunnels) Reachable(cluster string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.down[cluster]
}

// Changed implements Reachability.
func (t *Tunnels) Changed() <-chan struct{} { return t.changed }

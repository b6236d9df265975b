package gossip

import (
	"net"
	"slices"
	"strconv"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// Overlay lays what gossip knows of the other clusters' active gateways over
// the last broker snapshot: a remote cluster whose gossiped epoch is newer
// than every gateway record the broker has for it (its active failed over
// while the broker could not hear of it) gets one active record with the
// gossiped endpoint in place of the broker's — and the broker's WireGuard
// key: gossip never changes a key. Each announcement is verified again
// here against the snapshot (Trust.Check: signed with that cluster's key,
// epoch within the bound), so a stored or stale one the broker's records no
// longer back has no effect. The broker's records win at an equal or newer
// epoch, so once the broker has heard of the failover the overlay has no
// effect. Clusters the snapshot does not list are not added (the broker
// alone admits members), nor is local. Pure; the second result names the
// clusters overlaid.
func Overlay(snap api.Snapshot, local string, remotes map[string]Remote) (api.Snapshot, []string) {
	members := map[string]bool{}
	for _, c := range snap.Clusters {
		members[c.ID] = true
	}
	newest := map[string]int64{}
	for _, g := range snap.Gateways {
		if e, ok := newest[g.ClusterID]; !ok || g.Epoch > e {
			newest[g.ClusterID] = g.Epoch
		}
	}
	var over []string
	repl := map[string]api.Gateway{}
	for id, r := range remotes {
		if id == local || !members[id] || r.Epoch <= newest[id] {
			continue
		}
		t, ok := TrustOf(snap, id)
		if !ok {
			continue
		}
		g := r.Gateway
		g.ClusterID = id // the map key names the cluster the signature must be for
		key, err := t.Check(g)
		if err != nil {
			continue
		}
		host, port, err := net.SplitHostPort(r.Endpoint)
		if err != nil {
			continue
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 || net.ParseIP(host) == nil {
			continue
		}
		// PublicIP is the endpoint the gateway announced itself; the data
		// plane uses it as is.
		repl[id] = api.Gateway{ClusterID: id, Hostname: r.Hostname, PublicIP: host, PrivateIP: host, Port: p,
			PublicKey: key.String(), Active: true, Epoch: r.Epoch}
		over = append(over, id)
	}
	if len(over) == 0 {
		return snap, nil
	}
	slices.Sort(over)
	out := snap
	out.Gateways = make([]api.Gateway, 0, len(snap.Gateways))
	for _, g := range snap.Gateways {
		if _, ok := repl[g.ClusterID]; !ok {
			out.Gateways = append(out.Gateways, g)
		}
	}
	for _, id := range over {
		out.Gateways = append(out.Gateways, repl[id])
	}
	return out, over
}

package rules

import (
	"fmt"
	"net/netip"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// AllocateTunnelIP returns the lowest host address of pool that no cluster
// holds. The network and broadcast addresses are never handed out.
func AllocateTunnelIP(pool netip.Prefix, clusters []api.Cluster) (netip.Addr, *api.Error) {
	used := make(map[netip.Addr]bool, len(clusters))
	for _, c := range clusters {
		if a, err := netip.ParseAddr(c.TunnelIP); err == nil {
			used[a] = true
		}
	}
	a := pool.Masked().Addr().Next() // skip the network address
	for ; pool.Contains(a); a = a.Next() {
		if !used[a] && pool.Contains(a.Next()) { // the last address is broadcast
			return a, nil
		}
	}
	return netip.Addr{}, &api.Error{Code: api.CodeExhausted,
		Message: fmt.Sprintf("no free tunnel IP left in %s; remove a departed cluster or serve a larger --tunnel-cidr", pool)}
}

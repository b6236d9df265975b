package api

import (
	"fmt"
	"net/netip"
	"sort"
)

// CheckOverlaps is the clusterset's CIDR rule, which the broker enforces
// on join and meshctl diagnose checks again. It refuses a joining cluster
// whose CIDRs (prefixes, parsed from req's pod CIDRs then service CIDRs,
// in that order) overlap the tunnel pool or any CIDR of the existing
// clusters. The error names the field and
// the other cluster.
func CheckOverlaps(tunnel netip.Prefix, clusters []Cluster, req JoinRequest, prefixes []netip.Prefix) *Error {
	field, name := joinFields(req, prefixes)
	for i, p := range prefixes {
		if p.Overlaps(tunnel) {
			return &Error{Code: CodeCIDROverlap, Field: field(i),
				Message: fmt.Sprintf("CIDR %s overlaps the broker's tunnel CIDR %s; pick another", name(i), tunnel)}
		}
	}
	sorted := append([]Cluster(nil), clusters...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	for _, c := range sorted {
		for _, other := range append(append([]string{}, c.PodCIDRs...), c.ServiceCIDRs...) {
			op, err := netip.ParsePrefix(other)
			if err != nil {
				continue
			}
			for i, p := range prefixes {
				if p.Overlaps(op) {
					return &Error{Code: CodeCIDROverlap, Field: field(i), Cluster: c.ID,
						Message: fmt.Sprintf("CIDR %s overlaps %s of cluster %q; pick another", name(i), other, c.ID)}
				}
			}
		}
	}
	return nil
}

// CheckCoversGateways refuses a joining cluster whose CIDRs (as in
// CheckOverlaps) cover the endpoint of an existing gateway: every gateway
// would refuse either that CIDR or that peer (gateway.Compute), and the
// cluster of that gateway could not reach the new one's pods.
func CheckCoversGateways(gateways []Gateway, req JoinRequest, prefixes []netip.Prefix) *Error {
	field, name := joinFields(req, prefixes)
	sorted := append([]Gateway(nil), gateways...)
	sort.Slice(sorted, func(i, j int) bool {
		return GatewayKey(sorted[i].ClusterID, sorted[i].Hostname) < GatewayKey(sorted[j].ClusterID, sorted[j].Hostname)
	})
	for _, g := range sorted {
		for _, s := range []string{g.PrivateIP, g.PublicIP} {
			a, err := netip.ParseAddr(s)
			if err != nil {
				continue
			}
			for i, p := range prefixes {
				if p.Contains(a) {
					return &Error{Code: CodeCIDROverlap, Field: field(i), Cluster: g.ClusterID,
						Message: fmt.Sprintf("CIDR %s covers %s, the endpoint of gateway %s of cluster %q; pick another", name(i), s, g.Hostname, g.ClusterID)}
				}
			}
		}
	}
	return nil
}

// joinFields names the i-th of a join's prefixes (pod CIDRs, then service
// CIDRs): its request field, and the CIDR as the request wrote it.
func joinFields(req JoinRequest, prefixes []netip.Prefix) (field, name func(int) string) {
	names := append(append([]string{}, req.PodCIDRs...), req.ServiceCIDRs...)
	field = func(i int) string {
		if i < len(req.PodCIDRs) {
			return fmt.Sprintf("podCIDRs[%d]", i)
		}
		return fmt.Sprintf("serviceCIDRs[%d]", i-len(req.PodCIDRs))
	}
	name = func(i int) string {
		if i < len(names) {
			return names[i]
		}
		return prefixes[i].String()
	}
	return field, name
}

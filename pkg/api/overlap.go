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
	names := append(append([]string{}, req.PodCIDRs...), req.ServiceCIDRs...)
	field := func(i int) string {
		if i < len(req.PodCIDRs) {
			return fmt.Sprintf("podCIDRs[%d]", i)
		}
		return fmt.Sprintf("serviceCIDRs[%d]", i-len(req.PodCIDRs))
	}
	name := func(i int) string {
		if i < len(names) {
			return names[i]
		}
		return prefixes[i].String()
	}
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

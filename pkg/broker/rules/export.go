package rules

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// ExportLimits are the broker's caps on what one cluster publishes.
type ExportLimits struct {
	// PerCluster caps a cluster's exports: every ClusterSetIP import takes
	// a ClusterIP in every importing cluster.
	PerCluster int
	// SlicesPerExport caps the EndpointSlices one export makes in every
	// importing cluster (api.EndpointSlices).
	SlicesPerExport int
}

// Publication decides what storing export e of cluster c means. old is
// the stored record of the same key (nil: a new export) and count the
// number of c's exports. It refuses
//   - endpoint addresses outside c's pod CIDRs and IPs outside its
//     service CIDRs: importers' kube-proxies send clusterset traffic to
//     them, so an exporter may name only its own pods and ClusterIPs, never
//     another cluster's pods, its API server's ClusterIP, a node or a
//     public address;
//   - more EndpointSlices or exports than lim allows.
//
// The CIDRs are c's mesh CIDRs: where c is translated, its exports carry
// the mapped addresses its gateway answers at, and a real address of a
// translated CIDR is refused — in the mesh it is another cluster's (or the
// importer's own) address.
//
// The stored CreatedAt is the broker's: when it first received the export
// (now for a new one), kept across updates whatever the exporter sends, so
// that "the oldest export wins" cannot be won by claiming 1970. A kept time
// is never before c joined (records stored before the broker kept its own
// time held the exporter's).
func Publication(c api.Cluster, old *api.Export, count int, e api.Export, lim ExportLimits, now time.Time) (api.Export, *api.Error) {
	pods, svcs := c.MeshPodCIDRs(), c.MeshServiceCIDRs()
	podP, svcP := prefixes(pods), prefixes(svcs)
	as := ""
	if c.Translated() {
		as = " as the mesh knows them (translated: " + api.DescribeTranslations(c.Translations) + ")"
	}
	for i, s := range e.IPs {
		if a, err := netip.ParseAddr(s); err == nil && !inAny(svcP, a) {
			return e, &api.Error{Code: api.CodeInvalid, Field: fmt.Sprintf("ips[%d]", i), Message: fmt.Sprintf(
				"ips[%d]: %s is not inside cluster %q's service CIDRs%s (%v); export the Service's own ClusterIP", i, s, c.ID, as, svcs)}
		}
	}
	for i, ep := range e.Endpoints {
		for j, s := range ep.Addresses {
			if a, err := netip.ParseAddr(s); err == nil && !inAny(podP, a) {
				f := fmt.Sprintf("endpoints[%d].addresses[%d]", i, j)
				return e, &api.Error{Code: api.CodeInvalid, Field: f, Message: fmt.Sprintf(
					"%s: %s is not inside cluster %q's pod CIDRs%s (%v): an export's endpoints are its own pods (host-network pods and addresses outside the cluster cannot be exported)",
					f, s, c.ID, as, pods)}
			}
		}
	}
	if n := api.EndpointSlices(e.Endpoints); n > lim.SlicesPerExport {
		return e, &api.Error{Code: api.CodeInvalid, Field: "endpoints", Message: fmt.Sprintf(
			"endpoints: they make %d EndpointSlices in every importing cluster (one per address family and port set, %d endpoints each), more than the %d one export may; give the endpoints fewer distinct port sets",
			n, api.MaxEndpointsPerSlice, lim.SlicesPerExport)}
	}
	if old == nil && count >= lim.PerCluster {
		return e, &api.Error{Code: api.CodeQuotaExceeded, Cluster: c.ID, Message: fmt.Sprintf(
			"cluster %q already has %d exports, the most one cluster may publish; withdraw one, or ask the broker's admin to raise --max-exports-per-cluster", c.ID, count)}
	}
	e.CreatedAt = now
	if old != nil {
		e.CreatedAt = old.CreatedAt
		if e.CreatedAt.Before(c.JoinedAt) {
			e.CreatedAt = c.JoinedAt
		}
	}
	return e, nil
}

func prefixes(ss []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

package export

import (
	"net/netip"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// MeshExport is e as the rest of the mesh addresses it: the endpoint
// addresses and ClusterIPs of a translated cluster (self, the exporting
// cluster's broker record) become its mapped ones, the address every
// other cluster routes to that pod or service. Pure; e is not changed.
func MeshExport(e api.Export, self api.Cluster) api.Export {
	return mapExport(e, self.ToMesh)
}

// importable is e as this cluster (sc.Local) must use its addresses: a
// remote cluster's at their mesh addresses (whatever the exporter sent:
// one that published before it was translated still sent real addresses,
// which here may be this cluster's own pods), this cluster's own at their
// real addresses, which its pods reach directly and never through the
// tunnel. Clusters the broker does not list are left as they are.
func (sc Scope) importable(e api.Export) api.Export {
	ex, ok := sc.Clusters[e.ClusterID]
	if !ok || (!ex.Translated() && e.ClusterID != sc.Local) {
		return e
	}
	if e.ClusterID == sc.Local {
		return mapExport(e, func(a netip.Addr) netip.Addr { return ex.ToReal(ex.ToMesh(a)) })
	}
	return mapExport(e, ex.ToMesh)
}

// mapExport copies e with every endpoint address and IP through f.
func mapExport(e api.Export, f func(netip.Addr) netip.Addr) api.Export {
	conv := func(ss []string) []string {
		if ss == nil {
			return nil
		}
		out := make([]string, len(ss))
		for i, s := range ss {
			out[i] = s
			if a, err := netip.ParseAddr(s); err == nil {
				out[i] = f(a).String()
			}
		}
		return out
	}
	e.IPs = conv(e.IPs)
	eps := make([]api.Endpoint, len(e.Endpoints))
	for i, ep := range e.Endpoints {
		ep.Addresses = conv(ep.Addresses)
		eps[i] = ep
	}
	if e.Endpoints != nil {
		e.Endpoints = eps
	}
	return e
}

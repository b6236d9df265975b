package api

import (
	"fmt"
	"net/netip"
	"strings"
)

// PortSetKey names the port set of an endpoint: endpoints with the same
// key and address family share EndpointSlices in an importing cluster.
func PortSetKey(ports []ServicePort) string {
	var b strings.Builder
	for _, p := range ports {
		fmt.Fprintf(&b, "%s/%s/%d/%s;", p.Name, p.Protocol, p.Port, p.AppProtocol)
	}
	return b.String()
}

// EndpointSlices is how many EndpointSlices an importing cluster makes of
// one export's endpoints: one set per address family and port set, each
// slice of at most MaxEndpointsPerSlice endpoints.
func EndpointSlices(eps []Endpoint) int {
	groups := map[string]int{}
	for _, ep := range eps {
		var v4, v6 bool
		for _, s := range ep.Addresses {
			if a, err := netip.ParseAddr(s); err == nil {
				v4, v6 = v4 || a.Is4(), v6 || !a.Is4()
			}
		}
		key := PortSetKey(ep.Ports)
		if v4 {
			groups["4|"+key]++
		}
		if v6 {
			groups["6|"+key]++
		}
	}
	n := 0
	for _, c := range groups {
		n += (c + MaxEndpointsPerSlice - 1) / MaxEndpointsPerSlice
	}
	return n
}

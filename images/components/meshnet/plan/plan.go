// Package plan computes, as plain data, what the meshnet CNI daemon makes a node
// look like: the CNI config file, the routes to other nodes' pod CIDRs and the
// masquerade rule's address sets. It touches no kernel and is tested without root.
package plan

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Node is what the plan needs to know about one Kubernetes node.
type Node struct {
	Name        string
	InternalIPs []netip.Addr
	PodCIDRs    []netip.Prefix
}

// Route sends one remote pod CIDR to the node that owns it.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
}

func (r Route) String() string { return r.Dst.String() + " via " + r.Via.String() }

// Routes returns a route to every pod CIDR of every other node, via that node's
// InternalIP of the same address family, sorted for stable comparison. Nodes with no
// pod CIDR yet, or no InternalIP of the CIDR's family, are skipped.
func Routes(self string, nodes []Node) []Route {
	var out []Route
	for _, n := range nodes {
		if n.Name == self {
			continue
		}
		for _, c := range n.PodCIDRs {
			for _, ip := range n.InternalIPs {
				if ip.Is4() == c.Addr().Is4() {
					out = append(out, Route{Dst: c.Masked(), Via: ip})
					break
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b Route) int {
		if c := a.Dst.Addr().Compare(b.Dst.Addr()); c != 0 {
			return c
		}
		return a.Dst.Bits() - b.Dst.Bits()
	})
	return slices.CompactFunc(out, func(a, b Route) bool { return a.Dst == b.Dst })
}

// ConfigListName is the CNI network name and the stem of the config file.
const ConfigListName = "tunnelmesh"

// CNIConfig returns the CNI config list for a node: ptp veths (every pod packet is
// routed by the node, so kube-proxy sees it without br_netfilter), host-local IPAM
// over the node's pod CIDRs, and portmap for hostPorts. Masquerade is not the
// plugin's job; the daemon's nftables rule does it with the no-masquerade list.
func CNIConfig(podCIDRs []netip.Prefix, mtu int) ([]byte, error) {
	if len(podCIDRs) == 0 {
		return nil, fmt.Errorf("node has no pod CIDR yet")
	}
	type rng struct {
		Subnet string `json:"subnet"`
	}
	type dst struct {
		Dst string `json:"dst"`
	}
	var ranges [][]rng
	var routes []dst
	for _, c := range podCIDRs {
		ranges = append(ranges, []rng{{Subnet: c.Masked().String()}})
		if c.Addr().Is4() {
			routes = append(routes, dst{Dst: "0.0.0.0/0"})
		} else {
			routes = append(routes, dst{Dst: "::/0"})
		}
	}
	ptp := map[string]any{
		"type":   "ptp",
		"ipMasq": false,
		"ipam": map[string]any{
			"type":    "host-local",
			"dataDir": "/run/cni-ipam-state",
			"ranges":  ranges,
			"routes":  routes,
		},
	}
	if mtu > 0 {
		ptp["mtu"] = mtu
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       ConfigListName,
		"plugins": []any{
			ptp,
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode CNI config: %w", err)
	}
	return append(b, '\n'), nil
}

// Masquerade is the desired masquerade rule: traffic from Sources to anywhere not in
// Skip, leaving through an interface whose name starts with none of
// SkipOutInterfaces, leaves the node with the node's address. Sources and Skip are
// merged, non-overlapping ranges per family, ready for nftables interval sets.
type Masquerade struct {
	Sources4, Skip4   []Range
	Sources6, Skip6   []Range
	SkipOutInterfaces []string // name prefixes, e.g. "tmesh" for tunnelmesh's tunnel devices
}

// Range is an inclusive address range.
type Range struct{ First, Last netip.Addr }

// MasqueradeFor builds the masquerade plan: sources are the node's own pod CIDRs;
// skip holds every pod CIDR of the cluster, the service CIDRs and any configured
// no-masquerade CIDR (e.g. remote clusters' CIDRs reached through tunnelmesh).
func MasqueradeFor(sources, skip []netip.Prefix) Masquerade {
	var m Masquerade
	m.Sources4, m.Sources6 = ranges(sources)
	m.Skip4, m.Skip6 = ranges(skip)
	return m
}

func ranges(ps []netip.Prefix) (v4, v6 []Range) {
	var all []Range
	for _, p := range ps {
		p = p.Masked()
		all = append(all, Range{First: p.Addr(), Last: lastAddr(p)})
	}
	slices.SortFunc(all, func(a, b Range) int { return a.First.Compare(b.First) })
	var merged []Range
	for _, r := range all {
		if n := len(merged); n > 0 {
			prev := &merged[n-1]
			if prev.First.Is4() == r.First.Is4() && !prev.Last.Next().IsValid() {
				continue // prev reaches the top of the address space
			}
			if prev.First.Is4() == r.First.Is4() && r.First.Compare(prev.Last.Next()) <= 0 {
				if r.Last.Compare(prev.Last) > 0 {
					prev.Last = r.Last
				}
				continue
			}
		}
		merged = append(merged, r)
	}
	for _, r := range merged {
		if r.First.Is4() {
			v4 = append(v4, r)
		} else {
			v6 = append(v6, r)
		}
	}
	return v4, v6
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// ParseInterfacePrefixes parses a comma/space separated list of interface-name
// prefixes (Linux names are at most 15 bytes).
func ParseInterfacePrefixes(s string) ([]string, error) {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
		f = strings.TrimSuffix(f, "*")
		if f == "" || len(f) > 15 || strings.ContainsAny(f, "/*") {
			return nil, fmt.Errorf("bad interface name prefix %q: want 1-15 characters, e.g. tmesh", f)
		}
		out = append(out, f)
	}
	return out, nil
}

// ParseCIDRs parses a list of CIDRs separated by commas, spaces or newlines, as
// used in environment variables and the ConfigMap. Empty input is an empty list.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.FieldsFunc(s, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\n' || r == '\t' || r == '\r'
	}) {
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("bad CIDR %q: want e.g. 10.244.0.0/16: %w", f, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

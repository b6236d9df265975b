package api

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Translation maps one of a cluster's CIDRs (Real, as its pods and
// services use it) onto a CIDR of the same size that is unique in the
// clusterset (Mapped). The cluster's active gateway rewrites addresses
// between the two, one to one and keeping the host part, so every pod has
// one mapped address that the whole mesh sees: in packets (a server in
// another cluster sees the mapped address of the pod that called), in
// routes and WireGuard peers, in exports and DNS answers. Set by the broker.
type Translation struct {
	Real   string `json:"real"`
	Mapped string `json:"mapped"`
}

// Ways the clusterset treats a joining cluster whose CIDRs overlap a
// member's (the clusterset policy's Overlap).
const (
	// OverlapTranslate gives the overlapping CIDRs, the joiner's and the
	// member's, mapped CIDRs from the mapped pool (the default).
	OverlapTranslate = "translate"
	// OverlapRefuse refuses the join.
	OverlapRefuse = "refuse"
)

// DefaultMappedCIDRs is the mapped pool of a clusterset whose policy names
// none. 240.0.0.0/4 is reserved "for future use" (RFC 1112 §4, RFC 6890):
// never allocated, never routed on the Internet, and neither the private
// ranges the clusterset policy lets members claim nor the tunnel pool
// (100.127.0.0/16) touches it, so no member's pod, service, node, API
// server or DNS upstream lives there. Linux has treated it as ordinary
// unicast since 2.6.25, and mapped addresses only ever pass through
// Linux nodes and tunnels of the clusterset. Its lower half, 240.0.0.0/5,
// holds 128 mapped /12s (kubeadm's default service CIDR; kind's is a /16);
// the upper half stays clear
// of the limited broadcast address. fc00::/8 is the half of the unique
// local block that RFC 4193 leaves undefined (L=0): every real ULA is in
// fd00::/8.
var DefaultMappedCIDRs = []string{"240.0.0.0/5", "fc00::/8"}

// DescribeTranslations reads "10.244.0.0/16 as 240.0.0.0/16, …", for
// people ("none" when there is none).
func DescribeTranslations(ts []Translation) string {
	if len(ts) == 0 {
		return "none"
	}
	ss := make([]string, 0, len(ts))
	for _, t := range ts {
		ss = append(ss, t.Real+" as "+t.Mapped)
	}
	return strings.Join(ss, ", ")
}

// Translated reports whether any of c's CIDRs is translated.
func (c Cluster) Translated() bool { return len(c.Translations) > 0 }

// MeshPodCIDRs are c's pod CIDRs as the mesh sees them: the mapped CIDR
// of each translated one, the real CIDR of the others.
func (c Cluster) MeshPodCIDRs() []string { return c.mesh(c.PodCIDRs) }

// MeshServiceCIDRs are c's service CIDRs as the mesh sees them.
func (c Cluster) MeshServiceCIDRs() []string { return c.mesh(c.ServiceCIDRs) }

// MeshCIDRs are c's pod then service CIDRs as the mesh sees them: what
// other clusters route to it and what its exports' addresses lie in.
func (c Cluster) MeshCIDRs() []string {
	return slices.Concat(c.MeshPodCIDRs(), c.MeshServiceCIDRs())
}

// MappedOf is the mapped CIDR of c's real CIDR s, "" when s is not translated.
func (c Cluster) MappedOf(s string) string {
	for _, t := range c.Translations {
		if t.Real == s {
			return t.Mapped
		}
	}
	return ""
}

func (c Cluster) mesh(real []string) []string {
	var out []string
	for _, s := range real {
		if m := c.MappedOf(s); m != "" {
			s = m
		}
		out = append(out, s)
	}
	return out
}

// ToMesh is the address the mesh knows c's address a by: a inside a
// translated real CIDR moves to the mapped one; any other comes back as is.
func (c Cluster) ToMesh(a netip.Addr) netip.Addr {
	for _, t := range c.Translations {
		if r, m, err := t.Prefixes(); err == nil && r.Contains(a) {
			return MapAddr(a, r, m)
		}
	}
	return a
}

// ToReal is the inverse of ToMesh: a mapped address of c becomes the real
// one its pods and services use.
func (c Cluster) ToReal(a netip.Addr) netip.Addr {
	for _, t := range c.Translations {
		if r, m, err := t.Prefixes(); err == nil && m.Contains(a) {
			return MapAddr(a, m, r)
		}
	}
	return a
}

// Prefixes parses t.
func (t Translation) Prefixes() (real, mapped netip.Prefix, err error) {
	if real, err = netip.ParsePrefix(t.Real); err != nil {
		return real, mapped, fmt.Errorf("translation of %q: %w", t.Real, err)
	}
	if mapped, err = netip.ParsePrefix(t.Mapped); err != nil {
		return real, mapped, fmt.Errorf("translation of %s to %q: %w", t.Real, t.Mapped, err)
	}
	if real.Bits() != mapped.Bits() || real.Addr().Is4() != mapped.Addr().Is4() {
		return real, mapped, fmt.Errorf("translation of %s to %s: not the same family and size", real, mapped)
	}
	return real.Masked(), mapped.Masked(), nil
}

// MapAddr moves a from prefix from into prefix to of the same size,
// keeping its host part: 10.244.3.7 from 10.244.0.0/16 into 240.1.0.0/16
// is 240.1.3.7. An address outside from, or prefixes that differ in
// family or size, leave a unchanged.
func MapAddr(a netip.Addr, from, to netip.Prefix) netip.Addr {
	if !from.Contains(a) || from.Bits() != to.Bits() || from.Addr().Is4() != to.Addr().Is4() {
		return a
	}
	ab, tb := a.AsSlice(), to.Masked().Addr().AsSlice()
	for i := range ab {
		bits := min(max(to.Bits()-8*i, 0), 8) // network bits in this byte
		mask := byte(0xff << (8 - bits))
		ab[i] = ab[i]&^mask | tb[i]&mask
	}
	out, _ := netip.AddrFromSlice(ab)
	return out
}

// CheckMesh reports every pair of clusters that breaks the clusterset's
// address rule, which translation keeps: no two clusters' mesh CIDRs
// overlap (every pod has one address in the mesh), and no cluster's real
// CIDRs overlap another's mesh CIDRs (a pod could not reach an address
// its own cluster uses). It also reports translations that do not parse
// or name no CIDR of their cluster. Pure; meshctl diagnose runs it on the
// broker's records.
func CheckMesh(clusters []Cluster) []string {
	type cidr struct {
		cluster string
		s       string
		p       netip.Prefix
	}
	var mesh, real []cidr
	var out []string
	sorted := slices.Clone(clusters)
	slices.SortFunc(sorted, func(a, b Cluster) int { return strings.Compare(a.ID, b.ID) })
	for _, c := range sorted {
		for _, t := range c.Translations {
			if _, _, err := t.Prefixes(); err != nil {
				out = append(out, fmt.Sprintf("cluster %q: %v", c.ID, err))
			} else if !slices.Contains(slices.Concat(c.PodCIDRs, c.ServiceCIDRs), t.Real) {
				out = append(out, fmt.Sprintf("cluster %q: translation of %s, which is none of its CIDRs", c.ID, t.Real))
			}
		}
		for _, s := range c.MeshCIDRs() {
			if p, err := netip.ParsePrefix(s); err == nil {
				mesh = append(mesh, cidr{c.ID, s, p})
			}
		}
		for _, s := range slices.Concat(c.PodCIDRs, c.ServiceCIDRs) {
			if p, err := netip.ParsePrefix(s); err == nil {
				real = append(real, cidr{c.ID, s, p})
			}
		}
	}
	for i, a := range mesh {
		for _, b := range mesh[i+1:] {
			if a.cluster != b.cluster && a.p.Overlaps(b.p) {
				out = append(out, fmt.Sprintf("clusters %q and %q share mesh addresses: %s overlaps %s", a.cluster, b.cluster, a.s, b.s))
			}
		}
	}
	for _, r := range real {
		for _, m := range mesh {
			if r.cluster != m.cluster && r.p.Overlaps(m.p) {
				out = append(out, fmt.Sprintf("cluster %q cannot reach %q: its own CIDR %s overlaps %s, which the mesh routes to %q", r.cluster, m.cluster, r.s, m.s, m.cluster))
			}
		}
	}
	return out
}

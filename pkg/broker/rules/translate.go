package rules

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/cidr"
)

// AddressPlan is what the clusterset's address rules need beyond the
// records: the broker's tunnel pool, the mapped pool and what to do with
// an overlapping join (the clusterset policy's).
type AddressPlan struct {
	Tunnel  netip.Prefix
	Mapped  []netip.Prefix
	Overlap string // api.OverlapTranslate ("" too) or api.OverlapRefuse
}

// Join decides the address plan of a joining cluster whose prefixes (its
// pod CIDRs, then its service CIDRs, parsed from req) pass validation. It
// returns the joiner's translations and the members that get translations
// now (their whole new records).
//
// The rule it keeps (api.CheckMesh): no two clusters share mesh
// addresses, and no cluster's real CIDRs overlap another's mesh CIDRs,
// since its pods reach its own addresses, never the tunnel, there. So when
// a CIDR of the joiner overlaps a real CIDR of a member, both are
// translated: the joiner's, and the member's unless it already is (the
// member's translation then rolls through the mesh as the admin's
// translate call would). CIDRs that overlap nothing keep their real
// addresses. It refuses
//   - a CIDR overlapping the tunnel pool, the mapped pool or a member's
//     mapped CIDR (these never collide with real CIDRs);
//   - any overlap when the policy is api.OverlapRefuse;
//   - a translation for which the mapped pool has no room (Exhausted).
func Join(plan AddressPlan, clusters []api.Cluster, req api.JoinRequest, prefixes []netip.Prefix) ([]api.Translation, []api.Cluster, *api.Error) {
	if err := api.CheckOverlaps(plan.Tunnel, nil, req, prefixes); err != nil {
		return nil, nil, err
	}
	sorted := slices.Clone(clusters)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	field := func(i int) string {
		if i < len(req.PodCIDRs) {
			return fmt.Sprintf("podCIDRs[%d]", i)
		}
		return fmt.Sprintf("serviceCIDRs[%d]", i-len(req.PodCIDRs))
	}
	for i, p := range prefixes {
		for _, m := range plan.Mapped {
			if p.Overlaps(m) {
				return nil, nil, &api.Error{Code: api.CodeCIDROverlap, Field: field(i), Message: fmt.Sprintf(
					"CIDR %s overlaps the clusterset's mapped pool %s (the addresses translated clusters are known by); pick another, or ask the broker's admin to move the pool (meshctl policy set --mapped-cidrs)", p, m)}
			}
		}
		for _, c := range sorted {
			for _, t := range c.Translations {
				if _, m, err := t.Prefixes(); err == nil && p.Overlaps(m) {
					return nil, nil, &api.Error{Code: api.CodeCIDROverlap, Field: field(i), Cluster: c.ID, Message: fmt.Sprintf(
						"CIDR %s overlaps %s, the mapped CIDR of cluster %q; pick another", p, t.Mapped, c.ID)}
				}
			}
		}
	}
	if plan.Overlap == api.OverlapRefuse {
		if err := api.CheckOverlaps(plan.Tunnel, sorted, req, prefixes); err != nil {
			e := *err
			e.Message += "; the clusterset policy refuses overlapping joins (overlap: refuse): the broker's admin may set it to translate (meshctl policy set --overlap translate)"
			return nil, nil, &e
		}
		return nil, nil, nil
	}

	// Which CIDRs to translate: the joiner's that overlap a member's real
	// CIDR, and those members' CIDRs not translated yet.
	joinerNeeds := make([]bool, len(prefixes))
	memberNeeds := map[string][]string{}
	for _, c := range sorted {
		for _, s := range slices.Concat(c.PodCIDRs, c.ServiceCIDRs) {
			q, err := netip.ParsePrefix(s)
			if err != nil {
				continue
			}
			for i, p := range prefixes {
				if !p.Overlaps(q) {
					continue
				}
				joinerNeeds[i] = true
				if c.MappedOf(s) == "" && !slices.Contains(memberNeeds[c.ID], s) {
					memberNeeds[c.ID] = append(memberNeeds[c.ID], s)
				}
			}
		}
	}
	used := usedSpace(plan, sorted, prefixes)
	var members []api.Cluster
	for _, c := range sorted {
		if len(memberNeeds[c.ID]) == 0 {
			continue
		}
		nc := c
		nc.Translations = slices.Clone(c.Translations)
		for _, s := range memberNeeds[c.ID] {
			m, err := allocate(plan.Mapped, netip.MustParsePrefix(s), used)
			if err != nil {
				return nil, nil, err
			}
			used = append(used, m)
			nc.Translations = append(nc.Translations, api.Translation{Real: s, Mapped: m.String()})
		}
		members = append(members, nc)
	}
	var own []api.Translation
	for i, p := range prefixes {
		if !joinerNeeds[i] {
			continue
		}
		m, err := allocate(plan.Mapped, p, used)
		if err != nil {
			err.Field = field(i)
			return nil, nil, err
		}
		used = append(used, m)
		own = append(own, api.Translation{Real: p.String(), Mapped: m.String()})
	}
	return own, members, nil
}

// Translate gives cluster id translations of the real CIDRs named (all
// that are not translated yet when none is named): the broker admin's
// call for a cluster that joined without translation. It returns the
// cluster's new record, and changed false when every CIDR named is
// translated already.
func Translate(plan AddressPlan, clusters []api.Cluster, id string, cidrs []string) (api.Cluster, bool, *api.Error) {
	i := slices.IndexFunc(clusters, func(c api.Cluster) bool { return c.ID == id })
	if i < 0 {
		return api.Cluster{}, false, &api.Error{Code: api.CodeNotFound, Cluster: id,
			Message: fmt.Sprintf("no cluster %q in the clusterset", id)}
	}
	c := clusters[i]
	own := slices.Concat(c.PodCIDRs, c.ServiceCIDRs)
	if len(cidrs) == 0 {
		cidrs = own
	}
	var todo []string
	for j, s := range cidrs {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		k := slices.IndexFunc(own, func(o string) bool { q, err := netip.ParsePrefix(o); return err == nil && q == p })
		if err != nil || k < 0 {
			return api.Cluster{}, false, &api.Error{Code: api.CodeInvalid, Field: fmt.Sprintf("cidrs[%d]", j), Cluster: id,
				Message: fmt.Sprintf("cidrs[%d]: %q is not a CIDR of cluster %q (its CIDRs: %s)", j, s, id, strings.Join(own, ", "))}
		}
		if c.MappedOf(own[k]) == "" && !slices.Contains(todo, own[k]) {
			todo = append(todo, own[k])
		}
	}
	if len(todo) == 0 {
		return c, false, nil
	}
	used := usedSpace(plan, clusters, nil)
	nc := c
	nc.Translations = slices.Clone(c.Translations)
	for _, s := range todo {
		m, err := allocate(plan.Mapped, netip.MustParsePrefix(s), used)
		if err != nil {
			err.Cluster = id
			return api.Cluster{}, false, err
		}
		used = append(used, m)
		nc.Translations = append(nc.Translations, api.Translation{Real: s, Mapped: m.String()})
	}
	return nc, true, nil
}

// usedSpace is every range a new mapped CIDR must stay clear of: the
// tunnel pool, every mapped CIDR (inside the pool or left from an earlier
// one), and every real CIDR, the joiner's included.
func usedSpace(plan AddressPlan, clusters []api.Cluster, joiner []netip.Prefix) []netip.Prefix {
	used := append([]netip.Prefix{plan.Tunnel}, joiner...)
	for _, c := range clusters {
		for _, s := range slices.Concat(c.PodCIDRs, c.ServiceCIDRs) {
			if p, err := netip.ParsePrefix(s); err == nil {
				used = append(used, p)
			}
		}
		for _, t := range c.Translations {
			if _, m, err := t.Prefixes(); err == nil {
				used = append(used, m)
			}
		}
	}
	return used
}

// allocate returns the lowest block of real's family and size inside the
// pool that overlaps nothing in used.
func allocate(pool []netip.Prefix, real netip.Prefix, used []netip.Prefix) (netip.Prefix, *api.Error) {
	for _, p := range pool {
		if p.Addr().Is4() != real.Addr().Is4() || p.Bits() > real.Bits() {
			continue
		}
		if m, ok := AllocateBlock(p, real.Bits(), used); ok {
			return m, nil
		}
	}
	fam := "IPv4"
	if !real.Addr().Is4() {
		fam = "IPv6"
	}
	return netip.Prefix{}, &api.Error{Code: api.CodeExhausted, Message: fmt.Sprintf(
		"no free /%d for %s left in the clusterset's mapped pool (%s); the broker's admin can add an %s range to it (meshctl policy set --mapped-cidrs)",
		real.Bits(), real, prefixList(pool), fam)}
}

// AllocateBlock returns the lowest block of size bits inside pool that
// overlaps none of used.
func AllocateBlock(pool netip.Prefix, bits int, used []netip.Prefix) (netip.Prefix, bool) {
	pool = pool.Masked()
	if bits < pool.Bits() || bits > pool.Addr().BitLen() {
		return netip.Prefix{}, false
	}
	a := pool.Addr()
	for a.IsValid() && pool.Contains(a) {
		cand := netip.PrefixFrom(a, bits)
		next, free := cidr.Last(cand).Next(), true
		for _, u := range used {
			if u.Overlaps(cand) {
				free = false
				if l := cidr.Last(u.Masked()).Next(); !l.IsValid() || next.IsValid() && l.Compare(next) > 0 {
					next = l
				}
			}
		}
		if free {
			return cand, true
		}
		if !next.IsValid() {
			break
		}
		// Skipping a smaller range may land inside a block: round up.
		if m := netip.PrefixFrom(next, bits).Masked().Addr(); m != next {
			next = cidr.Last(netip.PrefixFrom(next, bits).Masked()).Next()
		}
		a = next
	}
	return netip.Prefix{}, false
}

func prefixList(ps []netip.Prefix) string {
	var ss []string
	for _, p := range ps {
		ss = append(ss, p.String())
	}
	if len(ss) == 0 {
		return "empty"
	}
	return strings.Join(ss, ", ")
}

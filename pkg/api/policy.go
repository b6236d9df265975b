package api

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Policy is the clusterset's rule on the ranges a member may claim as pod
// and service CIDRs, set by the broker's admin (GET/PUT /v1/policy). Every
// gateway and route agent routes a member's CIDRs into the tunnel, so a
// claim outside the policy — a public range, or one so wide that other
// clusters' nodes, API servers or DNS upstreams live in it — is refused at
// join. A member that joined under a looser policy stays: it is flagged
// (PolicyStatus.Outside, `meshctl show clusters`), not evicted, since
// removing it would cut its traffic; the admin removes it if they mean to.
type Policy struct {
	// AllowedCIDRs: each CIDR a member claims lies inside one of them.
	AllowedCIDRs []string `json:"allowedCIDRs"`
	// MinPrefixLengthIPv4 and MinPrefixLengthIPv6: each CIDR a member
	// claims is at least this long, so no wider; 0: any length.
	MinPrefixLengthIPv4 int `json:"minPrefixLengthIPv4"`
	MinPrefixLengthIPv6 int `json:"minPrefixLengthIPv6"`
	// Overlap is what a join whose CIDRs overlap a member's gets:
	// OverlapTranslate (also when empty: a policy stored before the field)
	// or OverlapRefuse.
	Overlap string `json:"overlap,omitempty"`
	// MappedCIDRs is the mapped pool translated clusters' mapped CIDRs are
	// taken from (DefaultMappedCIDRs when empty). Moving it leaves mapped
	// CIDRs given out before where they are; no cluster may join with a
	// CIDR inside it.
	MappedCIDRs []string `json:"mappedCIDRs,omitempty"`
}

// OverlapRule is the policy's Overlap, empty read as OverlapTranslate.
func (pol Policy) OverlapRule() string {
	if pol.Overlap == "" {
		return OverlapTranslate
	}
	return pol.Overlap
}

// MappedPool is the policy's MappedCIDRs, empty read as DefaultMappedCIDRs.
func (pol Policy) MappedPool() []string {
	if len(pol.MappedCIDRs) == 0 {
		return DefaultMappedCIDRs
	}
	return pol.MappedCIDRs
}

// DefaultPolicy is the policy of a broker whose admin set none: the
// private (RFC 1918), shared (CGNAT, RFC 6598) and unique local (RFC 4193)
// ranges, IPv4 CIDRs no wider than /12 (the largest RFC 1918 block) and
// IPv6 ones no wider than /48 (one site's ULA prefix).
func DefaultPolicy() Policy {
	return Policy{
		AllowedCIDRs:        []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"},
		MinPrefixLengthIPv4: 12,
		MinPrefixLengthIPv6: 48,
		Overlap:             OverlapTranslate,
		MappedCIDRs:         slices.Clone(DefaultMappedCIDRs),
	}
}

// PolicyStatus is what GET and PUT /v1/policy answer.
type PolicyStatus struct {
	Policy Policy `json:"policy"`
	// Default: the admin set no policy, DefaultPolicy applies.
	Default bool `json:"default,omitempty"`
	// Outside lists the members' CIDRs the policy does not allow (members
	// that joined under an earlier policy): flagged, never removed.
	Outside []PolicyViolation `json:"outside,omitempty"`
}

// PolicyViolation is one member CIDR outside the policy.
type PolicyViolation struct {
	Cluster string `json:"cluster"`
	CIDR    string `json:"cidr"`
	Reason  string `json:"reason"`
}

// Refusal says why p may not be claimed under the policy, or "" when it
// may. Allowed CIDRs that do not parse are skipped (the broker stores only
// valid ones).
func (pol Policy) Refusal(p netip.Prefix) string {
	minLen, family := pol.MinPrefixLengthIPv4, "IPv4"
	if p.Addr().Is6() {
		minLen, family = pol.MinPrefixLengthIPv6, "IPv6"
	}
	if p.Bits() < minLen {
		return fmt.Sprintf("is wider than the clusterset allows for %s (/%d at most)", family, minLen)
	}
	for _, s := range pol.AllowedCIDRs {
		if a, err := netip.ParsePrefix(s); err == nil && a.Bits() <= p.Bits() && a.Contains(p.Addr()) {
			return ""
		}
	}
	return fmt.Sprintf("is not inside the clusterset's allowed ranges (%s)", strings.Join(pol.AllowedCIDRs, ", "))
}

// Check refuses a joining cluster's prefixes (as in CheckOverlaps) that
// the policy does not allow.
func (pol Policy) Check(req JoinRequest, prefixes []netip.Prefix) *Error {
	field, name := joinFields(req, prefixes)
	for i, p := range prefixes {
		if why := pol.Refusal(p); why != "" {
			return &Error{Code: CodeOutsidePolicy, Field: field(i), Message: fmt.Sprintf(
				"%s: CIDR %s %s; give the cluster's own pod and service ranges, or ask the broker's admin to allow this one (meshctl policy set)",
				field(i), name(i), why)}
		}
	}
	return nil
}

// Outside lists the CIDRs of clusters the policy does not allow.
func (pol Policy) Outside(clusters []Cluster) []PolicyViolation {
	var out []PolicyViolation
	for _, c := range clusters {
		for _, s := range append(append([]string{}, c.PodCIDRs...), c.ServiceCIDRs...) {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				continue
			}
			if why := pol.Refusal(p); why != "" {
				out = append(out, PolicyViolation{Cluster: c.ID, CIDR: s, Reason: s + " " + why})
			}
		}
	}
	return out
}

// String says the policy in one line, for people.
func (pol Policy) String() string {
	width := func(n int) string {
		if n == 0 {
			return "any width"
		}
		return fmt.Sprintf("at most /%d wide", n)
	}
	return fmt.Sprintf("pod and service CIDRs inside %s; IPv4 %s, IPv6 %s; overlapping joins: %s (mapped pool %s)",
		strings.Join(pol.AllowedCIDRs, ", "), width(pol.MinPrefixLengthIPv4), width(pol.MinPrefixLengthIPv6),
		pol.OverlapRule(), strings.Join(pol.MappedPool(), ", "))
}

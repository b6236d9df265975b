package validate

import (
	"net/netip"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// specialRange is an address range that can never be a pod or service CIDR:
// traffic to it is not routed between hosts, or it covers every address.
type specialRange struct {
	prefix netip.Prefix
	what   string
}

var specialRanges = []specialRange{
	{netip.MustParsePrefix("0.0.0.0/8"), `"this network" range 0.0.0.0/8 (holds the unspecified address)`},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback range 127.0.0.0/8"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local range 169.254.0.0/16"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast range 224.0.0.0/4"},
	{netip.MustParsePrefix("::/128"), "unspecified address ::"},
	{netip.MustParsePrefix("::1/128"), "loopback address ::1"},
	// IPv4-mapped IPv6 addresses are IPv4 addresses in disguise: an overlap
	// check between ::ffff:10.1.0.0/112 and 10.1.0.0/16 sees two families
	// and passes. They are refused, not normalised, so that what the broker
	// stores is exactly what the cluster declared.
	{netip.MustParsePrefix("::ffff:0:0/96"), "IPv4-mapped range ::ffff:0:0/96"},
	{netip.MustParsePrefix("fe80::/10"), "link-local range fe80::/10"},
	{netip.MustParsePrefix("ff00::/8"), "multicast range ff00::/8"},
}

// routableCIDR refuses default routes and prefixes that touch a special
// range, with a message that says what to do.
func routableCIDR(field, s string, p netip.Prefix) *api.Error {
	if p.Bits() == 0 {
		return invalid(field, "%q is a default route (every address); give the cluster's own pod or service range", s)
	}
	for _, r := range specialRanges {
		if p.Overlaps(r.prefix) {
			if p.Addr().Is4In6() {
				return invalid(field, "%q is an IPv4-mapped IPv6 prefix; write it as the IPv4 CIDR %s",
					s, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96))
			}
			return invalid(field, "%q overlaps the %s; pod and service CIDRs must be unicast ranges routable between clusters", s, r.what)
		}
	}
	return nil
}

// addr parses one IP address as the broker stores it: no IPv6 zone (it
// means nothing on another host) and no IPv4-mapped form (which would
// compare unequal to the same IPv4 address).
func addr(field, s string) (netip.Addr, *api.Error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, invalid(field, "%q is not an IP address", s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, invalid(field, "%q has an IPv6 zone; zones are local to one host, give the address without %%%s", s, a.Zone())
	}
	if a.Is4In6() {
		return netip.Addr{}, invalid(field, "%q is an IPv4-mapped IPv6 address; write it as %s", s, a.Unmap())
	}
	return a, nil
}

// reachableAddr is addr for an address other clusters connect to (a
// service IP or an endpoint): like Kubernetes' EndpointSlice validation, it
// refuses the unspecified, loopback, link-local and multicast addresses.
func reachableAddr(field, s string) (netip.Addr, *api.Error) {
	a, err := addr(field, s)
	if err != nil {
		return a, err
	}
	var what string
	switch {
	case a.IsUnspecified():
		what = "the unspecified address"
	case a.IsLoopback():
		what = "a loopback address"
	case a.IsLinkLocalUnicast():
		what = "a link-local address"
	case a.IsMulticast():
		what = "a multicast address"
	default:
		return a, nil
	}
	return netip.Addr{}, invalid(field, "%q is %s, which no other cluster can reach", s, what)
}

// family names an address's family as Kubernetes does.
func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

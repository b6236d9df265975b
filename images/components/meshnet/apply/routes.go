// Package apply makes the kernel match a meshnet plan: routes through netlink and
// the masquerade rule through nftables. Each applier is given the whole desired
// state and removes whatever it installed earlier that is no longer wanted.
package apply

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/tunnelmesh/tunnelmesh/images/components/meshnet/plan"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocol tags meshnet's routes (`ip route ... proto 79`), so routes that
// anyone else installed (tunnelmesh gateways, kube-proxy, the admin) are never touched.
const RouteProtocol netlink.RouteProtocol = 79

// Routes applies pod-CIDR routes in one network namespace.
type Routes struct {
	h *netlink.Handle
}

// NewRoutes returns an applier using handle h (nil: the calling thread's namespace).
func NewRoutes(h *netlink.Handle) *Routes {
	if h == nil {
		h = &netlink.Handle{}
	}
	return &Routes{h: h}
}

// Apply makes the main table hold exactly the desired meshnet routes.
func (r *Routes) Apply(desired []plan.Route) error {
	have, err := r.List()
	if err != nil {
		return err
	}
	want := map[netip.Prefix]netip.Addr{}
	for _, d := range desired {
		want[d.Dst] = d.Via
	}
	var errs []error
	for _, d := range desired {
		if via, ok := have[d.Dst]; ok && via == d.Via {
			continue
		}
		if err := r.h.RouteReplace(route(d)); err != nil {
			errs = append(errs, fmt.Errorf("replace route %s: %w", d, err))
		}
	}
	for dst, via := range have {
		if _, ok := want[dst]; ok {
			continue
		}
		if err := r.h.RouteDel(route(plan.Route{Dst: dst, Via: via})); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete stale route %s via %s: %w", dst, via, err))
		}
	}
	return errors.Join(errs...)
}

// List returns the meshnet routes now in the main table.
func (r *Routes) List() (map[netip.Prefix]netip.Addr, error) {
	filter := &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	rs, err := r.h.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list meshnet routes: %w", err)
	}
	out := map[netip.Prefix]netip.Addr{}
	for _, rt := range rs {
		if rt.Dst == nil {
			continue
		}
		dst, ok1 := prefixOf(rt.Dst)
		via, ok2 := netip.AddrFromSlice(rt.Gw)
		if ok1 && ok2 {
			out[dst] = via.Unmap()
		}
	}
	return out, nil
}

func route(r plan.Route) *netlink.Route {
	bits := 32
	if r.Dst.Addr().Is6() {
		bits = 128
	}
	return &netlink.Route{
		Dst:      &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), bits)},
		Gw:       r.Via.AsSlice(),
		Protocol: RouteProtocol,
		Table:    unix.RT_TABLE_MAIN,
	}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// Package apply makes the kernel match a meshnet plan: routes through netlink and
// the masquerade rule through nftables. Each applier is given the whole desired
// state and removes whatever it installed earlier that is no longer wanted.
package apply

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/tunnelmesh/tunnelmesh/images/components/meshnet/plan"
	"github.com/tunnelmesh/tunnelmesh/pkg/nsenter"
	"github.com/tunnelmesh/tunnelmesh/pkg/routes"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// RouteProtocol tags meshnet's routes (`ip route ... proto 79`), so routes that
// anyone else installed (tunnelmesh gateways, kube-proxy, the admin) are never touched.
const RouteProtocol netlink.RouteProtocol = 79

// Routes applies pod-CIDR routes in one network namespace through tunnelmesh's
// route table (pkg/routes), owning the routes tagged RouteProtocol.
type Routes struct {
	ns    *netns.NsHandle
	table *routes.Table
}

// NewRoutes returns an applier for the namespace ns (nil: the caller's).
func NewRoutes(ns *netns.NsHandle) *Routes {
	return &Routes{ns: ns, table: routes.NewTable(slog.Default(), routes.WithProtocol(RouteProtocol))}
}

// Apply makes the main table hold exactly the desired meshnet routes.
func (r *Routes) Apply(desired []plan.Route) error {
	rs := make([]routes.Route, 0, len(desired))
	for _, d := range desired {
		// No device: the kernel sends each via the interface that reaches the node.
		rs = append(rs, routes.Route{Dst: d.Dst, Gw: d.Via})
	}
	return nsenter.Maybe(r.ns, func() error { return r.table.Set(routes.State{Routes: rs}) })
}

// List returns the meshnet routes now in the main table.
func (r *Routes) List() (map[netip.Prefix]netip.Addr, error) {
	out := map[netip.Prefix]netip.Addr{}
	err := nsenter.Maybe(r.ns, func() error {
		rs, err := routes.OwnedBy(RouteProtocol)
		if err != nil {
			return fmt.Errorf("list meshnet routes: %w", err)
		}
		for _, rt := range rs {
			if rt.Dst == nil {
				continue
			}
			a, ok1 := netip.AddrFromSlice(rt.Dst.IP)
			via, ok2 := netip.AddrFromSlice(rt.Gw)
			if ok1 && ok2 {
				ones, _ := rt.Dst.Mask.Size()
				out[netip.PrefixFrom(a.Unmap(), ones)] = via.Unmap()
			}
		}
		return nil
	})
	return out, err
}

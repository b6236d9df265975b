package sysctl

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// ipv4DevconfRPFilter is IPV4_DEVCONF_RP_FILTER (linux/ip.h).
const ipv4DevconfRPFilter = 8

// setRPFilter sets dev's IPv4 rp_filter through netlink (RTM_SETLINK with
// IFLA_AF_SPEC/AF_INET/IFLA_INET_CONF), which needs only CAP_NET_ADMIN:
// the gateway's main container has /proc/sys read-only, and the devices
// it creates (tmesh0, tmesh-vx) must be loosened there without loosening
// "default" for every device created after them (pod veths).
func setRPFilter(dev string, v uint32) error {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("device %s: %w", dev, err)
	}
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(l.Attrs().Index)
	req.AddData(msg)
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	conf := spec.AddRtAttr(unix.AF_INET, nil).AddRtAttr(unix.IFLA_INET_CONF, nil)
	conf.AddRtAttr(ipv4DevconfRPFilter, nl.Uint32Attr(v))
	req.AddData(spec)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("set rp_filter of %s to %d through netlink: %w", dev, v, err)
	}
	return nil
}

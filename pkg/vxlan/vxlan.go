// Package vxlan keeps one VXLAN device of tunnelmesh's (named tmesh-*) in a
// desired state: device attributes, the default-destination FDB entries that
// send every frame to the gateway node, and static neighbour entries for
// next hops. Set is idempotent and changes only what differs; Teardown
// removes the device.
//
// Defaults, and why:
//   - UDP port 4803: not 4789 (IANA; Calico), 8472 (the kernel's default;
//     flannel, Cilium), 4800 (Submariner) or 6081 (Geneve), so our socket never
//     has to be shared with a CNI's VXLAN device, which the kernel refuses when
//     the two differ in flags (e.g. a metadata-mode device).
//   - VNI 29805 (0x746d, "tm"): on a port of our own any VNI works; this one is
//     easy to spot in a capture.
//   - MTU: the underlay's minus the encapsulation (50 bytes over IPv4: outer IP
//     20, UDP 8, VXLAN 8, inner Ethernet 14; 70 over IPv6).
//   - Learning off: every entry is static, so a forged frame cannot redirect
//     traffic and a failover takes effect at once instead of after ageing.
package vxlan

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Defaults (see the package comment).
const (
	NamePrefix  = "tmesh-"
	DefaultName = "tmesh-vx"
	DefaultVNI  = 0x746d
	DefaultPort = 4803
)

// Overhead is the encapsulation's cost in bytes over an underlay of this family.
func Overhead(underlay netip.Addr) int {
	if underlay.Is6() && !underlay.Is4In6() {
		return 70
	}
	return 50
}

// MACFor is the device MAC of the node whose underlay address is a: locally
// administered, unicast, derived from the address, so every node can name
// any other node's VXLAN MAC without asking it (IPv6 underlays use its last
// four bytes).
func MACFor(a netip.Addr) net.HardwareAddr {
	b := a.As16()
	return net.HardwareAddr{0x0e, 0x74, b[12], b[13], b[14], b[15]}
}

// Neighbor is a static next-hop entry on the device.
type Neighbor struct {
	IP  netip.Addr
	MAC net.HardwareAddr
}

// Device is the desired VXLAN device.
type Device struct {
	Name     string     // tmesh-*, at most 15 bytes
	VNI      uint32     // < 2^24
	Port     uint16     // UDP destination (and listening) port
	MTU      int        // e.g. underlay MTU − Overhead
	Local    netip.Addr // this node's underlay address: source of the outer packets
	Underlay string     // the device holding Local (optional; pins the outer route)
	MAC      net.HardwareAddr
	// Remotes receive every frame (all-zero-MAC FDB entries): the gateway node.
	Remotes   []netip.Addr
	Neighbors []Neighbor
	// Addresses are exactly the device's addresses (IPv6 link-local ones the
	// kernel adds itself are left alone).
	Addresses []netip.Prefix
}

// Validate reports what is wrong with d, if anything.
func (d Device) Validate() error {
	switch {
	case !strings.HasPrefix(d.Name, NamePrefix) || len(d.Name) > 15 || len(d.Name) == len(NamePrefix):
		return fmt.Errorf("vxlan device name %q: want %s followed by 1-%d characters", d.Name, NamePrefix, 15-len(NamePrefix))
	case d.VNI == 0 || d.VNI >= 1<<24:
		return fmt.Errorf("vxlan %s: VNI %d out of range 1-16777215", d.Name, d.VNI)
	case d.Port == 0:
		return fmt.Errorf("vxlan %s: UDP port 0; use e.g. %d", d.Name, DefaultPort)
	case d.MTU < 68:
		return fmt.Errorf("vxlan %s: MTU %d below 68", d.Name, d.MTU)
	case !d.Local.IsValid():
		return fmt.Errorf("vxlan %s: no local underlay address", d.Name)
	case len(d.MAC) != 6:
		return fmt.Errorf("vxlan %s: MAC %q is not 6 bytes", d.Name, d.MAC)
	}
	for _, r := range d.Remotes {
		if r.Is4() != d.Local.Is4() {
			return fmt.Errorf("vxlan %s: remote %s and local %s are of different families", d.Name, r, d.Local)
		}
	}
	return nil
}

// Set makes the device match d, creating it or, when an attribute fixed at
// creation (VNI, port, local address, underlay) differs, recreating it.
func Set(d Device) error {
	if err := d.Validate(); err != nil {
		return err
	}
	var vtep int
	if d.Underlay != "" {
		u, err := netlink.LinkByName(d.Underlay)
		if err != nil {
			return fmt.Errorf("vxlan %s: underlay %s: %w", d.Name, d.Underlay, err)
		}
		vtep = u.Attrs().Index
	}
	link, err := ensureLink(d, vtep)
	if err != nil {
		return err
	}
	a := link.Attrs()
	if a.MTU != d.MTU {
		if err := netlink.LinkSetMTU(link, d.MTU); err != nil {
			return fmt.Errorf("vxlan %s: set MTU %d: %w", d.Name, d.MTU, err)
		}
	}
	if !bytes.Equal(a.HardwareAddr, d.MAC) {
		if err := netlink.LinkSetHardwareAddr(link, d.MAC); err != nil {
			return fmt.Errorf("vxlan %s: set MAC %s: %w", d.Name, d.MAC, err)
		}
	}
	if a.Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("vxlan %s: set up: %w", d.Name, err)
		}
	}
	return errors.Join(setAddresses(d, link), setFDB(d, a.Index), setNeighbors(d, a.Index))
}

// setAddresses keeps exactly d.Addresses on the device.
func setAddresses(d Device, link netlink.Link) error {
	have, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("vxlan %s: list addresses: %w", d.Name, err)
	}
	var errs []error
	var present []netip.Prefix
	for _, h := range have {
		ip, _ := netip.AddrFromSlice(h.IP)
		ones, _ := h.Mask.Size()
		p := netip.PrefixFrom(ip.Unmap(), ones)
		if slices.Contains(d.Addresses, p) {
			present = append(present, p)
			continue
		}
		if ip.Is6() && ip.IsLinkLocalUnicast() {
			continue
		}
		if err := netlink.AddrDel(link, &h); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("vxlan %s: delete address %s: %w", d.Name, p, err))
		}
	}
	for _, p := range d.Addresses {
		if slices.Contains(present, p) {
			continue
		}
		n := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
		if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: n}); err != nil {
			errs = append(errs, fmt.Errorf("vxlan %s: add address %s: %w", d.Name, p, err))
		}
	}
	return errors.Join(errs...)
}

// Teardown removes the device named name; a missing device is not an error.
func Teardown(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("vxlan %s: %w", name, err)
	}
	if l.Type() != "vxlan" {
		return fmt.Errorf("interface %s is a %s, not a VXLAN device of ours; leaving it", name, l.Type())
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete vxlan %s: %w", name, err)
	}
	return nil
}

func ensureLink(d Device, vtep int) (netlink.Link, error) {
	old, err := netlink.LinkByName(d.Name)
	if err == nil {
		vx, ok := old.(*netlink.Vxlan)
		if !ok {
			return nil, fmt.Errorf("interface %s exists and is a %s, not VXLAN; delete it or pick another name", d.Name, old.Type())
		}
		src, _ := netip.AddrFromSlice(vx.SrcAddr)
		if vx.VxlanId == int(d.VNI) && vx.Port == int(d.Port) && src.Unmap() == d.Local &&
			vx.VtepDevIndex == vtep && !vx.Learning {
			return vx, nil
		}
		if err := netlink.LinkDel(old); err != nil {
			return nil, fmt.Errorf("vxlan %s: delete to recreate with new attributes: %w", d.Name, err)
		}
	}
	vx := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: d.Name, MTU: d.MTU, HardwareAddr: d.MAC},
		VxlanId:      int(d.VNI),
		VtepDevIndex: vtep,
		SrcAddr:      d.Local.AsSlice(),
		Port:         int(d.Port),
		Learning:     false,
	}
	if err := netlink.LinkAdd(vx); err != nil {
		return nil, fmt.Errorf("create vxlan %s (VNI %d, port %d): %w", d.Name, d.VNI, d.Port, err)
	}
	l, err := netlink.LinkByName(d.Name)
	if err != nil {
		return nil, fmt.Errorf("vxlan %s after create: %w", d.Name, err)
	}
	return l, nil
}

var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// setFDB keeps exactly d.Remotes as all-zero-MAC (default destination) entries.
func setFDB(d Device, idx int) error {
	have, err := netlink.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("vxlan %s: list FDB: %w", d.Name, err)
	}
	var errs []error
	var present []netip.Addr
	for _, n := range have {
		if !bytes.Equal(n.HardwareAddr, zeroMAC) {
			continue
		}
		ip, _ := netip.AddrFromSlice(n.IP)
		ip = ip.Unmap()
		if slices.Contains(d.Remotes, ip) {
			present = append(present, ip)
			continue
		}
		if err := netlink.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("vxlan %s: delete FDB entry to %s: %w", d.Name, ip, err))
		}
	}
	for _, r := range d.Remotes {
		if slices.Contains(present, r) {
			continue
		}
		err := netlink.NeighAppend(&netlink.Neigh{
			LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_PERMANENT | netlink.NUD_NOARP, HardwareAddr: zeroMAC, IP: r.AsSlice(),
		})
		if err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("vxlan %s: add FDB entry to %s: %w", d.Name, r, err))
		}
	}
	return errors.Join(errs...)
}

// setNeighbors keeps exactly d.Neighbors as the device's permanent neighbours.
func setNeighbors(d Device, idx int) error {
	var errs []error
	var present []Neighbor
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		have, err := netlink.NeighList(idx, fam)
		if err != nil {
			return fmt.Errorf("vxlan %s: list neighbours: %w", d.Name, err)
		}
		for _, n := range have {
			if n.State&netlink.NUD_PERMANENT == 0 {
				continue
			}
			ip, _ := netip.AddrFromSlice(n.IP)
			if slices.ContainsFunc(d.Neighbors, func(w Neighbor) bool { return w.IP == ip.Unmap() }) {
				present = append(present, Neighbor{IP: ip.Unmap(), MAC: n.HardwareAddr})
				continue
			}
			if err := netlink.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("vxlan %s: delete neighbour %s: %w", d.Name, ip, err))
			}
		}
	}
	for _, w := range d.Neighbors {
		if slices.ContainsFunc(present, func(p Neighbor) bool { return p.IP == w.IP && bytes.Equal(p.MAC, w.MAC) }) {
			continue
		}
		fam := netlink.FAMILY_V4
		if w.IP.Is6() {
			fam = netlink.FAMILY_V6
		}
		err := netlink.NeighSet(&netlink.Neigh{
			LinkIndex: idx, Family: fam, State: netlink.NUD_PERMANENT, IP: w.IP.AsSlice(), HardwareAddr: w.MAC,
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("vxlan %s: set neighbour %s at %s: %w", d.Name, w.IP, w.MAC, err))
		}
	}
	return errors.Join(errs...)
}

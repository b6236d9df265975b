package routeagent

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/tunnelmesh/tunnelmesh/pkg/routes"
	"github.com/tunnelmesh/tunnelmesh/pkg/vxlan"
)

// Mode is how traffic reaches the active gateway node.
type Mode string

const (
	// ModeVXLAN (the default) encapsulates to the gateway node in tmesh-vx:
	// works across subnets and through clouds' source/destination checks, and
	// the pod-addressed packet never leaves through the node's own interface.
	ModeVXLAN Mode = "vxlan"
	// ModeDirect routes via the gateway node's address on a subnet this node
	// shares: no encapsulation, no smaller MTU; needs a flat layer 2.
	ModeDirect Mode = "direct"
)

// ParseMode parses a mode name; "" is the default, ModeVXLAN.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "", ModeVXLAN:
		return ModeVXLAN, nil
	case ModeDirect:
		return ModeDirect, nil
	}
	return "", fmt.Errorf("route agent mode %q: want %q or %q", s, ModeVXLAN, ModeDirect)
}

// Fixed parts of the plan.
const (
	// RouteMetric lets an agent route coexist with the gateway's own route to the
	// same CIDR on a node that becomes active; the gateway's (metric 0) wins.
	RouteMetric = 1000
	// DeviceName is the agent's VXLAN device.
	DeviceName = vxlan.DefaultName
)

// Next hops on tmesh-vx. Other nodes only look them up in their device's
// static neighbour table, which names the active gateway node's MAC, so a
// failover changes a neighbour and an FDB entry, not the routes. The active
// node holds them on its device: the kernel's reverse-path filter drops every
// packet arriving on a device without an IPv4 address unless it is off both
// for the device and for "all".
var (
	NextHop4 = netip.MustParseAddr("169.254.77.1")
	NextHop6 = netip.MustParseAddr("fe80::746d:1")
)

// Self is this node as its kernel sees it.
type Self struct {
	Name      string
	Interface string         // the underlay device holding Addresses, e.g. eth0
	Addresses []netip.Prefix // underlay addresses with their subnet, e.g. 172.18.0.3/16
	MTU       int            // the underlay device's MTU
}

// Gateway names the cluster's active gateway node.
type Gateway struct {
	Node      string
	Addresses []netip.Addr // its underlay (InternalIP) addresses
}

// Input is everything Plan needs; the caller learns it from the cluster.
type Input struct {
	Self   Self
	Active Gateway        // Node "" means no active gateway is known
	Local  []netip.Prefix // this cluster's pod CIDRs: sources that must keep their address
	Remote []netip.Prefix // every remote cluster's pod and service CIDRs
	Mode   Mode           // "" is ModeVXLAN
	VNI    uint32         // 0: vxlan.DefaultVNI
	Port   uint16         // 0: vxlan.DefaultPort
	// Nodes are the underlay addresses of the cluster's nodes: the only
	// senders the VXLAN port accepts (this node's and the active node's are
	// always among them).
	// No remote CIDR covering one of them is routed either.
	Nodes []netip.Addr
	// DNS are this node's DNS upstreams: a remote CIDR covering one is not routed.
	DNS []netip.Addr
	// GatewayRefused are the remote CIDRs the active gateway refused (its
	// MeshGateway status): every agent honours them.
	GatewayRefused []Refusal
	// ReplyDevices are further devices replies from remote clusters may
	// arrive on (a CNI's overlay device, e.g. flannel.1); their strict
	// reverse-path filter is loosened like the underlay's.
	ReplyDevices []string
}

// Exemption is the null-binding NAT rule: traffic from Sources to Destinations
// keeps its source address whatever the CNI's masquerade rule says.
type Exemption struct {
	Sources, Destinations []netip.Prefix
}

// Filter guards the VXLAN port: datagrams to Port are accepted only from
// Nodes, and never forwarded to one of them (a pod's, whatever the CNI's
// masquerade makes of its source).
type Filter struct {
	Port  uint16
	Nodes []netip.Prefix
}

// Desired is the node's desired state.
type Desired struct {
	Routes   []routes.Route
	Device   *vxlan.Device // nil: no VXLAN device (direct mode)
	Filter   *Filter       // with Device
	Exempt   Exemption
	LooseRPF []string // interfaces whose strict reverse-path filter must become loose
	Refused  []Refusal
}

// Refusal is a remote CIDR left unrouted, and why.
type Refusal struct {
	CIDR   netip.Prefix
	Reason string
}

func (r Refusal) String() string { return r.CIDR.String() + ": " + r.Reason }

// ErrNoActive is returned by Plan when no active gateway is known.
var ErrNoActive = errors.New("no active gateway node known")

// Plan computes the desired state of this node. It is pure.
func Plan(in Input) (Desired, error) {
	mode, err := ParseMode(string(in.Mode))
	if err != nil {
		return Desired{}, err
	}
	switch {
	case in.Self.Name == "":
		return Desired{}, errors.New("this node's name is empty")
	case in.Active.Node == "":
		return Desired{}, ErrNoActive
	case len(in.Local) == 0:
		return Desired{}, errors.New("no local pod CIDRs given: pod source addresses could not be exempted from the CNI's masquerade; pass the cluster's pod CIDRs")
	}
	for _, p := range slices.Concat(in.Local, in.Remote) {
		if !p.IsValid() {
			return Desired{}, fmt.Errorf("invalid CIDR %v", p)
		}
	}
	remote, refused := screen(in, normalize(in.Remote))
	d := Desired{Exempt: Exemption{Sources: normalize(in.Local), Destinations: remote}, Refused: refused}
	if in.Self.Interface != "" {
		// Replies come back by the CNI's path, not the way the request left.
		d.LooseRPF = append(d.LooseRPF, in.Self.Interface)
	}
	for _, dev := range in.ReplyDevices {
		if !slices.Contains(d.LooseRPF, dev) {
			d.LooseRPF = append(d.LooseRPF, dev)
		}
	}
	active := in.Self.Name == in.Active.Node

	if mode == ModeDirect {
		if active {
			return d, nil // the gateway's data plane routes remote CIDRs into the tunnel
		}
		for _, dst := range remote {
			gw, ok := sharedSubnet(in.Self.Addresses, in.Active.Addresses, dst.Addr().Is4())
			if !ok {
				return Desired{}, fmt.Errorf("direct mode: active gateway node %s (%v) shares no %s subnet with this node (%v); use mode %q",
					in.Active.Node, in.Active.Addresses, family(dst), in.Self.Addresses, ModeVXLAN)
			}
			d.Routes = append(d.Routes, routes.Route{Dst: dst, Gw: gw, Dev: in.Self.Interface, Metric: RouteMetric})
		}
		return d, nil
	}

	local, gw, ok := underlayPair(in.Self.Addresses, in.Active.Addresses)
	if !ok && !active {
		return Desired{}, fmt.Errorf("vxlan mode: this node (%v) and active gateway node %s (%v) have no address family in common",
			in.Self.Addresses, in.Active.Node, in.Active.Addresses)
	}
	if active {
		local = firstAddr(in.Self.Addresses)
		if !local.IsValid() {
			return Desired{}, errors.New("vxlan mode: this node has no underlay address")
		}
	}
	if in.Self.MTU <= 0 {
		return Desired{}, errors.New("vxlan mode: the underlay MTU is unknown")
	}
	dev := &vxlan.Device{
		Name: DeviceName, VNI: orDefault(in.VNI, vxlan.DefaultVNI), Port: uint16(orDefault(uint32(in.Port), vxlan.DefaultPort)),
		MTU: in.Self.MTU - vxlan.Overhead(local), Local: local, Underlay: in.Self.Interface, MAC: vxlan.MACFor(local),
	}
	d.Device = dev
	d.Filter = &Filter{Port: dev.Port, Nodes: nodePrefixes(in)}
	d.LooseRPF = append(d.LooseRPF, DeviceName)
	if active { // receive only: frames from other nodes arrive here and are forwarded into the tunnel
		if slices.ContainsFunc(remote, func(p netip.Prefix) bool { return p.Addr().Is4() }) {
			dev.Addresses = append(dev.Addresses, netip.PrefixFrom(NextHop4, 32))
		}
		if slices.ContainsFunc(remote, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
			dev.Addresses = append(dev.Addresses, netip.PrefixFrom(NextHop6, 128))
		}
		return d, nil
	}
	dev.Remotes = []netip.Addr{gw}
	gwMAC := vxlan.MACFor(gw)
	var v4, v6 bool
	for _, dst := range remote {
		r := routes.Route{Dst: dst, Dev: DeviceName, Metric: RouteMetric}
		if dst.Addr().Is4() {
			r.Gw, r.OnLink, v4 = NextHop4, true, true
		} else {
			r.Gw, v6 = NextHop6, true
		}
		d.Routes = append(d.Routes, r)
	}
	if v4 {
		dev.Neighbors = append(dev.Neighbors, vxlan.Neighbor{IP: NextHop4, MAC: gwMAC})
	}
	if v6 {
		dev.Neighbors = append(dev.Neighbors, vxlan.Neighbor{IP: NextHop6, MAC: gwMAC})
	}
	return d, nil
}

// screen drops remote CIDRs that would take traffic this node needs
// elsewhere: its own cluster's pods, its underlay (the encapsulated packets
// to the gateway would loop into tmesh-vx), the gateway node's address, any
// node of the cluster, this node's DNS upstreams, every CIDR the active
// gateway refused (the API server's, and what it refused for its own
// reasons), and addresses no cluster may claim. The rest keep working.
func screen(in Input, remote []netip.Prefix) (ok []netip.Prefix, refused []Refusal) {
	for _, r := range remote {
		reason := ""
		a := r.Addr()
		switch {
		case r.Bits() == 0:
			reason = "a default route"
		case a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsUnspecified():
			reason = "not a routable unicast range"
		}
		for _, l := range in.Local {
			if reason == "" && r.Overlaps(l) {
				reason = "overlaps this cluster's pod CIDR " + l.Masked().String()
			}
		}
		for _, s := range in.Self.Addresses {
			if reason == "" && r.Overlaps(s.Masked()) {
				reason = "overlaps this node's underlay subnet " + s.Masked().String()
			}
		}
		for _, g := range in.Active.Addresses {
			if reason == "" && r.Contains(g) {
				reason = "contains the gateway node's address " + g.String()
			}
		}
		for _, g := range in.GatewayRefused {
			if reason == "" && g.CIDR.Masked() == r {
				reason = "refused by the active gateway: " + g.Reason
			}
		}
		for _, n := range in.Nodes {
			if reason == "" && r.Contains(n) {
				reason = "contains a node of this cluster, " + n.String()
			}
		}
		for _, d := range in.DNS {
			if reason == "" && r.Contains(d) {
				reason = "contains a DNS upstream of this node, " + d.String()
			}
		}
		if reason != "" {
			refused = append(refused, Refusal{CIDR: r, Reason: reason})
			continue
		}
		ok = append(ok, r)
	}
	return ok, refused
}

// nodePrefixes are the cluster's node addresses as host prefixes, this
// node's and the active node's included.
func nodePrefixes(in Input) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range in.Nodes {
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	for _, a := range in.Active.Addresses {
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	for _, p := range in.Self.Addresses {
		out = append(out, netip.PrefixFrom(p.Addr().Unmap(), p.Addr().Unmap().BitLen()))
	}
	return normalize(out)
}

// normalize masks, sorts and deduplicates prefixes.
func normalize(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Masked())
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out)
}

// sharedSubnet finds the gateway's address of the family that lies in a subnet of ours.
func sharedSubnet(self []netip.Prefix, gw []netip.Addr, v4 bool) (netip.Addr, bool) {
	for _, g := range gw {
		if g.Is4() != v4 {
			continue
		}
		for _, s := range self {
			if s.Contains(g) && s.Addr() != g {
				return g, true
			}
		}
	}
	return netip.Addr{}, false
}

// underlayPair picks the outer addresses of the VXLAN: IPv4 when both have it.
func underlayPair(self []netip.Prefix, gw []netip.Addr) (netip.Addr, netip.Addr, bool) {
	for _, v4 := range []bool{true, false} {
		var l, g netip.Addr
		for _, s := range self {
			if s.Addr().Is4() == v4 && !l.IsValid() {
				l = s.Addr()
			}
		}
		for _, a := range gw {
			if a.Is4() == v4 && !g.IsValid() {
				g = a
			}
		}
		if l.IsValid() && g.IsValid() {
			return l, g, true
		}
	}
	return netip.Addr{}, netip.Addr{}, false
}

func firstAddr(ps []netip.Prefix) netip.Addr {
	for _, v4 := range []bool{true, false} {
		for _, p := range ps {
			if p.Addr().Is4() == v4 {
				return p.Addr()
			}
		}
	}
	return netip.Addr{}
}

func orDefault(v, def uint32) uint32 {
	if v == 0 {
		return def
	}
	return v
}

func family(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

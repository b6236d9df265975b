package node

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/tunnelmesh/tunnelmesh/pkg/cidr"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	"github.com/tunnelmesh/tunnelmesh/pkg/routeagent"
	corev1 "k8s.io/api/core/v1"
)

// ClusterView is what a route agent reads from the cluster.
type ClusterView struct {
	// Holder is the Lease holder (the active gateway node), "" when none;
	// HolderAddrs its InternalIPs.
	Holder      string
	HolderAddrs []netip.Addr
	// Gateways are the MeshGateway objects of the namespace (normally one).
	Gateways []status.MeshGateway
	// Nodes are every node's InternalIPs (NodeAddrs): the senders the
	// VXLAN port accepts, and addresses no remote CIDR may cover.
	Nodes []netip.Addr
	// DNS are this node's DNS upstreams.
	DNS []netip.Addr
}

// AgentSettings are the agent's own settings (flags).
type AgentSettings struct {
	// ClusterID names the one MeshGateway the agent follows ("": any, the
	// newest; only for the single-account layout of old).
	ClusterID    string
	Mode         routeagent.Mode
	PodCIDRs     []netip.Prefix // override of the local pod CIDRs
	ReplyDevices []string
}

// AgentInput computes the route agent's input from the cluster view: the
// active node from the Lease, the remote CIDRs from the cluster's own
// MeshGateway (named s.ClusterID; others are ignored), else the newest (a new active inherits its predecessor's object, so the CIDRs survive
// the failover), the local pod CIDRs from the flag or else the status.
// Problems are CIDRs in the status that do not parse. Pure.
func AgentInput(self routeagent.Self, v ClusterView, s AgentSettings) (routeagent.Input, []string) {
	in := routeagent.Input{Self: self, Mode: s.Mode, ReplyDevices: s.ReplyDevices, Nodes: slices.Clone(v.Nodes), DNS: slices.Clone(v.DNS)}
	if v.Holder != "" {
		in.Active = routeagent.Gateway{Node: v.Holder, Addresses: slices.Clone(v.HolderAddrs)}
	}
	var problems []string
	parse := func(what string, ss []string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			p, err := cidr.Parse(s, cidr.Mask)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", what, err))
				continue
			}
			out = append(out, p)
		}
		return out
	}
	gws := v.Gateways
	if s.ClusterID != "" { // anyone may create a MeshGateway: only ours counts
		gws = slices.DeleteFunc(slices.Clone(gws), func(g status.MeshGateway) bool { return g.Name != s.ClusterID })
	}
	gw, ok := newest(gws, v.Holder)
	in.Local = slices.Clone(s.PodCIDRs)
	if ok {
		if len(in.Local) == 0 {
			in.Local = parse("local pod CIDR", gw.Status.PodCIDRs)
		}
		for _, r := range gw.Status.Remotes {
			in.Remote = append(in.Remote, parse("pod CIDR of "+r.Cluster, r.PodCIDRs)...)
			in.Remote = append(in.Remote, parse("service CIDR of "+r.Cluster, r.ServiceCIDRs)...)
			for _, ref := range r.Refused {
				if p, err := cidr.Parse(ref.CIDR, cidr.Mask); err == nil {
					in.GatewayRefused = append(in.GatewayRefused, routeagent.Refusal{CIDR: p, Reason: ref.Reason})
				} else {
					problems = append(problems, fmt.Sprintf("refused CIDR of %s: %v", r.Cluster, err))
				}
			}
		}
	}
	slices.SortFunc(in.Remote, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	in.Remote = slices.Compact(in.Remote)
	return in, problems
}

// newest picks the MeshGateway written by the holder, else the highest epoch.
func newest(gws []status.MeshGateway, holder string) (status.MeshGateway, bool) {
	var best status.MeshGateway
	found := false
	for _, g := range gws {
		switch {
		case !found:
		case (g.Status.ActiveNode == holder) != (best.Status.ActiveNode == holder):
			if g.Status.ActiveNode != holder {
				continue
			}
		case g.Status.Epoch < best.Status.Epoch || (g.Status.Epoch == best.Status.Epoch && g.Name >= best.Name):
			continue
		}
		best, found = g, true
	}
	return best, found
}

// NodeAddrs are the InternalIPs of every node, sorted and without duplicates.
func NodeAddrs(nodes []*corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, n := range nodes {
		out = append(out, InternalIPs(n)...)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// InternalIPs are a Node's InternalIP addresses.
func InternalIPs(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

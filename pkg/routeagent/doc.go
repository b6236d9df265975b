// Package routeagent keeps a Kubernetes node's routes to every remote
// cluster's pod and service CIDRs pointed at its cluster's active gateway
// node, and moves them when the active node changes. It is given plain
// inputs (this node, the active gateway node, the CIDRs, a mode) and knows
// nothing of Kubernetes: a Lease watcher or any other caller feeds Set.
//
// Shape: Plan (pure, table-tested) computes a Desired state; Agent applies it
// with pkg/routes (routes tagged protocol 78), pkg/vxlan (the tmesh-vx device)
// and one nftables table, puts back what others delete (Run), never removes
// anything on a restart or stop, and removes everything only on Uninstall.
//
// # Keeping pod source addresses
//
// CNIs masquerade pod traffic that leaves the cluster's pod CIDR: flannel,
// kindnet and Calico do it whatever the outgoing interface, the project's
// meshnet does it unless the packet leaves through a tmesh* device. Traffic
// to another cluster would then reach it from the node's address, and only
// pods on the gateway node would be reachable from there. Tested in network
// namespaces (exempt_test.go, agent_test.go), netfilter behaves like this:
//
//   - Every NAT chain on the postrouting hook, nftables or iptables (legacy
//     too), is walked in priority order for a connection's first packet, and
//     the walk stops at the first chain that sets up a source binding.
//   - An "accept" in an earlier NAT chain therefore exempts nothing: it ends
//     only that chain, and the CNI's masquerade still runs.
//   - "snat to ip saddr" (a null binding: the same address) in a chain of ours
//     at priority 50, before the standard srcnat (100), decides the binding
//     and so ends the walk: the packet keeps the pod's address, against an nft
//     or an iptables-legacy masquerade alike. It matches only pod sources
//     (Input.Local) towards remote CIDRs (Input.Remote); host-network and
//     external sources are still masqueraded as the CNI intends.
//
// The agent installs this on every node, the active gateway node included:
// CNIs that masquerade by cluster CIDR would otherwise rewrite other nodes'
// pod traffic there, on its way into the tunnel. What it cannot reach is a
// masquerade done outside netfilter (eBPF on the node's interface, as in
// Cilium's BPF masquerading); that is one reason for the default mode.
//
// # Modes
//
// ModeVXLAN (the default) sends traffic to the gateway node inside the
// tmesh-vx device (UDP 4803, VNI 29805, MTU = underlay − 50): it works
// whether or not the nodes share a subnet, passes clouds' source/destination
// checks (the outer packet is node to node), and the pod-addressed packet
// never leaves through the node's own interface, where device-bound eBPF
// masquerading acts. Kernel VXLAN costs little next to the tunnel itself
// (13.4 against 13.6-14.5 Gbit/s of a bare veth here) and the tunnel's MTU is
// smaller anyway. ModeDirect routes via the gateway node's address on a
// shared subnet, with no encapsulation; choose it on a flat layer 2 whose
// CNI masquerades through netfilter or not at all.
//
// In VXLAN mode the routes name a fixed next hop (NextHop4/NextHop6) whose
// static neighbour entry is the active node's device MAC (derived from its
// address), and one all-zero FDB entry sends every frame to the active node:
// a failover rewrites one neighbour and one FDB entry, and no route.
//
// # The VXLAN port
//
// The kernel decapsulates any datagram reaching the VXLAN port and routes the
// packet inside like one of its own pods' — with whatever source it carries.
// So the agent's table accepts UDP 4803 only from the cluster's nodes
// (Input.Nodes, from the Node objects), and no node forwards a datagram to
// another node's port: a CNI may masquerade a pod's packet to its node's
// address on the way out, which the receiving node could not tell from a
// node's own (filter_test.go is the attack, from a pod and from a host that is
// not a node). The gateway's table does the rest: only the local CIDRs and
// the nodes' addresses are forwarded into the tunnel (pkg/nft).
//
// Replies come back by the CNI's own path, not through tmesh-vx, so a strict
// reverse-path filter drops them; the agent turns strict (1) into loose (2) on
// the underlay device and on tmesh-vx, and leaves 0 alone. A CNI whose
// replies arrive on an overlay device of its own (flannel.1, vxlan.calico)
// with a strict filter there needs that device named in Input.ReplyDevices.
package routeagent

package routeagent

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/tunnelmesh/tunnelmesh/pkg/nft"
	"golang.org/x/sys/unix"
)

// TableName is the agent's nftables table (family inet): the NAT exemption
// and the VXLAN port's filter.
const TableName = "tunnelmesh-agent"

// NATPriority runs our chain before every source-NAT chain at the standard
// priority (srcnat, 100): iptables' nat POSTROUTING and the nft masquerade
// chains CNIs install. All of them share one NAT hook, called in priority
// order, and the first chain that sets up a source binding ends the walk.
const NATPriority = 50

// applyTable replaces the agent's table, in one transaction, with:
//
//	table inet tunnelmesh-agent {
//	  set src4, dst4 (ipv4_addr, interval); set src6, dst6 (ipv6_addr, interval)
//	  chain postrouting { type nat hook postrouting priority 50;
//	    ip saddr @src4 ip daddr @dst4 snat ip to ip saddr
//	    ip saddr @dst4 ip daddr @src4 snat ip to ip saddr
//	    (and the same two for ip6) }
//	  set nodes4 (ipv4_addr, interval); set nodes6 (ipv6_addr, interval)   (f != nil)
//	  chain input { type filter hook input priority filter;
//	    udp dport PORT ip saddr != @nodes4 drop; (and ip6) }
//	  chain forward { type filter hook forward priority filter;
//	    ip daddr @nodes4 udp dport PORT drop; (and ip6) }
//	}
//
// "snat to the packet's own source" is a null binding: the address stays, and
// because the connection now has its source NAT decided, the kernel calls no
// later NAT chain, so the CNI's masquerade never sees it. An "accept" would
// not do: it ends only our chain, and the next one still masquerades.
//
// The filter: the kernel decapsulates any datagram reaching the VXLAN port
// and routes what it carries like its own pods' traffic, so a pod able to
// send one UDP datagram could put packets with any source into the tunnel.
// Only the nodes send to it (input); and since a CNI may masquerade a pod's
// packet to another node with its node's address, a node never forwards
// anything to that port (forward: before any source NAT).
func applyTable(e Exemption, f *Filter) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	c.AddTable(t) // so the delete below cannot fail on a first run
	c.DelTable(t)
	c.AddTable(t)
	ch := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(NATPriority),
	})
	src4, src6 := intervals(e.Sources)
	dst4, dst6 := intervals(e.Destinations)
	fams := []struct {
		name       string
		key        nftables.SetDatatype
		nfproto    byte
		src, dst   []nftables.SetElement
		saddr, off uint32
		alen       uint32
	}{
		{"4", nftables.TypeIPAddr, unix.NFPROTO_IPV4, src4, dst4, 12, 16, 4},
		{"6", nftables.TypeIP6Addr, unix.NFPROTO_IPV6, src6, dst6, 8, 24, 16},
	}
	for _, f := range fams {
		src := &nftables.Set{Table: t, Name: "src" + f.name, KeyType: f.key, Interval: true}
		dst := &nftables.Set{Table: t, Name: "dst" + f.name, KeyType: f.key, Interval: true}
		if err := c.AddSet(src, f.src); err != nil {
			return fmt.Errorf("add set %s: %w", src.Name, err)
		}
		if err := c.AddSet(dst, f.dst); err != nil {
			return fmt.Errorf("add set %s: %w", dst.Name, err)
		}
		if len(f.src) == 0 || len(f.dst) == 0 {
			continue
		}
		// Both ways: local pods to remote CIDRs (the CNI's masquerade of pod
		// traffic leaving the node), and remote CIDRs to local pods (kube-proxy
		// masquerades a ClusterIP connection from outside the cluster CIDR on
		// the node that DNATs it: the gateway, for connections off the tunnel).
		for _, dir := range [][2]*nftables.Set{{src, dst}, {dst, src}} {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.nfproto}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddr, Len: f.alen},
				&expr.Lookup{SourceRegister: 1, SetName: dir[0].Name, SetID: dir[0].ID},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.off, Len: f.alen},
				&expr.Lookup{SourceRegister: 1, SetName: dir[1].Name, SetID: dir[1].ID},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddr, Len: f.alen},
				&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(f.nfproto), RegAddrMin: 1},
			}})
		}
	}
	if f != nil {
		if err := addFilter(c, t, *f); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("program nftables table %s: %w", TableName, err)
	}
	return nil
}

// addFilter adds the VXLAN port's sets, chains and rules to t (see applyTable).
func addFilter(c *nftables.Conn, t *nftables.Table, f Filter) error {
	accept := nftables.ChainPolicyAccept // the chains drop only what their rules say
	in := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	n4, n6 := intervals(f.Nodes)
	port := binary.BigEndian.AppendUint16(nil, f.Port)
	for _, fam := range []struct {
		name    string
		key     nftables.SetDatatype
		nfproto byte
		els     []nftables.SetElement
		saddr   uint32
		daddr   uint32
		alen    uint32
	}{
		{"4", nftables.TypeIPAddr, unix.NFPROTO_IPV4, n4, 12, 16, 4},
		{"6", nftables.TypeIP6Addr, unix.NFPROTO_IPV6, n6, 8, 24, 16},
	} {
		nodes := &nftables.Set{Table: t, Name: "nodes" + fam.name, KeyType: fam.key, Interval: true}
		if err := c.AddSet(nodes, fam.els); err != nil {
			return fmt.Errorf("add set %s: %w", nodes.Name, err)
		}
		udp := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam.nfproto}},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port},
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: append(slices.Clone(udp),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.saddr, Len: fam.alen},
			&expr.Lookup{SourceRegister: 1, SetName: nodes.Name, SetID: nodes.ID, Invert: true},
			&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})})
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: append(slices.Clone(udp),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.daddr, Len: fam.alen},
			&expr.Lookup{SourceRegister: 1, SetName: nodes.Name, SetID: nodes.ID},
			&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})})
	}
	return nil
}

// intervals turns prefixes into interval-set elements per family, the way
// the gateway's own table does (pkg/nft).
func intervals(ps []netip.Prefix) (v4, v6 []nftables.SetElement) {
	var p4, p6 []netip.Prefix
	for _, p := range nft.Normalize(ps) {
		if p.Addr().Is4() {
			p4 = append(p4, p)
		} else {
			p6 = append(p6, p)
		}
	}
	return nft.Elements(p4), nft.Elements(p6)
}

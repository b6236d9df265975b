package routes

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the nftables table (family inet) tunnelmesh owns.
const TableName = "tunnelmesh"

// Firewall is the desired content of the tunnelmesh nftables table: accept
// forwarding between local and remote CIDRs in both directions, and clamp
// the MSS of TCP SYNs leaving through Interface to the route's MTU. It adds
// no NAT: cross-cluster traffic keeps its pod source address.
type Firewall struct {
	Interface string
	Local     []netip.Prefix
	Remote    []netip.Prefix
}

// ApplyFirewall replaces the tunnelmesh table with fw in one atomic batch.
func ApplyFirewall(fw Firewall) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	// add+delete+add replaces the table atomically whether or not it existed.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{
		Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	if fw.Interface != "" {
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: mssClamp(fw.Interface)})
	}
	for _, l := range fw.Local {
		for _, r := range fw.Remote {
			if l.Addr().Is4() != r.Addr().Is4() {
				continue
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: acceptBetween(l, r)})
			c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: acceptBetween(r, l)})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("apply nftables table %s: %w", TableName, err)
	}
	return nil
}

// DeleteFirewall removes the tunnelmesh table if it exists.
func DeleteFirewall() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	c.DelTable(&nftables.Table{Name: TableName, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete nftables table %s: %w", TableName, err)
	}
	return nil
}

// FirewallExists reports whether the tunnelmesh table is present.
func FirewallExists() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("open nftables: %w", err)
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range ts {
		if t.Name == TableName {
			return true, nil
		}
	}
	return false, nil
}

// mssClamp: oifname IF tcp flags & (syn|rst) == syn tcp option maxseg size set rt mtu
// (the kernel only ever lowers the MSS).
func mssClamp(ifname string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameBytes(ifname)},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x06}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
		&expr.Counter{},
		&expr.Rt{Register: 1, Key: expr.RtTCPMSS},
		&expr.Exthdr{SourceRegister: 1, Type: 2, Offset: 2, Len: 2, Op: expr.ExthdrOpTcpopt},
	}
}

func acceptBetween(src, dst netip.Prefix) []expr.Any {
	proto, off, n := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if !src.Addr().Is4() {
		proto, off, n = unix.NFPROTO_IPV6, 8, 16
	}
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
	e = append(e, matchPrefix(src, off, n)...)
	e = append(e, matchPrefix(dst, off+n, n)...)
	return append(e, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictAccept})
}

func matchPrefix(p netip.Prefix, off, n uint32) []expr.Any {
	p = p.Masked()
	mask := make([]byte, n)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()},
	}
}

func ifnameBytes(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}

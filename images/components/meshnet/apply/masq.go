package apply

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/tunnelmesh/tunnelmesh/images/components/meshnet/plan"
	"golang.org/x/sys/unix"
)

// TableName is meshnet's nftables table (family inet); nothing else lives in it.
const TableName = "tunnelmesh-cni"

// Masquerade applies the masquerade rule in one network namespace.
type Masquerade struct {
	conn *nftables.Conn
}

// NewMasquerade returns an applier for the namespace of netnsFD (-1: the caller's).
func NewMasquerade(netnsFD int) (*Masquerade, error) {
	var opts []nftables.ConnOption
	if netnsFD >= 0 {
		opts = append(opts, nftables.WithNetNSFd(netnsFD))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	return &Masquerade{conn: c}, nil
}

// Apply replaces meshnet's table with one built from m, in one atomic transaction:
//
//	table inet tunnelmesh-cni {
//	  set src4 / skip4 (ipv4_addr, interval), set src6 / skip6 (ipv6_addr, interval)
//	  chain postrouting { type nat hook postrouting priority srcnat;
//	    ip saddr @src4 ip daddr != @skip4 masquerade
//	    ip6 saddr @src6 ip6 daddr != @skip6 masquerade }
//	}
func (a *Masquerade) Apply(m plan.Masquerade) error {
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	a.conn.AddTable(t) // so the delete below cannot fail on a first run
	a.conn.DelTable(t)
	a.conn.AddTable(t)
	ch := a.conn.AddChain(&nftables.Chain{
		Name:     "postrouting",
		Table:    t,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	})
	fams := []struct {
		name        string
		keyType     nftables.SetDatatype
		nfproto     byte
		src, skip   []plan.Range
		saddr, dadd uint32
		alen        uint32
	}{
		{"4", nftables.TypeIPAddr, unix.NFPROTO_IPV4, m.Sources4, m.Skip4, 12, 16, 4},
		{"6", nftables.TypeIP6Addr, unix.NFPROTO_IPV6, m.Sources6, m.Skip6, 8, 24, 16},
	}
	for _, f := range fams {
		src := &nftables.Set{Table: t, Name: "src" + f.name, KeyType: f.keyType, Interval: true}
		skip := &nftables.Set{Table: t, Name: "skip" + f.name, KeyType: f.keyType, Interval: true}
		if err := a.conn.AddSet(src, elements(f.src)); err != nil {
			return fmt.Errorf("add set %s: %w", src.Name, err)
		}
		if err := a.conn.AddSet(skip, elements(f.skip)); err != nil {
			return fmt.Errorf("add set %s: %w", skip.Name, err)
		}
		exprs := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.nfproto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddr, Len: f.alen},
			&expr.Lookup{SourceRegister: 1, SetName: src.Name, SetID: src.ID},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.dadd, Len: f.alen},
			&expr.Lookup{SourceRegister: 1, SetName: skip.Name, SetID: skip.ID, Invert: true},
		}
		// oifname != "PREFIX*": comparing only the prefix's bytes is nft's wildcard match.
		for _, prefix := range m.SkipOutInterfaces {
			exprs = append(exprs,
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte(prefix)})
		}
		a.conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(exprs, &expr.Masq{})})
	}
	if err := a.conn.Flush(); err != nil {
		return fmt.Errorf("program nftables table %s: %w", TableName, err)
	}
	return nil
}

// Delete removes meshnet's table; a missing table is not an error.
func (a *Masquerade) Delete() error {
	tables, err := a.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == TableName {
			a.conn.DelTable(t)
			if err := a.conn.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("delete nftables table %s: %w", TableName, err)
			}
		}
	}
	return nil
}

// elements turns inclusive ranges into interval-set elements: a start key and an
// end key one past the last address (omitted when the range reaches the top).
func elements(rs []plan.Range) []nftables.SetElement {
	var out []nftables.SetElement
	for _, r := range rs {
		out = append(out, nftables.SetElement{Key: r.First.AsSlice()})
		if next := r.Last.Next(); next.IsValid() {
			out = append(out, nftables.SetElement{Key: next.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

package nft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/tunnelmesh/tunnelmesh/pkg/cidr"
	"golang.org/x/sys/unix"
)

// TableName is the nftables table (family inet) tunnelmesh owns.
const TableName = "tunnelmesh"

// Names of the sets in the table.
const (
	SetLocal4  = "local4"
	SetLocal6  = "local6"
	SetRemote4 = "remote4"
	SetRemote6 = "remote6"
	SetNodes4  = "nodes4"
	SetNodes6  = "nodes6"
)

// Desired is the content of the tunnelmesh table. The zero value means no
// table at all.
type Desired struct {
	// Interface is the tunnel device; empty means no table.
	Interface string
	// Local are this cluster's pod and service CIDRs; Remote every remote
	// cluster's. Pod traffic between them keeps its source address.
	Local, Remote []netip.Prefix
	// Nodes are the addresses of the cluster's nodes. Only sources in Local
	// or Nodes are forwarded into Interface: anything else reaching the
	// gateway (a host on its network, the Internet where it has a public
	// address) would otherwise be SNATed below and answered, a relay into
	// every cluster.
	Nodes []netip.Prefix
	// SNAT4 and SNAT6, when valid, are the cluster's tunnel addresses:
	// traffic leaving through Interface towards a remote CIDR from a source
	// that is not local (host-network traffic of this or another node) is
	// rewritten to them, an address the remote clusters route back.
	SNAT4, SNAT6 netip.Addr
	// Translate are this cluster's translated CIDRs (api.Translation):
	// a packet leaving through Interface from a Real source leaves from
	// the Mapped address with the same host part, and one arriving on
	// Interface for a Mapped destination goes on to the Real address.
	// Stateless: every packet is rewritten on its own, before connection
	// tracking on the way in and after every NAT on the way out, so the
	// rewrite needs no state a failover could lose, and NAT, kube-proxy and
	// conntrack on the gateway node only ever see real addresses.
	Translate []Translation
}

// Translation is one prefix translation, Real and Mapped of one size.
type Translation struct {
	Real, Mapped netip.Prefix
}

// Empty reports whether d asks for no table.
func (d Desired) Empty() bool { return d.Interface == "" }

// Equal reports whether d and e produce the same table.
func (d Desired) Equal(e Desired) bool {
	return d.sameRules(e) &&
		slices.Equal(Normalize(d.Local), Normalize(e.Local)) && slices.Equal(Normalize(d.Remote), Normalize(e.Remote)) &&
		slices.Equal(Normalize(d.Nodes), Normalize(e.Nodes))
}

// sameRules reports whether d and e have the same chains and rules (they
// may differ in set elements).
func (d Desired) sameRules(e Desired) bool {
	return d.Interface == e.Interface && d.SNAT4 == e.SNAT4 && d.SNAT6 == e.SNAT6 && slices.Equal(d.Translate, e.Translate)
}

// Table keeps a Desired applied.
type Table struct {
	log *slog.Logger

	mu      sync.Mutex
	want    Desired
	applied *Desired // what the kernel holds as far as we know; nil: rebuild
}

// NewTable returns a Table that has applied nothing yet.
func NewTable(log *slog.Logger) *Table {
	if log == nil {
		log = slog.Default()
	}
	return &Table{log: log}
}

// Set replaces the desired table and applies it: set elements are added
// and deleted in one batch when only CIDRs changed; the table is rebuilt
// (one atomic batch) when the interface, a SNAT address or a translation
// changed or the table is not in the state we left it.
func (t *Table) Set(d Desired) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.want = d
	return t.reconcile()
}

func (t *Table) reconcile() error {
	if t.want.Empty() {
		if t.applied != nil && t.applied.Empty() {
			return nil
		}
		if err := Delete(); err != nil {
			return err
		}
		t.applied = &Desired{}
		return nil
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	if a := t.applied; a != nil && !a.Empty() && a.sameRules(t.want) {
		if err := updateElements(c, *a, t.want); err != nil {
			return err
		}
	} else if err := build(c, t.want); err != nil {
		return err
	}
	w := t.want
	t.applied = &w
	return nil
}

// Run puts the table back when something else deletes or changes it,
// checking every interval, until ctx ends.
func (t *Table) Run(ctx context.Context, interval time.Duration) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if err := t.check(); err != nil {
			t.log.Warn("nftables self-heal", "err", err)
		}
	}
}

func (t *Table) check() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.applied == nil || t.applied.Empty() {
		if t.applied == nil && !t.want.Empty() {
			return t.reconcile()
		}
		return nil
	}
	ok, err := intact(*t.applied)
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	t.log.Info("nftables table removed or changed by someone else, putting it back", "table", TableName)
	t.applied = nil
	return t.reconcile()
}

// Teardown deletes the table.
func (t *Table) Teardown() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.want = Desired{}
	t.applied = nil
	return Delete()
}

// Delete removes the tunnelmesh table if it exists.
func Delete() error { return DeleteTable(TableName) }

// Exists reports whether the tunnelmesh table is present.
func Exists() (bool, error) { return TableExists(TableName) }

// DeleteTable removes the inet table name if it exists.
func DeleteTable(name string) error {
	ok, err := TableExists(name)
	if err != nil || !ok {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	c.DelTable(&nftables.Table{Name: name, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete nftables table %s: %w", name, err)
	}
	return nil
}

// TableExists reports whether the inet table name is present.
func TableExists(name string) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("open nftables: %w", err)
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range ts {
		if t.Name == name {
			return true, nil
		}
	}
	return false, nil
}

// intact reports whether the kernel's table still has the chains with the
// rules we wrote and every set with the elements of d.
func intact(d Desired) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("open nftables: %w", err)
	}
	tb := table()
	all, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("list nftables chains: %w", err)
	}
	var chains []*nftables.Chain
	for _, ch := range all {
		if ch.Table.Name == TableName {
			chains = append(chains, ch)
		}
	}
	wantRules := rules(d, map[string]*nftables.Set{})
	have := map[string]int{}
	for _, ch := range chains {
		rs, err := c.GetRules(tb, ch)
		if err != nil {
			return false, fmt.Errorf("list rules of %s: %w", ch.Name, err)
		}
		have[ch.Name] = len(rs)
	}
	for name, rs := range wantRules {
		if have[name] != len(rs) {
			return false, nil
		}
	}
	for _, s := range sets() {
		els, err := c.GetSetElements(s)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				return false, nil
			}
			return false, fmt.Errorf("list elements of set %s: %w", s.Name, err)
		}
		if len(els) != len(Elements(want(d, s.Name))) {
			return false, nil
		}
	}
	return true, nil
}

func table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

func sets() []*nftables.Set {
	tb := table()
	mk := func(name string, kt nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{Table: tb, Name: name, KeyType: kt, Interval: true}
	}
	return []*nftables.Set{
		mk(SetLocal4, nftables.TypeIPAddr), mk(SetRemote4, nftables.TypeIPAddr),
		mk(SetLocal6, nftables.TypeIP6Addr), mk(SetRemote6, nftables.TypeIP6Addr),
		mk(SetNodes4, nftables.TypeIPAddr), mk(SetNodes6, nftables.TypeIP6Addr),
	}
}

// want returns the prefixes of d that belong in the named set.
func want(d Desired, set string) []netip.Prefix {
	var src []netip.Prefix
	v4 := set == SetLocal4 || set == SetRemote4 || set == SetNodes4
	switch set {
	case SetLocal4, SetLocal6:
		src = d.Local
	case SetNodes4, SetNodes6:
		src = d.Nodes
	default:
		src = d.Remote
	}
	var out []netip.Prefix
	for _, p := range src {
		if p.Addr().Unmap().Is4() == v4 {
			out = append(out, p)
		}
	}
	return Normalize(out)
}

// build replaces the whole table in one atomic batch.
func build(c *nftables.Conn, d Desired) error {
	tb := table()
	// add+delete+add replaces the table atomically whether or not it existed.
	c.AddTable(tb)
	c.DelTable(tb)
	c.AddTable(tb)
	byName := map[string]*nftables.Set{}
	for _, s := range sets() {
		if err := c.AddSet(s, Elements(want(d, s.Name))); err != nil {
			return fmt.Errorf("nftables set %s: %w", s.Name, err)
		}
		byName[s.Name] = s
	}
	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{
		Name: "forward", Table: tb, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	post := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: tb, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept,
	})
	chains := map[string]*nftables.Chain{"forward": fwd, "postrouting": post}
	if len(d.Translate) > 0 {
		// Before connection tracking (-200), kube-proxy and the routing
		// decision on the way in; after every source NAT (100) on the way out.
		chains[chainXlatIn] = c.AddChain(&nftables.Chain{
			Name: chainXlatIn, Table: tb, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw, Policy: &accept,
		})
		chains[chainXlatOut] = c.AddChain(&nftables.Chain{
			Name: chainXlatOut, Table: tb, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(300), Policy: &accept,
		})
	}
	for name, rs := range rules(d, byName) {
		for _, r := range rs {
			c.AddRule(&nftables.Rule{Table: tb, Chain: chains[name], Exprs: r})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("apply nftables table %s: %w", TableName, err)
	}
	return nil
}

// updateElements turns the sets of have into those of d in one batch.
func updateElements(c *nftables.Conn, have, d Desired) error {
	n := 0
	for _, s := range sets() {
		old, cur := want(have, s.Name), want(d, s.Name)
		var add, del []netip.Prefix
		for _, p := range cur {
			if !slices.Contains(old, p) {
				add = append(add, p)
			}
		}
		for _, p := range old {
			if !slices.Contains(cur, p) {
				del = append(del, p)
			}
		}
		// Deletions first: a prefix replaced by a wider one must leave
		// before the wider one is added (interval elements must not overlap).
		if len(del) > 0 {
			if err := c.SetDeleteElements(s, Elements(del)); err != nil {
				return fmt.Errorf("nftables set %s: %w", s.Name, err)
			}
			n++
		}
		if len(add) > 0 {
			if err := c.SetAddElements(s, Elements(add)); err != nil {
				return fmt.Errorf("nftables set %s: %w", s.Name, err)
			}
			n++
		}
	}
	if n == 0 {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("update nftables sets of %s: %w", TableName, err)
	}
	return nil
}

// rules returns each chain's rules; their number depends only on which
// SNAT addresses are set, never on the number of CIDRs.
func rules(d Desired, sets map[string]*nftables.Set) map[string][][]expr.Any {
	out := map[string][][]expr.Any{
		"forward": {
			ingress(d.Interface, unix.NFPROTO_IPV4, sets[SetLocal4], sets[SetNodes4]),
			ingress(d.Interface, unix.NFPROTO_IPV6, sets[SetLocal6], sets[SetNodes6]),
			mssClamp(d.Interface),
		},
		"postrouting": nil,
	}
	if d.SNAT4.IsValid() {
		out["postrouting"] = append(out["postrouting"], snat(d.Interface, d.SNAT4, sets[SetLocal4], sets[SetRemote4]))
	}
	if d.SNAT6.IsValid() {
		out["postrouting"] = append(out["postrouting"], snat(d.Interface, d.SNAT6, sets[SetLocal6], sets[SetRemote6]))
	}
	for _, t := range d.Translate {
		out[chainXlatIn] = append(out[chainXlatIn], rewrite(d.Interface, true, t.Mapped, t.Real))
		out[chainXlatOut] = append(out[chainXlatOut], rewrite(d.Interface, false, t.Real, t.Mapped))
	}
	return out
}

// Chains of the translation, present only when there is one.
const (
	chainXlatIn  = "translate-in"
	chainXlatOut = "translate-out"
)

// rewrite is the stateless prefix translation of one address of a packet,
// the destination of one arriving on ifname (in) or the source of one
// leaving through it:
//
//	iifname IF ip daddr FROM ip daddr set ip daddr & HOSTMASK ^ TO counter
//
// (oifname and saddr on the way out). The kernel adjusts the IPv4 header
// checksum and the TCP/UDP checksum over the pseudo-header.
func rewrite(ifname string, in bool, from, to netip.Prefix) []expr.Any {
	from, to = from.Masked(), to.Masked()
	proto, off, n := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if !from.Addr().Is4() {
		proto, off, n = unix.NFPROTO_IPV6, 8, 16
	}
	if in {
		off += n
	}
	dev := expr.MetaKeyOIFNAME
	if in {
		dev = expr.MetaKeyIIFNAME
	}
	netmask := make([]byte, n)
	for i := 0; i < from.Bits(); i++ {
		netmask[i/8] |= 0x80 >> (i % 8)
	}
	hostmask := make([]byte, n)
	for i := range hostmask {
		hostmask[i] = ^netmask[i]
	}
	write := &expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: expr.PayloadBaseNetworkHeader,
		Offset: off, Len: n, CsumFlags: unix.NFT_PAYLOAD_L4CSUM_PSEUDOHDR}
	if proto == unix.NFPROTO_IPV4 {
		write.CsumType, write.CsumOffset = expr.CsumTypeInet, 10 // the IPv4 header checksum
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Meta{Key: dev, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameBytes(ifname)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: netmask, Xor: make([]byte, n)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: from.Addr().AsSlice()},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: hostmask, Xor: to.Addr().AsSlice()},
		write,
		&expr.Counter{},
	}
}

// Normalize sorts prefixes, masks them and drops every prefix another one
// covers: interval set elements must not overlap (CIDRs either nest or are
// disjoint, so this leaves disjoint ones).
func Normalize(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if p.IsValid() {
			out = append(out, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p)).Masked())
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	res := out[:0]
	for _, p := range out {
		// Sorted by address then length: a covering prefix precedes what it covers.
		if len(res) > 0 && res[len(res)-1].Contains(p.Addr()) && res[len(res)-1].Bits() <= p.Bits() {
			continue
		}
		res = append(res, p)
	}
	return res
}

func unmapBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return 96
	}
	return 0
}

// Elements are the interval set elements of disjoint prefixes (Normalize
// them first): the first address, and one past the last flagged as the
// interval's end (left out when the prefix reaches the top of the address space).
func Elements(ps []netip.Prefix) []nftables.SetElement {
	var out []nftables.SetElement
	for _, p := range ps {
		out = append(out, nftables.SetElement{Key: p.Addr().AsSlice()})
		if end, ok := afterLast(p); ok {
			out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// afterLast returns the address just past p, false when there is none.
func afterLast(p netip.Prefix) (netip.Addr, bool) {
	next := cidr.Last(p).Next()
	return next, next.IsValid()
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

// ingress: meta nfproto F oifname IF ip saddr != @local ip saddr != @nodes counter drop
func ingress(ifname string, proto byte, local, nodes *nftables.Set) []expr.Any {
	return append(outOf(ifname, proto),
		lookup(local, true),
		lookup(nodes, true),
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
}

// outOf: meta nfproto F oifname IF, then the source address in register 1.
func outOf(ifname string, proto byte) []expr.Any {
	off, n := uint32(12), uint32(4)
	if proto == unix.NFPROTO_IPV6 {
		off, n = 8, 16
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameBytes(ifname)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
	}
}

func lookup(s *nftables.Set, invert bool) *expr.Lookup {
	l := &expr.Lookup{SourceRegister: 1, Invert: invert}
	if s != nil {
		l.SetName, l.SetID = s.Name, s.ID
	}
	return l
}

// snat: meta nfproto F oifname IF ip saddr != @local ip daddr @remote counter snat to ADDR
func snat(ifname string, to netip.Addr, local, remote *nftables.Set) []expr.Any {
	proto, off, n, fam := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4), uint32(unix.NFPROTO_IPV4)
	if !to.Is4() {
		proto, off, n, fam = unix.NFPROTO_IPV6, 8, 16, unix.NFPROTO_IPV6
	}
	return append(outOf(ifname, proto),
		lookup(local, true),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off + n, Len: n},
		lookup(remote, false),
		&expr.Counter{},
		&expr.Immediate{Register: 1, Data: to.AsSlice()},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: fam, RegAddrMin: 1},
	)
}

func ifnameBytes(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}

package routes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Protocol tags every route tunnelmesh installs (rtnetlink protocol number).
const Protocol netlink.RouteProtocol = 77

// Route sends Dst out of Dev; Src, when set, is the source address for
// traffic the gateway itself originates.
//
// With Gw set the route goes via that next hop (Dev may then be empty: the
// kernel picks the device that reaches Gw). OnLink declares Gw reachable on
// Dev even when no address of Dev covers it (a next hop on a tunnel device).
// Metric is the route's priority: a non-zero metric lets a route coexist
// with another owner's route to the same Dst, the lower metric winning.
type Route struct {
	Dst    netip.Prefix
	Dev    string
	Src    netip.Addr
	Gw     netip.Addr
	OnLink bool
	Metric int
}

// Address is an address held on an interface.
type Address struct {
	Dev    string
	Prefix netip.Prefix
}

// State is everything this package keeps applied.
type State struct {
	Addresses []Address
	Routes    []Route
}

// Table keeps a State applied.
type Table struct {
	log      *slog.Logger
	proto    netlink.RouteProtocol // tags and identifies the routes this Table owns
	mu       sync.Mutex
	want     State
	set      bool      // Set was called: want is a desired state, not the empty start
	addrs    []Address // addresses this Table added, removed on teardown
	problems []string  // desired routes refused because another owner holds the destination
	kick     chan struct{}
	// subscribe starts a route event subscription; replaced in tests.
	subscribe func(ch chan<- netlink.RouteUpdate, done <-chan struct{}) error
}

// Option configures a Table.
type Option func(*Table)

// WithProtocol makes the Table own the routes tagged p instead of Protocol,
// so several owners (the gateway, the route agent, a CNI) share the main
// table without deleting each other's routes.
func WithProtocol(p netlink.RouteProtocol) Option { return func(t *Table) { t.proto = p } }

// NewTable returns an empty Table.
func NewTable(log *slog.Logger, opts ...Option) *Table {
	if log == nil {
		log = slog.Default()
	}
	t := &Table{log: log, proto: Protocol, kick: make(chan struct{}, 1), subscribe: func(ch chan<- netlink.RouteUpdate, done <-chan struct{}) error {
		return netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
			ErrorCallback: func(err error) { log.Debug("route event subscription", "err", err) },
		})
	}}
	for _, o := range opts {
		o(t)
	}
	return t
}

// Problems lists desired routes left out because their destination belongs
// to another owner.
func (t *Table) Problems() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.problems)
}

// Set replaces the desired state and applies it.
func (t *Table) Set(s State) error {
	t.mu.Lock()
	t.want, t.set = s, true
	t.mu.Unlock()
	return t.Reconcile()
}

// Reconcile makes the kernel match the desired state: missing addresses and
// routes are added, our routes that are no longer wanted are deleted.
func (t *Table) Reconcile() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for _, a := range t.want.Addresses {
		if err := t.ensureAddr(a); err != nil {
			errs = append(errs, err)
		}
	}
	for _, a := range t.addrs {
		if !slices.Contains(t.want.Addresses, a) {
			if err := delAddr(a); err != nil {
				errs = append(errs, err)
			}
		}
	}
	t.addrs = slices.Clone(t.want.Addresses)

	have, err := OwnedBy(t.proto)
	if err != nil {
		return err
	}
	want := make(map[netip.Prefix]netlink.Route)
	for _, r := range t.want.Routes {
		nr, err := toNetlink(r, t.proto)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		want[r.Dst.Masked()] = nr
	}
	for _, h := range have {
		p := prefixOf(h.Dst)
		w, ok := want[p]
		if ok && sameRoute(h, w) {
			delete(want, p)
			continue
		}
		if ok && h.Priority == w.Priority {
			// Ours but different: replacing it takes nothing from anyone.
			// (With another metric a replace would add beside it instead.)
			if err := netlink.RouteReplace(&w); err != nil {
				errs = append(errs, fmt.Errorf("replace route %s: %w", p, err))
			}
			delete(want, p)
			continue
		}
		if err := netlink.RouteDel(&h); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", p, err))
		}
	}
	var problems []string
	for _, r := range t.want.Routes {
		w, ok := want[r.Dst.Masked()]
		if !ok {
			continue
		}
		// RouteReplace would silently take over another owner's route to
		// the same destination (and Teardown would then delete it).
		if other, err := foreignRoute(w, t.proto); err != nil {
			errs = append(errs, err)
			continue
		} else if other != "" {
			problems = append(problems, fmt.Sprintf("route to %s belongs to someone else (%s); not taking it over", r.Dst, other))
			continue
		}
		if err := netlink.RouteReplace(&w); err != nil {
			errs = append(errs, fmt.Errorf("add route %s: %w", r.Dst, err))
		}
	}
	if !slices.Equal(problems, t.problems) {
		for _, p := range problems {
			t.log.Warn("desired route refused", "problem", p)
		}
	}
	t.problems = problems
	return errors.Join(errs...)
}

// foreignRoute describes a route of another owner (another protocol than
// ours) in the main table that RouteReplace of w would replace; "" when none.
func foreignRoute(w netlink.Route, ours netlink.RouteProtocol) (string, error) {
	fam := netlink.FAMILY_V4
	if w.Dst.IP.To4() == nil {
		fam = netlink.FAMILY_V6
	}
	rs, err := netlink.RouteListFiltered(fam, &netlink.Route{Dst: w.Dst, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("list routes to %s: %w", w.Dst, err)
	}
	for _, r := range rs {
		if r.Protocol == ours || r.Priority != w.Priority || r.Tos != w.Tos {
			continue
		}
		dev := fmt.Sprint(r.LinkIndex)
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			dev = l.Attrs().Name
		}
		return fmt.Sprintf("protocol %s, dev %s", r.Protocol, dev), nil
	}
	return "", nil
}

// Run puts back routes and addresses that something else removes (netlink
// route and address events) and re-checks every resync, until ctx ends; it
// returns nil then. A subscription that cannot start, or that ends (the
// kernel drops it with ENOBUFS when events outrun us), is started again,
// followed by a full reconcile for the events it may have lost.
func (t *Table) Run(ctx context.Context, resync time.Duration) error {
	done := make(chan struct{})
	defer close(done)
	// A first subscription that fails is retried like one that ends: a
	// watcher that gave up at the start would leave the routes unguarded
	// for as long as the process runs (the gateway re-applies peers only).
	rch, err := resubscribe(ctx, t.log, func() (<-chan netlink.RouteUpdate, error) { return t.subscribeRoutes(done) })
	if err != nil {
		return nil // ctx ended
	}
	ach, err := resubscribe(ctx, t.log, func() (<-chan netlink.AddrUpdate, error) { return subscribeAddrs(done) })
	if err != nil {
		return nil
	}
	// A route deleted between Set and the subscription raised no event
	// seen here: check once now rather than at the first resync. (Before
	// any Set there is nothing to keep, and routes of an earlier run are
	// left for the first Set.)
	t.mu.Lock()
	set := t.set
	t.mu.Unlock()
	if set {
		if err := t.Reconcile(); err != nil {
			t.log.Warn("reconcile routes", "err", err)
		}
	}
	tick := time.NewTicker(resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-rch:
			if !ok {
				t.log.Warn("route event subscription ended (events lost?), subscribing again")
				if rch, err = resubscribe(ctx, t.log, func() (<-chan netlink.RouteUpdate, error) { return t.subscribeRoutes(done) }); err != nil {
					return nil // ctx ended
				}
				break // reconcile: events may have been lost
			}
			if u.Type != unix.RTM_DELROUTE || !t.wantsRoute(prefixOf(u.Dst)) {
				continue
			}
			t.log.Info("route removed by someone else, putting it back", "dst", prefixOf(u.Dst))
		case u, ok := <-ach:
			if !ok {
				t.log.Warn("address event subscription ended (events lost?), subscribing again")
				if ach, err = resubscribe(ctx, t.log, func() (<-chan netlink.AddrUpdate, error) { return subscribeAddrs(done) }); err != nil {
					return nil
				}
				break
			}
			if u.NewAddr {
				continue
			}
		case <-tick.C:
		}
		if err := t.Reconcile(); err != nil {
			t.log.Warn("reconcile routes", "err", err)
		}
	}
}

func (t *Table) subscribeRoutes(done <-chan struct{}) (<-chan netlink.RouteUpdate, error) {
	ch := make(chan netlink.RouteUpdate, 256)
	if err := t.subscribe(ch, done); err != nil {
		return nil, fmt.Errorf("subscribe to route events: %w", err)
	}
	return ch, nil
}

func subscribeAddrs(done <-chan struct{}) (<-chan netlink.AddrUpdate, error) {
	ch := make(chan netlink.AddrUpdate, 256)
	if err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{}); err != nil {
		return nil, fmt.Errorf("subscribe to address events: %w", err)
	}
	return ch, nil
}

// resubscribe retries sub until it succeeds or ctx ends, 200 ms after the
// first failure and backing off to 5 s.
func resubscribe[C any](ctx context.Context, log *slog.Logger, sub func() (C, error)) (C, error) {
	wait := 200 * time.Millisecond
	for {
		c, err := sub()
		if err == nil {
			return c, nil
		}
		log.Warn("subscribe again", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return c, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func (t *Table) wantsRoute(p netip.Prefix) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.ContainsFunc(t.want.Routes, func(r Route) bool { return r.Dst == p })
}

// Teardown removes every route this Table owns (its protocol) and every address this
// Table added.
func (t *Table) Teardown() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	have, err := OwnedBy(t.proto)
	if err != nil {
		errs = append(errs, err)
	}
	for _, h := range have {
		if err := netlink.RouteDel(&h); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", prefixOf(h.Dst), err))
		}
	}
	for _, a := range t.addrs {
		if err := delAddr(a); err != nil {
			errs = append(errs, err)
		}
	}
	t.addrs = nil
	t.want = State{}
	return errors.Join(errs...)
}

// Owned lists the routes in the main table tagged with Protocol.
func Owned() ([]netlink.Route, error) { return OwnedBy(Protocol) }

// OwnedBy lists the routes in the main table tagged with proto.
func OwnedBy(proto netlink.RouteProtocol) ([]netlink.Route, error) {
	var out []netlink.Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RouteListFiltered(fam, &netlink.Route{Protocol: proto, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		out = append(out, rs...)
	}
	return out, nil
}

func toNetlink(r Route, proto netlink.RouteProtocol) (netlink.Route, error) {
	nr := netlink.Route{
		Dst:      ipNet(r.Dst.Masked()),
		Protocol: proto,
		Table:    unix.RT_TABLE_MAIN,
		Scope:    netlink.SCOPE_LINK,
		Priority: r.Metric,
	}
	if nr.Priority == 0 && r.Dst.Addr().Is6() {
		nr.Priority = 1024 // the kernel's IPv6 default; compared as such on the next reconcile
	}
	if r.Dev != "" || !r.Gw.IsValid() {
		l, err := netlink.LinkByName(r.Dev)
		if err != nil {
			return netlink.Route{}, fmt.Errorf("route %s: interface %s: %w", r.Dst, r.Dev, err)
		}
		nr.LinkIndex = l.Attrs().Index
	}
	if r.Gw.IsValid() {
		if r.Gw.Is4() != r.Dst.Addr().Is4() {
			return netlink.Route{}, fmt.Errorf("route %s via %s: next hop of another address family", r.Dst, r.Gw)
		}
		nr.Gw = r.Gw.AsSlice()
		nr.Scope = netlink.SCOPE_UNIVERSE // a next hop is off this link's own addresses
		if r.OnLink {
			nr.Flags = int(netlink.FLAG_ONLINK)
		}
	}
	if r.Src.IsValid() && r.Src.Is4() == r.Dst.Addr().Is4() {
		nr.Src = r.Src.AsSlice()
	}
	return nr, nil
}

// sameRoute reports whether the kernel's route h already is the wanted w
// (w with no device accepts whichever device the kernel chose for its Gw).
func sameRoute(h, w netlink.Route) bool {
	onlink := int(netlink.FLAG_ONLINK)
	return (w.LinkIndex == 0 || h.LinkIndex == w.LinkIndex) && h.Src.Equal(w.Src) &&
		h.Gw.Equal(w.Gw) && h.Flags&onlink == w.Flags&onlink && h.Priority == w.Priority
}

func (t *Table) ensureAddr(a Address) error {
	l, err := netlink.LinkByName(a.Dev)
	if err != nil {
		return fmt.Errorf("address %s: interface %s: %w", a.Prefix, a.Dev, err)
	}
	err = netlink.AddrReplace(l, &netlink.Addr{IPNet: ipNet(a.Prefix)})
	if err != nil {
		return fmt.Errorf("add address %s to %s: %w", a.Prefix, a.Dev, err)
	}
	return nil
}

func delAddr(a Address) error {
	l, err := netlink.LinkByName(a.Dev)
	if err != nil {
		return nil // interface gone, address with it
	}
	err = netlink.AddrDel(l, &netlink.Addr{IPNet: ipNet(a.Prefix)})
	if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete address %s from %s: %w", a.Prefix, a.Dev, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

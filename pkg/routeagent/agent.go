package routeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tunnelmesh/tunnelmesh/pkg/nft"
	"github.com/tunnelmesh/tunnelmesh/pkg/nsenter"
	"github.com/tunnelmesh/tunnelmesh/pkg/routes"
	"github.com/tunnelmesh/tunnelmesh/pkg/sysctl"
	"github.com/tunnelmesh/tunnelmesh/pkg/vxlan"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RouteProtocol tags the agent's routes (`ip route ... proto 78`); the gateway's
// are 77 and the test CNI's 79, so no owner touches another's routes.
const RouteProtocol netlink.RouteProtocol = 78

// Config wires an Agent.
type Config struct {
	Log    *slog.Logger
	NetNS  *netns.NsHandle // nil: the caller's network namespace (tests give one per simulated node)
	Resync time.Duration   // full re-check period; 0 means 30s
	// Metrics, when set, receives the tunnelmesh_routeagent_* metrics.
	Metrics prometheus.Registerer
}

// Agent keeps a node's routes to remote clusters pointed at the active gateway.
// It changes nothing until the first Set, never removes anything when it stops
// (a restarted agent finds its routes in place and adopts them), and removes
// what it installed only on Uninstall.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	table *routes.Table

	ready     chan struct{} // closed by the first Set that applies a plan
	readyOnce sync.Once

	mu        sync.Mutex // serialises applies
	want      *Desired
	active    string
	lastTable *programmed // last table programmed, to skip rewriting an unchanged one

	mRoutes, mRefused, mLastApply prometheus.Gauge
	mMoves, mErrors               prometheus.Counter
}

// New returns an Agent; call Set with the active gateway and Run to self-heal.
func New(cfg Config) *Agent {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	log := cfg.Log.With("component", "routeagent")
	a := &Agent{cfg: cfg, log: log, ready: make(chan struct{}),
		table: routes.NewTable(log, routes.WithProtocol(RouteProtocol)),
		mRoutes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tunnelmesh_routeagent_routes",
			Help: "Routes to remote clusters' CIDRs this node sends to the active gateway node."}),
		mRefused: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tunnelmesh_routeagent_refused_cidrs",
			Help: "Remote CIDRs left unrouted because they would take traffic this node needs (see the log)."}),
		mLastApply: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tunnelmesh_routeagent_last_apply_timestamp_seconds",
			Help: "Time of the last apply that succeeded completely."}),
		mMoves: prometheus.NewCounter(prometheus.CounterOpts{Name: "tunnelmesh_routeagent_active_changes_total",
			Help: "Times the active gateway node changed."}),
		mErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "tunnelmesh_routeagent_apply_errors_total",
			Help: "Applies that failed in part (retried at the next resync)."}),
	}
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(a.mRoutes, a.mRefused, a.mLastApply, a.mMoves, a.mErrors)
	}
	return a
}

// Set plans for in and applies the result. With no active gateway known
// (in.Active.Node == "") it keeps whatever is in place: routes to the last
// active gateway are better than none while a new one is elected. An input
// that Plan refuses changes nothing and is returned as an error.
func (a *Agent) Set(in Input) error {
	d, err := Plan(in)
	if errors.Is(err, ErrNoActive) {
		a.log.Info("no active gateway known; keeping the current routes")
		return nil
	}
	if err != nil {
		return fmt.Errorf("route agent: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.active != in.Active.Node {
		a.log.Info("active gateway", "node", in.Active.Node, "previous", a.active, "addresses", in.Active.Addresses,
			"mode", d.mode(), "routes", len(d.Routes))
		if a.active != "" {
			a.mMoves.Inc()
		}
		a.active = in.Active.Node
	}
	if a.want == nil || !reflect.DeepEqual(a.want.Refused, d.Refused) {
		for _, r := range d.Refused {
			a.log.Warn("remote CIDR not routed", "cidr", r.CIDR, "reason", r.Reason)
		}
	}
	a.readyOnce.Do(func() { close(a.ready) })
	a.want = &d
	a.mRoutes.Set(float64(len(d.Routes)))
	a.mRefused.Set(float64(len(d.Refused)))
	return a.applyCounted(d, false)
}

// Desired returns the state last set, if any.
func (a *Agent) Desired() (Desired, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.want == nil {
		return Desired{}, false
	}
	return *a.want, true
}

// Run puts back what something else removes until ctx ends: a deleted route at
// once (netlink route events), the VXLAN device when it disappears (link
// events), everything else every Resync. It starts once the first Set has
// applied a plan, and leaves the state in place on return.
func (a *Agent) Run(ctx context.Context) error {
	// Until the first Set the table wants nothing, and its self-heal would delete
	// the routes a previous agent process left: the restart must not cut traffic.
	select {
	case <-ctx.Done():
		return nil
	case <-a.ready:
	}
	tableDone := make(chan error, 1)
	go func() {
		tableDone <- nsenter.Maybe(a.cfg.NetNS, func() error { return a.table.Run(ctx, a.cfg.Resync) })
	}()
	links := make(chan netlink.LinkUpdate, 16)
	if err := netlink.LinkSubscribeWithOptions(links, ctx.Done(), netlink.LinkSubscribeOptions{Namespace: a.cfg.NetNS}); err != nil {
		a.log.Warn("not watching links; a removed VXLAN device comes back at the next resync", "err", err)
		links = nil
	}
	tick := time.NewTicker(a.cfg.Resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if tableDone != nil { // nil once the route watch has ended on its own
				<-tableDone
			}
			return nil
		case err := <-tableDone:
			if err != nil {
				a.log.Warn("route event watch ended; relying on the periodic resync", "err", err)
			}
			tableDone = nil
		case u, ok := <-links:
			if !ok {
				links = nil
				continue
			}
			if u.Header.Type != unix.RTM_DELLINK || u.Attrs().Name != DeviceName {
				continue
			}
			a.log.Info("VXLAN device removed by someone else, putting it back", "device", DeviceName)
			a.reapply()
		case <-tick.C:
			a.reapply()
		}
	}
}

func (a *Agent) reapply() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.want == nil {
		return
	}
	if err := a.applyCounted(*a.want, true); err != nil {
		a.log.Warn("reconcile", "err", err)
	}
}

// applyCounted is apply with its outcome counted.
func (a *Agent) applyCounted(d Desired, resync bool) error {
	err := a.apply(d, resync)
	if err != nil {
		a.mErrors.Inc()
	} else {
		a.mLastApply.SetToCurrentTime()
	}
	return err
}

// Uninstall removes everything the agent installs: its routes (every route of
// RouteProtocol, also those of an earlier process), the VXLAN device and the
// NAT table. Reverse-path filter settings are left loose.
func (a *Agent) Uninstall() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.want, a.active, a.lastTable = nil, "", nil
	return nsenter.Maybe(a.cfg.NetNS, func() error {
		return errors.Join(a.table.Teardown(), vxlan.Teardown(DeviceName), nft.DeleteTable(TableName))
	})
}

// apply makes the kernel match d: device first (so a failover moves the
// FDB entry and neighbour before anything else), then routes, then the NAT
// exemption and reverse-path filters. It carries on past errors.
func (a *Agent) apply(d Desired, resync bool) error {
	return nsenter.Maybe(a.cfg.NetNS, func() error {
		var errs []error
		if d.Device != nil {
			errs = append(errs, vxlan.Set(*d.Device))
		}
		errs = append(errs, a.table.Set(routes.State{Routes: d.Routes}))
		if d.Device == nil {
			errs = append(errs, vxlan.Teardown(DeviceName)) // routes have left it already
		}
		want := programmed{d.Exempt, d.Filter}
		if a.lastTable == nil || !reflect.DeepEqual(*a.lastTable, want) || (resync && !tablePresent(a.log)) {
			err := applyTable(d.Exempt, d.Filter)
			if err == nil {
				a.lastTable = &want
			}
			errs = append(errs, err)
		}
		if _, err := sysctl.Set(sysctl.Config{Devices: d.LooseRPF}, false); err != nil {
			errs = append(errs, fmt.Errorf("loosen the reverse-path filter of %v: %w", d.LooseRPF, err))
		}
		return errors.Join(errs...)
	})
}

func (d Desired) mode() Mode {
	if d.Device != nil {
		return ModeVXLAN
	}
	return ModeDirect
}

// Discover describes this node from its kernel: the device holding one of the
// node's addresses (its InternalIPs), that device's addresses and MTU. It runs
// in the caller's network namespace.
func Discover(name string, nodeIPs []netip.Addr) (Self, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return Self{}, fmt.Errorf("list addresses: %w", err)
	}
	for _, ad := range addrs {
		ip, ok := netip.AddrFromSlice(ad.IP)
		if !ok {
			continue
		}
		for _, n := range nodeIPs {
			if ip.Unmap() != n {
				continue
			}
			l, err := netlink.LinkByIndex(ad.LinkIndex)
			if err != nil {
				return Self{}, fmt.Errorf("device of %s: %w", n, err)
			}
			s := Self{Name: name, Interface: l.Attrs().Name, MTU: l.Attrs().MTU}
			for _, o := range addrs {
				oip, ok := netip.AddrFromSlice(o.IP)
				if !ok || o.LinkIndex != ad.LinkIndex || oip.IsLinkLocalUnicast() {
					continue
				}
				ones, _ := o.Mask.Size()
				s.Addresses = append(s.Addresses, netip.PrefixFrom(oip.Unmap(), ones))
			}
			return s, nil
		}
	}
	return Self{}, fmt.Errorf("no device holds any of this node's addresses %v; is the agent in the host network namespace?", nodeIPs)
}

// programmed is what the agent's table holds.
type programmed struct {
	exempt Exemption
	filter *Filter
}

// tablePresent reports whether the agent's table is still there; when it
// cannot tell, it says so and answers true, so a netlink error does not
// rebuild the table on every resync.
func tablePresent(log *slog.Logger) bool {
	ok, err := nft.TableExists(TableName)
	if err != nil {
		log.Warn("check the agent's nftables table", "err", err)
		return true
	}
	return ok
}

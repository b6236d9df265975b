package routes

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/nsenter"
	"github.com/tunnelmesh/tunnelmesh/pkg/nsenter/nstest"
	"github.com/vishvananda/netlink"
)

// TestViaRoutes applies next-hop routes (on-link, device-less, with a metric)
// in a namespace with a Table of its own protocol, beside routes of other owners.
func TestViaRoutes(t *testing.T) {
	nstest.Need(t)
	ns := nstest.New(t, "via")
	ns.IP(t, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	ns.IP(t, "link", "set", "eth1", "up")
	ns.IP(t, "addr", "add", "192.0.2.1/24", "dev", "eth0")
	ns.IP(t, "link", "set", "eth0", "up")
	ns.IP(t, "link", "add", "tun0", "type", "veth", "peer", "name", "tun1")
	ns.IP(t, "link", "set", "tun1", "up")
	ns.IP(t, "link", "set", "tun0", "up")
	// Another owner's route to a destination we route too, and a gateway route (proto 77).
	ns.IP(t, "route", "add", "198.18.1.0/24", "via", "192.0.2.9", "proto", "static")
	ns.IP(t, "route", "add", "198.18.9.0/24", "dev", "tun0", "proto", "77")

	tbl := NewTable(nil, WithProtocol(78))
	set := func(rs ...Route) {
		t.Helper()
		if err := nsenter.Do(ns.Handle, func() error { return tbl.Set(State{Routes: rs}) }); err != nil {
			t.Fatal(err)
		}
	}
	show := func(dst string) string {
		t.Helper()
		return strings.TrimSpace(ns.IP(t, "route", "show", "proto", "78", dst))
	}
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	first := []Route{
		{Dst: p("198.18.1.0/24"), Gw: a("192.0.2.2"), Metric: 1000},                 // kernel picks eth0
		{Dst: p("198.18.2.0/24"), Gw: a("169.254.77.1"), Dev: "tun0", OnLink: true}, // next hop on no subnet
		{Dst: p("198.18.3.7/24"), Dev: "tun0"},                                      // plain device route, unmasked input
		{Dst: p("fd00:18::/64"), Gw: a("fe80::1"), Dev: "eth0", Metric: 1000},       // v6 via link-local
		{Dst: p("fd00:19::/64"), Gw: a("fe80::1"), Dev: "eth0"},                     // v6, default metric (1024)
	}
	set(first...)
	for dst, want := range map[string]string{
		"198.18.1.0/24": "198.18.1.0/24 via 192.0.2.2 dev eth0 metric 1000",
		"198.18.2.0/24": "198.18.2.0/24 via 169.254.77.1 dev tun0 onlink",
		"198.18.3.0/24": "198.18.3.0/24 dev tun0 scope link",
	} {
		if got := show(dst); got != want {
			t.Errorf("route %s = %q, want %q", dst, got, want)
		}
	}
	if got := strings.TrimSpace(ns.IP(t, "-6", "route", "show", "proto", "78", "fd00:18::/64")); !strings.HasPrefix(got, "fd00:18::/64 via fe80::1 dev eth0 metric 1000") {
		t.Errorf("v6 route = %q", got)
	}
	if got := ns.IP(t, "route", "show", "198.18.1.0/24", "proto", "static"); !strings.Contains(got, "via 192.0.2.9") {
		t.Errorf("the other owner's route to the same destination is gone: %q", got)
	}

	// Applying the same state writes nothing: no route event at all.
	events := make(chan netlink.RouteUpdate, 16)
	done := make(chan struct{})
	if err := netlink.RouteSubscribeAt(ns.Handle, events, done); err != nil {
		t.Fatal(err)
	}
	set(first...)
	ns.IP(t, "route", "add", "203.0.113.0/24", "via", "192.0.2.9") // a marker event after ours
	for u := range events {
		if prefixOf(u.Dst).String() == "203.0.113.0/24" {
			break
		}
		t.Errorf("second Set of the same state rewrote a route: type %d %s proto %d", u.Type, prefixOf(u.Dst), u.Protocol)
	}
	close(done)

	// The active next hop moves; a metric changes; a route goes.
	set(
		Route{Dst: p("198.18.1.0/24"), Gw: a("192.0.2.3"), Metric: 1000},
		Route{Dst: p("198.18.2.0/24"), Gw: a("169.254.77.1"), Dev: "tun0", OnLink: true, Metric: 500},
	)
	if got := show("198.18.1.0/24"); got != "198.18.1.0/24 via 192.0.2.3 dev eth0 metric 1000" {
		t.Errorf("moved route = %q", got)
	}
	if got := show("198.18.2.0/24"); got != "198.18.2.0/24 via 169.254.77.1 dev tun0 metric 500 onlink" {
		t.Errorf("re-metricked route = %q (the old metric must be gone)", got)
	}
	if got := show("198.18.3.0/24"); got != "" {
		t.Errorf("unwanted route left: %q", got)
	}
	if err := nsenter.Do(ns.Handle, tbl.Teardown); err != nil {
		t.Fatal(err)
	}
	if got := ns.IP(t, "route", "show", "proto", "78"); got != "" {
		t.Errorf("teardown left %q", got)
	}
	if got := ns.IP(t, "route", "show", "proto", "77"); !strings.Contains(got, "198.18.9.0/24") {
		t.Error("teardown of protocol 78 removed a protocol 77 route")
	}

	// A next hop of the wrong family is refused with the route named.
	err := nsenter.Do(ns.Handle, func() error {
		return tbl.Set(State{Routes: []Route{{Dst: p("198.18.4.0/24"), Gw: a("fe80::1"), Dev: "eth0"}}})
	})
	if err == nil || !strings.Contains(err.Error(), "198.18.4.0/24") {
		t.Errorf("mixed-family route: err = %v", err)
	}
}

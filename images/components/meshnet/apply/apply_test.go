package apply

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/images/components/meshnet/plan"
	"github.com/tunnelmesh/tunnelmesh/pkg/nsenter"
	"github.com/tunnelmesh/tunnelmesh/pkg/nsenter/nstest"
)

func TestRoutesApply(t *testing.T) {
	nstest.Need(t)
	n := nstest.New(t, "rt")
	name, ns := n.Name, n.Handle
	nstest.Run(t, "ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	nstest.Run(t, "ip", "-n", name, "link", "set", "eth1", "up")
	nstest.Run(t, "ip", "-n", name, "addr", "add", "192.0.2.1/24", "dev", "eth0")
	nstest.Run(t, "ip", "-n", name, "link", "set", "eth0", "up")
	// A route someone else owns must survive every Apply.
	nstest.Run(t, "ip", "-n", name, "route", "add", "203.0.113.0/24", "via", "192.0.2.9", "proto", "static")
	// Nor may a tunnelmesh gateway's route (pkg/routes tags its routes proto 77).
	nstest.Run(t, "ip", "-n", name, "route", "add", "198.51.100.0/24", "via", "192.0.2.9", "proto", "77")

	r := NewRoutes(&ns)
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	first := []plan.Route{{Dst: p("198.18.1.0/24"), Via: a("192.0.2.2")}, {Dst: p("198.18.2.0/24"), Via: a("192.0.2.3")}}
	if err := r.Apply(first); err != nil {
		t.Fatal(err)
	}
	check := func(want []plan.Route) {
		t.Helper()
		got, err := r.List()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("routes = %v, want %v", got, want)
		}
		for _, w := range want {
			if got[w.Dst] != w.Via {
				t.Fatalf("route %s: got via %v, want %v (all: %v)", w.Dst, got[w.Dst], w.Via, got)
			}
		}
	}
	check(first)
	// Node 2 changed address, node 1 left, node 3 joined.
	second := []plan.Route{{Dst: p("198.18.2.0/24"), Via: a("192.0.2.4")}, {Dst: p("198.18.3.0/24"), Via: a("192.0.2.5")}}
	if err := r.Apply(second); err != nil {
		t.Fatal(err)
	}
	check(second)
	foreignIntact := func() {
		t.Helper()
		for _, dst := range []string{"203.0.113.0/24", "198.51.100.0/24"} {
			out, _ := exec.Command("ip", "-n", name, "route", "show", dst).CombinedOutput()
			if !strings.Contains(string(out), "via 192.0.2.9") {
				t.Fatalf("foreign route %s was touched: %q", dst, out)
			}
		}
	}
	foreignIntact()
	if err := r.Apply(nil); err != nil {
		t.Fatal(err)
	}
	check(nil)
	foreignIntact()
}

// TestMasqueradeTraffic sends real UDP from a "pod" namespace through a "node"
// namespace carrying the rule to an "outside" namespace, and checks which source
// address arrives: the node's for ordinary destinations, the pod's for no-masquerade ones.
func TestMasqueradeTraffic(t *testing.T) {
	nstest.Need(t)
	podN := nstest.New(t, "pod")
	pod, podNS := podN.Name, podN.Handle
	nodeN := nstest.New(t, "node")
	node, nodeNS := nodeN.Name, nodeN.Handle
	outN := nstest.New(t, "out")
	out, outNS := outN.Name, outN.Handle
	nstest.Run(t, "ip", "link", "add", "tmcni-p", "netns", pod, "type", "veth", "peer", "name", "tmcni-n", "netns", node)
	nstest.Run(t, "ip", "link", "add", "tmcni-o", "netns", out, "type", "veth", "peer", "name", "tmcni-u", "netns", node)
	// A second path to "outside" through a device named like tunnelmesh's tunnels.
	nstest.Run(t, "ip", "link", "add", "tmcni-t", "netns", out, "type", "veth", "peer", "name", "tmesh0", "netns", node)
	for _, c := range [][]string{
		{pod, "addr", "add", "198.18.1.2/24", "dev", "tmcni-p"},
		{pod, "link", "set", "tmcni-p", "up"},
		{pod, "route", "add", "default", "via", "198.18.1.1"},
		{node, "addr", "add", "198.18.1.1/24", "dev", "tmcni-n"},
		{node, "addr", "add", "203.0.113.1/24", "dev", "tmcni-u"},
		{node, "link", "set", "tmcni-n", "up"},
		{node, "link", "set", "tmcni-u", "up"},
		{node, "route", "add", "198.51.100.0/24", "via", "203.0.113.2"},
		{out, "addr", "add", "203.0.113.2/24", "dev", "tmcni-o"},
		{out, "addr", "add", "198.51.100.2/32", "dev", "lo"},
		{out, "link", "set", "tmcni-o", "up"},
		{out, "route", "add", "198.18.1.0/24", "via", "203.0.113.1"},
		{node, "link", "set", "tmesh0", "up"},
		{node, "route", "add", "192.0.2.2/32", "dev", "tmesh0"},
		{out, "link", "set", "tmcni-t", "up"},
		{out, "addr", "add", "192.0.2.2/32", "dev", "tmcni-t"},
	} {
		nstest.Run(t, append([]string{"ip", "-n"}, c...)...)
	}
	nstest.Run(t, "ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	// Replies to the tunnel path return by the other link: no reverse-path filtering.
	nstest.Run(t, "ip", "netns", "exec", out, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.tmcni-t.rp_filter=0")

	m, err := NewMasquerade(int(nodeNS))
	if err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix
	if err := m.Apply(plan.MasqueradeFor(
		[]netip.Prefix{p("198.18.1.0/24")},
		[]netip.Prefix{p("198.18.0.0/16"), p("198.51.100.0/24"), p("fd00::/64")},
	)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Delete() })
	// Apply again: must replace, not fail or duplicate.
	second := plan.MasqueradeFor([]netip.Prefix{p("198.18.1.0/24")},
		[]netip.Prefix{p("198.18.0.0/16"), p("198.51.100.0/24")})
	second.SkipOutInterfaces = []string{"tmesh", "vx-tm"}
	if err := m.Apply(second); err != nil {
		t.Fatalf("second apply: %v", err)
	}

	var srv net.PacketConn
	if e := nsenter.Do(outNS, func() error {
		srv, err = net.ListenPacket("udp4", "0.0.0.0:0")
		return nil
	}); e != nil {
		t.Fatal(e)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	port := srv.LocalAddr().(*net.UDPAddr).Port

	seenFrom := func(dst string) string {
		t.Helper()
		var c net.Conn
		if e := nsenter.Do(podNS, func() error {
			c, err = net.Dial("udp4", net.JoinHostPort(dst, fmt.Sprint(port)))
			return nil
		}); e != nil {
			t.Fatal(e)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("hi")); err != nil {
			t.Fatal(err)
		}
		_ = srv.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 16)
		_, from, err := srv.ReadFrom(buf)
		if err != nil {
			t.Fatalf("datagram to %s never arrived: %v", dst, err)
		}
		return from.(*net.UDPAddr).IP.String()
	}
	if got := seenFrom("203.0.113.2"); got != "203.0.113.1" {
		t.Fatalf("to an outside address the source was %s, want the node's 203.0.113.1 (masquerade)", got)
	}
	if got := seenFrom("198.51.100.2"); got != "198.18.1.2" {
		t.Fatalf("to a no-masquerade CIDR the source was %s, want the pod's 198.18.1.2", got)
	}
	if got := seenFrom("192.0.2.2"); got != "198.18.1.2" {
		t.Fatalf("out through tmesh0 the source was %s, want the pod's 198.18.1.2", got)
	}
	if err := m.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(); err != nil {
		t.Fatalf("second delete: %v", err)
	}
}

func TestWatchRouteDeletes(t *testing.T) {
	nstest.Need(t)
	n := nstest.New(t, "watch")
	name, ns := n.Name, n.Handle
	nstest.Run(t, "ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	nstest.Run(t, "ip", "-n", name, "link", "set", "eth1", "up")
	nstest.Run(t, "ip", "-n", name, "addr", "add", "192.0.2.1/24", "dev", "eth0")
	nstest.Run(t, "ip", "-n", name, "link", "set", "eth0", "up")
	nstest.Run(t, "ip", "-n", name, "route", "add", "198.18.1.0/24", "via", "192.0.2.2", "proto", "79")
	nstest.Run(t, "ip", "-n", name, "route", "add", "198.18.2.0/24", "via", "192.0.2.2", "proto", "static")

	ctx, cancel := context.WithCancel(t.Context())
	fired := make(chan struct{}, 8)
	done := make(chan error, 1)
	watching := make(chan struct{})
	go func() {
		done <- WatchRouteDeletes(ctx, &ns, func() { close(watching) }, func() { fired <- struct{}{} })
	}()
	select {
	case <-watching:
	case err := <-done:
		t.Fatalf("the watch ended before it subscribed: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not subscribe")
	}

	nstest.Run(t, "ip", "-n", name, "route", "del", "198.18.2.0/24") // someone else's: no call
	select {
	case <-fired:
		t.Fatal("a foreign route's deletion fired the callback")
	case <-time.After(300 * time.Millisecond):
	}
	nstest.Run(t, "ip", "-n", name, "route", "del", "198.18.1.0/24") // ours: call
	select {
	case <-fired:
	case <-time.After(3 * time.Second):
		t.Fatal("deleting a meshnet route did not fire the callback")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

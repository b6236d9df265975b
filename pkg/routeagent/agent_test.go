package routeagent

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/nsenter"
	"github.com/tunnelmesh/tunnelmesh/pkg/nsenter/nstest"
	"github.com/vishvananda/netns"
)

// cluster is three "nodes" on one bridge — gateway candidates G and G2, worker
// W with a pod behind it — and a "remote cluster" R reached from each gateway
// by a veth standing in for the tunnel. Every node runs a CNI-style masquerade
// of the whole pod CIDR (as flannel and kindnet do, whatever the interface)
// and strict reverse-path filtering.
type cluster struct {
	g, g2, w, pod, r nstest.NS
	lan              nstest.NS // holds the bridge br0 the nodes share
	nodeIP, nodeIP6  map[string]netip.Addr
}

func newCluster(t *testing.T) *cluster {
	c := &cluster{
		g: nstest.New(t, "g"), g2: nstest.New(t, "g2"), w: nstest.New(t, "w"), pod: nstest.New(t, "pod"), r: nstest.New(t, "r"),
		nodeIP: map[string]netip.Addr{}, nodeIP6: map[string]netip.Addr{},
	}
	lan := nstest.New(t, "lan")
	c.lan = lan
	lan.IP(t, "link", "add", "br0", "type", "bridge")
	lan.IP(t, "link", "set", "br0", "up")
	for i, n := range []nstest.NS{c.g, c.g2, c.w} {
		port := "p" + string(rune('0'+i))
		nstest.Run(t, "ip", "link", "add", "eth0", "netns", n.Name, "type", "veth", "peer", "name", port, "netns", lan.Name)
		lan.IP(t, "link", "set", port, "master", "br0", "up")
		ip := netip.AddrFrom4([4]byte{172, 30, 0, byte(2 + i)})
		ip6 := netip.MustParseAddr("fd30::" + string(rune('2'+i)))
		c.nodeIP[n.Name], c.nodeIP6[n.Name] = ip, ip6
		n.IP(t, "addr", "add", ip.String()+"/24", "dev", "eth0")
		n.IP(t, "addr", "add", ip6.String()+"/64", "dev", "eth0", "nodad")
		n.IP(t, "link", "set", "eth0", "up")
		n.Exec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.default.rp_filter=1",
			"net.ipv6.conf.all.forwarding=1")
		n.Exec(t, "sysctl", "-qw", "net.ipv4.conf.eth0.rp_filter=1")
		n.Exec(t, "nft", "add table inet cni")
		n.Exec(t, "nft", "add chain inet cni post { type nat hook postrouting priority srcnat; }")
		n.Exec(t, "nft", "add rule inet cni post ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade")
		n.Exec(t, "nft", "add rule inet cni post ip6 saddr fd44::/48 ip6 daddr != fd44::/48 masquerade")
	}
	// The pod on W (the CNI's veth and its routes on the other nodes).
	nstest.Run(t, "ip", "link", "add", "eth0", "netns", c.pod.Name, "type", "veth", "peer", "name", "vpod", "netns", c.w.Name)
	c.pod.IP(t, "addr", "add", "10.244.4.2/24", "dev", "eth0")
	c.pod.IP(t, "link", "set", "eth0", "up")
	c.pod.IP(t, "route", "add", "default", "via", "10.244.4.1")
	c.pod.IP(t, "addr", "add", "fd44:0:0:4::2/64", "dev", "eth0", "nodad")
	c.pod.IP(t, "-6", "route", "add", "default", "via", "fd44:0:0:4::1")
	c.w.IP(t, "addr", "add", "10.244.4.1/24", "dev", "vpod")
	c.w.IP(t, "addr", "add", "fd44:0:0:4::1/64", "dev", "vpod", "nodad")
	c.w.IP(t, "link", "set", "vpod", "up")
	for _, n := range []nstest.NS{c.g, c.g2} {
		n.IP(t, "route", "add", "10.244.4.0/24", "via", "172.30.0.4")
		n.IP(t, "route", "add", "fd44:0:0:4::/64", "via", "fd30::4")
	}
	// The remote cluster: a pod address on R, a "tunnel" from each gateway.
	c.r.IP(t, "addr", "add", "10.50.0.1/32", "dev", "lo")
	c.r.IP(t, "addr", "add", "fd50::1/128", "dev", "lo")
	for i, n := range []nstest.NS{c.g, c.g2} {
		peer := "t" + string(rune('0'+i))
		nstest.Run(t, "ip", "link", "add", "tmesh0", "netns", n.Name, "type", "veth", "peer", "name", peer, "netns", c.r.Name)
		n.IP(t, "addr", "add", "192.168.5"+string(rune('0'+i))+".1/30", "dev", "tmesh0")
		n.IP(t, "link", "set", "tmesh0", "up")
		c.r.IP(t, "addr", "add", "192.168.5"+string(rune('0'+i))+".2/30", "dev", peer)
		n.IP(t, "addr", "add", "fd6"+string(rune('0'+i))+"::1/64", "dev", "tmesh0", "nodad")
		c.r.IP(t, "addr", "add", "fd6"+string(rune('0'+i))+"::2/64", "dev", peer, "nodad")
		c.r.IP(t, "link", "set", peer, "up")
	}
	c.activate(t, c.g)
	return c
}

// activate stands in for the gateway data plane and the remote side: n routes
// the remote cluster into its tunnel, and the remote cluster answers through n.
func (c *cluster) activate(t *testing.T, n nstest.NS) {
	via := map[string]string{c.g.Name: "192.168.50", c.g2.Name: "192.168.51"}[n.Name]
	via6 := map[string]string{c.g.Name: "fd60::", c.g2.Name: "fd61::"}[n.Name]
	n.IP(t, "route", "replace", "10.50.0.0/16", "via", via+".2", "dev", "tmesh0", "proto", "77")
	n.IP(t, "route", "replace", "fd50::/64", "via", via6+"2", "dev", "tmesh0", "proto", "77")
	c.r.IP(t, "route", "replace", "fd44::/48", "via", via6+"1")
	c.r.IP(t, "route", "replace", "fd30::/64", "via", via6+"1")
	c.r.IP(t, "route", "replace", "10.244.0.0/16", "via", via+".1")
	// So that a masqueraded flow would arrive too, and the test say so.
	c.r.IP(t, "route", "replace", "172.30.0.0/24", "via", via+".1")
}

func (c *cluster) gateway(n nstest.NS) Gateway {
	return Gateway{Node: n.Name, Addresses: []netip.Addr{c.nodeIP[n.Name], c.nodeIP6[n.Name]}}
}

func (c *cluster) input(t *testing.T, self nstest.NS, active nstest.NS, mode Mode) Input {
	t.Helper()
	var s Self
	if err := nsenter.Do(self.Handle, func() (err error) {
		s, err = Discover(self.Name, []netip.Addr{c.nodeIP[self.Name], c.nodeIP6[self.Name]})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if s.Interface != "eth0" || s.MTU != 1500 || len(s.Addresses) != 2 || s.Addresses[0].Bits() != 24 {
		t.Fatalf("Discover = %+v", s)
	}
	return Input{
		Self: s, Active: c.gateway(active), Mode: mode, Nodes: c.nodeAddrs4and6(),
		Local: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd44::/48")},
		Remote: []netip.Prefix{netip.MustParsePrefix("10.50.0.0/16"), netip.MustParsePrefix("10.51.0.0/16"),
			netip.MustParsePrefix("fd50::/64"),
			netip.MustParsePrefix("172.30.0.0/16")}, // covers the underlay: refused, or the encapsulation would loop
	}
}

// startAgent runs an agent in n until the returned stop is called (or the test
// ends). Stopping waits for Run to return, 30 s at most: an agent that does not
// stop fails the test with its log and the stacks of every goroutine, rather
// than hanging the test binary until its timeout.
func startAgent(t *testing.T, n nstest.NS, resync time.Duration) (*Agent, func()) {
	h := n.Handle
	logs := &testkit.Buffer{}
	a := New(Config{NetNS: &h, Resync: resync, Log: slog.New(slog.NewTextHandler(logs, nil)), Metrics: prometheus.NewRegistry()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("agent in %s: %v", n.Name, err)
				}
			case <-time.After(30 * time.Second):
				stacks := make([]byte, 1<<20)
				stacks = stacks[:runtime.Stack(stacks, true)]
				t.Errorf("agent in %s: Run did not return 30s after its context ended; its log:\n%s\ngoroutines:\n%s", n.Name, logs, stacks)
			}
			if t.Failed() {
				t.Logf("log of the agent in %s:\n%s", n.Name, logs)
			}
		})
	}
	t.Cleanup(stop)
	return a, stop
}

// server accepts TCP on R and counts, per connection, the bytes that arrive.
type server struct {
	mu    sync.Mutex
	conns []*conn
}

type conn struct {
	from  string
	bytes atomic.Int64
}

func serve(t *testing.T, ns nstest.NS, ip string) (*server, string) {
	var l net.Listener
	if err := nsenter.Do(ns.Handle, func() (err error) {
		l, err = net.Listen("tcp", net.JoinHostPort(ip, "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	s := &server{}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			cc := &conn{from: c.RemoteAddr().(*net.TCPAddr).IP.String()}
			s.mu.Lock()
			s.conns = append(s.conns, cc)
			s.mu.Unlock()
			go func() {
				buf := make([]byte, 1024)
				for {
					n, err := c.Read(buf)
					cc.bytes.Add(int64(n))
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return s, l.Addr().String()
}

func (s *server) conn(i int) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < len(s.conns) {
		return s.conns[i]
	}
	return nil
}

// flow dials from the pod and writes a byte every 10 ms until the test ends.
func flow(t *testing.T, pod nstest.NS, addr string) {
	var c net.Conn
	if err := nsenter.Do(pod.Handle, func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial %s from the pod: %v", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); c.Close(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if _, err := c.Write([]byte{'x'}); err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
}

// ownedRoutes lists the agent's routes of both families in n.
func ownedRoutes(t *testing.T, n nstest.NS) string {
	return n.IP(t, "route", "show", "proto", "78") + n.IP(t, "-6", "route", "show", "proto", "78")
}

// metric reads one of the agent's metrics.
func metric(t *testing.T, a *Agent, name string) float64 {
	t.Helper()
	mfs, err := a.cfg.Metrics.(*prometheus.Registry).Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			return m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func arrived(s *server, i int) bool { return s.conn(i) != nil && s.conn(i).bytes.Load() > 0 }

// growing reports whether c receives more bytes within a short while.
func growing(c *conn) bool {
	n := c.bytes.Load()
	time.Sleep(50 * time.Millisecond)
	return c.bytes.Load() > n
}

// TestAgentFlowFailoverRestart: a TCP flow from a pod on a worker to a remote
// cluster arrives with the pod's address in both modes; moving the active
// gateway moves the flow; restarting the agent leaves the routes untouched.
func TestAgentFlowFailoverRestart(t *testing.T) {
	nstest.Need(t)
	for _, mode := range []Mode{ModeVXLAN, ModeDirect} {
		t.Run(string(mode), func(t *testing.T) {
			c := newCluster(t)
			fast := 300 * time.Millisecond
			agG, _ := startAgent(t, c.g, fast)
			agG2, _ := startAgent(t, c.g2, fast)
			agW, stopW := startAgent(t, c.w, fast)
			for ag, self := range map[*Agent]nstest.NS{agG: c.g, agG2: c.g2, agW: c.w} {
				if err := ag.Set(c.input(t, self, c.g, mode)); err != nil {
					t.Fatalf("set %s: %v", self.Name, err)
				}
			}
			srv, addr := serve(t, c.r, "10.50.0.1")
			srv6, addr6 := serve(t, c.r, "fd50::1")
			t.Cleanup(func() {
				if t.Failed() {
					for _, n := range []nstest.NS{c.g, c.w, c.r} {
						for _, cmd := range [][]string{{"ip", "-d", "link"}, {"ip", "route"}, {"ip", "-6", "route"}, {"ip", "-6", "addr"}, {"ip", "-6", "route", "get", "fd44:0:0:4::2", "from", "fd50::1"}, {"ip", "neigh"}, {"bridge", "fdb", "show", "dev", "tmesh-vx"}, {"nstat", "-a"}, {"sysctl", "-a", "--pattern", "rp_filter"}} {
							out, _ := exec.Command("ip", append([]string{"netns", "exec", n.Name}, cmd...)...).CombinedOutput()
							t.Logf("%s %v:\n%s", n.Name, cmd, out)
						}
					}
				}
			})
			flow(t, c.pod, addr)
			flow(t, c.pod, addr6)
			testkit.Until(t, 5*time.Second, "the flows to arrive at the remote cluster", func() bool { return arrived(srv, 0) && arrived(srv6, 0) })
			first, first6 := srv.conn(0), srv6.conn(0)
			if first.from != "10.244.4.2" || first6.from != "fd44:0:0:4::2" {
				t.Fatalf("the remote cluster saw the flows from %s and %s, want the pod's 10.244.4.2 and fd44:0:0:4::2", first.from, first6.from)
			}
			routes6 := c.w.IP(t, "-6", "route", "show", "proto", "78")
			wantVia6 := map[Mode]string{ModeVXLAN: "via fe80::746d:1 dev tmesh-vx", ModeDirect: "via fd30::2 dev eth0"}[mode]
			if !strings.Contains(routes6, "fd50::/64 "+wantVia6) {
				t.Fatalf("worker IPv6 routes:\n%s\nwant fd50::/64 %s", routes6, wantVia6)
			}
			routesW := ownedRoutes(t, c.w)
			wantVia := map[Mode]string{ModeVXLAN: "via 169.254.77.1 dev tmesh-vx", ModeDirect: "via 172.30.0.2 dev eth0"}[mode]
			if !strings.Contains(routesW, "10.50.0.0/16 "+wantVia) || !strings.Contains(routesW, "10.51.0.0/16 "+wantVia) {
				t.Fatalf("worker routes:\n%s\nwant both remote CIDRs %s", routesW, wantVia)
			}

			// G dies; G2 becomes active (its data plane and the remote side follow).
			c.g.IP(t, "link", "set", "eth0", "down")
			c.g.IP(t, "link", "set", "tmesh0", "down")
			c.activate(t, c.g2)
			inG2, inW := c.input(t, c.g2, c.g2, mode), c.input(t, c.w, c.g2, mode)
			start := time.Now()
			if err := agG2.Set(inG2); err != nil {
				t.Fatalf("set %s: %v", c.g2.Name, err)
			}
			if err := agW.Set(inW); err != nil {
				t.Fatalf("set %s: %v", c.w.Name, err)
			}
			applied := time.Since(start)
			testkit.Until(t, 10*time.Second, "the same flows to move to G2", func() bool { return growing(first) && growing(first6) })
			t.Logf("%s: both agents applied the new active in %v; the flows moved again %v after the first Set (TCP's retransmission backoff included)",
				mode, applied.Round(time.Microsecond), time.Since(start).Round(time.Millisecond))
			switch mode {
			case ModeVXLAN:
				if got := c.w.Exec(t, "bridge", "fdb", "show", "dev", "tmesh-vx"); !strings.Contains(got, "dst 172.30.0.3") || strings.Contains(got, "172.30.0.2") {
					t.Errorf("worker FDB after failover: %s", got)
				}
			case ModeDirect:
				if got := ownedRoutes(t, c.w); !strings.Contains(got, "10.50.0.0/16 via 172.30.0.3 dev eth0") {
					t.Errorf("worker routes after failover: %s", got)
				}
			}
			if got, want := metric(t, agW, "tunnelmesh_routeagent_active_changes_total"), 1.0; got != want {
				t.Errorf("active changes = %v, want %v", got, want)
			}
			if got, want := metric(t, agW, "tunnelmesh_routeagent_routes"), 3.0; got != want {
				t.Errorf("routes = %v, want %v", got, want)
			}
			if got, want := metric(t, agW, "tunnelmesh_routeagent_refused_cidrs"), 1.0; got != want {
				t.Errorf("refused CIDRs = %v, want %v", got, want)
			}
			if got := ownedRoutes(t, c.g2); got != "" {
				t.Errorf("the new active node keeps agent routes: %s", got)
			}
			flow(t, c.pod, addr)
			flow(t, c.pod, addr6)
			testkit.Until(t, 5*time.Second, "new flows through G2", func() bool { return arrived(srv, 1) && arrived(srv6, 1) })
			if from, from6 := srv.conn(1).from, srv6.conn(1).from; from != "10.244.4.2" || from6 != "fd44:0:0:4::2" {
				t.Errorf("through G2 the remote cluster saw %s and %s, want the pod's addresses", from, from6)
			}

			// The worker's agent restarts: nothing is removed while it is down or
			// while the new process runs before it is told anything.
			before := ownedRoutes(t, c.w)
			stopW()
			agW2, stopW2 := startAgent(t, c.w, fast)
			time.Sleep(time.Second) // over three resyncs of the new agent, with no Set yet
			if after := ownedRoutes(t, c.w); after != before {
				t.Fatalf("routes changed across an agent restart:\n%s\n->\n%s", before, after)
			}
			if !growing(first) || !growing(first6) {
				t.Fatal("a flow stalled across the agent restart")
			}
			if err := agW2.Set(c.input(t, c.w, c.g2, mode)); err != nil {
				t.Fatal(err)
			}
			if after := ownedRoutes(t, c.w); after != before {
				t.Errorf("the restarted agent's first Set rewrote routes:\n%s\n->\n%s", before, after)
			}
			// Input Plan refuses changes nothing.
			bad := c.input(t, c.w, c.g, mode)
			bad.Local = nil
			if err := agW2.Set(bad); err == nil || !strings.Contains(err.Error(), "no local pod CIDRs") {
				t.Errorf("Set without local CIDRs: err = %v", err)
			}
			// Nor does an input without an active gateway (a Lease between holders).
			none := c.input(t, c.w, c.g, mode)
			none.Active = Gateway{}
			if err := agW2.Set(none); err != nil {
				t.Errorf("Set without an active gateway: %v", err)
			}
			if after := ownedRoutes(t, c.w); after != before {
				t.Errorf("refused or empty input changed routes:\n%s\n->\n%s", before, after)
			}

			// Someone deletes a route and (vxlan) the device: both come back at once
			// (route and link events), not at a resync an hour away.
			stopW2()
			agW3, _ := startAgent(t, c.w, time.Hour)
			if err := agW3.Set(c.input(t, c.w, c.g2, mode)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond) // let Run subscribe
			c.w.IP(t, "route", "del", "10.51.0.0/16", "proto", "78")
			if mode == ModeVXLAN {
				c.w.IP(t, "link", "del", "tmesh-vx")
			}
			testkit.Until(t, 5*time.Second, "the agent to repair the worker", func() bool {
				return ownedRoutes(t, c.w) == before
			})
			testkit.Until(t, 10*time.Second, "the flows to resume after the repair", func() bool { return growing(first) && growing(first6) })

			if err := agW3.Uninstall(); err != nil {
				t.Fatal(err)
			}
			if got := ownedRoutes(t, c.w); got != "" {
				t.Errorf("uninstall left routes: %s", got)
			}
			if got := c.w.IP(t, "link", "show"); strings.Contains(got, "tmesh-vx") {
				t.Error("uninstall left the VXLAN device")
			}
			if got := c.w.Exec(t, "nft", "list", "tables"); strings.Contains(got, TableName) {
				t.Error("uninstall left the NAT table")
			}
		})
	}
}

// TestRunReturnsAfterRouteWatchEnded: when the route watch ends on its own
// (here it cannot enter the namespace), Run carries on with its resync and
// still returns once its context ends.
func TestRunReturnsAfterRouteWatchEnded(t *testing.T) {
	f, err := os.Open(os.DevNull) // an open descriptor that is no network namespace: every setns fails
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	notNS := netns.NsHandle(f.Fd())
	logs := &testkit.Buffer{}
	a := New(Config{NetNS: &notNS, Resync: time.Hour, Log: slog.New(slog.NewTextHandler(logs, nil))})
	p, ad := netip.MustParsePrefix, netip.MustParseAddr
	in := Input{
		Self:   Self{Name: "w", Interface: "eth0", MTU: 1500, Addresses: []netip.Prefix{p("172.18.0.4/24")}},
		Active: Gateway{Node: "g", Addresses: []netip.Addr{ad("172.18.0.2")}},
		Local:  []netip.Prefix{p("10.244.0.0/16")}, Remote: []netip.Prefix{p("10.50.0.0/16")},
	}
	if err := a.Set(in); err == nil || !strings.Contains(err.Error(), "enter network namespace") {
		t.Fatalf("Set in a descriptor that is no namespace: err = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	testkit.Until(t, 5*time.Second, "Run to notice its route watch ended", func() bool {
		return strings.Contains(logs.String(), "route event watch ended")
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return 5s after its context ended")
	}
}

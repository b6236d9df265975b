package gateway

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/routes"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func key(t *testing.T) string {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().String()
}

func TestCompute(t *testing.T) {
	kb, kc := key(t), key(t)
	local := Local{ClusterID: "a", Interface: "tmesh0",
		PodCIDRs:     []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")},
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.101.0.0/16")}}
	ca := api.Cluster{ID: "a", PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.101.0.0/16"}, TunnelIP: "100.127.0.1"}
	cb := api.Cluster{ID: "b", PodCIDRs: []string{"10.2.0.0/16"}, ServiceCIDRs: []string{"10.102.0.0/16"}, TunnelIP: "100.127.0.2"}
	cc := api.Cluster{ID: "c", PodCIDRs: []string{"10.3.0.0/16"}, ServiceCIDRs: []string{"10.103.0.0/16"}, TunnelIP: "100.127.0.3"}
	gb := api.Gateway{ClusterID: "b", Hostname: "b1", PrivateIP: "192.0.2.2", Port: 51820, PublicKey: kb, Active: true, Epoch: 1}
	gc := api.Gateway{ClusterID: "c", Hostname: "c1", PrivateIP: "192.0.2.3", Port: 51821, PublicKey: kc, Active: true, Epoch: 1}

	tests := []struct {
		name      string
		snap      api.Snapshot
		local     Local
		tunnel    string
		endpoints map[string]string // cluster -> endpoint
		routes    int
		allowed   int // AllowedIPs per peer; 3 unless set
		problem   string
		refused   string
	}{
		{name: "empty", snap: api.Snapshot{}, problem: "not a member"},
		{name: "removed from clusterset", snap: api.Snapshot{Clusters: []api.Cluster{cb}, Gateways: []api.Gateway{gb}}, problem: "not a member"},
		{name: "only self", snap: api.Snapshot{Clusters: []api.Cluster{ca}}, tunnel: "100.127.0.1"},
		{name: "two peers", snap: api.Snapshot{Clusters: []api.Cluster{cc, ca, cb}, Gateways: []api.Gateway{gb, gc}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "192.0.2.2:51820", "c": "192.0.2.3:51821"}, routes: 6},
		{name: "cluster without gateway is skipped", snap: api.Snapshot{Clusters: []api.Cluster{ca, cb, cc}, Gateways: []api.Gateway{gb}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "192.0.2.2:51820"}, routes: 3, problem: `"c": no gateway`},
		{name: "gateway of removed cluster ignored", snap: api.Snapshot{Clusters: []api.Cluster{ca, cb}, Gateways: []api.Gateway{gb, gc}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "192.0.2.2:51820"}, routes: 3},
		{name: "public IP preferred", snap: api.Snapshot{Clusters: []api.Cluster{ca, cb}, Gateways: []api.Gateway{with(gb, func(g *api.Gateway) { g.PublicIP = "203.0.113.9" })}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "203.0.113.9:51820"}, routes: 3},
		{name: "NAT: observed IP used", local: Local{ObservedIP: "203.0.113.1"},
			snap:   api.Snapshot{Clusters: []api.Cluster{ca, cb}, Gateways: []api.Gateway{with(gb, func(g *api.Gateway) { g.ObservedIP = "198.51.100.7" })}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "198.51.100.7:51820"}, routes: 3},
		{name: "NAT, our own record read: observed IP used", local: Local{Hostname: "a1"},
			snap: api.Snapshot{Clusters: []api.Cluster{ca, cb}, Gateways: []api.Gateway{
				{ClusterID: "a", Hostname: "a1", PrivateIP: "192.0.2.11", ObservedIP: "203.0.113.1", Active: true, Epoch: 1},
				with(gb, func(g *api.Gateway) { g.ObservedIP = "198.51.100.7" })}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "198.51.100.7:51820"}, routes: 3},
		// Just started (seen in kind): the view has the remote's record but
		// not yet this gateway's. Private or observed cannot be decided, so
		// the peer waits (a moment) rather than take a guess whose first
		// handshake is lost; a remote whose endpoint needs no decision links.
		{name: "our own address not known yet: a peer behind a NAT waits", local: Local{Hostname: "a1"},
			snap: api.Snapshot{Clusters: []api.Cluster{ca, cb, cc}, Gateways: []api.Gateway{
				with(gb, func(g *api.Gateway) { g.ObservedIP = "198.51.100.7" }), with(gc, func(g *api.Gateway) { g.ObservedIP = g.PrivateIP })}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"c": "192.0.2.3:51821"}, routes: 3,
			problem: `cluster "b": waiting for the broker's record of this gateway: whether it sees gateway b1 from the same address decides its endpoint (private 192.0.2.2 or observed 198.51.100.7)`},
		{name: "our own record without an observed IP: decided (observed used)", local: Local{Hostname: "a1"},
			snap: api.Snapshot{Clusters: []api.Cluster{ca, cb}, Gateways: []api.Gateway{
				{ClusterID: "a", Hostname: "a1", PrivateIP: "192.0.2.11", Active: true, Epoch: 1},
				with(gb, func(g *api.Gateway) { g.ObservedIP = "198.51.100.7" })}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "198.51.100.7:51820"}, routes: 3},
		{name: "same NAT: private IP used", local: Local{ObservedIP: "198.51.100.7"},
			snap:   api.Snapshot{Clusters: []api.Cluster{ca, cb}, Gateways: []api.Gateway{with(gb, func(g *api.Gateway) { g.ObservedIP = "198.51.100.7" })}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "192.0.2.2:51820"}, routes: 3},
		// The broker sees every gateway of the kind test bed behind the same
		// SNAT (kube-proxy in front of it). While a failover is under way
		// this cluster has no active record: the old active has registered
		// as standby, the new one not yet as active. This gateway's own
		// record still says where the broker saw it: the remote is behind
		// the same NAT and reached on its private IP, not on the NAT's.
		{name: "same NAT mid-failover (no active record of our own): our own record tells", local: Local{Hostname: "a2"},
			snap: api.Snapshot{Clusters: []api.Cluster{ca, cb}, Gateways: []api.Gateway{
				{ClusterID: "a", Hostname: "a1", PrivateIP: "192.0.2.11", ObservedIP: "198.51.100.7", Epoch: 1},
				{ClusterID: "a", Hostname: "a2", PrivateIP: "192.0.2.12", ObservedIP: "198.51.100.7", Epoch: 1},
				with(gb, func(g *api.Gateway) { g.ObservedIP = "198.51.100.7" })}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "192.0.2.2:51820"}, routes: 3},
		{name: "own record before the active's", local: Local{Hostname: "a2"},
			snap: api.Snapshot{Clusters: []api.Cluster{ca, cb}, Gateways: []api.Gateway{
				{ClusterID: "a", Hostname: "a1", PrivateIP: "192.0.2.11", ObservedIP: "203.0.113.50", Active: true, Epoch: 1},
				{ClusterID: "a", Hostname: "a2", PrivateIP: "192.0.2.12", ObservedIP: "198.51.100.7", Epoch: 1},
				with(gb, func(g *api.Gateway) { g.ObservedIP = "198.51.100.7" })}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "192.0.2.2:51820"}, routes: 3},
		{name: "no record of our own yet: the active's observed IP", local: Local{Hostname: "a2"},
			snap: api.Snapshot{Clusters: []api.Cluster{ca, cb}, Gateways: []api.Gateway{
				{ClusterID: "a", Hostname: "a1", PrivateIP: "192.0.2.11", ObservedIP: "198.51.100.7", Active: true, Epoch: 1},
				with(gb, func(g *api.Gateway) { g.ObservedIP = "198.51.100.7" })}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "192.0.2.2:51820"}, routes: 3},
		{name: "active fresh gateway wins over stale and standby", snap: api.Snapshot{Clusters: []api.Cluster{ca, cb}, Gateways: []api.Gateway{
			with(gb, func(g *api.Gateway) { g.Hostname = "b0"; g.PrivateIP = "192.0.2.20"; g.Stale = true }),
			with(gb, func(g *api.Gateway) {
				g.Hostname = "b2"
				g.PrivateIP = "192.0.2.21"
				g.Active = false
				g.Epoch = 9
			}),
			gb}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "192.0.2.2:51820"}, routes: 3},
		{name: "only stale gateway: tunnel kept", snap: api.Snapshot{Clusters: []api.Cluster{ca, cb}, Gateways: []api.Gateway{with(gb, func(g *api.Gateway) { g.Stale = true })}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "192.0.2.2:51820"}, routes: 3},
		{name: "overlapping CIDR skipped", snap: api.Snapshot{Clusters: []api.Cluster{ca, {ID: "b", PodCIDRs: []string{"10.1.128.0/17"}, TunnelIP: "100.127.0.2"}}, Gateways: []api.Gateway{gb}},
			tunnel: "100.127.0.1", problem: "overlaps local CIDR 10.1.0.0/16"},
		{name: "two active records: the higher epoch wins (failover before the old one is stale)", snap: api.Snapshot{Clusters: []api.Cluster{ca, cb},
			Gateways: []api.Gateway{gb, with(gb, func(g *api.Gateway) { g.Hostname = "b9"; g.PrivateIP = "192.0.2.29"; g.Epoch = 2 })}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "192.0.2.29:51820"}, routes: 3},
		{name: "remote CIDR covering our underlay refused, rest kept", local: Local{UnderlayAddrs: []netip.Addr{netip.MustParseAddr("192.168.5.4")}},
			snap:   api.Snapshot{Clusters: []api.Cluster{ca, with2(cb, func(c *api.Cluster) { c.ServiceCIDRs = []string{"192.168.0.0/16"} })}, Gateways: []api.Gateway{gb}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "192.0.2.2:51820"}, routes: 2, allowed: 2,
			problem: `"b": CIDR 192.168.0.0/16 covers 192.168.5.4 (this gateway's underlay address)`, refused: "192.168.0.0/16"},
		{name: "remote CIDR covering the broker refused", local: Local{BrokerAddrs: []netip.Addr{netip.MustParseAddr("198.18.0.9")}},
			snap:   api.Snapshot{Clusters: []api.Cluster{ca, with2(cb, func(c *api.Cluster) { c.PodCIDRs = []string{"10.2.0.0/16", "198.18.0.0/15"} })}, Gateways: []api.Gateway{gb}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "192.0.2.2:51820"}, routes: 3, allowed: 3,
			problem: "covers 198.18.0.9 (the broker's address)", refused: "198.18.0.0/15"},
		{name: "remote CIDR covering its own gateway's endpoint refused", snap: api.Snapshot{
			Clusters: []api.Cluster{ca, with2(cb, func(c *api.Cluster) { c.ServiceCIDRs = []string{"192.0.2.2/32"} }), cc}, Gateways: []api.Gateway{gb, gc}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "192.0.2.2:51820", "c": "192.0.2.3:51821"}, routes: 5, allowed: 2,
			problem: `covers 192.0.2.2 (the endpoint of cluster "b"'s gateway)`, refused: "192.0.2.2/32"},
		// The attack: c registers its gateway endpoint inside b's CIDR. c is
		// refused, never b's CIDR (b would be cut off mesh-wide).
		{name: "a peer whose endpoint lies inside another cluster's CIDR is refused, not that CIDR", snap: api.Snapshot{
			Clusters: []api.Cluster{ca, cb, cc}, Gateways: []api.Gateway{gb, with(gc, func(g *api.Gateway) { g.PrivateIP = "10.2.7.7" })}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "192.0.2.2:51820"}, routes: 3, allowed: 3,
			problem: `"c": its gateway endpoint 10.2.7.7 lies inside cluster "b"'s CIDR 10.2.0.0/16`},
		// b claims the underlay, where c's endpoint (and this gateway) live:
		// b's CIDR is refused here and never routed, so c stays linked.
		{name: "a CIDR refused for covering our underlay refuses no peer whose endpoint it holds", local: Local{UnderlayAddrs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}},
			snap:   api.Snapshot{Clusters: []api.Cluster{ca, with2(cb, func(c *api.Cluster) { c.ServiceCIDRs = []string{"192.0.2.0/24"} }), cc}, Gateways: []api.Gateway{with(gb, func(g *api.Gateway) { g.PrivateIP = "198.51.100.2" }), gc}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "198.51.100.2:51820", "c": "192.0.2.3:51821"}, routes: 5, allowed: 2,
			problem: `"b": CIDR 192.0.2.0/24 covers 192.0.2.1 (this gateway's underlay address)`, refused: "192.0.2.0/24"},
		// A member claims a range holding this cluster's nodes, API server or
		// DNS upstream: that CIDR is refused here, the rest stays linked.
		{name: "remote CIDR covering another node of this cluster refused", local: Local{NodeAddrs: []netip.Addr{netip.MustParseAddr("192.168.9.9")}},
			snap:   api.Snapshot{Clusters: []api.Cluster{ca, with2(cb, func(c *api.Cluster) { c.PodCIDRs = []string{"192.168.0.0/16"} })}, Gateways: []api.Gateway{gb}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "192.0.2.2:51820"}, routes: 2, allowed: 2,
			problem: "covers 192.168.9.9 (a node of this cluster)", refused: "192.168.0.0/16"},
		{name: "remote CIDR covering the local API server refused", local: Local{APIServerAddrs: []netip.Addr{netip.MustParseAddr("172.18.0.2")}},
			snap:   api.Snapshot{Clusters: []api.Cluster{ca, with2(cb, func(c *api.Cluster) { c.PodCIDRs = []string{"172.16.0.0/12"} })}, Gateways: []api.Gateway{gb}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "192.0.2.2:51820"}, routes: 2, allowed: 2,
			problem: "covers 172.18.0.2 (the local API server)", refused: "172.16.0.0/12"},
		{name: "remote CIDR covering a DNS upstream refused", local: Local{DNSAddrs: []netip.Addr{netip.MustParseAddr("8.8.8.8")}},
			snap:   api.Snapshot{Clusters: []api.Cluster{ca, with2(cb, func(c *api.Cluster) { c.ServiceCIDRs = []string{"8.8.8.0/24"} })}, Gateways: []api.Gateway{gb}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "192.0.2.2:51820"}, routes: 2, allowed: 2,
			problem: "covers 8.8.8.8 (a DNS upstream of this node)", refused: "8.8.8.0/24"},
		{name: "IPv4-mapped remote CIDR unmapped before the checks", local: Local{BrokerAddrs: []netip.Addr{netip.MustParseAddr("198.18.0.9")}},
			snap:   api.Snapshot{Clusters: []api.Cluster{ca, with2(cb, func(c *api.Cluster) { c.ServiceCIDRs = []string{"::ffff:198.18.0.0/111"} })}, Gateways: []api.Gateway{gb}},
			tunnel: "100.127.0.1", endpoints: map[string]string{"b": "192.0.2.2:51820"}, routes: 2, allowed: 2,
			problem: "covers 198.18.0.9", refused: "198.18.0.0/15"},
		{name: "bad key skipped", snap: api.Snapshot{Clusters: []api.Cluster{ca, cb}, Gateways: []api.Gateway{with(gb, func(g *api.Gateway) { g.PublicKey = "nope" })}},
			tunnel: "100.127.0.1", problem: "invalid public key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := local
			if tc.local.ObservedIP != "" {
				l.ObservedIP = tc.local.ObservedIP
			}
			l.Hostname = tc.local.Hostname
			l.UnderlayAddrs, l.BrokerAddrs = tc.local.UnderlayAddrs, tc.local.BrokerAddrs
			l.NodeAddrs, l.APIServerAddrs, l.DNSAddrs = tc.local.NodeAddrs, tc.local.APIServerAddrs, tc.local.DNSAddrs
			allowed := tc.allowed
			if allowed == 0 {
				allowed = 3
			}
			d := Compute(l, tc.snap)
			if got := addrString(d.TunnelIP); got != tc.tunnel {
				t.Errorf("tunnel IP %q, want %q", got, tc.tunnel)
			}
			got := map[string]string{}
			for _, p := range d.Peers {
				got[p.Cluster] = p.Peer.Endpoint.String()
				if p.Peer.Keepalive != Keepalive || (p.Cluster == "b" && len(p.Peer.AllowedIPs) != allowed) {
					t.Errorf("peer %s: %+v", p.Cluster, p.Peer)
				}
				if p.Peer.AllowedIPs[0] != netip.PrefixFrom(p.TunnelIP, 32) {
					t.Errorf("peer %s: first AllowedIP %s, want tunnel IP", p.Cluster, p.Peer.AllowedIPs[0])
				}
			}
			if len(got) != len(tc.endpoints) {
				t.Errorf("peers %v, want %v", got, tc.endpoints)
			}
			for c, ep := range tc.endpoints {
				if got[c] != ep {
					t.Errorf("peer %s endpoint %s, want %s", c, got[c], ep)
				}
			}
			if len(d.Routes.Routes) != tc.routes {
				t.Errorf("%d routes, want %d: %v", len(d.Routes.Routes), tc.routes, d.Routes.Routes)
			}
			for _, r := range d.Routes.Routes {
				if r.Dev != "tmesh0" || r.Src != d.TunnelIP {
					t.Errorf("route %+v", r)
				}
			}
			if len(d.Firewall.Remote) != tc.routes-len(d.Peers) || len(d.Firewall.Local) != 2 {
				t.Errorf("firewall %+v", d.Firewall)
			}
			var refused []string
			for _, r := range d.Refused {
				refused = append(refused, r.CIDR.String())
				if slices.Contains(d.Firewall.Remote, r.CIDR) || slices.ContainsFunc(d.Routes.Routes, func(rt routes.Route) bool { return rt.Dst == r.CIDR }) {
					t.Errorf("refused %s still routed or in the firewall", r.CIDR)
				}
			}
			if got := strings.Join(refused, ","); got != tc.refused {
				t.Errorf("refused %q, want %q", got, tc.refused)
			}
			joined := strings.Join(d.Problems, "; ")
			if (tc.problem == "") != (joined == "") || !strings.Contains(joined, tc.problem) {
				t.Errorf("problems %q, want %q", joined, tc.problem)
			}
			if d2 := Compute(l, tc.snap); len(d2.Peers) != len(d.Peers) {
				t.Error("not deterministic")
			}
		})
	}
}

func with(g api.Gateway, f func(*api.Gateway)) api.Gateway { f(&g); return g }

func with2(c api.Cluster, f func(*api.Cluster)) api.Cluster { f(&c); return c }

func TestDesiredEqual(t *testing.T) {
	kb := key(t)
	local := Local{ClusterID: "a", Interface: "tmesh0", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}
	ca := api.Cluster{ID: "a", PodCIDRs: []string{"10.1.0.0/16"}, TunnelIP: "100.127.0.1"}
	cb := api.Cluster{ID: "b", PodCIDRs: []string{"10.2.0.0/16"}, TunnelIP: "100.127.0.2"}
	gb := api.Gateway{ClusterID: "b", Hostname: "b1", PrivateIP: "192.0.2.2", Port: 51820, PublicKey: kb, Active: true, Epoch: 1}
	base := Compute(local, api.Snapshot{Revision: 1, Clusters: []api.Cluster{ca, cb}, Gateways: []api.Gateway{gb}})
	// What heartbeats and unrelated records change must not count.
	same := Compute(local, api.Snapshot{Revision: 7, Clusters: []api.Cluster{ca, cb}, Gateways: []api.Gateway{with(gb, func(g *api.Gateway) { g.Stale = true })},
		Exports: []api.Export{{ClusterID: "b", Name: "x"}}})
	if !base.Equal(same) {
		t.Error("a stale flag or an export made the data plane differ")
	}
	for name, snap := range map[string]api.Snapshot{
		"port":   {Clusters: []api.Cluster{ca, cb}, Gateways: []api.Gateway{with(gb, func(g *api.Gateway) { g.Port = 51821 })}},
		"CIDR":   {Clusters: []api.Cluster{ca, with2(cb, func(c *api.Cluster) { c.ServiceCIDRs = []string{"10.102.0.0/16"} })}, Gateways: []api.Gateway{gb}},
		"gone":   {Clusters: []api.Cluster{ca}},
		"own IP": {Clusters: []api.Cluster{with2(ca, func(c *api.Cluster) { c.TunnelIP = "100.127.0.9" }), cb}, Gateways: []api.Gateway{gb}},
	} {
		if base.Equal(Compute(local, snap)) {
			t.Errorf("%s changed but Equal says the data plane is the same", name)
		}
	}
	if base.Equal(Standby) || base.IPv6() {
		t.Error("standby shape or IPv6 detection wrong")
	}
	v6 := local
	v6.PodCIDRs = append(v6.PodCIDRs, netip.MustParsePrefix("fd00:1::/64"))
	if !Compute(v6, api.Snapshot{Clusters: []api.Cluster{ca}}).IPv6() {
		t.Error("an IPv6 pod CIDR does not count as IPv6 in play")
	}
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func TestParsePrefixes(t *testing.T) {
	if _, err := ParsePrefixes("pod-cidr", []string{"10.0.0.0/33"}); err == nil || !strings.Contains(err.Error(), "--pod-cidr") {
		t.Fatalf("want clear error, got %v", err)
	}
	p, err := ParsePrefixes("pod-cidr", []string{"10.0.0.7/16"})
	if err != nil || p[0].String() != "10.0.0.0/16" {
		t.Fatalf("got %v %v", p, err)
	}
}

// The cluster's nodes (and this gateway's own addresses) are the only
// sources beside the local CIDRs that the firewall lets into the tunnel.
func TestComputeNodes(t *testing.T) {
	local := Local{ClusterID: "a", Interface: "tmesh0", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")},
		NodeAddrs:     []netip.Addr{netip.MustParseAddr("172.18.0.3"), netip.MustParseAddr("fc00::3")},
		UnderlayAddrs: []netip.Addr{netip.MustParseAddr("::ffff:172.18.0.2")}}
	d := Compute(local, api.Snapshot{Clusters: []api.Cluster{{ID: "a", PodCIDRs: []string{"10.1.0.0/16"}, TunnelIP: "100.127.0.1"}}})
	want := []netip.Prefix{netip.MustParsePrefix("172.18.0.3/32"), netip.MustParsePrefix("fc00::3/128"), netip.MustParsePrefix("172.18.0.2/32")}
	if !slices.Equal(d.Firewall.Nodes, want) {
		t.Errorf("firewall nodes %v, want %v", d.Firewall.Nodes, want)
	}
	other := local
	other.NodeAddrs = local.NodeAddrs[:1]
	if d.Equal(Compute(other, api.Snapshot{Clusters: []api.Cluster{{ID: "a", PodCIDRs: []string{"10.1.0.0/16"}, TunnelIP: "100.127.0.1"}}})) {
		t.Error("a node leaving does not change the desired state")
	}
}

// TestComputeTranslation: a translated cluster's gateway translates its
// own translated CIDRs (and keeps its real ones as the local firewall
// set); every remote cluster is a peer under its mesh CIDRs, mapped where
// it is translated.
func TestComputeTranslation(t *testing.T) {
	kb, kc := key(t), key(t)
	pfx := netip.MustParsePrefix
	local := Local{ClusterID: "a", Interface: "tmesh0", PodCIDRs: []netip.Prefix{pfx("10.244.0.0/16")}, ServiceCIDRs: []netip.Prefix{pfx("10.96.0.0/12")}}
	kind := func(id, tip string, ts ...api.Translation) api.Cluster {
		return api.Cluster{ID: id, PodCIDRs: []string{"10.244.0.0/16"}, ServiceCIDRs: []string{"10.96.0.0/12"}, TunnelIP: tip, Translations: ts}
	}
	tr := func(real, mapped string) api.Translation { return api.Translation{Real: real, Mapped: mapped} }
	ca := kind("a", "100.127.0.1", tr("10.244.0.0/16", "240.0.0.0/16"), tr("10.96.0.0/12", "240.16.0.0/12"))
	cb := kind("b", "100.127.0.2", tr("10.244.0.0/16", "240.1.0.0/16"), tr("10.96.0.0/12", "240.32.0.0/12"))
	cc := api.Cluster{ID: "c", PodCIDRs: []string{"10.3.0.0/16"}, ServiceCIDRs: []string{"10.200.0.0/16"}, TunnelIP: "100.127.0.3"}
	gws := []api.Gateway{{ClusterID: "b", Hostname: "b1", PrivateIP: "192.0.2.2", PublicKey: kb, Active: true},
		{ClusterID: "c", Hostname: "c1", PrivateIP: "192.0.2.3", PublicKey: kc, Active: true}}
	tests := []struct {
		name      string
		clusters  []api.Cluster
		translate string            // local translations, "real>mapped ..."
		allowed   map[string]string // peer -> allowed IPs but the tunnel IP
		problem   string
	}{
		{name: "both kind clusters translated, a third real", clusters: []api.Cluster{ca, cb, cc},
			translate: "10.244.0.0/16>240.0.0.0/16 10.96.0.0/12>240.16.0.0/12",
			allowed:   map[string]string{"b": "240.1.0.0/16 240.32.0.0/12", "c": "10.3.0.0/16 10.200.0.0/16"}},
		{name: "an untranslated local cluster reaches translated peers", clusters: []api.Cluster{
			{ID: "a", PodCIDRs: []string{"10.244.0.0/16"}, ServiceCIDRs: []string{"10.96.0.0/12"}, TunnelIP: "100.127.0.1"}, cb, cc},
			allowed: map[string]string{"b": "240.1.0.0/16 240.32.0.0/12", "c": "10.3.0.0/16 10.200.0.0/16"}},
		{name: "a peer still known by real CIDRs this cluster uses is skipped", clusters: []api.Cluster{ca, kind("b", "100.127.0.2"), cc},
			translate: "10.244.0.0/16>240.0.0.0/16 10.96.0.0/12>240.16.0.0/12",
			allowed:   map[string]string{"c": "10.3.0.0/16 10.200.0.0/16"}, problem: `"b": CIDR 10.244.0.0/16 overlaps local CIDR 10.244.0.0/16`},
		{name: "a peer claiming this cluster's mapped space is skipped", clusters: []api.Cluster{ca, kind("b", "100.127.0.2", tr("10.244.0.0/16", "240.0.0.0/16"), tr("10.96.0.0/12", "240.32.0.0/12")), cc},
			translate: "10.244.0.0/16>240.0.0.0/16 10.96.0.0/12>240.16.0.0/12",
			allowed:   map[string]string{"c": "10.3.0.0/16 10.200.0.0/16"}, problem: "overlaps this cluster's mapped CIDR 240.0.0.0/16"},
		{name: "a translation that does not parse is reported", clusters: []api.Cluster{kind("a", "100.127.0.1", tr("10.244.0.0/16", "240.0.0.0/15")), cb, cc},
			allowed: map[string]string{"b": "240.1.0.0/16 240.32.0.0/12", "c": "10.3.0.0/16 10.200.0.0/16"}, problem: "not the same family and size; not translated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Compute(local, api.Snapshot{Clusters: tc.clusters, Gateways: gws})
			var xl []string
			for _, x := range d.Firewall.Translate {
				xl = append(xl, x.Real.String()+">"+x.Mapped.String())
			}
			if got := strings.Join(xl, " "); got != tc.translate {
				t.Errorf("translations %q, want %q", got, tc.translate)
			}
			if got := fmtPrefixes(d.Firewall.Local); got != "10.244.0.0/16 10.96.0.0/12" {
				t.Errorf("local firewall set %q, want the real CIDRs", got)
			}
			got := map[string]string{}
			var remote []netip.Prefix
			for _, p := range d.Peers {
				got[p.Cluster] = fmtPrefixes(p.Peer.AllowedIPs[1:])
				remote = append(remote, p.Peer.AllowedIPs[1:]...)
			}
			if len(got) != len(tc.allowed) {
				t.Errorf("peers %v, want %v", got, tc.allowed)
			}
			for c, want := range tc.allowed {
				if got[c] != want {
					t.Errorf("peer %s allowed %q, want %q", c, got[c], want)
				}
			}
			if fmtPrefixes(d.Firewall.Remote) != fmtPrefixes(remote) {
				t.Errorf("remote firewall set %v, want the peers' mesh CIDRs %v", d.Firewall.Remote, remote)
			}
			joined := strings.Join(d.Problems, "; ")
			if (tc.problem == "") != (joined == "") || !strings.Contains(joined, tc.problem) {
				t.Errorf("problems %q, want %q", joined, tc.problem)
			}
		})
	}
}

func fmtPrefixes(ps []netip.Prefix) string {
	var ss []string
	for _, p := range ps {
		ss = append(ss, p.String())
	}
	return strings.Join(ss, " ")
}

package routeagent

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/routes"
	"github.com/tunnelmesh/tunnelmesh/pkg/vxlan"
)

func TestPlan(t *testing.T) {
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	w := Self{Name: "w", Interface: "eth0", MTU: 1500, Addresses: []netip.Prefix{p("172.18.0.4/24"), p("fd18::4/64")}}
	g := Gateway{Node: "g", Addresses: []netip.Addr{a("172.18.0.2"), a("fd18::2")}}
	far := Gateway{Node: "far", Addresses: []netip.Addr{a("10.9.0.2")}}
	local := []netip.Prefix{p("10.244.0.0/16")}
	remote := []netip.Prefix{p("10.50.0.0/16"), p("10.96.7.1/16"), p("10.50.0.0/16"), p("fd50::/64")} // unmasked, duplicated
	wantRemote := []netip.Prefix{p("10.50.0.0/16"), p("10.96.0.0/16"), p("fd50::/64")}
	exempt := Exemption{Sources: local, Destinations: wantRemote}
	macG := vxlan.MACFor(a("172.18.0.2"))
	dev := func(local string, remotes ...netip.Addr) *vxlan.Device {
		d := &vxlan.Device{Name: "tmesh-vx", VNI: vxlan.DefaultVNI, Port: vxlan.DefaultPort, MTU: 1450,
			Local: a(local), Underlay: "eth0", MAC: vxlan.MACFor(a(local)), Remotes: remotes}
		return d
	}
	workerDev := dev("172.18.0.4", a("172.18.0.2"))
	workerDev.Neighbors = []vxlan.Neighbor{{IP: NextHop4, MAC: macG}, {IP: NextHop6, MAC: macG}}
	activeDev := dev("172.18.0.2")
	activeDev.Addresses = []netip.Prefix{p("169.254.77.1/32"), p("fe80::746d:1/128")}

	tests := []struct {
		name    string
		in      Input
		want    Desired
		wantErr string
	}{
		{
			name: "vxlan worker: every remote CIDR via the gateway's VXLAN MAC; the port open to the nodes only",
			in:   Input{Self: w, Active: g, Local: local, Remote: remote, Nodes: []netip.Addr{a("172.18.0.9"), a("172.18.0.2"), a("::ffff:172.18.0.4")}},
			want: Desired{
				Routes: []routes.Route{
					{Dst: p("10.50.0.0/16"), Dev: "tmesh-vx", Gw: NextHop4, OnLink: true, Metric: RouteMetric},
					{Dst: p("10.96.0.0/16"), Dev: "tmesh-vx", Gw: NextHop4, OnLink: true, Metric: RouteMetric},
					{Dst: p("fd50::/64"), Dev: "tmesh-vx", Gw: NextHop6, Metric: RouteMetric},
				},
				Device: workerDev, Exempt: exempt, LooseRPF: []string{"eth0", "tmesh-vx"},
				Filter: &Filter{Port: vxlan.DefaultPort, Nodes: []netip.Prefix{p("172.18.0.2/32"), p("172.18.0.4/32"), p("172.18.0.9/32"), p("fd18::2/128"), p("fd18::4/128")}},
			},
		},
		{
			name: "vxlan on the active node: receive-only device, no routes",
			in:   Input{Self: Self{Name: "g", Interface: "eth0", MTU: 1500, Addresses: []netip.Prefix{p("172.18.0.2/24")}}, Active: g, Local: local, Remote: remote, Mode: ModeVXLAN},
			want: Desired{Device: activeDev, Exempt: exempt, LooseRPF: []string{"eth0", "tmesh-vx"},
				Filter: &Filter{Port: vxlan.DefaultPort, Nodes: []netip.Prefix{p("172.18.0.2/32"), p("fd18::2/128")}}},
		},
		{
			name: "vxlan crosses subnets",
			in:   Input{Self: w, Active: far, Local: local, Remote: []netip.Prefix{p("10.50.0.0/16")}, VNI: 7, Port: 9999},
			want: Desired{
				Routes: []routes.Route{{Dst: p("10.50.0.0/16"), Dev: "tmesh-vx", Gw: NextHop4, OnLink: true, Metric: RouteMetric}},
				Device: &vxlan.Device{Name: "tmesh-vx", VNI: 7, Port: 9999, MTU: 1450, Local: a("172.18.0.4"), Underlay: "eth0",
					MAC: vxlan.MACFor(a("172.18.0.4")), Remotes: []netip.Addr{a("10.9.0.2")},
					Neighbors: []vxlan.Neighbor{{IP: NextHop4, MAC: vxlan.MACFor(a("10.9.0.2"))}}},
				Exempt:   Exemption{Sources: local, Destinations: []netip.Prefix{p("10.50.0.0/16")}},
				LooseRPF: []string{"eth0", "tmesh-vx"},
				Filter:   &Filter{Port: 9999, Nodes: []netip.Prefix{p("10.9.0.2/32"), p("172.18.0.4/32"), p("fd18::4/128")}},
			},
		},
		{
			name: "vxlan over an IPv6-only underlay costs 70 bytes",
			in: Input{Self: Self{Name: "w", Interface: "eth0", MTU: 1500, Addresses: []netip.Prefix{p("fd18::4/64")}},
				Active: Gateway{Node: "g", Addresses: []netip.Addr{a("fd18::2")}}, Local: local, Remote: []netip.Prefix{p("fd50::/64")}},
			want: Desired{
				Routes: []routes.Route{{Dst: p("fd50::/64"), Dev: "tmesh-vx", Gw: NextHop6, Metric: RouteMetric}},
				Device: &vxlan.Device{Name: "tmesh-vx", VNI: vxlan.DefaultVNI, Port: vxlan.DefaultPort, MTU: 1430, Local: a("fd18::4"), Underlay: "eth0",
					MAC: vxlan.MACFor(a("fd18::4")), Remotes: []netip.Addr{a("fd18::2")},
					Neighbors: []vxlan.Neighbor{{IP: NextHop6, MAC: vxlan.MACFor(a("fd18::2"))}}},
				Exempt:   Exemption{Sources: local, Destinations: []netip.Prefix{p("fd50::/64")}},
				LooseRPF: []string{"eth0", "tmesh-vx"},
				Filter:   &Filter{Port: vxlan.DefaultPort, Nodes: []netip.Prefix{p("fd18::2/128"), p("fd18::4/128")}},
			},
		},
		{
			name: "direct worker: via the gateway's address of each family",
			in:   Input{Self: w, Active: g, Local: local, Remote: remote, Mode: ModeDirect, ReplyDevices: []string{"flannel.1", "eth0"}},
			want: Desired{
				Routes: []routes.Route{
					{Dst: p("10.50.0.0/16"), Dev: "eth0", Gw: a("172.18.0.2"), Metric: RouteMetric},
					{Dst: p("10.96.0.0/16"), Dev: "eth0", Gw: a("172.18.0.2"), Metric: RouteMetric},
					{Dst: p("fd50::/64"), Dev: "eth0", Gw: a("fd18::2"), Metric: RouteMetric},
				},
				Exempt: exempt, LooseRPF: []string{"eth0", "flannel.1"},
			},
		},
		{
			name: "direct on the active node: nothing to route",
			in:   Input{Self: Self{Name: "g", Interface: "eth0"}, Active: g, Local: local, Remote: remote, Mode: ModeDirect},
			want: Desired{Exempt: exempt, LooseRPF: []string{"eth0"}},
		},
		{
			name: "remote CIDRs that would hijack local traffic are refused, the rest routed",
			in: Input{Self: w, Active: far, Local: local, Mode: ModeDirect, Remote: []netip.Prefix{
				p("0.0.0.0/0"), p("10.244.7.0/24"), p("172.18.0.0/16"), p("10.9.0.0/24"), p("169.254.0.0/16"), p("224.0.0.0/4"), p("fd18::/48"),
			}},
			want: Desired{
				Exempt:   Exemption{Sources: local, Destinations: nil},
				LooseRPF: []string{"eth0"},
				Refused: []Refusal{
					{p("0.0.0.0/0"), "a default route"},
					{p("10.9.0.0/24"), "contains the gateway node's address 10.9.0.2"},
					{p("10.244.7.0/24"), "overlaps this cluster's pod CIDR 10.244.0.0/16"},
					{p("169.254.0.0/16"), "not a routable unicast range"},
					{p("172.18.0.0/16"), "overlaps this node's underlay subnet 172.18.0.0/24"},
					{p("224.0.0.0/4"), "not a routable unicast range"},
					{p("fd18::/48"), "overlaps this node's underlay subnet fd18::/64"},
				},
			},
		},
		{
			// A member claims ranges holding another node of this cluster (not
			// on this node's subnet), this node's DNS upstream, and one the
			// active gateway refused: none is routed, the rest is.
			name: "CIDRs covering any node, a DNS upstream or refused by the gateway are not routed",
			in: Input{Self: w, Active: g, Local: local, Mode: ModeDirect, Nodes: []netip.Addr{a("172.18.0.2"), a("172.18.0.4"), a("192.168.40.7")},
				DNS: []netip.Addr{a("8.8.8.8")}, GatewayRefused: []Refusal{{p("10.60.0.0/16"), "covers 172.18.0.100 (the local API server)"}},
				Remote: []netip.Prefix{p("192.168.0.0/16"), p("8.8.8.0/24"), p("10.60.0.0/16"), p("10.50.0.0/16")}},
			want: Desired{
				Routes:   []routes.Route{{Dst: p("10.50.0.0/16"), Gw: a("172.18.0.2"), Dev: "eth0", Metric: RouteMetric}},
				Exempt:   Exemption{Sources: local, Destinations: []netip.Prefix{p("10.50.0.0/16")}},
				LooseRPF: []string{"eth0"},
				Refused: []Refusal{
					{p("8.8.8.0/24"), "contains a DNS upstream of this node, 8.8.8.8"},
					{p("10.60.0.0/16"), "refused by the active gateway: covers 172.18.0.100 (the local API server)"},
					{p("192.168.0.0/16"), "contains a node of this cluster, 192.168.40.7"},
				},
			},
		},
		{name: "direct needs a shared subnet", in: Input{Self: w, Active: far, Local: local, Remote: remote, Mode: ModeDirect}, wantErr: `shares no IPv4 subnet with this node`},
		{name: "no active", in: Input{Self: w, Local: local, Remote: remote}, wantErr: ErrNoActive.Error()},
		{name: "no local CIDRs", in: Input{Self: w, Active: g, Remote: remote}, wantErr: "no local pod CIDRs"},
		{name: "bad mode", in: Input{Self: w, Active: g, Local: local, Mode: "ipip"}, wantErr: `mode "ipip"`},
		{name: "no MTU", in: Input{Self: Self{Name: "w", Addresses: w.Addresses}, Active: g, Local: local}, wantErr: "MTU is unknown"},
		{name: "no common family", in: Input{Self: Self{Name: "w", MTU: 1500, Addresses: []netip.Prefix{p("fd18::4/64")}}, Active: far, Local: local}, wantErr: "no address family in common"},
		{name: "no name", in: Input{Active: g, Local: local}, wantErr: "name is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Plan(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
				if got.Device != nil && tc.want.Device != nil {
					t.Errorf("device got %+v\nwant %+v", *got.Device, *tc.want.Device)
				}
			}
		})
	}
	if _, err := Plan(Input{Self: w, Local: local}); !errors.Is(err, ErrNoActive) {
		t.Errorf("no active: %v is not ErrNoActive", err)
	}
}

// A failover changes the device's destination and neighbour only: the routes stay
// byte for byte the same, so no route is rewritten when the active node moves.
func TestPlanFailoverKeepsRoutes(t *testing.T) {
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	in := Input{Self: Self{Name: "w", Interface: "eth0", MTU: 1500, Addresses: []netip.Prefix{p("172.18.0.4/24")}},
		Active: Gateway{Node: "g1", Addresses: []netip.Addr{a("172.18.0.2")}}, Local: []netip.Prefix{p("10.244.0.0/16")}, Remote: []netip.Prefix{p("10.50.0.0/16")}}
	before, err := Plan(in)
	if err != nil {
		t.Fatal(err)
	}
	in.Active = Gateway{Node: "g2", Addresses: []netip.Addr{a("172.18.0.3")}}
	after, err := Plan(in)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before.Routes, after.Routes) {
		t.Errorf("routes changed on failover: %v -> %v", before.Routes, after.Routes)
	}
	if after.Device.Remotes[0] != a("172.18.0.3") || after.Device.Neighbors[0].MAC.String() != "0e:74:ac:12:00:03" {
		t.Errorf("device not moved to g2: %+v", after.Device)
	}
}

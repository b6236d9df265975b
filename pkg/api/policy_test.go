package api_test

import (
	"net/netip"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

func TestPolicyCheck(t *testing.T) {
	def := api.DefaultPolicy()
	tight := api.Policy{AllowedCIDRs: []string{"10.1.0.0/16", "fd00:1::/48"}, MinPrefixLengthIPv4: 20, MinPrefixLengthIPv6: 64}
	tests := []struct {
		name      string
		pol       api.Policy
		pod, svc  []string
		wantField string
	}{
		{name: "kind's defaults", pol: def, pod: []string{"10.244.0.0/16"}, svc: []string{"10.96.0.0/16"}},
		{name: "every private block whole", pol: def, pod: []string{"172.16.0.0/12", "fd00:10::/48"}, svc: []string{"192.168.0.0/16"}},
		{name: "CGNAT", pol: def, pod: []string{"100.64.0.0/16"}, svc: []string{"10.96.0.0/16"}},
		{name: "public DNS", pol: def, pod: []string{"8.8.8.0/24"}, svc: []string{"10.96.0.0/16"}, wantField: "podCIDRs[0]"},
		{name: "straddles a private block", pol: def, pod: []string{"10.1.0.0/16"}, svc: []string{"172.0.0.0/11"}, wantField: "serviceCIDRs[0]"},
		{name: "wider than /12", pol: def, pod: []string{"10.0.0.0/11"}, svc: []string{"10.96.0.0/16"}, wantField: "podCIDRs[0]"},
		{name: "a second pod CIDR outside", pol: def, pod: []string{"10.1.0.0/16", "2001:db8::/48"}, svc: []string{"10.96.0.0/16"}, wantField: "podCIDRs[1]"},
		{name: "IPv6 wider than /48", pol: def, pod: []string{"fd00::/40"}, svc: []string{"10.96.0.0/16"}, wantField: "podCIDRs[0]"},
		{name: "tight: inside", pol: tight, pod: []string{"10.1.0.0/20"}, svc: []string{"fd00:1:0:1::/64"}},
		{name: "tight: too wide", pol: tight, pod: []string{"10.1.0.0/19"}, svc: []string{"fd00:1:0:1::/64"}, wantField: "podCIDRs[0]"},
		{name: "no minimum", pol: api.Policy{AllowedCIDRs: []string{"0.0.0.0/0"}}, pod: []string{"1.0.0.0/8"}, svc: []string{"64.0.0.0/3"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := api.JoinRequest{ClusterID: "c", PodCIDRs: tc.pod, ServiceCIDRs: tc.svc}
			var ps []netip.Prefix
			for _, s := range append(append([]string{}, tc.pod...), tc.svc...) {
				ps = append(ps, netip.MustParsePrefix(s))
			}
			err := tc.pol.Check(req, ps)
			switch {
			case tc.wantField == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantField != "" && (err == nil || err.Code != api.CodeOutsidePolicy || err.Field != tc.wantField):
				t.Fatalf("got %+v; want OutsidePolicy on %s", err, tc.wantField)
			}
			// Outside flags the same CIDRs of a member that joined.
			out := tc.pol.Outside([]api.Cluster{{ID: "c", PodCIDRs: tc.pod, ServiceCIDRs: tc.svc}})
			if (len(out) > 0) != (tc.wantField != "") {
				t.Fatalf("Outside = %+v, Check = %v", out, err)
			}
		})
	}
}

func TestCheckCoversGateways(t *testing.T) {
	gws := []api.Gateway{{ClusterID: "east", Hostname: "e1", PrivateIP: "172.18.0.3", PublicIP: "203.0.113.9"},
		{ClusterID: "west", Hostname: "w1", PrivateIP: "fd00:18::4"}}
	for _, tc := range []struct {
		pod, svc       string
		field, cluster string
	}{
		{pod: "10.5.0.0/16", svc: "10.105.0.0/16"},
		{pod: "172.18.0.0/16", svc: "10.105.0.0/16", field: "podCIDRs[0]", cluster: "east"},
		{pod: "10.5.0.0/16", svc: "fd00:18::/64", field: "serviceCIDRs[0]", cluster: "west"},
		{pod: "203.0.113.0/24", svc: "10.105.0.0/16", field: "podCIDRs[0]", cluster: "east"},
	} {
		req := api.JoinRequest{ClusterID: "new", PodCIDRs: []string{tc.pod}, ServiceCIDRs: []string{tc.svc}}
		err := api.CheckCoversGateways(gws, req, []netip.Prefix{netip.MustParsePrefix(tc.pod), netip.MustParsePrefix(tc.svc)})
		if tc.field == "" && err != nil || tc.field != "" && (err == nil || err.Code != api.CodeCIDROverlap || err.Field != tc.field || err.Cluster != tc.cluster) {
			t.Errorf("pods %s services %s: %+v; want %q naming %q", tc.pod, tc.svc, err, tc.field, tc.cluster)
		}
	}
}

func TestEndpointSlices(t *testing.T) {
	ep := func(addr string, port int32) api.Endpoint {
		return api.Endpoint{Addresses: []string{addr}, Ports: []api.ServicePort{{Name: "p", Protocol: "TCP", Port: port}}}
	}
	var eps []api.Endpoint
	for i := range 250 {
		eps = append(eps, ep(netip.AddrFrom4([4]byte{10, 1, byte(i / 200), byte(i%200 + 1)}).String(), 80))
	}
	if n := api.EndpointSlices(eps); n != 3 {
		t.Errorf("250 endpoints of one port set: %d slices, want 3", n)
	}
	eps = append(eps, ep("fd00::1", 80), ep("10.1.9.9", 81), api.Endpoint{Addresses: []string{"10.1.9.10", "fd00::2"}})
	// + one IPv6 slice, one for the other port set, one of each family for the portless dual-stack endpoint
	if n := api.EndpointSlices(eps); n != 7 {
		t.Errorf("mixed: %d slices, want 7", n)
	}
}

package api_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

func TestCheckOverlaps(t *testing.T) {
	tunnel := netip.MustParsePrefix("100.127.0.0/16")
	east := api.Cluster{ID: "east", PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.101.0.0/16"}}
	west := api.Cluster{ID: "west", PodCIDRs: []string{"10.2.0.0/16"}, ServiceCIDRs: []string{"fd00:2::/64"}}
	tests := []struct {
		name        string
		pod, svc    []string
		wantField   string
		wantCluster string
		wantMsg     string
	}{
		{name: "disjoint", pod: []string{"10.3.0.0/16"}, svc: []string{"10.103.0.0/16"}},
		{name: "inside another pod CIDR", pod: []string{"10.1.128.0/17"}, svc: []string{"10.103.0.0/16"},
			wantField: "podCIDRs[0]", wantCluster: "east", wantMsg: "overlaps 10.1.0.0/16 of cluster \"east\""},
		{name: "service CIDR covers another's", pod: []string{"10.3.0.0/16"}, svc: []string{"10.100.0.0/14"},
			wantField: "serviceCIDRs[0]", wantCluster: "east"},
		{name: "IPv6 overlap", pod: []string{"10.3.0.0/16"}, svc: []string{"fd00:2::/48"},
			wantField: "serviceCIDRs[0]", wantCluster: "west"},
		{name: "tunnel pool", pod: []string{"100.127.4.0/24"}, svc: []string{"10.103.0.0/16"},
			wantField: "podCIDRs[0]", wantMsg: "tunnel CIDR"},
		{name: "second service CIDR", pod: []string{"10.3.0.0/16"}, svc: []string{"10.103.0.0/16", "10.2.5.0/24"},
			wantField: "serviceCIDRs[1]", wantCluster: "west"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := api.JoinRequest{ClusterID: "new", PodCIDRs: tc.pod, ServiceCIDRs: tc.svc}
			var ps []netip.Prefix
			for _, s := range append(append([]string{}, tc.pod...), tc.svc...) {
				ps = append(ps, netip.MustParsePrefix(s))
			}
			err := api.CheckOverlaps(tunnel, []api.Cluster{west, east}, req, ps)
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if err == nil || err.Code != api.CodeCIDROverlap || err.Field != tc.wantField || err.Cluster != tc.wantCluster ||
				!strings.Contains(err.Message, tc.wantMsg) {
				t.Fatalf("got %+v; want CIDROverlap on %s naming %q and saying %q", err, tc.wantField, tc.wantCluster, tc.wantMsg)
			}
		})
	}
}

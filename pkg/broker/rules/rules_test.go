package rules

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

func TestAllocateTunnelIP(t *testing.T) {
	pool := netip.MustParsePrefix("100.127.0.0/30") // .1 and .2 usable
	tests := []struct {
		name  string
		taken []string
		want  string // "" = exhausted
	}{
		{name: "empty pool gives the first host", want: "100.127.0.1"},
		{name: "lowest free", taken: []string{"100.127.0.1"}, want: "100.127.0.2"},
		{name: "a removed cluster's address is reused", taken: []string{"100.127.0.2"}, want: "100.127.0.1"},
		{name: "full (broadcast never used)", taken: []string{"100.127.0.1", "100.127.0.2"}},
		{name: "garbage addresses ignored", taken: []string{"not-an-ip"}, want: "100.127.0.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var cs []api.Cluster
			for i, a := range tc.taken {
				cs = append(cs, api.Cluster{ID: string(rune('a' + i)), TunnelIP: a})
			}
			a, err := AllocateTunnelIP(pool, cs)
			if tc.want == "" {
				if err == nil || err.Code != api.CodeExhausted {
					t.Fatalf("got %v %v, want Exhausted", a, err)
				}
				return
			}
			if err != nil || a.String() != tc.want {
				t.Fatalf("got %v %v, want %s", a, err, tc.want)
			}
		})
	}
}

func gw(cluster, host string, active bool, epoch int64, key string) api.Gateway {
	return api.Gateway{ClusterID: cluster, Hostname: host, PrivateIP: "192.0.2.1", Port: 51820, PublicKey: key,
		Active: active, Epoch: epoch}
}

func TestRegistration(t *testing.T) {
	clusters := []api.Cluster{{ID: "a", PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.101.0.0/16"}},
		{ID: "b", PodCIDRs: []string{"10.2.0.0/16"}, ServiceCIDRs: []string{"fd00:2::/64"},
			Translations: []api.Translation{{Real: "10.2.0.0/16", Mapped: "240.2.0.0/16"}}}}
	at := func(g api.Gateway, private, public string) api.Gateway {
		g.PrivateIP, g.PublicIP = private, public
		return g
	}
	many := func(n int) []api.Gateway {
		var out []api.Gateway
		for i := range n {
			out = append(out, gw("a", fmt.Sprintf("a%02d", i), false, 0, "KA"))
		}
		return out
	}
	a1 := gw("a", "a1", true, 5, "KA")
	a2 := gw("a", "a2", false, 0, "KA")
	b1 := gw("b", "b1", true, 9, "KB")
	tests := []struct {
		name     string
		existing []api.Gateway
		g        api.Gateway
		want     []string // "host:active" of the writes, in order
		errField string
		errCode  string // default Conflict
		cluster  string // the error's Cluster, when errField is set
	}{
		{name: "first gateway", g: a1, want: []string{"a1:true"}},
		{name: "unchanged re-registration writes nothing", existing: []api.Gateway{a1, b1}, g: a1},
		{name: "standby registers beside the active", existing: []api.Gateway{a1}, g: a2, want: []string{"a2:false"}},
		{name: "higher epoch takes over", existing: []api.Gateway{a1, a2, b1}, g: gw("a", "a2", true, 6, "KA"),
			want: []string{"a1:false", "a2:true"}},
		{name: "equal epoch takes over", existing: []api.Gateway{a1, b1}, g: gw("a", "a2", true, 5, "KA"),
			want: []string{"a1:false", "a2:true"}},
		{name: "lower epoch refused", existing: []api.Gateway{a1, b1}, g: gw("a", "a2", true, 4, "KA"), errField: "epoch", cluster: "a"},
		{name: "old active re-claiming with its old epoch is refused",
			existing: []api.Gateway{gw("a", "a1", false, 5, "KA"), gw("a", "a2", true, 6, "KA")},
			g:        gw("a", "a1", true, 5, "KA"), errField: "epoch", cluster: "a"},
		{name: "same host lowering its epoch is refused", existing: []api.Gateway{a1}, g: gw("a", "a1", true, 3, "KA"), errField: "epoch", cluster: "a"},
		{name: "a lower epoch may still register as standby", existing: []api.Gateway{a1}, g: gw("a", "a3", false, 1, "KA"),
			want: []string{"a3:false"}},
		{name: "epochs of other clusters do not fence", existing: []api.Gateway{b1}, g: gw("a", "a1", true, 1, "KA"),
			want: []string{"a1:true"}},
		{name: "no active gateway: any epoch", existing: []api.Gateway{gw("a", "a1", false, 7, "KA")}, g: gw("a", "a2", true, 0, "KA"),
			want: []string{"a2:true"}},
		{name: "negative epoch refused", g: gw("a", "a1", true, -1, "KA"), errField: "epoch", errCode: api.CodeInvalid},
		{name: "key of another cluster refused", existing: []api.Gateway{b1}, g: gw("a", "a1", true, 0, "KB"), errField: "publicKey", cluster: "b"},
		{name: "endpoint inside another cluster's pod CIDR", g: at(a1, "10.2.0.7", ""), errField: "privateIP", cluster: "b"},
		{name: "public IP inside another cluster's IPv6 service CIDR", g: at(a1, "192.0.2.1", "fd00:2::7"), errField: "publicIP", cluster: "b"},
		{name: "endpoint inside its own service CIDR", g: at(a1, "10.101.3.3", ""), errField: "privateIP", cluster: "a"},
		{name: "endpoint inside another cluster's mapped pod CIDR", g: at(a1, "240.2.0.7", ""), errField: "privateIP", cluster: "b"},
		{name: "endpoint inside the tunnel pool", g: at(a1, "100.127.0.2", ""), errField: "privateIP"},
		{name: "a gateway beyond the cap", existing: many(16), g: gw("a", "a99", false, 0, "KA"), errField: "hostname",
			errCode: api.CodeQuotaExceeded, cluster: "a"},
		{name: "a known gateway registers again at the cap", existing: many(16), g: gw("a", "a03", true, 1, "KA"),
			want: []string{"a03:true"}},
		{name: "re-registration clears stale", existing: []api.Gateway{func() api.Gateway { g := a1; g.Stale = true; return g }()},
			g: a1, want: []string{"a1:true"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := Members{Clusters: clusters, Gateways: tc.existing, Tunnel: netip.MustParsePrefix("100.127.0.0/16"), MaxGatewaysPerCluster: 16}
			out, err := Registration(m, tc.g)
			if tc.errField != "" {
				code := tc.errCode
				if code == "" {
					code = api.CodeConflict
				}
				if err == nil || err.Code != code || err.Field != tc.errField || err.Cluster != tc.cluster {
					t.Fatalf("got %v, %+v; want %s on %s naming %q", out, err, code, tc.errField, tc.cluster)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, g := range out {
				got = append(got, g.Hostname+":"+map[bool]string{true: "true", false: "false"}[g.Active])
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("writes = %v, want %v", got, tc.want)
			}
		})
	}
}

package rules

import (
	"fmt"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

func TestPublication(t *testing.T) {
	joined := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	now := joined.Add(48 * time.Hour)
	east := api.Cluster{ID: "east", PodCIDRs: []string{"10.1.0.0/16", "fd00:1::/64"}, ServiceCIDRs: []string{"10.101.0.0/16"}, JoinedAt: joined}
	// the same cluster translated (its IPv4 CIDRs overlap another member's):
	// the mesh knows its pods and ClusterIPs only at their mapped addresses
	translated := east
	translated.Translations = []api.Translation{{Real: "10.1.0.0/16", Mapped: "240.1.0.0/16"}, {Real: "10.101.0.0/16", Mapped: "240.2.0.0/16"}}
	lim := ExportLimits{PerCluster: 3, SlicesPerExport: 4}
	ep := func(addrs ...string) api.Endpoint { return api.Endpoint{Addresses: addrs, Ready: true} }
	exp := func(ips []string, eps ...api.Endpoint) api.Export {
		return api.Export{ClusterID: "east", Namespace: "ns", Name: "web", Type: api.TypeClusterSetIP, IPs: ips,
			CreatedAt: time.Unix(0, 0).UTC(), Endpoints: eps}
	}
	stored := func(at time.Time) *api.Export { e := exp(nil); e.CreatedAt = at; return &e }
	ported := func(n int) []api.Endpoint { // n endpoints, a port set each
		var out []api.Endpoint
		for i := range n {
			e := ep(fmt.Sprintf("10.1.0.%d", i+1))
			e.Ports = []api.ServicePort{{Name: "p", Protocol: "TCP", Port: int32(1000 + i)}}
			out = append(out, e)
		}
		return out
	}
	tests := []struct {
		name    string
		c       *api.Cluster // default east
		old     *api.Export
		count   int
		e       api.Export
		field   string // "" = accepted
		code    string // default Invalid
		created time.Time
	}{
		{name: "own pods behind own ClusterIP: the broker's time, not the exporter's", e: exp([]string{"10.101.0.10"}, ep("10.1.0.5"), ep("fd00:1::5")), created: now},
		{name: "headless, no endpoints", e: exp(nil), created: now},
		{name: "another cluster's pod", e: exp(nil, ep("10.2.0.5")), field: "endpoints[0].addresses[0]"},
		{name: "its own service range (the API server's ClusterIP)", e: exp(nil, ep("10.101.0.1")), field: "endpoints[0].addresses[0]"},
		{name: "a public address beside a pod", e: exp(nil, ep("10.1.0.5"), ep("10.1.0.6", "8.8.8.8")), field: "endpoints[1].addresses[1]"},
		{name: "an IPv6 address outside its IPv6 pod CIDR", e: exp(nil, ep("fd00:2::5")), field: "endpoints[0].addresses[0]"},
		{name: "a ClusterIP outside its service CIDRs", e: exp([]string{"10.1.0.10"}), field: "ips[0]"},
		{name: "an update keeps the first receipt's time", old: stored(joined.Add(time.Hour)), count: 1, e: exp(nil), created: joined.Add(time.Hour)},
		{name: "a time kept from before the broker kept its own is not before the join", old: stored(time.Unix(0, 0)), count: 1, e: exp(nil), created: joined},
		{name: "a new export at the cap", count: 3, e: exp(nil), field: "", code: api.CodeQuotaExceeded},
		{name: "an update at the cap", old: stored(joined), count: 3, e: exp(nil), created: joined},
		{name: "slices at the cap", e: exp(nil, ported(4)...), created: now},
		{name: "slices beyond the cap", e: exp(nil, ported(5)...), field: "endpoints"},
		{name: "translated: mapped pods behind the mapped ClusterIP, untranslated IPv6 as is", c: &translated,
			e: exp([]string{"240.2.0.10"}, ep("240.1.0.5"), ep("fd00:1::5")), created: now},
		{name: "translated: a real pod address (in the mesh, another cluster's pod or the importer's own)", c: &translated,
			e: exp(nil, ep("10.1.0.5")), field: "endpoints[0].addresses[0]"},
		{name: "translated: the real ClusterIP", c: &translated, e: exp([]string{"10.101.0.10"}), field: "ips[0]"},
		{name: "untranslated: a mapped-looking address", e: exp(nil, ep("240.1.0.5")), field: "endpoints[0].addresses[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := east
			if tc.c != nil {
				c = *tc.c
			}
			got, err := Publication(c, tc.old, tc.count, tc.e, lim, now)
			if tc.field != "" || tc.code != "" {
				code := tc.code
				if code == "" {
					code = api.CodeInvalid
				}
				if err == nil || err.Code != code || err.Field != tc.field {
					t.Fatalf("got %+v; want %s on %q", err, code, tc.field)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.CreatedAt.Equal(tc.created) {
				t.Fatalf("createdAt %s, want %s", got.CreatedAt, tc.created)
			}
		})
	}
}

package api_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

func TestMapAddr(t *testing.T) {
	tests := []struct {
		a, from, to, want string
	}{
		{"10.244.3.7", "10.244.0.0/16", "240.1.0.0/16", "240.1.3.7"},
		{"10.244.0.0", "10.244.0.0/16", "240.1.0.0/16", "240.1.0.0"},
		{"10.244.255.255", "10.244.0.0/16", "240.1.0.0/16", "240.1.255.255"},
		{"10.111.22.33", "10.96.0.0/12", "240.16.0.0/12", "240.31.22.33"}, // a /12 splits a byte
		{"10.96.0.1", "10.96.0.0/12", "240.16.0.0/12", "240.16.0.1"},
		{"10.1.3.3", "10.1.2.0/23", "240.0.6.0/23", "240.0.7.3"},
		{"240.1.3.7", "240.1.0.0/16", "10.244.0.0/16", "10.244.3.7"},
		{"fd00:10:244::5", "fd00:10:244::/64", "fc00:0:0:7::/64", "fc00:0:0:7::5"},
		{"fd00:10:244:0:1:2:3:4", "fd00:10:244::/56", "fc00:1::/56", "fc00:1::1:2:3:4"},
		// outside from, or prefixes that differ: unchanged
		{"10.245.0.1", "10.244.0.0/16", "240.1.0.0/16", "10.245.0.1"},
		{"10.244.0.1", "10.244.0.0/16", "240.1.0.0/15", "10.244.0.1"},
		{"10.244.0.1", "10.244.0.0/16", "fc00::/112", "10.244.0.1"},
	}
	for _, tc := range tests {
		got := api.MapAddr(netip.MustParseAddr(tc.a), netip.MustParsePrefix(tc.from), netip.MustParsePrefix(tc.to))
		if got.String() != tc.want {
			t.Errorf("MapAddr(%s, %s, %s) = %s, want %s", tc.a, tc.from, tc.to, got, tc.want)
		}
	}
}

func TestClusterMeshView(t *testing.T) {
	c := api.Cluster{ID: "a", PodCIDRs: []string{"10.244.0.0/16", "10.9.0.0/24"}, ServiceCIDRs: []string{"10.96.0.0/12"},
		Translations: []api.Translation{{Real: "10.244.0.0/16", Mapped: "240.0.0.0/16"}, {Real: "10.96.0.0/12", Mapped: "240.16.0.0/12"}}}
	if got := strings.Join(c.MeshCIDRs(), ","); got != "240.0.0.0/16,10.9.0.0/24,240.16.0.0/12" {
		t.Fatalf("MeshCIDRs = %s", got)
	}
	for _, tc := range []struct{ real, mesh string }{
		{"10.244.1.5", "240.0.1.5"}, {"10.111.0.10", "240.31.0.10"}, {"10.9.0.3", "10.9.0.3"}, {"192.0.2.1", "192.0.2.1"},
	} {
		m := c.ToMesh(netip.MustParseAddr(tc.real))
		if m.String() != tc.mesh {
			t.Errorf("ToMesh(%s) = %s, want %s", tc.real, m, tc.mesh)
		}
		if r := c.ToReal(m); r.String() != tc.real {
			t.Errorf("ToReal(%s) = %s, want %s", m, r, tc.real)
		}
	}
	if (api.Cluster{}).Translated() || !c.Translated() {
		t.Fatal("Translated is wrong")
	}
}

func TestCheckMesh(t *testing.T) {
	tr := func(real, mapped string) api.Translation { return api.Translation{Real: real, Mapped: mapped} }
	cl := func(id, pod, svc string, ts ...api.Translation) api.Cluster {
		return api.Cluster{ID: id, PodCIDRs: []string{pod}, ServiceCIDRs: []string{svc}, Translations: ts}
	}
	tests := []struct {
		name     string
		clusters []api.Cluster
		want     []string // substrings, one per problem, in order
	}{
		{name: "disjoint, no translation", clusters: []api.Cluster{cl("a", "10.1.0.0/16", "10.101.0.0/16"), cl("b", "10.2.0.0/16", "10.102.0.0/16")}},
		{name: "identical CIDRs, both translated", clusters: []api.Cluster{
			cl("a", "10.244.0.0/16", "10.96.0.0/12", tr("10.244.0.0/16", "240.0.0.0/16"), tr("10.96.0.0/12", "240.16.0.0/12")),
			cl("b", "10.244.0.0/16", "10.96.0.0/12", tr("10.244.0.0/16", "240.1.0.0/16"), tr("10.96.0.0/12", "240.32.0.0/12")),
			cl("c", "10.3.0.0/16", "10.200.0.0/16")}},
		{name: "overlap without translation", clusters: []api.Cluster{cl("a", "10.1.0.0/16", "10.101.0.0/16"), cl("b", "10.1.0.0/17", "10.102.0.0/16")},
			want: []string{`clusters "a" and "b" share mesh addresses: 10.1.0.0/16 overlaps 10.1.0.0/17`,
				`cluster "a" cannot reach "b"`, `cluster "b" cannot reach "a"`}},
		{name: "only one side translated: the other cannot reach it", clusters: []api.Cluster{
			cl("a", "10.244.0.0/16", "10.101.0.0/16", tr("10.244.0.0/16", "240.0.0.0/16")), cl("b", "10.244.0.0/16", "10.102.0.0/16")},
			want: []string{`cluster "a" cannot reach "b": its own CIDR 10.244.0.0/16 overlaps 10.244.0.0/16`}},
		{name: "two translated clusters share mapped space", clusters: []api.Cluster{
			cl("a", "10.244.0.0/16", "10.101.0.0/16", tr("10.244.0.0/16", "240.0.0.0/16")),
			cl("b", "10.244.0.0/16", "10.102.0.0/16", tr("10.244.0.0/16", "240.0.0.0/16"))},
			want: []string{`clusters "a" and "b" share mesh addresses: 240.0.0.0/16 overlaps 240.0.0.0/16`}},
		{name: "a mapped CIDR inside another's real CIDR", clusters: []api.Cluster{
			cl("a", "10.244.0.0/16", "10.101.0.0/16", tr("10.244.0.0/16", "10.2.0.0/16")), cl("b", "10.2.0.0/15", "10.102.0.0/16")},
			want: []string{`share mesh addresses: 10.2.0.0/16 overlaps 10.2.0.0/15`, `cluster "b" cannot reach "a"`}},
		{name: "bad translations", clusters: []api.Cluster{
			cl("a", "10.244.0.0/16", "10.101.0.0/16", tr("10.244.0.0/16", "240.0.0.0/15"), tr("10.9.0.0/16", "240.9.0.0/16"))},
			want: []string{"not the same family and size", "translation of 10.9.0.0/16, which is none of its CIDRs"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := api.CheckMesh(tc.clusters)
			if len(got) != len(tc.want) {
				t.Fatalf("problems %q, want %d like %q", got, len(tc.want), tc.want)
			}
			for i := range got {
				if !strings.Contains(got[i], tc.want[i]) {
					t.Errorf("problem %d: %q, want %q", i, got[i], tc.want[i])
				}
			}
		})
	}
}

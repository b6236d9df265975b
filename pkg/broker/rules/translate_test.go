package rules

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

var plan = AddressPlan{
	Tunnel: netip.MustParsePrefix("100.127.0.0/16"),
	Mapped: []netip.Prefix{netip.MustParsePrefix("240.0.0.0/5"), netip.MustParsePrefix("fc00::/8")},
}

func tr(real, mapped string) api.Translation { return api.Translation{Real: real, Mapped: mapped} }

func member(id, pod, svc string, ts ...api.Translation) api.Cluster {
	return api.Cluster{ID: id, PodCIDRs: strings.Split(pod, ","), ServiceCIDRs: strings.Split(svc, ","), Translations: ts}
}

func joinReq(pod, svc string) (api.JoinRequest, []netip.Prefix) {
	req := api.JoinRequest{ClusterID: "new", PodCIDRs: strings.Split(pod, ","), ServiceCIDRs: strings.Split(svc, ",")}
	var ps []netip.Prefix
	for _, s := range slices.Concat(req.PodCIDRs, req.ServiceCIDRs) {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return req, ps
}

func fmtTr(ts []api.Translation) string {
	var ss []string
	for _, t := range ts {
		ss = append(ss, t.Real+">"+t.Mapped)
	}
	return strings.Join(ss, " ")
}

func TestJoin(t *testing.T) {
	kindA := member("a", "10.244.0.0/16", "10.96.0.0/12")
	kindATr := member("a", "10.244.0.0/16", "10.96.0.0/12", tr("10.244.0.0/16", "240.0.0.0/16"), tr("10.96.0.0/12", "240.16.0.0/12"))
	kindBTr := member("b", "10.244.0.0/16", "10.96.0.0/12", tr("10.244.0.0/16", "240.1.0.0/16"), tr("10.96.0.0/12", "240.32.0.0/12"))
	other := member("c", "10.3.0.0/16", "10.200.0.0/16")
	tests := []struct {
		name     string
		plan     AddressPlan
		members  []api.Cluster
		pod, svc string
		own      string            // joiner's translations, fmtTr
		changed  map[string]string // member -> its translations after, fmtTr
		errCode  string
		errField string
		errWords string
	}{
		{name: "no overlap: real CIDRs", members: []api.Cluster{kindA, other}, pod: "10.4.0.0/16", svc: "10.201.0.0/16"},
		{name: "kind's defaults twice: both clusters translated, the member live",
			members: []api.Cluster{kindA, other}, pod: "10.244.0.0/16", svc: "10.96.0.0/12",
			own:     "10.244.0.0/16>240.1.0.0/16 10.96.0.0/12>240.32.0.0/12",
			changed: map[string]string{"a": "10.244.0.0/16>240.0.0.0/16 10.96.0.0/12>240.16.0.0/12"}},
		{name: "a third with the same CIDRs: only the joiner",
			members: []api.Cluster{kindATr, kindBTr, other}, pod: "10.244.0.0/16", svc: "10.96.0.0/12",
			own: "10.244.0.0/16>240.2.0.0/16 10.96.0.0/12>240.48.0.0/12"},
		{name: "only the overlapping CIDR is translated",
			members: []api.Cluster{kindA, other}, pod: "10.244.0.0/16", svc: "10.202.0.0/16",
			own: "10.244.0.0/16>240.1.0.0/16", changed: map[string]string{"a": "10.244.0.0/16>240.0.0.0/16"}},
		{name: "a pod CIDR over a member's service CIDR",
			members: []api.Cluster{other}, pod: "10.200.128.0/17", svc: "10.202.0.0/16",
			own: "10.200.128.0/17>240.1.0.0/17", changed: map[string]string{"c": "10.200.0.0/16>240.0.0.0/16"}},
		{name: "one joiner CIDR over two members",
			members: []api.Cluster{member("a", "10.1.0.0/16", "10.201.0.0/16"), member("b", "10.2.0.0/16", "10.202.0.0/16")},
			pod:     "10.0.0.0/14", svc: "10.203.0.0/16",
			own:     "10.0.0.0/14>240.4.0.0/14",
			changed: map[string]string{"a": "10.1.0.0/16>240.0.0.0/16", "b": "10.2.0.0/16>240.1.0.0/16"}},
		{name: "IPv6 from the IPv6 pool",
			members: []api.Cluster{member("a", "10.1.0.0/16,fd00:1::/64", "10.201.0.0/16")}, pod: "10.2.0.0/16,fd00:1::/64", svc: "10.202.0.0/16",
			own: "fd00:1::/64>fc00:0:0:1::/64", changed: map[string]string{"a": "fd00:1::/64>fc00::/64"}},
		{name: "refused by policy", plan: AddressPlan{Tunnel: plan.Tunnel, Mapped: plan.Mapped, Overlap: api.OverlapRefuse},
			members: []api.Cluster{kindA}, pod: "10.244.0.0/16", svc: "10.202.0.0/16",
			errCode: api.CodeCIDROverlap, errField: "podCIDRs[0]", errWords: "overlap: refuse"},
		{name: "refuse policy, no overlap", plan: AddressPlan{Tunnel: plan.Tunnel, Mapped: plan.Mapped, Overlap: api.OverlapRefuse},
			members: []api.Cluster{kindA}, pod: "10.245.0.0/16", svc: "10.202.0.0/16"},
		{name: "the tunnel pool is never translated", members: []api.Cluster{kindA}, pod: "100.127.0.0/24", svc: "10.202.0.0/16",
			errCode: api.CodeCIDROverlap, errField: "podCIDRs[0]", errWords: "tunnel CIDR"},
		{name: "the mapped pool is never a real CIDR", members: []api.Cluster{kindA}, pod: "10.9.0.0/16", svc: "241.0.0.0/16",
			errCode: api.CodeCIDROverlap, errField: "serviceCIDRs[0]", errWords: "mapped pool 240.0.0.0/5"},
		{name: "a mapped CIDR left outside a moved pool", plan: AddressPlan{Tunnel: plan.Tunnel, Mapped: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}},
			members: []api.Cluster{kindATr}, pod: "240.0.0.0/17", svc: "10.202.0.0/16",
			errCode: api.CodeCIDROverlap, errField: "podCIDRs[0]", errWords: `mapped CIDR of cluster "a"`},
		{name: "no room in the pool", plan: AddressPlan{Tunnel: plan.Tunnel, Mapped: []netip.Prefix{netip.MustParsePrefix("240.0.0.0/15")}},
			members: []api.Cluster{kindA}, pod: "10.244.0.0/16", svc: "10.96.0.0/12",
			errCode: api.CodeExhausted, errWords: "no free /12 for 10.96.0.0/12"},
		{name: "no IPv6 range in the pool", plan: AddressPlan{Tunnel: plan.Tunnel, Mapped: plan.Mapped[:1]},
			members: []api.Cluster{member("a", "fd00:1::/64", "10.201.0.0/16")}, pod: "fd00:1::/64", svc: "10.202.0.0/16",
			errCode: api.CodeExhausted, errWords: "add an IPv6 range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.plan
			if !p.Tunnel.IsValid() {
				p = plan
			}
			req, prefixes := joinReq(tc.pod, tc.svc)
			own, changed, err := Join(p, tc.members, req, prefixes)
			if tc.errCode != "" {
				if err == nil || err.Code != tc.errCode || err.Field != tc.errField || !strings.Contains(err.Message, tc.errWords) {
					t.Fatalf("got %v; want %s on %q saying %q", err, tc.errCode, tc.errField, tc.errWords)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := fmtTr(own); got != tc.own {
				t.Errorf("joiner's translations %q, want %q", got, tc.own)
			}
			got := map[string]string{}
			for _, c := range changed {
				got[c.ID] = fmtTr(c.Translations)
			}
			if len(got) != len(tc.changed) {
				t.Errorf("members changed %v, want %v", got, tc.changed)
			}
			for id, want := range tc.changed {
				if got[id] != want {
					t.Errorf("member %s: translations %q, want %q", id, got[id], want)
				}
			}
			// Whatever it decides keeps the clusterset's address rule.
			after := []api.Cluster{{ID: req.ClusterID, PodCIDRs: req.PodCIDRs, ServiceCIDRs: req.ServiceCIDRs, Translations: own}}
			for _, m := range tc.members {
				if i := slices.IndexFunc(changed, func(c api.Cluster) bool { return c.ID == m.ID }); i >= 0 {
					m = changed[i]
				}
				after = append(after, m)
			}
			if p.Overlap != api.OverlapRefuse {
				if probs := api.CheckMesh(after); len(probs) > 0 {
					t.Errorf("the clusterset after the join breaks the address rule: %q", probs)
				}
			}
		})
	}
}

func TestTranslate(t *testing.T) {
	a := member("a", "10.244.0.0/16", "10.96.0.0/12")
	b := member("b", "10.245.0.0/16", "10.112.0.0/12", tr("10.245.0.0/16", "240.0.0.0/16"))
	tests := []struct {
		name    string
		id      string
		cidrs   []string
		want    string // translations after
		changed bool
		errCode string
		errFld  string
	}{
		{name: "every CIDR", id: "a", want: "10.244.0.0/16>240.1.0.0/16 10.96.0.0/12>240.16.0.0/12", changed: true},
		{name: "one CIDR", id: "a", cidrs: []string{"10.96.0.0/12"}, want: "10.96.0.0/12>240.16.0.0/12", changed: true},
		{name: "the rest of a partly translated cluster", id: "b", want: "10.245.0.0/16>240.0.0.0/16 10.112.0.0/12>240.16.0.0/12", changed: true},
		{name: "already translated: nothing changes", id: "b", cidrs: []string{"10.245.0.0/16"}, want: "10.245.0.0/16>240.0.0.0/16"},
		{name: "not its CIDR", id: "a", cidrs: []string{"10.96.0.0/12", "10.9.0.0/16"}, errCode: api.CodeInvalid, errFld: "cidrs[1]"},
		{name: "not a CIDR", id: "a", cidrs: []string{"ten"}, errCode: api.CodeInvalid, errFld: "cidrs[0]"},
		{name: "no such cluster", id: "zz", errCode: api.CodeNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, changed, err := Translate(plan, []api.Cluster{a, b}, tc.id, tc.cidrs)
			if tc.errCode != "" {
				if err == nil || err.Code != tc.errCode || err.Field != tc.errFld {
					t.Fatalf("got %v; want %s on %q", err, tc.errCode, tc.errFld)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := fmtTr(c.Translations); got != tc.want || changed != tc.changed {
				t.Fatalf("translations %q changed %v, want %q %v", got, changed, tc.want, tc.changed)
			}
		})
	}
}

func TestAllocateBlock(t *testing.T) {
	pfx := netip.MustParsePrefix
	tests := []struct {
		name string
		pool string
		bits int
		used []string
		want string // "" = none
	}{
		{name: "empty pool: its start", pool: "240.0.0.0/5", bits: 16, want: "240.0.0.0/16"},
		{name: "after a used block", pool: "240.0.0.0/5", bits: 16, used: []string{"240.0.0.0/16"}, want: "240.1.0.0/16"},
		{name: "a gap is reused", pool: "240.0.0.0/5", bits: 16, used: []string{"240.1.0.0/16"}, want: "240.0.0.0/16"},
		{name: "a small used range blocks its whole block", pool: "240.0.0.0/5", bits: 12, used: []string{"240.0.5.0/24"}, want: "240.16.0.0/12"},
		{name: "a large used range is skipped in one step", pool: "240.0.0.0/5", bits: 24, used: []string{"240.0.0.0/8"}, want: "241.0.0.0/24"},
		{name: "a range covering the pool", pool: "240.0.0.0/15", bits: 16, used: []string{"240.0.0.0/8"}},
		{name: "full", pool: "240.0.0.0/15", bits: 16, used: []string{"240.0.0.0/16", "240.1.0.0/16"}},
		{name: "larger than the pool", pool: "240.0.0.0/15", bits: 12},
		{name: "the top of the address space", pool: "255.255.255.0/24", bits: 25, used: []string{"255.255.255.0/25"}, want: "255.255.255.128/25"},
		{name: "the top of the address space, full", pool: "255.255.255.0/24", bits: 25, used: []string{"255.255.255.0/25", "255.255.255.128/26"}},
		{name: "IPv6", pool: "fc00::/8", bits: 64, used: []string{"fc00::/64"}, want: "fc00:0:0:1::/64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var used []netip.Prefix
			for _, u := range tc.used {
				used = append(used, pfx(u))
			}
			got, ok := AllocateBlock(pfx(tc.pool), tc.bits, used)
			if tc.want == "" {
				if ok {
					t.Fatalf("got %s, want none", got)
				}
				return
			}
			if !ok || got.String() != tc.want {
				t.Fatalf("got %s %v, want %s", got, ok, tc.want)
			}
		})
	}
}

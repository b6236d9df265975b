package broker_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

func fmtTranslations(c api.Cluster) string {
	var ss []string
	for _, t := range c.Translations {
		ss = append(ss, t.Real+">"+t.Mapped)
	}
	return strings.Join(ss, " ")
}

// TestOverlappingJoinsTranslated: two clusters with kind's default CIDRs
// join; the second join translates both (the first one live, in the same
// commit, seen by its watch), a third with the same CIDRs gets mapped CIDRs
// of its own, and the clusterset keeps its address rule throughout.
func TestOverlappingJoinsTranslated(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	east, er := tb.join("east", "10.244.0.0/16", "10.96.0.0/12")
	if er.Cluster.Translated() {
		t.Fatalf("the first cluster got translations with nothing to overlap: %+v", er.Cluster.Translations)
	}
	col := watchAll(t, east, 0)
	// The watch's first snapshot before west joins: else, when the watch
	// connects after the join, east's translation comes inside that
	// snapshot, not as the live change this test wants (a CI run timed out so).
	col.until(t, "initial snapshot", 10*time.Second, func(ev api.Event) bool { return ev.Type == api.EventSnapshot })
	_, wr := tb.join("west", "10.244.0.0/16", "10.96.0.0/12")
	if got := fmtTranslations(wr.Cluster); got != "10.244.0.0/16>240.1.0.0/16 10.96.0.0/12>240.32.0.0/12" {
		t.Errorf("west's translations %q", got)
	}
	if len(wr.Translated) != 1 || wr.Translated[0].ID != "east" || fmtTranslations(wr.Translated[0]) != "10.244.0.0/16>240.0.0.0/16 10.96.0.0/12>240.16.0.0/12" {
		t.Errorf("join response's translated members %+v, want east with 240.0.0.0/16 and 240.16.0.0/12", wr.Translated)
	}
	col.until(t, "east's own record translated", 10*time.Second, func(ev api.Event) bool {
		return ev.Type == api.EventPut && ev.Cluster != nil && ev.Cluster.ID == "east" && ev.Cluster.Translated()
	})
	_, nr := tb.join("north", "10.244.0.0/16", "10.200.0.0/16")
	if got := fmtTranslations(nr.Cluster); got != "10.244.0.0/16>240.2.0.0/16" || len(nr.Translated) != 0 {
		t.Errorf("north's translations %q, translated with it %+v; want only its pod CIDR, nobody else", got, nr.Translated)
	}
	snap, err := tb.adminClient().Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if probs := api.CheckMesh(snap.Clusters); len(probs) > 0 {
		t.Fatalf("the clusterset breaks its address rule: %q", probs)
	}
}

// TestTranslateLater: the admin translates a member that joined without
// translation; its record changes once (a second call writes nothing);
// unknown clusters and CIDRs are refused with what to do.
func TestTranslateLater(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	east, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	admin := tb.adminClient()
	col := watchAll(t, east, 0)
	col.until(t, "initial snapshot", 10*time.Second, func(ev api.Event) bool { return ev.Type == api.EventSnapshot }) // as above
	c, err := admin.Translate(ctx, "east", []string{"10.1.0.0/16"})
	if err != nil || fmtTranslations(*c) != "10.1.0.0/16>240.0.0.0/16" {
		t.Fatalf("translate east's pods: %+v, %v", c, err)
	}
	col.until(t, "east translated", 10*time.Second, func(ev api.Event) bool {
		return ev.Cluster != nil && ev.Cluster.ID == "east" && ev.Cluster.Translated()
	})
	before, _ := admin.Snapshot(ctx)
	c, err = admin.Translate(ctx, "east", []string{"10.1.0.0/16"})
	after, _ := admin.Snapshot(ctx)
	if err != nil || fmtTranslations(*c) != "10.1.0.0/16>240.0.0.0/16" || after.Revision != before.Revision {
		t.Fatalf("translating again: %+v, %v, revision %d → %d; want no change", c, err, before.Revision, after.Revision)
	}
	if c, err = admin.Translate(ctx, "east", nil); err != nil || fmtTranslations(*c) != "10.1.0.0/16>240.0.0.0/16 10.101.0.0/16>240.1.0.0/16" {
		t.Fatalf("translate the rest: %+v, %v", c, err)
	}
	if _, err := admin.Translate(ctx, "nobody", nil); apiCode(err) != api.CodeNotFound {
		t.Errorf("unknown cluster: %v; want NotFound", err)
	}
	if _, err := admin.Translate(ctx, "east", []string{"10.9.0.0/16"}); apiCode(err) != api.CodeInvalid {
		t.Errorf("a CIDR not east's: %v; want Invalid", err)
	}
}

// TestMemberCannotTranslate is the attack: a member holding a valid
// credential tries to translate another member (which would change that
// member's addresses mesh-wide and cut its open connections) or itself.
// Only the broker's admin may.
func TestMemberCannotTranslate(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	east, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	tb.join("west", "10.2.0.0/16", "10.102.0.0/16")
	for _, target := range []string{"west", "east"} {
		if _, err := east.Translate(ctx, target, nil); apiCode(err) != api.CodeForbidden {
			t.Errorf("east translating %s: %v; want Forbidden", target, err)
		}
	}
	snap, err := tb.adminClient().Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range snap.Clusters {
		if c.Translated() {
			t.Errorf("a member's call translated %s: %+v", c.ID, c.Translations)
		}
	}
}

// TestPolicyOverlapAndMappedPool: the clusterset policy decides what an
// overlapping join gets. Set to refuse, a join overlapping a member is
// refused, naming the member and the policy, and nothing is written; a
// moved mapped pool is where the next translation comes from, while mapped
// CIDRs given out before stay; a pool over the tunnel pool and an unknown
// overlap rule are refused.
func TestPolicyOverlapAndMappedPool(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	admin := tb.adminClient()
	tb.join("east", "10.244.0.0/16", "10.96.0.0/12")
	if _, err := admin.Translate(ctx, "east", []string{"10.244.0.0/16"}); err != nil {
		t.Fatal(err)
	}
	pol := api.DefaultPolicy()
	pol.Overlap = api.OverlapRefuse
	if _, err := admin.SetPolicy(ctx, pol); err != nil {
		t.Fatal(err)
	}
	before, _ := admin.Snapshot(ctx)
	_, err := tb.client("").Join(ctx, tb.JoinToken("west"), api.JoinRequest{ClusterID: "west", PodCIDRs: []string{"10.244.0.0/16"}, ServiceCIDRs: []string{"10.97.0.0/16"}})
	var ae *api.Error
	if !asAPI(err, &ae) || ae.Code != api.CodeCIDROverlap || ae.Cluster != "east" || !strings.Contains(ae.Message, "overlap: refuse") {
		t.Fatalf("an overlapping join under overlap: refuse: %v; want CIDROverlap naming east and the policy", err)
	}
	if after, _ := admin.Snapshot(ctx); after.Revision != before.Revision {
		t.Fatalf("the refused join wrote something: revision %d → %d", before.Revision, after.Revision)
	}

	pol.Overlap = ""                                        // read as translate: a policy stored before the field
	pol.MappedCIDRs = []string{"198.18.0.0/15", "fc00::/8"} // room for /16s, not for kind's /12
	if st, err := admin.SetPolicy(ctx, pol); err != nil || !strings.Contains(st.Policy.String(), "overlapping joins: translate (mapped pool 198.18.0.0/15, fc00::/8)") {
		t.Fatalf("set the pool: %+v, %v", st, err)
	}
	_, wr := tb.join("west", "10.244.0.0/16", "10.200.0.0/16")
	if got := fmtTranslations(wr.Cluster); got != "10.244.0.0/16>198.18.0.0/16" || len(wr.Translated) != 0 {
		t.Errorf("west's translations %q, translated with it %+v; want a /16 from the new pool and east kept as it was", got, wr.Translated)
	}
	_, err = tb.client("").Join(ctx, tb.JoinToken("north"), api.JoinRequest{ClusterID: "north", PodCIDRs: []string{"10.50.0.0/16"}, ServiceCIDRs: []string{"10.96.0.0/12"}})
	if !asAPI(err, &ae) || ae.Code != api.CodeExhausted || !strings.Contains(ae.Message, "198.18.0.0/15") {
		t.Errorf("a /12 to translate with no room in the pool: %v; want Exhausted naming the pool", err)
	}
	_, err = tb.client("").Join(ctx, tb.JoinToken("south"), api.JoinRequest{ClusterID: "south", PodCIDRs: []string{"198.18.0.0/24"}, ServiceCIDRs: []string{"10.98.0.0/16"}})
	if apiCode(err) == "" {
		t.Errorf("a join inside the mapped pool was let in")
	}
	snap, _ := admin.Snapshot(ctx)
	for _, c := range snap.Clusters {
		if c.ID == "east" && fmtTranslations(c) != "10.244.0.0/16>240.0.0.0/16" {
			t.Errorf("east's mapped CIDR moved with the pool: %s", fmtTranslations(c))
		}
	}
	if probs := api.CheckMesh(snap.Clusters); len(probs) > 0 {
		t.Fatalf("the clusterset breaks its address rule: %q", probs)
	}

	for _, bad := range []api.Policy{
		{AllowedCIDRs: pol.AllowedCIDRs, Overlap: "nat"},
		{AllowedCIDRs: pol.AllowedCIDRs, MappedCIDRs: []string{"240.0.0.1/5"}},
		{AllowedCIDRs: pol.AllowedCIDRs, MappedCIDRs: []string{"100.64.0.0/10"}}, // holds the tunnel pool 100.127.0.0/16
	} {
		if _, err := admin.SetPolicy(ctx, bad); apiCode(err) != api.CodeInvalid {
			t.Errorf("policy %+v: %v; want Invalid", bad, err)
		}
	}
}

// TestTranslatedExporterNamesOnlyItsMeshAddresses: east and west join with
// the same CIDRs, so both are translated. East, holding its valid
// credential, publishes exports: its real pod address and ClusterIP are
// refused (in the mesh 10.244.0.0/16 is nobody's own, and to an importer
// it is its own pods), as is west's mapped address; east's mapped pods
// behind its mapped ClusterIP — what its export controller publishes —
// are stored.
func TestTranslatedExporterNamesOnlyItsMeshAddresses(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	east, _ := tb.join("east", "10.244.0.0/16", "10.96.0.0/16")
	_, wr := tb.join("west", "10.244.0.0/16", "10.96.0.0/16")
	if len(wr.Translated) != 1 || wr.Translated[0].ID != "east" {
		t.Fatalf("east not translated by west's join: %+v", wr.Translated)
	}
	er := wr.Translated[0]
	mesh := func(c api.Cluster, ip string) string { return c.ToMesh(netip.MustParseAddr(ip)).String() }
	ep := func(addr string) []api.Endpoint {
		return []api.Endpoint{{Addresses: []string{addr}, Ready: true, Ports: []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 8080}}}}
	}
	for _, tc := range []struct {
		name, ip, pod, field string
	}{
		{"its real pod behind its mapped ClusterIP", mesh(er, "10.96.0.10"), "10.244.0.5", "endpoints[0].addresses[0]"},
		{"its real ClusterIP", "10.96.0.10", mesh(er, "10.244.0.5"), "ips[0]"},
		{"west's mapped pod", mesh(er, "10.96.0.10"), mesh(wr.Cluster, "10.244.0.5"), "endpoints[0].addresses[0]"},
	} {
		e := export("east", "shop", "cart")
		e.IPs, e.Endpoints = []string{tc.ip}, ep(tc.pod)
		var ae *api.Error
		if err := east.PublishExport(ctx, e); !asAPI(err, &ae) || ae.Code != api.CodeInvalid || ae.Field != tc.field {
			t.Errorf("%s (ClusterIP %s, pod %s): %v; want Invalid on %s", tc.name, tc.ip, tc.pod, err, tc.field)
		}
	}
	if snap, err := east.Snapshot(ctx); err != nil || len(snap.Exports) != 0 {
		t.Fatalf("refused exports stored: %+v %v", snap.Exports, err)
	}
	ok := export("east", "shop", "cart")
	ok.IPs, ok.Endpoints = []string{mesh(er, "10.96.0.10")}, ep(mesh(er, "10.244.0.5"))
	if err := east.PublishExport(ctx, ok); err != nil {
		t.Fatalf("east's mapped pod behind its mapped ClusterIP (%s, %s): %v", ok.IPs[0], ok.Endpoints[0].Addresses[0], err)
	}
}

package broker_test

import (
	"reflect"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// TestClusterSetPolicy: every member reads the policy, only the admin sets
// it; a tightened policy governs later joins and flags (never removes) the
// members outside it; a loosened one lets a range in; it survives a restart.
func TestClusterSetPolicy(t *testing.T) {
	dir := initDir(t)
	tb := startBroker(t, dir, "127.0.0.1:0", nil)
	ctx := ctxT(t)
	west, _ := tb.join("west", "10.2.0.0/16", "10.102.0.0/16")
	st, err := west.Policy(ctx)
	if err != nil || !st.Default || !reflect.DeepEqual(st.Policy, api.DefaultPolicy()) || len(st.Outside) != 0 {
		t.Fatalf("a member reads %+v, %v; want the default policy, nobody outside", st, err)
	}
	if _, err := west.SetPolicy(ctx, api.Policy{AllowedCIDRs: []string{"0.0.0.0/0"}}); apiCode(err) != api.CodeForbidden {
		t.Fatalf("a member setting the policy: %v; want Forbidden", err)
	}
	admin := tb.adminClient()
	for _, bad := range []api.Policy{{}, {AllowedCIDRs: []string{"10.0.0.1/8"}}, {AllowedCIDRs: []string{"10.0.0.0/8"}, MinPrefixLengthIPv4: 33}} {
		if _, err := admin.SetPolicy(ctx, bad); apiCode(err) != api.CodeInvalid {
			t.Errorf("policy %+v: %v; want Invalid", bad, err)
		}
	}
	tight := api.Policy{AllowedCIDRs: []string{"10.1.0.0/16", "10.101.0.0/16", "8.8.8.0/24"}, MinPrefixLengthIPv4: 16, MinPrefixLengthIPv6: 64}
	st, err = admin.SetPolicy(ctx, tight)
	if err != nil {
		t.Fatal(err)
	}
	want := []api.PolicyViolation{
		{Cluster: "west", CIDR: "10.2.0.0/16", Reason: "10.2.0.0/16 is not inside the clusterset's allowed ranges (10.1.0.0/16, 10.101.0.0/16, 8.8.8.0/24)"},
		{Cluster: "west", CIDR: "10.102.0.0/16", Reason: "10.102.0.0/16 is not inside the clusterset's allowed ranges (10.1.0.0/16, 10.101.0.0/16, 8.8.8.0/24)"}}
	if st.Default || !reflect.DeepEqual(st.Policy, tight) || !reflect.DeepEqual(st.Outside, want) {
		t.Fatalf("set: %+v; want the policy and west flagged", st)
	}
	if snap, err := west.Snapshot(ctx); err != nil || len(snap.Clusters) != 1 {
		t.Fatalf("west after the policy tightened: %+v %v; want it kept", snap, err)
	}
	_, err = tb.client("").Join(ctx, tb.JoinToken("wide"), api.JoinRequest{ClusterID: "east", PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.101.0.0/17"}})
	if err != nil {
		t.Fatalf("a join inside the new policy: %v", err)
	}
	_, err = tb.client("").Join(ctx, tb.JoinToken("public"), api.JoinRequest{ClusterID: "north", PodCIDRs: []string{"8.8.8.0/24"}, ServiceCIDRs: []string{"10.3.0.0/16"}})
	var ae *api.Error
	if !asAPI(err, &ae) || ae.Code != api.CodeOutsidePolicy || ae.Field != "serviceCIDRs[0]" {
		t.Fatalf("a join with a range the new policy leaves out: %v; want OutsidePolicy on serviceCIDRs[0]", err)
	}
	tb.stop()
	tb = startBroker(t, dir, "127.0.0.1:0", nil)
	st, err = tb.adminClient().Policy(ctx)
	if err != nil || !reflect.DeepEqual(st.Policy, tight) || len(st.Outside) != 2 {
		t.Fatalf("after a restart: %+v %v", st, err)
	}
}

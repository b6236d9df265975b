package export

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// importer is the scope of a cluster that exports nothing and sees every
// cluster.
var importer = Scope{Local: "south"}

func TestPlanImportClusterSetIP(t *testing.T) {
	ports := []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 8080}}
	east := exp("east", 2*time.Hour, func(e *api.Export) {
		e.SessionAffinity, e.SessionAffinityTimeoutSeconds = "ClientIP", ptr(int32(30))
		e.InternalTrafficPolicy, e.TrafficDistribution = "Local", "PreferClose"
		e.Labels, e.Annotations = map[string]string{"team": "a"}, map[string]string{"n": "1"}
		e.Endpoints = []api.Endpoint{{Addresses: []string{"10.1.0.1"}, Ready: true, Ports: ports}, {Addresses: []string{"10.1.0.2"}, Ports: ports}}
	})
	west := exp("west", time.Hour, func(e *api.Export) {
		e.SessionAffinity, e.SessionAffinityTimeoutSeconds = "ClientIP", ptr(int32(30))
		e.InternalTrafficPolicy, e.TrafficDistribution = "Local", "PreferClose"
		e.Labels, e.Annotations = map[string]string{"team": "a"}, map[string]string{"n": "1"}
		e.Endpoints = []api.Endpoint{{Addresses: []string{"10.2.0.1"}, Ready: true, Ports: ports}}
	})
	s := Resolve([]api.Export{east, west})[0]
	imp := PlanImport(s, importer)

	si := imp.ServiceImport
	if si.Name != "web" || si.Namespace != "ns" || si.Spec.Type != mcsv1beta1.ClusterSetIP || len(si.Spec.Ports) != 1 || si.Spec.Ports[0].Port != 80 {
		t.Fatalf("ServiceImport %+v", si)
	}
	if si.Spec.SessionAffinity != corev1.ServiceAffinityClientIP || *si.Spec.SessionAffinityConfig.ClientIP.TimeoutSeconds != 30 ||
		*si.Spec.InternalTrafficPolicy != corev1.ServiceInternalTrafficPolicyLocal || *si.Spec.TrafficDistribution != "PreferClose" {
		t.Fatalf("ServiceImport spec %+v", si.Spec)
	}
	if si.Labels["team"] != "a" || si.Labels[LabelManagedBy] != ManagedBy || si.Annotations["n"] != "1" {
		t.Fatalf("labels %v annotations %v", si.Labels, si.Annotations)
	}
	if fmt.Sprint(si.Status.Clusters) != "[{east} {west}]" {
		t.Fatalf("status clusters %v", si.Status.Clusters)
	}

	d := imp.Derived
	if d.Name != DerivedName("web") || d.Spec.ClusterIP != "" || d.Spec.Selector != nil || len(d.Spec.Ports) != 1 ||
		d.Spec.Ports[0].Name != "http" || d.Spec.SessionAffinity != corev1.ServiceAffinityClientIP ||
		*d.Spec.IPFamilyPolicy != corev1.IPFamilyPolicySingleStack || d.Labels[LabelImportName] != "web" {
		t.Fatalf("derived %+v", d)
	}
	// Local on the import means the same cluster first; on the derived
	// Service it would leave kube-proxy no endpoint (our slices name no node).
	if *d.Spec.InternalTrafficPolicy != corev1.ServiceInternalTrafficPolicyCluster {
		t.Fatalf("derived internalTrafficPolicy %s, want Cluster", *d.Spec.InternalTrafficPolicy)
	}

	if len(imp.Slices) != 2 {
		t.Fatalf("%d slices, want one per cluster", len(imp.Slices))
	}
	for i, c := range []string{"east", "west"} {
		sl := imp.Slices[i]
		want := map[string]string{mcsv1beta1.LabelServiceName: "web", mcsv1beta1.LabelSourceCluster: c,
			discoveryv1.LabelManagedBy: ManagedBy, discoveryv1.LabelServiceName: d.Name}
		if fmt.Sprint(sl.Labels) != fmt.Sprint(want) || sl.AddressType != discoveryv1.AddressTypeIPv4 {
			t.Fatalf("slice %d labels %v", i, sl.Labels)
		}
		if len(sl.Ports) != 1 || *sl.Ports[0].Name != "http" || *sl.Ports[0].Port != 8080 {
			t.Fatalf("slice ports %+v: want the pods' port named as the service port", sl.Ports)
		}
	}
	if e := imp.Slices[0].Endpoints; len(e) != 2 || !*e[0].Conditions.Ready || *e[1].Conditions.Ready {
		t.Fatalf("east endpoints %+v", e)
	}

}

func TestPlanImportHeadless(t *testing.T) {
	e := exp("east", 0, func(e *api.Export) {
		e.Type = api.TypeHeadless
		e.Endpoints = []api.Endpoint{{Addresses: []string{"10.1.0.1"}, Hostname: "db-0", Ready: true}, {Addresses: []string{"fd00::1"}, Hostname: "db-1", Ready: true}}
	})
	imp := PlanImport(Resolve([]api.Export{e})[0], importer)
	if imp.ServiceImport.Spec.Type != mcsv1beta1.Headless || imp.Derived.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Fatalf("headless import %+v derived %+v", imp.ServiceImport.Spec, imp.Derived.Spec)
	}
	if len(imp.Slices) != 2 {
		t.Fatalf("%d slices, want one per family", len(imp.Slices))
	}
	got := map[discoveryv1.AddressType]string{}
	for _, s := range imp.Slices {
		got[s.AddressType] = *s.Endpoints[0].Hostname + "=" + s.Endpoints[0].Addresses[0]
	}
	if got[discoveryv1.AddressTypeIPv4] != "db-0=10.1.0.1" || got[discoveryv1.AddressTypeIPv6] != "db-1=fd00::1" {
		t.Fatalf("slices %v", got)
	}
}

func TestPlanImportSplitsLargeClusters(t *testing.T) {
	e := exp("east", 0, func(e *api.Export) {
		for i := range 250 {
			e.Endpoints = append(e.Endpoints, api.Endpoint{Addresses: []string{fmt.Sprintf("10.1.%d.%d", i/200, i%200+1)}, Ready: true})
		}
	})
	imp := PlanImport(Resolve([]api.Export{e})[0], importer)
	names := map[string]bool{}
	n := 0
	for _, s := range imp.Slices {
		names[s.Name] = true
		n += len(s.Endpoints)
		if len(s.Endpoints) > api.MaxEndpointsPerSlice {
			t.Fatalf("slice of %d endpoints", len(s.Endpoints))
		}
	}
	if len(imp.Slices) != 3 || len(names) != 3 || n != 250 {
		t.Fatalf("%d slices (%d names) holding %d endpoints", len(imp.Slices), len(names), n)
	}
	if c := api.EndpointSlices(e.Endpoints); c != len(imp.Slices) {
		t.Fatalf("the broker counts %d slices for what the importer builds as %d", c, len(imp.Slices))
	}
	again := PlanImport(Resolve([]api.Export{e})[0], importer)
	for i := range again.Slices {
		if again.Slices[i].Name != imp.Slices[i].Name {
			t.Fatal("slice names are not stable")
		}
	}
}

// TestPlanImportCapsSlicesPerExport: an export whose every endpoint has a
// port set of its own (one EndpointSlice each) makes no more slices in the
// importing cluster than any export may; the rest is reported dropped.
func TestPlanImportCapsSlicesPerExport(t *testing.T) {
	e := exp("east", 0, func(e *api.Export) {
		for i := range api.MaxEndpoints {
			e.Endpoints = append(e.Endpoints, api.Endpoint{Addresses: []string{fmt.Sprintf("10.1.%d.%d", i/200, i%200+1)}, Ready: true,
				Ports: []api.ServicePort{{Name: "p", Protocol: "TCP", Port: int32(1000 + i)}}})
		}
	})
	imp := PlanImport(Resolve([]api.Export{e})[0], importer)
	if len(imp.Slices) > api.MaxSlicesPerExport {
		t.Fatalf("one export of %d endpoints, a port set each, makes %d EndpointSlices; want at most %d", len(e.Endpoints), len(imp.Slices), api.MaxSlicesPerExport)
	}
	if len(imp.Dropped) != 1 || !strings.Contains(imp.Dropped[0], "east: 1936 endpoints") {
		t.Fatalf("dropped %q; want east's 1936 endpoints beyond the cap", imp.Dropped)
	}
}

// TestPlanImportWithholding: which clusters' endpoints an importing
// cluster withholds (all written not ready, the slice labelled with why):
// a withdrawn cluster always; with a same-cluster-first service, every
// remote cluster while the importing cluster has a ready endpoint of its
// own. Without the fields, every cluster's endpoints are used as today.
func TestPlanImportWithholding(t *testing.T) {
	ports := []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 8080}}
	ep := func(ip string, ready bool) api.Endpoint {
		return api.Endpoint{Addresses: []string{ip}, Ready: ready, Ports: ports}
	}
	exports := func(typ, td, itp string, eastReady bool) []api.Export {
		set := func(e *api.Export) { e.Type, e.TrafficDistribution, e.InternalTrafficPolicy = typ, td, itp }
		return []api.Export{
			exp("east", 3, func(e *api.Export) {
				set(e)
				e.Endpoints = []api.Endpoint{ep("10.1.0.1", eastReady), ep("10.1.0.2", false)}
			}),
			exp("west", 2, func(e *api.Export) { set(e); e.Endpoints = []api.Endpoint{ep("10.2.0.1", true)} }),
			exp("north", 1, func(e *api.Export) { set(e); e.Endpoints = []api.Endpoint{ep("10.3.0.1", true)} }),
		}
	}
	down := func(cs ...string) map[string]Withholding {
		m := map[string]Withholding{}
		for _, c := range cs {
			m[c] = Withholding{Reason: WithheldTunnelDown, Message: "tunnel down"}
		}
		return m
	}
	type W = map[string]string // cluster → withheld reason
	for _, tc := range []struct {
		name         string
		typ, td, itp string
		eastReady    bool
		scope        Scope
		want         W
	}{
		{"no preference: every cluster's endpoints", api.TypeClusterSetIP, "", "", true, Scope{Local: "east"}, W{}},
		{"PreferClose, a local ready endpoint: remote withheld", api.TypeClusterSetIP, "PreferClose", "", true, Scope{Local: "east"},
			W{"west": WithheldLocalFirst, "north": WithheldLocalFirst}},
		{"PreferSameZone counts as close", api.TypeClusterSetIP, "PreferSameZone", "", true, Scope{Local: "east"},
			W{"west": WithheldLocalFirst, "north": WithheldLocalFirst}},
		{"internalTrafficPolicy Local means the same cluster first", api.TypeClusterSetIP, "", "Local", true, Scope{Local: "east"},
			W{"west": WithheldLocalFirst, "north": WithheldLocalFirst}},
		{"PreferClose, no local endpoint ready: spill to the others", api.TypeClusterSetIP, "PreferClose", "", false, Scope{Local: "east"}, W{}},
		{"PreferClose in a cluster that does not export it: all", api.TypeClusterSetIP, "PreferClose", "", true, Scope{Local: "south"}, W{}},
		{"headless: DNS answers local pods likewise", api.TypeHeadless, "PreferClose", "", true, Scope{Local: "east"},
			W{"west": WithheldLocalFirst, "north": WithheldLocalFirst}},
		{"a withdrawn cluster, no preference", api.TypeClusterSetIP, "", "", true, Scope{Local: "east", Withdrawn: down("west")},
			W{"west": WithheldTunnelDown}},
		{"a withdrawn cluster stays out when spilling", api.TypeClusterSetIP, "PreferClose", "", false, Scope{Local: "east", Withdrawn: down("west")},
			W{"west": WithheldTunnelDown}},
		{"withdrawal is named before local-first", api.TypeClusterSetIP, "PreferClose", "", true, Scope{Local: "east", Withdrawn: down("west")},
			W{"west": WithheldTunnelDown, "north": WithheldLocalFirst}},
		{"the local cluster is never withheld", api.TypeClusterSetIP, "", "", true, Scope{Local: "east", Withdrawn: down("east")}, W{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Resolve(exports(tc.typ, tc.td, tc.itp, tc.eastReady))[0]
			imp := PlanImport(s, tc.scope)
			base := PlanImport(s, Scope{Local: "south"})
			if len(imp.Slices) != 3 || len(base.Slices) != 3 {
				t.Fatalf("%d slices, want one per exporting cluster, withheld or not", len(imp.Slices))
			}
			got := W{}
			for c, w := range imp.Withheld {
				got[c] = w.Reason
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("withheld %v, want %v", got, tc.want)
			}
			for i, sl := range imp.Slices {
				src := sl.Labels[mcsv1beta1.LabelSourceCluster]
				if sl.Name != base.Slices[i].Name {
					t.Errorf("%s: slice name %s changes when withheld (%s): withholding must update in place", src, sl.Name, base.Slices[i].Name)
				}
				reason, withheld := tc.want[src]
				if sl.Labels[LabelWithheld] != reason || (sl.Annotations[AnnotationWithheld] != "") != withheld {
					t.Errorf("%s: label %q annotations %v, want reason %q", src, sl.Labels[LabelWithheld], sl.Annotations, reason)
				}
				for j, e := range sl.Endpoints {
					want := *base.Slices[i].Endpoints[j].Conditions.Ready && !withheld
					if *e.Conditions.Ready != want || *e.Conditions.Serving != want || *e.Conditions.Terminating {
						t.Errorf("%s %s: ready %v serving %v terminating %v, want ready=serving=%v", src, e.Addresses[0],
							*e.Conditions.Ready, *e.Conditions.Serving, *e.Conditions.Terminating, want)
					}
				}
			}
		})
	}
}

// TestWithdrawals: a remote cluster leaves every import on evidence only.
func TestWithdrawals(t *testing.T) {
	snap := func(gws ...api.Gateway) api.Snapshot {
		return api.Snapshot{Clusters: []api.Cluster{{ID: "east"}, {ID: "west"}, {ID: "north"}}, Gateways: gws}
	}
	gw := func(c string, stale bool) api.Gateway {
		return api.Gateway{ClusterID: c, Hostname: c + "-gw", Stale: stale}
	}
	up := func(down ...string) func(string) bool {
		return func(c string) bool { return !slices.Contains(down, c) }
	}
	type W = map[string]string
	for _, tc := range []struct {
		name      string
		snap      api.Snapshot
		exporters []string
		up        func(string) bool
		want      W
	}{
		{"all well", snap(gw("west", false), gw("north", false)), []string{"east", "west", "north"}, up(), W{}},
		{"no tunnel status: up", snap(), []string{"west"}, nil, W{}},
		{"tunnel down", snap(gw("west", false)), []string{"west", "north"}, up("west"), W{"west": WithheldTunnelDown}},
		{"every gateway stale", snap(gw("west", true), api.Gateway{ClusterID: "west", Hostname: "w2", Stale: true}, gw("north", false)),
			[]string{"west", "north"}, up(), W{"west": WithheldGatewaysStale}},
		{"one gateway of two fresh", snap(gw("west", true), api.Gateway{ClusterID: "west", Hostname: "w2"}), []string{"west"}, up(), W{}},
		{"never had a gateway: no evidence", snap(), []string{"west"}, up(), W{}},
		{"left the clusterset", snap(), []string{"gone"}, up(), W{"gone": WithheldClusterLeft}},
		{"tunnel down is named before stale", snap(gw("west", true)), []string{"west"}, up("west"), W{"west": WithheldTunnelDown}},
		{"the local cluster never", snap(gw("east", true)), []string{"east"}, up("east"), W{}},
		{"a cluster that exports nothing is not listed", snap(gw("north", true)), []string{"west"}, up("north"), W{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := W{}
			for c, w := range Withdrawals("east", tc.snap, tc.exporters, tc.up) {
				if w.Message == "" {
					t.Errorf("%s: no message", c)
				}
				got[c] = w.Reason
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("withdrawn %v, want %v", got, tc.want)
			}
		})
	}
}

func TestExportConditions(t *testing.T) {
	valid := Validity{Valid: true, Reason: mcsv1beta1.ServiceExportReasonValid, Message: "ok"}
	conflicted := Resolve([]api.Export{exp("a", 2, nil), exp("b", 1, func(e *api.Export) { e.Type = api.TypeHeadless })})[0]
	clean := Resolve([]api.Export{exp("a", 2, nil)})[0]
	type C = [3]string // Valid, Ready, Conflict as "Status/Reason"; "" when absent
	for _, tc := range []struct {
		name string
		v    Validity
		pub  Publication
		svc  *Service
		want C
	}{
		{"no service", Validity{Reason: "NoService", Message: "m"}, Publication{}, nil, C{"False/NoService", "False/Pending", ""}},
		{"external name", Validity{Reason: "InvalidServiceType", Message: "m"}, Publication{}, &clean, C{"False/InvalidServiceType", "False/Failed", ""}},
		{"published, not seen yet", valid, Publication{}, nil, C{"True/Valid", "False/Pending", ""}},
		{"broker refused", valid, Publication{Err: errors.New("Invalid: ports")}, nil, C{"True/Valid", "False/Failed", ""}},
		{"exported", valid, Publication{InBroker: true}, &clean, C{"True/Valid", "True/Exported", "False/NoConflicts"}},
		{"in conflict", valid, Publication{InBroker: true}, &conflicted, C{"True/Valid", "True/Exported", "True/TypeConflict"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conds := ExportConditions(7, tc.v, tc.pub, tc.svc)
			var got C
			for _, c := range conds {
				if c.ObservedGeneration != 7 {
					t.Errorf("%s observedGeneration %d", c.Type, c.ObservedGeneration)
				}
				i := map[string]int{"Valid": 0, "Ready": 1, "Conflict": 2}[c.Type]
				got[i] = string(c.Status) + "/" + c.Reason
			}
			if got != tc.want {
				t.Fatalf("conditions %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMergeConditions(t *testing.T) {
	old := metav1.NewTime(t0)
	existing := []metav1.Condition{
		{Type: "Valid", Status: "True", Reason: "Valid", Message: "ok", LastTransitionTime: old, ObservedGeneration: 1},
		{Type: "Conflict", Status: "True", Reason: "PortConflict", LastTransitionTime: old},
		{Type: "Other", Status: "True", Reason: "X", LastTransitionTime: old},
	}
	desired := []metav1.Condition{
		{Type: "Valid", Status: "True", Reason: "Valid", Message: "ok", ObservedGeneration: 1},
		{Type: "Ready", Status: "True", Reason: "Exported", ObservedGeneration: 1},
	}
	got, changed := MergeConditions(existing, desired)
	if !changed || len(got) != 3 {
		t.Fatalf("changed=%v %+v", changed, got)
	}
	for _, c := range got {
		switch c.Type {
		case "Valid", "Other":
			if !c.LastTransitionTime.Equal(&old) {
				t.Errorf("%s transition time moved", c.Type)
			}
		case "Ready":
			if c.LastTransitionTime.IsZero() {
				t.Error("new condition has no transition time")
			}
		default:
			t.Errorf("condition %s should be gone (the conflict went)", c.Type)
		}
	}
	if _, changed := MergeConditions(got, desired); changed {
		t.Fatal("merging the same conditions again reports a change")
	}
}

// TestPlanImportLeavesOutWhatSlicesCannotHold: what the apiserver refuses in
// an EndpointSlice is left out (and said), the rest of the export kept.
func TestPlanImportLeavesOutWhatSlicesCannotHold(t *testing.T) {
	good := api.ServicePort{Name: "http", Protocol: "TCP", Port: 8080}
	e := exp("south", 0, func(e *api.Export) {
		e.Type = api.TypeHeadless
		e.Endpoints = []api.Endpoint{
			{Addresses: []string{"10.3.0.1"}, Ready: true, Hostname: "Not_A_Label", Ports: []api.ServicePort{good,
				{Name: "BAD_NAME", Protocol: "TCP", Port: 1}, {Name: "http", Protocol: "TCP", Port: 9}, {Name: "x", Protocol: "ICMP", Port: 1},
				{Name: "y", Protocol: "TCP", Port: 70000}, {Name: "z", Protocol: "TCP", Port: 1, AppProtocol: "not/a/name/"}}},
			{Addresses: []string{"127.0.0.1"}, Ready: true, Ports: []api.ServicePort{good}},
			{Addresses: []string{"169.254.1.1", "10.3.0.2"}, Ready: true, Ports: []api.ServicePort{good}},
			{Addresses: []string{"::ffff:10.3.0.3", "0.0.0.0", "fe80::1", "224.0.0.1"}, Ready: true},
		}
	})
	imp := PlanImport(Resolve([]api.Export{e})[0], importer)
	var got []string
	for _, s := range imp.Slices {
		for _, ep := range s.Endpoints {
			h := ""
			if ep.Hostname != nil {
				h = *ep.Hostname
			}
			var ps []string
			for _, p := range s.Ports {
				ps = append(ps, *p.Name)
			}
			got = append(got, fmt.Sprintf("%v|%s|%v", ep.Addresses, h, ps))
		}
	}
	if fmt.Sprint(got) != "[[10.3.0.1]||[http] [10.3.0.2]||[http]]" {
		t.Fatalf("slices hold %v; want the valid addresses and ports only", got)
	}
	want := []string{`"Not_A_Label"`, `"BAD_NAME"`, `"http" (name repeated)`, `"ICMP"`, "70000", `"not/a/name/"`,
		`"127.0.0.1"`, `"169.254.1.1"`, `"::ffff:10.3.0.3"`, `"0.0.0.0"`, `"fe80::1"`, `"224.0.0.1"`}
	all := strings.Join(imp.Dropped, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("dropped list does not name %s:\n%s", w, all)
		}
	}
	for _, d := range imp.Dropped {
		if !strings.HasPrefix(d, "south: ") {
			t.Errorf("%q does not name the exporting cluster", d)
		}
	}
}

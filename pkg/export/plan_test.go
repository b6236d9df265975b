package export

import (
	"errors"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

func all(string) bool { return true }

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
	imp := PlanImport(s, all)

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

	// A cluster whose tunnel is down contributes no endpoints, but stays an exporter.
	imp = PlanImport(s, func(c string) bool { return c != "west" })
	if len(imp.Slices) != 1 || imp.Slices[0].Labels[mcsv1beta1.LabelSourceCluster] != "east" || len(imp.ServiceImport.Status.Clusters) != 2 {
		t.Fatalf("with west down: %d slices, clusters %v", len(imp.Slices), imp.ServiceImport.Status.Clusters)
	}
}

func TestPlanImportHeadless(t *testing.T) {
	e := exp("east", 0, func(e *api.Export) {
		e.Type = api.TypeHeadless
		e.Endpoints = []api.Endpoint{{Addresses: []string{"10.1.0.1"}, Hostname: "db-0", Ready: true}, {Addresses: []string{"fd00::1"}, Hostname: "db-1", Ready: true}}
	})
	imp := PlanImport(Resolve([]api.Export{e})[0], all)
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
	imp := PlanImport(Resolve([]api.Export{e})[0], all)
	names := map[string]bool{}
	n := 0
	for _, s := range imp.Slices {
		names[s.Name] = true
		n += len(s.Endpoints)
		if len(s.Endpoints) > MaxEndpointsPerSlice {
			t.Fatalf("slice of %d endpoints", len(s.Endpoints))
		}
	}
	if len(imp.Slices) != 3 || len(names) != 3 || n != 250 {
		t.Fatalf("%d slices (%d names) holding %d endpoints", len(imp.Slices), len(names), n)
	}
	again := PlanImport(Resolve([]api.Export{e})[0], all)
	for i := range again.Slices {
		if again.Slices[i].Name != imp.Slices[i].Name {
			t.Fatal("slice names are not stable")
		}
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

package export

import (
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

func exp(cluster string, age time.Duration, mut func(*api.Export)) api.Export {
	e := api.Export{ClusterID: cluster, Namespace: "ns", Name: "web", Type: api.TypeClusterSetIP,
		Ports:      []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}},
		IPFamilies: []string{"IPv4"}, SessionAffinity: "None", CreatedAt: t0.Add(-age)}
	if mut != nil {
		mut(&e)
	}
	return e
}

func TestResolveConflicts(t *testing.T) {
	type R = mcsv1beta1.ServiceExportConditionReason
	for _, tc := range []struct {
		name    string
		newer   func(*api.Export)
		reasons []R
		check   func(t *testing.T, s Service)
	}{
		{"identical", nil, nil, nil},
		{"type", func(e *api.Export) { e.Type = api.TypeHeadless }, []R{"TypeConflict"},
			func(t *testing.T, s Service) {
				if s.Type != api.TypeClusterSetIP {
					t.Errorf("type %s; the oldest export's wins", s.Type)
				}
			}},
		{"session affinity", func(e *api.Export) { e.SessionAffinity = "ClientIP" }, []R{"SessionAffinityConflict"},
			func(t *testing.T, s Service) {
				if s.SessionAffinity != "None" {
					t.Errorf("affinity %s", s.SessionAffinity)
				}
			}},
		{"empty affinity is None", func(e *api.Export) { e.SessionAffinity = "" }, nil, nil},
		{"internal traffic policy", func(e *api.Export) { e.InternalTrafficPolicy = "Local" }, []R{"InternalTrafficPolicyConflict"}, nil},
		{"empty policy is Cluster", func(e *api.Export) { e.InternalTrafficPolicy = "Cluster" }, nil, nil},
		{"traffic distribution", func(e *api.Export) { e.TrafficDistribution = "PreferClose" }, []R{"TrafficDistributionConflict"}, nil},
		{"ip families", func(e *api.Export) { e.IPFamilies = []string{"IPv6"} }, []R{"IPFamilyConflict"}, nil},
		{"families of a headless export are not compared", func(e *api.Export) { e.Type = api.TypeHeadless; e.IPFamilies = []string{"IPv4", "IPv6"} }, []R{"TypeConflict"}, nil},
		{"labels", func(e *api.Export) { e.Labels = map[string]string{"a": "b"} }, []R{"LabelsConflict"}, nil},
		{"annotations", func(e *api.Export) { e.Annotations = map[string]string{"a": "b"} }, []R{"AnnotationsConflict"}, nil},
		{"port name reused for another port", func(e *api.Export) { e.Ports[0].Port = 8080 }, []R{"PortConflict"},
			func(t *testing.T, s Service) {
				if len(s.Ports) != 1 || s.Ports[0].Port != 80 {
					t.Errorf("ports %+v; the oldest export's port wins", s.Ports)
				}
			}},
		{"port number under another name", func(e *api.Export) { e.Ports[0].Name = "web" }, []R{"PortConflict"}, nil},
		{"several at once", func(e *api.Export) {
			e.Type = api.TypeHeadless
			e.Ports[0].Protocol = "UDP"
			e.TrafficDistribution = "PreferClose"
		},
			[]R{"TypeConflict", "PortConflict", "TrafficDistributionConflict"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			older := exp("west", 2*time.Hour, nil)
			newer := exp("east", time.Hour, nil)
			newer.Ports = append([]api.ServicePort(nil), newer.Ports...)
			if tc.newer != nil {
				tc.newer(&newer)
			}
			got := Resolve([]api.Export{newer, older})
			if len(got) != 1 {
				t.Fatalf("%d services", len(got))
			}
			s := got[0]
			if !reflect.DeepEqual(s.Conflicts, tc.reasons) {
				t.Fatalf("conflicts %v, want %v", s.Conflicts, tc.reasons)
			}
			if s.Exports[0].ClusterID != "west" || !reflect.DeepEqual(s.Clusters(), []string{"east", "west"}) {
				t.Fatalf("order %v clusters %v", s.Exports[0].ClusterID, s.Clusters())
			}
			if tc.check != nil {
				tc.check(t, s)
			}
		})
	}
}

func TestConflictReasonJoined(t *testing.T) {
	s := Resolve([]api.Export{exp("a", 2, nil), exp("b", 1, func(e *api.Export) { e.Type = api.TypeHeadless; e.SessionAffinity = "ClientIP" })})[0]
	if got := s.ConflictReason(); got != "TypeConflict,SessionAffinityConflict" {
		t.Fatalf("reason %q", got)
	}
	if got := Resolve([]api.Export{exp("a", 0, nil)})[0].ConflictReason(); got != mcsv1beta1.ServiceExportReasonNoConflicts {
		t.Fatalf("reason %q", got)
	}
}

func TestResolveAffinityConfig(t *testing.T) {
	for _, tc := range []struct {
		a, b     *int32
		conflict bool
	}{
		{nil, ptr(int32(10800)), false}, // the apiserver's default
		{ptr(int32(60)), ptr(int32(60)), false},
		{ptr(int32(60)), ptr(int32(120)), true},
	} {
		mk := func(t *int32) func(*api.Export) {
			return func(e *api.Export) { e.SessionAffinity, e.SessionAffinityTimeoutSeconds = "ClientIP", t }
		}
		s := Resolve([]api.Export{exp("a", 2, mk(tc.a)), exp("b", 1, mk(tc.b))})[0]
		if got := len(s.Conflicts) > 0; got != tc.conflict || (got && s.Conflicts[0] != "SessionAffinityConfigConflict") {
			t.Errorf("%v vs %v: conflicts %v", tc.a, tc.b, s.Conflicts)
		}
	}
}

func TestResolvePortUnion(t *testing.T) {
	p := func(name, proto string, port int32) api.ServicePort {
		return api.ServicePort{Name: name, Protocol: proto, Port: port}
	}
	for _, tc := range []struct {
		name         string
		older, newer []api.ServicePort
		want         []api.ServicePort
		conflict     bool
	}{
		{"same ports: no conflict",
			[]api.ServicePort{p("http", "TCP", 80), p("metrics", "TCP", 9090)}, []api.ServicePort{p("metrics", "TCP", 9090), p("http", "TCP", 80)},
			[]api.ServicePort{p("http", "TCP", 80), p("metrics", "TCP", 9090)}, false},
		// KEP-1645 as its conformance suite reads it: ports that differ
		// are a conflict even when they merge without a clash.
		{"a port more on one side: the union, and a conflict",
			[]api.ServicePort{p("http", "TCP", 80)}, []api.ServicePort{p("http", "TCP", 80), p("metrics", "TCP", 9090)},
			[]api.ServicePort{p("http", "TCP", 80), p("metrics", "TCP", 9090)}, true},
		{"disjoint ports: the union, and a conflict",
			[]api.ServicePort{p("tcp", "TCP", 42), p("udp", "UDP", 42)}, []api.ServicePort{p("tcp", "TCP", 42), p("stcp", "SCTP", 142)},
			[]api.ServicePort{p("tcp", "TCP", 42), p("udp", "UDP", 42), p("stcp", "SCTP", 142)}, true},
		{"another appProtocol is another port",
			[]api.ServicePort{{Name: "web", Protocol: "TCP", Port: 80, AppProtocol: "http"}}, []api.ServicePort{{Name: "web", Protocol: "TCP", Port: 80, AppProtocol: "h2c"}},
			[]api.ServicePort{{Name: "web", Protocol: "TCP", Port: 80, AppProtocol: "http"}}, true},
		{"same name, other port: oldest wins",
			[]api.ServicePort{p("http", "TCP", 80)}, []api.ServicePort{p("http", "TCP", 81)},
			[]api.ServicePort{p("http", "TCP", 80)}, true},
		{"same name, other protocol: oldest wins",
			[]api.ServicePort{p("dns", "UDP", 53)}, []api.ServicePort{p("dns", "TCP", 53)},
			[]api.ServicePort{p("dns", "UDP", 53)}, true},
		{"same protocol and port, other name: oldest wins",
			[]api.ServicePort{p("http", "TCP", 80)}, []api.ServicePort{p("web", "TCP", 80)},
			[]api.ServicePort{p("http", "TCP", 80)}, true},
		{"same port number, other protocol is another port (merged, and a conflict)",
			[]api.ServicePort{p("dns-udp", "UDP", 53)}, []api.ServicePort{p("dns-tcp", "TCP", 53)},
			[]api.ServicePort{p("dns-udp", "UDP", 53), p("dns-tcp", "TCP", 53)}, true},
		{"an unnamed port cannot join named ones",
			[]api.ServicePort{p("", "TCP", 80)}, []api.ServicePort{p("metrics", "TCP", 9090)},
			[]api.ServicePort{p("", "TCP", 80)}, true},
		{"two unnamed ports are one name",
			[]api.ServicePort{p("", "TCP", 80)}, []api.ServicePort{p("", "TCP", 8080)},
			[]api.ServicePort{p("", "TCP", 80)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Resolve([]api.Export{
				exp("b", 1, func(e *api.Export) { e.Ports = tc.newer }),
				exp("a", 2, func(e *api.Export) { e.Ports = tc.older }),
			})[0]
			if !reflect.DeepEqual(s.Ports, tc.want) {
				t.Errorf("ports %+v, want %+v", s.Ports, tc.want)
			}
			if got := len(s.Conflicts) > 0; got != tc.conflict || (got && s.Conflicts[0] != "PortConflict") {
				t.Errorf("conflicts %v, want PortConflict=%v", s.Conflicts, tc.conflict)
			}
		})
	}
}

func TestResolveTieBreakAndGrouping(t *testing.T) {
	same := t0
	a := exp("zeta", 0, func(e *api.Export) { e.CreatedAt = same; e.Type = api.TypeHeadless })
	b := exp("alpha", 0, func(e *api.Export) { e.CreatedAt = same })
	other := exp("zeta", 0, func(e *api.Export) { e.Name = "db" })
	got := Resolve([]api.Export{a, other, b})
	if len(got) != 2 || got[0].Name != "db" || got[1].Name != "web" {
		t.Fatalf("services %+v", got)
	}
	if got[1].Type != api.TypeClusterSetIP || got[1].Exports[0].ClusterID != "alpha" {
		t.Fatalf("equal creation times: the cluster ID decides; got winner %s", got[1].Exports[0].ClusterID)
	}
}

// TestResolveLabelsAsAWhole: exported labels and annotations are the oldest
// export's whole set, never a merge; any difference is a conflict.
func TestResolveLabelsAsAWhole(t *testing.T) {
	m := func(kv ...string) map[string]string {
		if len(kv) == 0 {
			return nil
		}
		out := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	for _, tc := range []struct {
		name         string
		older, newer map[string]string
		want         map[string]string
		conflict     bool
	}{
		{"same set", m("a", "1", "b", "2"), m("b", "2", "a", "1"), m("a", "1", "b", "2"), false},
		{"none on both", nil, m(), nil, false},
		{"newer has one more", m("a", "1"), m("a", "1", "b", "2"), m("a", "1"), true},
		{"newer has others", m("a", "1"), m("b", "2"), m("a", "1"), true},
		{"same key, other value", m("a", "1"), m("a", "2"), m("a", "1"), true},
		{"older has none", nil, m("a", "1"), nil, true},
		{"newer has none", m("a", "1"), nil, m("a", "1"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, kind := range []struct {
				reason mcsv1beta1.ServiceExportConditionReason
				set    func(*api.Export, map[string]string)
				get    func(Service) map[string]string
			}{
				{"LabelsConflict", func(e *api.Export, v map[string]string) { e.Labels = v }, func(s Service) map[string]string { return s.Labels }},
				{"AnnotationsConflict", func(e *api.Export, v map[string]string) { e.Annotations = v }, func(s Service) map[string]string { return s.Annotations }},
			} {
				s := Resolve([]api.Export{
					exp("newer", 1, func(e *api.Export) { kind.set(e, tc.newer) }),
					exp("older", 2, func(e *api.Export) { kind.set(e, tc.older) }),
				})[0]
				if got := kind.get(s); !maps.Equal(got, tc.want) {
					t.Errorf("%s: got %v, want the oldest export's set %v", kind.reason, got, tc.want)
				}
				var want []mcsv1beta1.ServiceExportConditionReason
				if tc.conflict {
					want = append(want, kind.reason)
				}
				if !reflect.DeepEqual(s.Conflicts, want) {
					t.Errorf("%s: conflicts %v, want %v", kind.reason, s.Conflicts, want)
				}
			}
		})
	}
}

// TestConflictMessageNamesClusters: the Conflict condition says, per
// reason, which clusters' exports disagree.
func TestConflictMessageNamesClusters(t *testing.T) {
	s := Resolve([]api.Export{
		exp("east", 3, nil),
		exp("west", 2, func(e *api.Export) {
			e.Ports = append(e.Ports, api.ServicePort{Name: "metrics", Protocol: "TCP", Port: 9090})
		}),
		exp("south", 1, func(e *api.Export) { e.Labels = map[string]string{"tier": "db"} }),
	})[0]
	if got := s.ConflictReason(); got != "PortConflict,LabelsConflict" {
		t.Fatalf("reason %q", got)
	}
	msg := s.ConflictMessage()
	for _, want := range []string{"PortConflict", "east", "west", "LabelsConflict", "south"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not name %q", msg, want)
		}
	}
	if strings.Contains(msg[strings.Index(msg, "LabelsConflict"):], "west") {
		t.Errorf("message %q: west's labels agree with the oldest export's; it is not part of the labels conflict", msg)
	}
}

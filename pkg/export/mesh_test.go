package export

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// Two clusters built from kind's defaults, both translated, and one that is not.
var (
	meshEast = api.Cluster{ID: "east", PodCIDRs: []string{"10.244.0.0/16"}, ServiceCIDRs: []string{"10.96.0.0/12"},
		Translations: []api.Translation{{Real: "10.244.0.0/16", Mapped: "240.0.0.0/16"}, {Real: "10.96.0.0/12", Mapped: "240.16.0.0/12"}}}
	meshWest = api.Cluster{ID: "west", PodCIDRs: []string{"10.244.0.0/16"}, ServiceCIDRs: []string{"10.96.0.0/12"},
		Translations: []api.Translation{{Real: "10.244.0.0/16", Mapped: "240.1.0.0/16"}, {Real: "10.96.0.0/12", Mapped: "240.32.0.0/12"}}}
	meshNorth = api.Cluster{ID: "north", PodCIDRs: []string{"10.3.0.0/16"}, ServiceCIDRs: []string{"10.200.0.0/16"}}
)

func addrsOf(e api.Export) string {
	var ss []string
	for _, ep := range e.Endpoints {
		ss = append(ss, strings.Join(ep.Addresses, "+"))
	}
	return strings.Join(e.IPs, ",") + " | " + strings.Join(ss, " ")
}

func TestMeshExport(t *testing.T) {
	e := exp("east", time.Hour, func(e *api.Export) {
		e.IPs = []string{"10.96.0.10"}
		e.Endpoints = []api.Endpoint{{Addresses: []string{"10.244.1.5"}, Ready: true}, {Addresses: []string{"10.244.2.7", "fd00::7"}}}
	})
	orig := addrsOf(e)
	if got := addrsOf(MeshExport(e, meshEast)); got != "240.16.0.10 | 240.0.1.5 240.0.2.7+fd00::7" {
		t.Errorf("a translated cluster publishes %q, want its mapped addresses (untranslated families as they are)", got)
	}
	if addrsOf(e) != orig {
		t.Errorf("MeshExport changed its input: %q", addrsOf(e))
	}
	n := exp("north", time.Hour, func(e *api.Export) { e.Endpoints = []api.Endpoint{{Addresses: []string{"10.3.0.9"}}} })
	if got := addrsOf(MeshExport(n, meshNorth)); got != " | 10.3.0.9" {
		t.Errorf("an untranslated cluster publishes %q, want its real addresses", got)
	}
}

// TestPlanImportTranslated: in west, east's endpoints are imported at
// their mapped addresses (also when east's record in the broker still
// holds the real ones it sent before it was translated: 10.244.x is west's
// own pod range), and west's own endpoints at their real addresses, which
// west's pods reach directly.
func TestPlanImportTranslated(t *testing.T) {
	sc := Scope{Local: "west", Clusters: map[string]api.Cluster{"east": meshEast, "west": meshWest, "north": meshNorth}}
	east := exp("east", 2*time.Hour, func(e *api.Export) {
		e.Endpoints = []api.Endpoint{{Addresses: []string{"240.0.1.5"}, Ready: true}, {Addresses: []string{"10.244.2.7"}, Ready: true}}
	})
	west := exp("west", time.Hour, func(e *api.Export) {
		e.Endpoints = []api.Endpoint{{Addresses: []string{"240.1.3.3"}, Ready: true}}
	})
	north := exp("north", 30*time.Minute, func(e *api.Export) {
		e.Endpoints = []api.Endpoint{{Addresses: []string{"10.3.0.9"}, Ready: true}}
	})
	imp := PlanImport(Resolve([]api.Export{east, west, north})[0], sc)
	got := map[string][]string{}
	for _, s := range imp.Slices {
		from := s.Labels["multicluster.kubernetes.io/source-cluster"]
		for _, ep := range s.Endpoints {
			got[from] = append(got[from], ep.Addresses...)
		}
	}
	for cl, want := range map[string][]string{"east": {"240.0.1.5", "240.0.2.7"}, "west": {"10.244.3.3"}, "north": {"10.3.0.9"}} {
		g := slices.Clone(got[cl])
		slices.Sort(g)
		if !slices.Equal(g, want) {
			t.Errorf("%s's endpoints imported in west at %v, want %v", cl, g, want)
		}
	}
}

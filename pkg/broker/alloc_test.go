package broker

import (
	"net/netip"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

func TestAllocateTunnelIP(t *testing.T) {
	pool := netip.MustParsePrefix("100.127.0.0/30") // .1 and .2 usable
	s := &state{clusters: map[string]*api.Cluster{}}
	want := []string{"100.127.0.1", "100.127.0.2"}
	for i, w := range want {
		a, err := allocateTunnelIP(pool, s)
		if err != nil || a.String() != w {
			t.Fatalf("allocation %d: got %v %v, want %s", i, a, err, w)
		}
		s.clusters[w] = &api.Cluster{ID: w, TunnelIP: w}
	}
	if _, err := allocateTunnelIP(pool, s); err == nil || err.Code != api.CodeExhausted {
		t.Fatalf("full pool: got %v, want Exhausted", err)
	}
	delete(s.clusters, "100.127.0.1") // a removed cluster's IP is reused
	if a, err := allocateTunnelIP(pool, s); err != nil || a.String() != "100.127.0.1" {
		t.Fatalf("reuse: got %v %v", a, err)
	}
}

package validate

import (
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

func TestClusterID(t *testing.T) {
	for id, ok := range map[string]bool{
		"east": true, "a": true, "cluster-1": true, "": false, "East": false, "-a": false,
		"a-": false, "a.b": false, "a_b": false,
		"x23456789012345678901234567890123456789012345678901234567890123":  true,
		"x234567890123456789012345678901234567890123456789012345678901234": false,
	} {
		if got := ClusterID("clusterID", id) == nil; got != ok {
			t.Errorf("ClusterID(%q) ok=%v, want %v", id, got, ok)
		}
	}
}

func TestExportFields(t *testing.T) {
	base := func() api.Export {
		return api.Export{ClusterID: "east", Namespace: "ns", Name: "svc", Type: api.TypeClusterSetIP,
			Ports: []api.ServicePort{{Protocol: "TCP", Port: 80}}}
	}
	neg := int32(0)
	cases := []struct {
		field string
		mod   func(*api.Export)
	}{
		{"", func(*api.Export) {}},
		{"name", func(e *api.Export) { e.Name = "1svc" }},
		{"namespace", func(e *api.Export) { e.Namespace = "NS" }},
		{"ports[0].protocol", func(e *api.Export) { e.Ports[0].Protocol = "tcp" }},
		{"ports[0].port", func(e *api.Export) { e.Ports[0].Port = 0 }},
		{"ips[0]", func(e *api.Export) { e.IPs = []string{"nope"} }},
		{"ipFamilies[0]", func(e *api.Export) { e.IPFamilies = []string{"IPv5"} }},
		{"sessionAffinityTimeoutSeconds", func(e *api.Export) { e.SessionAffinityTimeoutSeconds = &neg }},
		{"labels", func(e *api.Export) { e.Labels = map[string]string{"bad key!": "x"} }},
		{"endpoints[0].addresses", func(e *api.Export) { e.Endpoints = []api.Endpoint{{}} }},
		{"endpoints[0].hostname", func(e *api.Export) {
			e.Endpoints = []api.Endpoint{{Addresses: []string{"10.0.0.1"}, Hostname: "A_b"}}
		}},
	}
	for _, tc := range cases {
		e := base()
		tc.mod(&e)
		err := Export(&e)
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("valid export refused: %v", err)
		case tc.field != "" && (err == nil || err.Field != tc.field):
			t.Errorf("want error on %s, got %v", tc.field, err)
		}
	}
}

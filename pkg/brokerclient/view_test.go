package brokerclient

import (
	"fmt"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

func TestViewApply(t *testing.T) {
	v := NewView()
	v.Apply(api.Event{Type: api.EventSnapshot, Revision: 5, Snapshot: &api.Snapshot{Revision: 5,
		Clusters: []api.Cluster{{ID: "b"}, {ID: "a"}},
		Gateways: []api.Gateway{{ClusterID: "a", Hostname: "gw"}},
		Exports:  []api.Export{{ClusterID: "a", Namespace: "ns", Name: "x"}}}})
	v.Apply(api.Event{Type: api.EventPut, Revision: 6, Kind: api.KindExport, Key: "b/ns/y",
		Export: &api.Export{ClusterID: "b", Namespace: "ns", Name: "y"}})
	v.Apply(api.Event{Type: api.EventDelete, Revision: 7, Kind: api.KindGateway, Key: "a/gw"})
	v.Apply(api.Event{Type: api.EventBookmark, Revision: 9})
	s := v.Snapshot()
	if s.Revision != 7 || len(s.Clusters) != 2 || s.Clusters[0].ID != "a" || len(s.Gateways) != 0 || len(s.Exports) != 2 {
		t.Fatalf("view: %+v", s)
	}
	// A new snapshot replaces everything.
	v.Apply(api.Event{Type: api.EventSnapshot, Revision: 3, Snapshot: &api.Snapshot{Revision: 3}})
	if s := v.Snapshot(); s.Revision != 3 || len(s.Clusters)+len(s.Exports) != 0 {
		t.Fatalf("after second snapshot: %+v", s)
	}
}

func TestNewURL(t *testing.T) {
	for in, ok := range map[string]bool{
		"https://broker.example:8443": true, "127.0.0.1:8443": true, "http://x:1": false, "https://": false,
	} {
		_, err := New(in, nil, "")
		if (err == nil) != ok {
			t.Errorf("New(%q): err=%v, want ok=%v", in, err, ok)
		}
	}
	if _, err := New("https://x:1", []byte("not pem"), ""); err == nil {
		t.Error("bad CA accepted")
	}
}

func TestParseURLs(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string // fmt of the list, or "" for an error
	}{
		{"https://a:1", "[https://a:1]"},
		{"a:1, https://b:2/ ,a:1", "[https://a:1 https://b:2]"},
		{"https://a:1,,", "[https://a:1]"},
		{"https://a:1,http://b:2", ""},
		{" , ", ""},
	} {
		got, err := ParseURLs(c.in)
		if c.want == "" {
			if err == nil {
				t.Errorf("ParseURLs(%q) = %v, want an error", c.in, got)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != c.want {
			t.Errorf("ParseURLs(%q) = %v, %v; want %s", c.in, got, err, c.want)
		}
	}
}

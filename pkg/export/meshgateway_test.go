package export

import (
	"maps"
	"slices"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
)

func TestDownClusters(t *testing.T) {
	tests := []struct {
		name    string
		remotes []status.RemoteCluster
		want    []string
	}{
		{"none", nil, nil},
		{"connected and connecting stay", []status.RemoteCluster{{Cluster: "a", Status: api.StatusConnected}, {Cluster: "b", Status: api.StatusConnecting}}, nil},
		{"error is down", []status.RemoteCluster{{Cluster: "a", Status: api.StatusConnected}, {Cluster: "b", Status: api.StatusError}, {Cluster: "c", Status: api.StatusError}}, []string{"b", "c"}},
		{"unknown status stays", []status.RemoteCluster{{Cluster: "a", Status: ""}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := slices.Sorted(maps.Keys(DownClusters(tt.remotes)))
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

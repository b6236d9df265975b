package member

import (
	"strings"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
)

func TestTunnelsReady(t *testing.T) {
	snap := &api.Snapshot{
		Clusters: []api.Cluster{{ID: "east"}, {ID: "west"}, {ID: "north"}, {ID: "south"}},
		Gateways: []api.Gateway{
			{ClusterID: "east", Hostname: "e1", Active: true},
			{ClusterID: "west", Hostname: "w1", Active: true},
			{ClusterID: "north", Hostname: "n1", Active: true},
			{ClusterID: "south", Hostname: "s1", Active: true, Stale: true},
		},
	}
	remote := func(c, st string) status.RemoteCluster { return status.RemoteCluster{Cluster: c, Status: st} }
	cases := []struct {
		name string
		st   *status.GatewayStatus
		snap *api.Snapshot
		done bool
		line string
	}{
		{"no status", nil, snap, false, "no active gateway yet"},
		{"no active", &status.GatewayStatus{}, snap, false, "no active gateway yet"},
		// The gateway has not seen the others yet: 0/0 by its own count is not done.
		{"0/0 while the broker has members", &status.GatewayStatus{ActiveNode: "e1", Epoch: 2}, snap, false,
			"active gateway e1 (epoch 2): 0/2 tunnels up; waiting for north, west; no active gateway yet in south (not waited for)"},
		{"one of two", &status.GatewayStatus{ActiveNode: "e1", Remotes: []status.RemoteCluster{remote("west", api.StatusConnected), remote("north", api.StatusConnecting)}}, snap, false,
			"1/2 tunnels up; waiting for north"},
		{"all up", &status.GatewayStatus{ActiveNode: "e1", Remotes: []status.RemoteCluster{remote("west", api.StatusConnected), remote("north", api.StatusConnected)}}, snap, true,
			"2/2 tunnels up"},
		{"first member", &status.GatewayStatus{ActiveNode: "e1"}, &api.Snapshot{Clusters: []api.Cluster{{ID: "east"}}}, true, "0/0 tunnels up"},
		{"broker unknown", &status.GatewayStatus{ActiveNode: "e1"}, nil, false, "as it sees them"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			done, line := TunnelsReady("east", c.st, c.snap)
			if done != c.done || !strings.Contains(line, c.line) {
				t.Fatalf("got %v %q, want %v containing %q", done, line, c.done, c.line)
			}
		})
	}
}

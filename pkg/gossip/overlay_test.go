package gossip

import (
	"reflect"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// signed is an announcement of cluster id signed with signer's key.
func signed(t *testing.T, id, signer, host, ep string, epoch int64) Remote {
	g := Gateway{ClusterID: id, Hostname: host, Endpoint: ep, Epoch: epoch}
	sig, err := sign(wgKey(t, signer), g.payload())
	if err != nil {
		t.Fatal(err)
	}
	g.Sig = sig
	return Remote{Gateway: g}
}

func TestOverlay(t *testing.T) {
	ka, kb, kc := pub(t, "a"), pub(t, "b"), pub(t, "c")
	base := api.Snapshot{Revision: 7,
		Clusters: []api.Cluster{{ID: "a", TunnelIP: "100.64.0.1"}, {ID: "b", TunnelIP: "100.64.0.2"}, {ID: "c", TunnelIP: "100.64.0.3"}},
		Gateways: []api.Gateway{
			{ClusterID: "a", Hostname: "a-gw1", PrivateIP: "10.0.0.1", Port: 51820, PublicKey: ka, Active: true, Epoch: 3},
			{ClusterID: "b", Hostname: "b-gw1", PrivateIP: "10.0.1.1", Port: 51820, PublicKey: kb, Active: true, Epoch: 4},
			{ClusterID: "b", Hostname: "b-gw2", PrivateIP: "10.0.1.2", Port: 51820, PublicKey: kb, Epoch: 2},
			{ClusterID: "c", Hostname: "c-gw1", PrivateIP: "10.0.2.1", Port: 51820, PublicKey: kc, Active: true, Epoch: 1},
		}}
	remote := func(id, host, ep string, epoch int64) Remote {
		return signed(t, id, id, host, ep, epoch)
	}
	b2 := api.Gateway{ClusterID: "b", Hostname: "b-gw2", PublicIP: "10.0.1.2", PrivateIP: "10.0.1.2", Port: 51821,
		PublicKey: kb, Active: true, Epoch: 5}
	for _, tc := range []struct {
		name    string
		remotes map[string]Remote
		want    []api.Gateway // nil: the snapshot unchanged
		over    []string
	}{
		{name: "nothing gossiped", remotes: nil},
		{name: "broker has the same epoch: the broker wins",
			remotes: map[string]Remote{"b": remote("b", "b-gw1", "10.0.1.1:51820", 4)}},
		{name: "broker newer: the broker wins",
			remotes: map[string]Remote{"b": remote("b", "b-gw2", "10.0.1.2:51820", 3)}},
		{name: "newer epoch gossiped: replaces every record of the cluster",
			remotes: map[string]Remote{"b": remote("b", "b-gw2", "10.0.1.2:51821", 5)},
			want:    []api.Gateway{base.Gateways[0], base.Gateways[3], b2}, over: []string{"b"}},
		{name: "own cluster and unknown clusters are ignored",
			remotes: map[string]Remote{"a": remote("a", "a-gw9", "10.9.9.9:1", 99), "z": remote("z", "z-gw", "10.9.9.9:1", 9)}},
		{name: "unusable endpoint is ignored",
			remotes: map[string]Remote{"c": remote("c", "c-gw2", "nonsense", 9)}},
		{name: "an announcement of b signed by another cluster (c) is ignored",
			remotes: map[string]Remote{"b": signed(t, "b", "c", "evil", "203.0.113.9:51820", 5)}},
		{name: "b's own announcement presented as c's is ignored",
			remotes: map[string]Remote{"c": signed(t, "b", "b", "c-gw2", "10.0.2.2:51820", 9)}},
		{name: "an epoch beyond the broker's bound is ignored",
			remotes: map[string]Remote{"b": remote("b", "b-gw2", "10.0.1.2:51821", 4+MaxEpochLead+1)}},
		{name: "a changed field breaks the signature",
			remotes: map[string]Remote{"b": func() Remote {
				r := remote("b", "b-gw2", "10.0.1.2:51821", 5)
				r.Endpoint = "203.0.113.9:51820"
				return r
			}()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, over := Overlay(base, "a", tc.remotes)
			want := base.Gateways
			if tc.want != nil {
				want = tc.want
			}
			if !reflect.DeepEqual(got.Gateways, want) || !reflect.DeepEqual(over, tc.over) {
				t.Errorf("Overlay:\n got %+v %v\nwant %+v %v", got.Gateways, over, want, tc.over)
			}
			if got.Revision != base.Revision || !reflect.DeepEqual(got.Clusters, base.Clusters) {
				t.Errorf("revision or clusters changed: %+v", got)
			}
		})
	}
	if len(base.Gateways) != 4 || base.Gateways[1].Hostname != "b-gw1" {
		t.Errorf("the input snapshot was modified: %+v", base.Gateways)
	}
}

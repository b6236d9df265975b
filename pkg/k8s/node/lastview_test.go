package node

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/internal/kubeapi"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/gateway"
	"github.com/tunnelmesh/tunnelmesh/pkg/gossip"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The stored view against a real apiserver: created by the first write,
// replaced by the next, refused to an older epoch (a partitioned old active),
// without the exports.
func TestViewStoreIsFencedByEpoch(t *testing.T) {
	c := kubeapi.Start(t).Client(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: defaults.Namespace}}
	if _, err := c.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	v := ViewStore{Client: c, Namespace: defaults.Namespace}
	if _, _, ok, err := v.Load(t.Context()); ok || err != nil {
		t.Fatalf("Load before any write: found %v, %v", ok, err)
	}
	snap := func(rev int64) api.Snapshot {
		return api.Snapshot{Revision: rev, Clusters: []api.Cluster{{ID: "a", TunnelIP: "100.64.0.1"}},
			Gateways: []api.Gateway{{ClusterID: "a", Hostname: "gw", Epoch: 3}}, Exports: []api.Export{{ClusterID: "a", Name: "web"}}}
	}
	if err := v.Save(t.Context(), gateway.StoredView{Base: snap(7)}, 3); err != nil {
		t.Fatal(err)
	}
	if err := v.Save(t.Context(), gateway.StoredView{Base: snap(8)}, 3); err != nil {
		t.Fatal(err)
	}
	if err := v.Save(t.Context(), gateway.StoredView{Base: snap(9)}, 2); !errors.Is(err, ErrStaleView) {
		t.Fatalf("save by an older epoch: %v; want ErrStaleView", err)
	}
	stored, epoch, ok, err := v.Load(t.Context())
	got := stored.View()
	if err != nil || !ok || epoch != 3 || got.Revision != 8 || len(got.Gateways) != 1 || got.Gateways[0].Hostname != "gw" || got.Exports != nil {
		t.Fatalf("Load: %+v epoch %d found %v %v; want revision 8 of epoch 3 without exports", got, epoch, ok, err)
	}
}

// The stored view keeps the broker's snapshot and the gossip apart through
// encoding; a view stored before they were kept apart reads as a base.
func TestStoredViewEncoding(t *testing.T) {
	g := gossip.Remote{Gateway: gossip.Gateway{Epoch: 4, Hostname: "b-gw2", Endpoint: "192.0.2.22:51820", Sig: []byte{1, 2, 3}}, Alive: true}
	in := gateway.StoredView{Base: api.Snapshot{Revision: 9, Exports: []api.Export{{ClusterID: "b", Name: "x"}}},
		Gossip: map[string]gossip.Remote{"b": g}}
	b, err := encodeView(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := decodeView(b)
	if err != nil || out.Base.Revision != 9 || out.Base.Exports != nil || out.Gossip["b"].Epoch != 4 || string(out.Gossip["b"].Sig) != "\x01\x02\x03" {
		t.Fatalf("round trip: %+v, %v", out, err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_ = json.NewEncoder(zw).Encode(api.Snapshot{Revision: 7})
	_ = zw.Close()
	old, err := decodeView(buf.Bytes())
	if err != nil || old.Base.Revision != 7 || old.Gossip != nil {
		t.Fatalf("a bare snapshot: %+v, %v", old, err)
	}
}

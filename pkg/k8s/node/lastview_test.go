package node

import (
	"errors"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/gateway"
	"github.com/tunnelmesh/tunnelmesh/test/kubeapi"
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

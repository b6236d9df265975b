package export

import (
	"context"
	"log/slog"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
)

// DownClusters are the remote clusters whose tunnel the active gateway
// reports broken (status error). A cluster still connecting, or one the
// gateway has not reported on, counts as reachable: imports are withdrawn
// only on evidence, never because a status is missing.
func DownClusters(remotes []status.RemoteCluster) map[string]bool {
	down := map[string]bool{}
	for _, r := range remotes {
		if r.Status == api.StatusError {
			down[r.Cluster] = true
		}
	}
	return down
}

// FollowMeshGateway keeps t in step with the cluster's MeshGateway (written
// by the active gateway) until ctx ends. It watches the one object by name
// (the controller may list and watch MeshGateways in its namespace), so a
// broken tunnel withdraws its cluster's endpoints as soon as the gateway
// reports it rather than at the next poll.
func FollowMeshGateway(ctx context.Context, dyn dynamic.Interface, namespace, clusterID string, t *Tunnels, log *slog.Logger) {
	if namespace == "" {
		namespace = defaults.Namespace
	}
	f := &meshGatewayFollower{t: t, log: log, known: map[string]bool{}}
	inf := dynamicinformer.NewFilteredDynamicInformer(dyn, status.GVR, namespace, 0, cache.Indexers{},
		func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", clusterID).String()
		})
	// A deleted MeshGateway means no active gateway reports now: keep what
	// we had, as when it has never been written.
	_, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    f.observe,
		UpdateFunc: func(_, obj any) { f.observe(obj) },
	})
	if err != nil {
		log.Error("follow MeshGateway", "err", err)
		return
	}
	inf.Informer().Run(ctx.Done())
}

type meshGatewayFollower struct {
	t     *Tunnels
	log   *slog.Logger
	mu    sync.Mutex
	known map[string]bool // clusters reported down at the last observation
}

func (f *meshGatewayFollower) observe(obj any) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	m, err := status.FromUnstructured(u)
	if err != nil {
		f.log.Warn("MeshGateway not readable", "err", err)
		return
	}
	down := DownClusters(m.Status.Remotes)
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.known {
		if !down[c] {
			f.t.SetUp(c, true)
			f.log.Info("tunnel up again: importing its endpoints", "cluster", c)
		}
	}
	for c := range down {
		if !f.known[c] {
			f.t.SetUp(c, false)
			f.log.Warn("tunnel down: its endpoints leave the imports until it recovers", "cluster", c)
		}
	}
	f.known = down
}

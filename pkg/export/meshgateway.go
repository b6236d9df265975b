package export

import (
	"context"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/dynamic"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
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
// by the active gateway) until ctx ends, reading it every interval.
func FollowMeshGateway(ctx context.Context, dyn dynamic.Interface, namespace, clusterID string, t *Tunnels, interval time.Duration, log *slog.Logger) {
	known := map[string]bool{}
	for {
		m, err := status.Get(ctx, dyn, namespace, clusterID)
		switch {
		case err == nil:
			down := DownClusters(m.Status.Remotes)
			for c := range known {
				if !down[c] {
					t.SetUp(c, true)
					log.Info("tunnel up again: importing its endpoints", "cluster", c)
				}
			}
			for c := range down {
				if !known[c] {
					t.SetUp(c, false)
					log.Warn("tunnel down: its endpoints leave the imports until it recovers", "cluster", c)
				}
			}
			known = down
		case apierrors.IsNotFound(err):
			// No active gateway has reported yet: keep what we had.
		default:
			log.Debug("read MeshGateway", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

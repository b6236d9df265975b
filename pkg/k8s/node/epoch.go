package node

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/gateway"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// epochFloor is the highest epoch of this cluster recorded outside the
// Lease: the broker's gateway records, the MeshGateway status and the
// stored view. The elector keeps every epoch above it (election.Config's
// EpochFloor), so a deleted or rolled-back Lease does not restart the epochs
// below what the broker, the status and the other clusters' gossip fence on.
type epochFloor struct{ v atomic.Int64 }

func (f *epochFloor) get() int64 { return f.v.Load() }

func (f *epochFloor) raise(e int64) {
	for {
		cur := f.v.Load()
		if e <= cur || f.v.CompareAndSwap(cur, e) {
			return
		}
	}
}

// recordedEpoch is the highest epoch among cluster's gateway records in s. Pure.
func recordedEpoch(s api.Snapshot, cluster string) int64 {
	var e int64
	for _, g := range s.Gateways {
		if g.ClusterID == cluster {
			e = max(e, g.Epoch)
		}
	}
	return e
}

// readRecordedEpochs raises floor to the epochs of the MeshGateway status
// and the stored view, retrying until both were read or ctx ends.
func (r *runner) readRecordedEpochs(ctx context.Context, floor *epochFloor, clusterID string) {
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := r.readStatusEpoch(rctx, floor, clusterID)
		if _, by, ok, verr := (ViewStore{Client: r.cfg.Client, Namespace: r.cfg.Namespace}).Load(rctx); verr != nil {
			err = errors.Join(err, verr)
		} else if ok {
			floor.raise(by)
		}
		cancel()
		if err == nil {
			return
		}
		r.log.Debug("read the recorded gateway epochs (will retry)", "err", err)
		sleep(ctx, 2*time.Second)
	}
}

// readStatusEpoch raises floor to the MeshGateway status's epoch.
func (r *runner) readStatusEpoch(ctx context.Context, floor *epochFloor, clusterID string) error {
	mg, err := status.Get(ctx, r.cfg.Dynamic, r.cfg.Namespace, clusterID)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	floor.raise(mg.Status.Epoch)
	return nil
}

// followRecordedEpoch raises floor to the epoch the Source's base records
// for cluster, at once and at every change of the view, until ctx ends.
func followRecordedEpoch(ctx context.Context, src *gateway.Source, cluster string, floor *epochFloor) {
	for {
		changed := src.Changed()
		if b := src.Base(); b != nil {
			floor.raise(recordedEpoch(*b, cluster))
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

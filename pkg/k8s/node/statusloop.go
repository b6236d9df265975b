package node

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/gateway"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/discovery"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/election"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// statusLoop writes the MeshGateway status while active.
type statusLoop struct {
	r                              *runner
	w                              status.Writer
	bc                             *brokerclient.Client
	src                            *gateway.Source
	eng                            *gateway.Engine
	floor                          *epochFloor
	candidates                     func() []election.Candidate
	cidrs                          discovery.CIDRs
	clusterID, publicKey, endpoint string
	log                            *slog.Logger
	conds                          []metav1.Condition
	staleEpoch                     int64
	lastMismatch                   string
}

// run writes at once when told an epoch or when the engine announces a
// change (a link's health flipping among them: the importers of this
// cluster act on it), then every interval while active.
func (s *statusLoop) run(ctx context.Context, epochs <-chan int64, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var epoch int64
	for {
		changed := s.eng.Changed()
		select {
		case <-ctx.Done():
			return
		case epoch = <-epochs:
		case <-changed:
		case <-t.C:
		}
		if epoch > 0 {
			s.write(ctx, epoch)
		}
	}
}

func (s *statusLoop) write(ctx context.Context, epoch int64) {
	if epoch <= s.staleEpoch {
		return
	}
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	reachable := s.bc.Healthy(hctx) == nil
	cancel()
	base := s.src.Base()
	st := BuildStatus(StatusInput{ClusterID: s.clusterID, Node: s.r.cfg.NodeName, Epoch: epoch, PublicKey: s.publicKey,
		Endpoint: s.endpoint, CIDRs: s.cidrs, Snapshot: base, Health: s.eng.Health(), BrokerReachable: reachable,
		Refused: s.eng.Refused(), Candidates: s.candidates()})
	for _, c := range st.Conditions {
		meta.SetStatusCondition(&s.conds, c)
		if c.Type == CondCIDRsMatch {
			s.logMismatch(c)
		}
	}
	st.Conditions = append([]metav1.Condition(nil), s.conds...)
	if st.Remotes == nil && base == nil {
		// No broker state at all: keep the predecessor's remote CIDRs for the route agents.
		if old, err := status.Get(ctx, s.r.cfg.Dynamic, s.r.cfg.Namespace, s.clusterID); err == nil {
			st.Remotes = old.Status.Remotes
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := s.w.Write(wctx, st)
	switch {
	case errors.Is(err, status.ErrStale):
		s.staleEpoch = epoch
		s.log.Warn("a newer active gateway owns the status; not writing it", "epoch", epoch)
		// Or the Lease was reset below it: the elector then takes a higher epoch.
		if rerr := s.r.readStatusEpoch(ctx, s.floor, s.clusterID); rerr != nil {
			s.log.Debug("read the status's epoch", "err", rerr)
		}
	case err != nil:
		s.log.Warn("write MeshGateway status", "err", err)
	}
}

// logMismatch says once per new mismatch that the broker's record of this
// cluster differs from what was discovered.
func (s *statusLoop) logMismatch(c metav1.Condition) {
	msg := ""
	if c.Reason == "Mismatch" {
		msg = c.Message
	}
	if msg != "" && msg != s.lastMismatch {
		s.log.Error("the cluster's CIDRs differ from the broker's record; routes follow the broker's record", "err", msg)
	}
	s.lastMismatch = msg
}

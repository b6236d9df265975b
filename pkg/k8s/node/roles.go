package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/gateway"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/election"
	"github.com/tunnelmesh/tunnelmesh/pkg/nft"
)

// roles runs a candidate's parts and follows the elector's States: the
// engine's role and epoch, the status writer's epoch, one tenure per epoch
// while active. On ctx's end the data plane is torn down first and the
// Lease released after, so a standby takes over within one apiserver
// round trip.
type roles struct {
	log         *slog.Logger
	eng         *gateway.Engine
	el          *election.Elector
	fence       *nft.Fence // removed after a graceful release
	status      *statusLoop
	tenure      tenure
	statusEvery time.Duration
}

func (c roles) run(ctx context.Context) error {
	// The engine and the elector outlive ctx: a graceful stop tears the data
	// plane down first and releases the Lease after.
	engCtx, stopEng := context.WithCancel(context.Background())
	defer stopEng()
	engDone := make(chan error, 1)
	go func() { engDone <- c.eng.Run(engCtx) }()
	elCtx, stopEl := context.WithCancel(context.Background())
	defer stopEl()
	elDone := make(chan error, 1)
	go func() { elDone <- c.el.Run(elCtx) }()

	// One tenure per epoch while active, cancelled on step-down without
	// waiting (a store or a gossip goodbye must never delay the data plane);
	// waited for on return.
	var tenures sync.WaitGroup
	defer tenures.Wait()
	stopTenure := func() {}
	defer func() { stopTenure() }()
	startTenure := func(epoch int64) {
		stopTenure()
		tctx, cancel := context.WithCancel(ctx)
		tenures.Add(1)
		go func() { defer tenures.Done(); c.tenure.run(tctx, epoch) }()
		stopTenure = cancel
	}
	// Status writes run apart so that a slow apiserver or broker never
	// delays a role change; the loop is told the epoch while active, 0 else.
	epochs := make(chan int64, 1)
	statusCtx, stopStatus := context.WithCancel(ctx)
	statusDone := make(chan struct{})
	go func() { defer close(statusDone); c.status.run(statusCtx, epochs, c.statusEvery) }()
	defer func() { stopStatus(); <-statusDone }()
	tell := func(e int64) {
		select {
		case <-epochs:
		default:
		}
		epochs <- e
	}
	stop := func(graceful bool) error {
		stopEng()
		err := <-engDone
		if graceful {
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if rerr := c.el.Release(rctx); rerr != nil {
				err = errors.Join(err, fmt.Errorf("release the Lease: %w", rerr))
			}
			cancel()
		}
		stopEl()
		<-elDone
		if graceful {
			if ferr := c.fence.Remove(); ferr != nil {
				err = errors.Join(err, fmt.Errorf("remove the WireGuard fence: %w", ferr))
			}
		}
		return err
	}
	// The first State is always applied and logged: "" is no role yet.
	role, epoch := election.Role(""), int64(0)
	for {
		select {
		case <-ctx.Done():
			c.log.Info("stopping: tearing the data plane down, then releasing the Lease", "wasActive", role == election.Active)
			stopTenure()
			err := stop(true)
			c.log.Info("stopped", "err", err)
			return err
		case err := <-engDone:
			engDone <- err
			return errors.Join(fmt.Errorf("gateway data plane stopped: %w", err), stop(true))
		case err := <-elDone:
			elDone <- err
			return errors.Join(fmt.Errorf("election stopped: %w", err), stop(false))
		case st := <-c.el.States():
			changed := st.Role != role || (st.Role == election.Active && st.Epoch != epoch)
			role, epoch = st.Role, st.Epoch
			if !changed {
				continue
			}
			if role == election.Active {
				c.log.Info("active", "epoch", epoch)
				c.eng.SetRole(gateway.RoleActive, epoch)
				tell(epoch)
				startTenure(epoch)
			} else {
				c.log.Info("standby", "holder", st.Holder, "epoch", epoch)
				stopTenure()
				c.eng.SetRole(gateway.RoleStandby, epoch)
				tell(0)
			}
		}
	}
}

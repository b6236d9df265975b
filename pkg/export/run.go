package export

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Lease of the one active controller of a cluster.
const (
	LeaseName = "tunnelmesh-controller"
)

// Election configures Run; zero values take the defaults.
type Election struct {
	Namespace, Name string // default defaults.Namespace, LeaseName
	Identity        string // required: unique per replica (the pod name)
	// Client renews the Lease; nil: Config.Kube. A client of its own (its
	// own rate limiter) keeps a burst of import writes from delaying the
	// renewals past RenewDeadline, which would stop the controller.
	Client kubernetes.Interface
	// Standard client-go timings by default (15 s, 10 s, 2 s): a standby
	// takes over within a lease duration, which only delays export changes.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// ErrLostLease is returned by Run when this replica stopped leading
// while its context was still live; the process should exit and restart.
var ErrLostLease = errors.New("export: lost the controller lease")

// Run runs a Controller while this replica holds the cluster's
// controller Lease, so that one controller is active per cluster.
func Run(ctx context.Context, cfg Config, el Election) error {
	if el.Identity == "" {
		return errors.New("export: election identity is required")
	}
	if el.Namespace == "" {
		el.Namespace = defaults.Namespace
	}
	if el.Name == "" {
		el.Name = LeaseName
	}
	if el.LeaseDuration == 0 {
		el.LeaseDuration, el.RenewDeadline, el.RetryPeriod = 15*time.Second, 10*time.Second, 2*time.Second
	}
	if el.Client == nil {
		el.Client = cfg.Kube
	}
	ctrl, err := New(cfg)
	if err != nil {
		return err
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: el.Namespace, Name: el.Name},
		Client:     el.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: el.Identity},
	}
	runErr := make(chan error, 1)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, ReleaseOnCancel: true, Name: el.Name,
		LeaseDuration: el.LeaseDuration, RenewDeadline: el.RenewDeadline, RetryPeriod: el.RetryPeriod,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				ctrl.log.Info("leading; starting the export controller", "identity", el.Identity)
				runErr <- ctrl.Run(ctx)
			},
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return fmt.Errorf("export: leader election: %w", err)
	}
	le.Run(ctx)
	if ctx.Err() != nil {
		return nil
	}
	select {
	case err := <-runErr:
		if err != nil {
			return err
		}
	default:
	}
	return ErrLostLease
}

package election

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Handler is the caller's side of the active role (the data plane and the
// broker registration). Drive calls it from one goroutine, never
// concurrently.
type Handler interface {
	// Activate brings the active role up for s.Epoch, or carries it over to
	// a new epoch when already up (re-register with the broker; the device
	// may stay). An error ends Drive: a candidate that cannot serve must not
	// keep the Lease from one that can.
	Activate(ctx context.Context, s State) error
	// Deactivate tears the active role down (no peers, no tunnel address).
	// Called at once when the role is lost, and before the Lease is
	// released on a graceful stop.
	Deactivate(ctx context.Context) error
}

// StopTimeout bounds Deactivate plus Release on a graceful stop.
const StopTimeout = 10 * time.Second

// Drive runs e and keeps h in step with the role until ctx ends, then stops
// gracefully: Deactivate first, then Release, so the successor starts only
// after this node has let go. It returns the error that ended it (a missing
// permission, a failed Activate) or nil after a graceful stop.
func Drive(ctx context.Context, e *Elector, h Handler) error {
	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	ran := make(chan error, 1)
	go func() { ran <- e.Run(runCtx) }()

	active := false
	var epoch int64
	deactivate := func(c context.Context) error {
		if !active {
			return nil
		}
		active = false
		if err := h.Deactivate(c); err != nil {
			return fmt.Errorf("deactivate the gateway (epoch %d): %w", epoch, err)
		}
		return nil
	}
	stop := func(cause error) error {
		c, cancel := context.WithTimeout(context.Background(), StopTimeout)
		defer cancel()
		err := deactivate(c)
		if rerr := e.Release(c); rerr != nil && cause == nil {
			// Run may have ended already; that is not a failure of the stop.
			select {
			case <-e.Done():
			default:
				err = errors.Join(err, rerr)
			}
		}
		return errors.Join(cause, err)
	}
	for {
		select {
		case <-ctx.Done():
			return stop(nil)
		case err := <-ran:
			// Run ended on its own (a permission is missing): the role is
			// gone with it.
			c, cancel := context.WithTimeout(context.Background(), StopTimeout)
			derr := deactivate(c)
			cancel()
			return errors.Join(err, derr)
		case s := <-e.States():
			switch {
			case s.Role == Active && (!active || s.Epoch != epoch):
				epoch = s.Epoch
				active = true
				if err := h.Activate(ctx, s); err != nil {
					if ctx.Err() != nil {
						return stop(nil) // stopped while activating
					}
					return stop(fmt.Errorf("activate the gateway at epoch %d: %w", s.Epoch, err))
				}
			case s.Role != Active && active:
				if err := deactivate(ctx); err != nil {
					return stop(err)
				}
			}
		}
	}
}

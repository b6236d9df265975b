package core

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// health tracks whether this replica can commit: the last time the store
// answered (a commit, a followed commit, a ping) and the last time it
// failed.
type health struct {
	lastOK, lastFail atomic.Int64 // unix nanoseconds
	lastErr          atomic.Pointer[string]
	reloading        atomic.Bool
	pingMu           sync.Mutex
}

func (h *health) ok() { h.lastOK.Store(time.Now().UnixNano()) }

func (h *health) fail(err error) {
	s := err.Error()
	h.lastErr.Store(&s)
	h.lastFail.Store(time.Now().UnixNano())
}

// readyFresh is how long a store answer vouches for readiness before the
// store is asked again.
const readyFresh = 2 * time.Second

// pingTimeout bounds the store round trip of a readiness check.
const pingTimeout = time.Second

// Ready says why this replica cannot serve and commit now, or nil: it is
// closing, reloading its state, or its store does not answer (a quorum
// read for etcd, asked at most every readyFresh).
func (c *Core) Ready(ctx context.Context) error {
	select {
	case <-c.closing:
		return ErrUnavailable
	default:
	}
	if c.health.reloading.Load() {
		return errors.New("reloading the state from the store")
	}
	if c.fresh() {
		return nil
	}
	p, ok := c.store.(interface{ Ping(context.Context) error })
	if !ok {
		return nil // a local file: nothing to reach
	}
	c.health.pingMu.Lock()
	defer c.health.pingMu.Unlock()
	if c.fresh() { // another check asked meanwhile
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := p.Ping(pctx); err != nil {
		c.health.fail(err)
		return fmt.Errorf("the store does not answer: %w", err)
	}
	c.health.ok()
	return nil
}

func (c *Core) fresh() bool {
	ok, fail := c.health.lastOK.Load(), c.health.lastFail.Load()
	return ok > fail && time.Since(time.Unix(0, ok)) < readyFresh
}

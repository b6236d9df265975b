package core

import (
	"context"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
)

// Following the commits of other replicas that share the store. Writer only.

// catchUp waits for the next commit of another replica and applies it and
// any that follow at once. It reports false when none came in time (the
// store is unreachable) or the core is closing.
func (c *Core) catchUp() bool {
	if c.writer.follow == nil {
		return false
	}
	t := time.NewTimer(c.cfg.CommitTimeout)
	defer t.Stop()
	for before := c.writer.version; c.writer.version == before; {
		select {
		case batch, ok := <-c.writer.follow:
			c.applyFollowed(batch, ok)
			if !ok || c.writer.follow == nil {
				return false
			}
		case <-t.C:
			return false
		case <-c.closing:
			return false
		}
	}
	for {
		select {
		case batch, ok := <-c.writer.follow:
			c.applyFollowed(batch, ok)
			if !ok {
				return true
			}
		default:
			return true
		}
	}
}

// applyFollowed applies a commit another replica made (own commits, which
// Follow reports too, are skipped) and publishes it to this replica's
// watchers with the same revisions.
func (c *Core) applyFollowed(batch store.Batch, ok bool) {
	if !ok {
		c.writer.follow = nil // closed: the core is closing
		return
	}
	c.health.ok()
	if batch.Reset {
		c.log.Warn("lost the place in the store's history; reloading the state", "err", batch.Err)
		c.restartFollow()
		return
	}
	if batch.Version <= c.writer.version {
		return
	}
	st := c.state.st
	next := st.rev
	var watched []store.Change
	for _, ch := range batch.Changes {
		if ch.Revision > 0 {
			if ch.Revision != next+1 {
				c.log.Warn("followed commit does not continue this replica's revisions; reloading", "want", next+1, "got", ch.Revision)
				c.restartFollow()
				return
			}
			next = ch.Revision
			watched = append(watched, ch)
		}
	}
	if next != batch.Revision {
		c.log.Warn("followed commit ends at another revision than its changes; reloading", "want", next, "got", batch.Revision)
		c.restartFollow()
		return
	}
	events, err := logEntries(watched)
	if err != nil {
		c.log.Error("followed commit unreadable; reloading", "err", err)
		c.restartFollow()
		return
	}
	// Decoded whole first, so that an unreadable commit changes nothing.
	sets := make([]func(*state), 0, len(batch.Changes))
	for _, ch := range batch.Changes {
		set, err := decodeChange(ch)
		if err != nil {
			c.log.Error("followed commit unreadable; reloading", "err", err)
			c.restartFollow()
			return
		}
		sets = append(sets, set)
	}
	c.state.Lock()
	for _, set := range sets {
		set(st)
	}
	st.rev = next
	c.appendLog(events, next)
	c.state.Unlock()
	c.metrics.followed.Inc()
	c.updateAuth(batch.Changes)
	c.setVersion(batch.Version) // last: waiters find the new credentials
}

// restartFollow reloads the state and follows the store again from there.
// It holds no lock while it retries: readers keep the last committed
// state meanwhile, and readiness fails.
func (c *Core) restartFollow() {
	if c.writer.followCancel != nil {
		c.writer.followCancel()
	}
	c.writer.follow = nil
	c.health.reloading.Store(true)
	defer c.health.reloading.Store(false)
	for {
		err := c.reload()
		if err == nil {
			break
		}
		c.health.fail(err)
		c.log.Error("reload state from the store", "err", err)
		select {
		case <-c.closing:
			return
		case <-time.After(time.Second):
		}
	}
	c.startFollow()
}

// reload replaces the committed state with the store's.
func (c *Core) reload() error {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.CommitTimeout)
	defer cancel()
	loaded, err := c.store.Load(ctx, c.cfg.LogRetention)
	if err != nil {
		return err
	}
	st, err := loadState(loaded)
	if err != nil {
		return err
	}
	events, err := logEntries(loaded.Log)
	if err != nil {
		return err
	}
	c.state.Lock()
	c.state.st = st
	c.replaceLog(events, st.rev)
	c.state.Unlock()
	c.auth.Store(newAuthTable(st))
	c.setVersion(max(c.writer.version, loaded.Version))
	c.health.ok()
	return nil
}

func (c *Core) startFollow() {
	ctx, cancel := context.WithCancel(context.Background())
	c.writer.followCancel = cancel
	c.writer.follow = c.store.Follow(ctx, c.writer.version)
}

package broker

import (
	"context"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
)

// Following the commits of other replicas that share the store.

// catchUp waits for the next commit of another replica and applies it and
// any that follow at once. It reports false when none came in time (the
// store is unreachable) or the broker is closing. Caller holds mu.
func (b *Broker) catchUp() bool {
	if b.follow == nil {
		return false
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	for before := b.version; b.version == before; {
		select {
		case batch, ok := <-b.follow:
			b.applyFollowed(batch, ok)
			if !ok {
				return false
			}
		case <-t.C:
			return false
		case <-b.closing:
			return false
		}
	}
	for {
		select {
		case batch, ok := <-b.follow:
			b.applyFollowed(batch, ok)
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
// watchers with the same revisions. Caller holds mu.
func (b *Broker) applyFollowed(batch store.Batch, ok bool) {
	if !ok {
		b.follow = nil // closed: the broker is closing
		return
	}
	if batch.Reset {
		b.log.Warn("lost the place in the store's history; reloading the state", "err", batch.Err)
		b.restartFollow()
		return
	}
	if batch.Version <= b.version {
		return
	}
	var events []logEntry
	next := b.st.rev
	for _, ch := range batch.Changes {
		if ch.Revision > 0 {
			if ch.Revision != next+1 {
				b.log.Warn("followed commit does not continue this replica's revisions; reloading", "want", next+1, "got", ch.Revision)
				b.restartFollow()
				return
			}
			next = ch.Revision
			e, err := logEntryFromChange(ch)
			if err != nil {
				b.log.Error("followed commit unreadable; reloading", "err", err)
				b.restartFollow()
				return
			}
			events = append(events, e)
		}
		if err := b.st.apply(ch); err != nil {
			b.log.Error("followed commit unreadable; reloading", "err", err)
			b.restartFollow()
			return
		}
		if ch.Kind == store.KindGateway && ch.Value == nil {
			b.status.delete(ch.Key)
		}
	}
	if next != batch.Revision {
		b.log.Warn("followed commit ends at another revision than its changes; reloading", "want", next, "got", batch.Revision)
		b.restartFollow()
		return
	}
	b.st.rev = next
	b.version = batch.Version
	b.metrics.followed.Inc()
	b.publish(batch.Changes, events)
}

// restartFollow reloads the state and follows the store again from there.
// Caller holds mu.
func (b *Broker) restartFollow() {
	if b.followCancel != nil {
		b.followCancel()
	}
	b.follow = nil
	for {
		err := b.reload()
		if err == nil {
			break
		}
		b.log.Error("reload state from the store", "err", err)
		select {
		case <-b.closing:
			return
		case <-time.After(time.Second):
		}
	}
	b.startFollow()
}

func (b *Broker) startFollow() {
	ctx, cancel := context.WithCancel(context.Background())
	b.followCancel = cancel
	b.follow = b.store.Follow(ctx, b.version)
}

// awaitCatchUp runs before a watch that resumes after rev when this
// replica has not applied rev yet. If the shared store has it (another
// replica committed it and this one lags), it waits for this replica to
// catch up, so the watch continues without a snapshot; a revision the
// store does not have gets the snapshot at once.
func (b *Broker) awaitCatchUp(ctx context.Context, rev int64) {
	rr, ok := b.store.(interface {
		Revision(context.Context) (int64, error)
	})
	if !ok || b.Revision() >= rev {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	have, err := rr.Revision(qctx)
	cancel()
	if err != nil || have < rev {
		return
	}
	b.awaitRevision(ctx, rev, commitTimeout)
}

// awaitRevision waits up to max for this replica to have applied rev.
func (b *Broker) awaitRevision(ctx context.Context, rev int64, max time.Duration) {
	t := time.NewTimer(max)
	defer t.Stop()
	for {
		b.logMu.RLock()
		cur, notify := b.logRev, b.notify
		b.logMu.RUnlock()
		if cur >= rev {
			return
		}
		select {
		case <-notify:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

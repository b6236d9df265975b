package core

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
)

// logEntry is one retained change, encoded once for every watcher.
type logEntry struct {
	rev  int64
	line []byte // JSON of api.Event plus '\n'
}

func newLogEntry(ev api.Event) logEntry {
	b, err := json.Marshal(ev)
	if err != nil {
		panic(fmt.Sprintf("marshal event: %v", err))
	}
	return logEntry{rev: ev.Revision, line: append(b, '\n')}
}

// NewEventLine encodes an event as one line of a watch stream.
func NewEventLine(ev api.Event) []byte { return newLogEntry(ev).line }

// logEntryFromChange rebuilds a watch event from a stored change.
func logEntryFromChange(ch store.Change) (logEntry, error) {
	ev := api.Event{Type: api.EventPut, Revision: ch.Revision, Kind: ch.Kind, Key: ch.Key}
	if ch.Value == nil {
		ev.Type = api.EventDelete
		return newLogEntry(ev), nil
	}
	var err error
	switch ch.Kind {
	case store.KindCluster:
		ev.Cluster = new(api.Cluster)
		err = json.Unmarshal(ch.Value, ev.Cluster)
	case store.KindGateway:
		ev.Gateway = new(api.Gateway)
		err = json.Unmarshal(ch.Value, ev.Gateway)
	case store.KindExport:
		ev.Export = new(api.Export)
		err = json.Unmarshal(ch.Value, ev.Export)
	default:
		err = fmt.Errorf("unexpected kind %q in log", ch.Kind)
	}
	if err != nil {
		return logEntry{}, fmt.Errorf("log entry %d: %w", ch.Revision, err)
	}
	return newLogEntry(ev), nil
}

func logEntries(chs []store.Change) ([]logEntry, error) {
	out := make([]logEntry, 0, len(chs))
	for _, ch := range chs {
		e, err := logEntryFromChange(ch)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// appendLog adds committed changes to the watch log and wakes the
// watchers. The caller holds the state's write lock, so that state and
// log move together.
func (c *Core) appendLog(events []logEntry, rev int64) {
	l := &c.watchLog
	l.Lock()
	defer l.Unlock()
	l.entries = append(l.entries, events...)
	if n := len(l.entries); n > c.cfg.LogRetention+c.cfg.LogRetention/4 {
		l.entries = append([]logEntry(nil), l.entries[n-c.cfg.LogRetention:]...)
	}
	l.rev = rev
	close(l.notify)
	l.notify = make(chan struct{})
}

// replaceLog puts a reloaded log in place. The caller holds the state's
// write lock.
func (c *Core) replaceLog(events []logEntry, rev int64) {
	l := &c.watchLog
	l.Lock()
	defer l.Unlock()
	l.entries, l.rev = events, rev
	close(l.notify)
	l.notify = make(chan struct{})
}

// Revision returns the revision of the last committed change.
func (c *Core) Revision() int64 {
	c.watchLog.RLock()
	defer c.watchLog.RUnlock()
	return c.watchLog.rev
}

// Next returns the retained events after cursor (at most max), or, when
// cursor is 0, ahead of this replica or older than the retained log, one
// SNAPSHOT line. notify is closed at the next commit.
func (c *Core) Next(cursor int64, max int) (lines [][]byte, next int64, snapshot bool, notify <-chan struct{}) {
	l := &c.watchLog
	l.RLock()
	notify = l.notify
	rev := l.rev
	oldest := rev + 1
	if len(l.entries) > 0 {
		oldest = l.entries[0].rev
	}
	if cursor <= 0 || cursor > rev || cursor < oldest-1 {
		l.RUnlock()
		line, srev := c.snapshotLine()
		return [][]byte{line}, srev, true, notify
	}
	// Binary search the first entry after cursor.
	i, j := 0, len(l.entries)
	for i < j {
		h := (i + j) / 2
		if l.entries[h].rev <= cursor {
			i = h + 1
		} else {
			j = h
		}
	}
	next = cursor
	for ; i < len(l.entries) && len(lines) < max; i++ {
		lines = append(lines, l.entries[i].line)
		next = l.entries[i].rev
	}
	l.RUnlock()
	return lines, next, false, notify
}

// snapshotLine encodes the committed state as one SNAPSHOT event, reusing
// the encoding while the revision is unchanged.
func (c *Core) snapshotLine() ([]byte, int64) {
	c.snap.Lock()
	defer c.snap.Unlock()
	c.state.RLock()
	if c.snap.line != nil && c.snap.rev == c.state.st.rev {
		c.state.RUnlock()
		return c.snap.line, c.snap.rev
	}
	snap := c.state.st.snapshot()
	c.state.RUnlock()
	e := newLogEntry(api.Event{Type: api.EventSnapshot, Revision: snap.Revision, Snapshot: &snap})
	c.snap.line, c.snap.rev = e.line, snap.Revision
	return e.line, snap.Revision
}

// AwaitCatchUp runs before a watch that resumes after rev when this
// replica has not applied rev yet. If the shared store has it (another
// replica committed it and this one lags), it waits for this replica to
// catch up, so the watch continues without a snapshot; a revision the
// store does not have gets the snapshot at once.
func (c *Core) AwaitCatchUp(ctx context.Context, rev int64) {
	rr, ok := c.store.(interface {
		Revision(context.Context) (int64, error)
	})
	if !c.shared || !ok || c.Revision() >= rev {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	have, err := rr.Revision(qctx)
	cancel()
	if err != nil || have < rev {
		return
	}
	c.AwaitRevision(ctx, rev, c.cfg.CommitTimeout)
}

// AwaitRevision waits up to max for this replica to have applied rev.
func (c *Core) AwaitRevision(ctx context.Context, rev int64, max time.Duration) {
	t := time.NewTimer(max)
	defer t.Stop()
	for {
		c.watchLog.RLock()
		cur, notify := c.watchLog.rev, c.watchLog.notify
		c.watchLog.RUnlock()
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

package core

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Knowing whether this replica is behind its store. A record one replica
// committed (a join token, a cluster's credential) reaches the others
// within milliseconds; a request that presents it to another replica
// meanwhile is not refused if that replica waits for it. Waiting for every
// unknown record would hold a goroutine per request of anyone without a
// credential, and answer an unknown cluster ID slower than a known one;
// so a replica asks its store what was last committed and waits only when
// it has not applied that yet.

// applied is the store Version this replica has applied, announced to
// waiters. Written by the writer alone (setVersion).
type applied struct {
	mu      sync.Mutex
	version int64
	moved   chan struct{} // closed and replaced when version grows
}

// setVersion records that the committed state is the store's at v.
// Writer only.
func (c *Core) setVersion(v int64) {
	c.writer.version = v
	c.applied.mu.Lock()
	defer c.applied.mu.Unlock()
	if v > c.applied.version {
		c.applied.version = v
		if c.applied.moved != nil {
			close(c.applied.moved)
		}
		c.applied.moved = make(chan struct{})
	}
}

// lastCommitStore is a shared store that tells what was last committed.
type lastCommitStore interface {
	LastCommit(ctx context.Context) (int64, error)
}

// lastCommitRead is one store read that callers share.
type lastCommitRead struct {
	done    chan struct{}
	version int64
	err     error
}

// lastCommitReads runs one store read at a time; callers arriving while
// one is in flight share the next, which starts after they came (so it
// sees every commit made before their request).
type lastCommitReads struct {
	mu       sync.Mutex
	inFlight bool
	next     *lastCommitRead
}

// lastCommitTimeout bounds one read of what the store last committed.
const lastCommitTimeout = time.Second

// Behind reports whether another replica committed what this one has not
// applied yet, and the store Version to wait for (AwaitApplied). A store
// with one writer is never ahead. Concurrent callers share store reads.
func (c *Core) Behind(ctx context.Context) (target int64, behind bool, err error) {
	ls, ok := c.store.(lastCommitStore)
	if !ok || !c.shared {
		return 0, false, nil
	}
	r := c.lastCommit.join(func(r *lastCommitRead) {
		rctx, cancel := context.WithTimeout(context.Background(), lastCommitTimeout)
		defer cancel()
		r.version, r.err = ls.LastCommit(rctx)
	})
	select {
	case <-r.done:
	case <-ctx.Done():
		return 0, false, ctx.Err()
	}
	if r.err != nil {
		return 0, false, r.err
	}
	c.applied.mu.Lock()
	have := c.applied.version
	c.applied.mu.Unlock()
	return r.version, r.version > have, nil
}

// join returns the read the caller shares, starting it when none is in
// flight.
func (l *lastCommitReads) join(read func(*lastCommitRead)) *lastCommitRead {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.next == nil {
		l.next = &lastCommitRead{done: make(chan struct{})}
	}
	r := l.next
	if !l.inFlight {
		l.inFlight, l.next = true, nil
		go l.run(r, read)
	}
	return r
}

func (l *lastCommitReads) run(r *lastCommitRead, read func(*lastCommitRead)) {
	for r != nil {
		read(r)
		close(r.done)
		l.mu.Lock()
		r, l.next = l.next, nil
		l.inFlight = r != nil
		l.mu.Unlock()
	}
}

// errNotApplied: the wait for a commit ended before it was applied.
var errNotApplied = errors.New("this replica has not applied the store's last commit yet")

// AwaitApplied waits until this replica has applied the store's Version
// target (Behind), or ctx ends.
func (c *Core) AwaitApplied(ctx context.Context, target int64) error {
	for {
		c.applied.mu.Lock()
		have, moved := c.applied.version, c.applied.moved
		c.applied.mu.Unlock()
		if have >= target {
			return nil
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return errNotApplied
		case <-c.closing:
			return ErrUnavailable
		}
	}
}

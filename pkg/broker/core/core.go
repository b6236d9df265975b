// Package core is the broker's state machine, apart from HTTP: the records
// in memory, the one writer that applies batches of writes and commits each
// batch to the store in one transaction (group commit), the following of
// other replicas' commits, the watch log, and the recorded answers that
// make writes safe to retry.
//
// Readers never wait for a commit in flight: a transaction works on a
// layer over the committed state and only a commit the store confirmed is
// folded in, under a lock held for the fold alone. So snapshots,
// heartbeats, token lookups and metrics are served from the last committed
// state while the store is slow or has lost its quorum.
//
// Several replicas may share one etcd store. Each keeps the whole state in
// memory; a commit succeeds only if no replica committed since the state
// the batch was validated against (store.ErrConflict otherwise: the
// transaction is dropped, the newer commits applied, and the same writes
// run again). Every replica applies every commit with the same revisions,
// so watchers may resume on any replica.
package core

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
)

// Config configures a Core. Zero values take the defaults.
type Config struct {
	// Store holds the records. Required.
	Store store.Store
	// LogRetention is how many changes are kept for watch resumption.
	LogRetention int
	// MaxBatch caps how many writes share one commit.
	MaxBatch int
	// CommitTimeout bounds one store commit, so that a store that lost
	// its quorum fails writes instead of holding them.
	CommitTimeout time.Duration
	// WriteWait bounds how long Do waits for a write's outcome; past it
	// the caller is told the outcome is unknown (and may retry with the
	// same idempotency key).
	WriteWait time.Duration
	// OutcomeRetention is how long the answer of an idempotent write is
	// kept for its retries.
	OutcomeRetention time.Duration
	Logger           *slog.Logger
}

// Defaults.
const (
	DefaultLogRetention     = 50000
	DefaultMaxBatch         = 512
	DefaultCommitTimeout    = 5 * time.Second
	DefaultWriteWait        = 15 * time.Second
	DefaultOutcomeRetention = 10 * time.Minute
)

func (c *Config) setDefaults() {
	if c.LogRetention <= 0 {
		c.LogRetention = DefaultLogRetention
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.CommitTimeout <= 0 {
		c.CommitTimeout = DefaultCommitTimeout
	}
	if c.WriteWait <= 0 {
		c.WriteWait = DefaultWriteWait
	}
	if c.OutcomeRetention <= 0 {
		c.OutcomeRetention = DefaultOutcomeRetention
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Core holds the broker's state. Its fields are grouped by what guards them.
type Core struct {
	cfg   Config
	log   *slog.Logger
	store store.Store
	// Set once in New.
	shared     bool // other replicas write the store too
	maxChanges int  // changes one commit may carry; 0: no limit
	maxBytes   int  // bytes of changes one commit may carry; 0: no limit

	// state is the last committed state. Readers hold RLock; the writer
	// reads it without the lock (it alone changes it) and holds Lock only
	// to fold in a commit the store confirmed, never across a store call.
	state struct {
		sync.RWMutex
		st *state
	}

	// watchLog holds the retained committed changes; watchers read it
	// without touching the state. The writer changes it with the state's
	// lock held too, so both move together.
	watchLog struct {
		sync.RWMutex
		entries []logEntry    // oldest first
		rev     int64         // revision of the last committed change
		notify  chan struct{} // closed and replaced after every commit
	}

	// snap caches the encoded SNAPSHOT event of one revision.
	snap struct {
		sync.Mutex
		rev  int64
		line []byte
	}

	// auth is the credential table, replaced after commits that change it.
	auth atomic.Pointer[AuthTable]

	// health is what readiness reports.
	health health

	// applied is the store Version of the committed state, for waiters;
	// lastCommit shares the reads of what the store last committed.
	applied    applied
	lastCommit lastCommitReads

	// writer is owned by the writer goroutine alone.
	writer struct {
		version      int64 // the store's position of the committed state, the base of every commit
		follow       <-chan store.Batch
		followCancel context.CancelFunc
	}

	reqs      chan *request
	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	metrics   *metrics
}

// New loads the state from cfg.Store and starts the writer.
func New(cfg Config) (*Core, error) {
	cfg.setDefaults()
	if cfg.Store == nil {
		return nil, errors.New("broker: no store")
	}
	loaded, err := cfg.Store.Load(context.Background(), cfg.LogRetention)
	if err != nil {
		return nil, err
	}
	st, err := loadState(loaded)
	if err != nil {
		return nil, err
	}
	if st.adminHash == "" {
		return nil, errors.New("no admin credential in the store; run `broker init` first")
	}
	events, err := logEntries(loaded.Log)
	if err != nil {
		return nil, err
	}
	c := &Core{
		cfg:     cfg,
		log:     cfg.Logger,
		store:   cfg.Store,
		reqs:    make(chan *request, 4096),
		closing: make(chan struct{}),
	}
	c.state.st = st
	c.watchLog.entries, c.watchLog.rev, c.watchLog.notify = events, st.rev, make(chan struct{})
	c.setVersion(loaded.Version)
	if l, ok := cfg.Store.(interface{ MaxChanges() int }); ok {
		c.maxChanges = l.MaxChanges()
	}
	if l, ok := cfg.Store.(interface{ MaxBytes() int }); ok {
		c.maxBytes = l.MaxBytes()
	}
	c.startFollow()
	c.shared = c.writer.follow != nil
	c.auth.Store(newAuthTable(st))
	c.health.ok()
	c.metrics = newMetrics(c)
	c.wg.Add(2)
	go c.writeLoop()
	go c.pruneLoop()
	c.log.Info("broker state loaded", "revision", st.rev, "clusters", st.clusters.len(),
		"gateways", st.gateways.len(), "exports", st.exports.len(), "logEntries", len(events))
	return c, nil
}

// Close stops the writer; writes still queued fail with Unavailable. It
// does not close the Store.
func (c *Core) Close() {
	c.closeOnce.Do(func() { close(c.closing) })
	c.wg.Wait()
	if c.writer.followCancel != nil {
		c.writer.followCancel()
	}
}

// Shared reports whether other replicas write the store too.
func (c *Core) Shared() bool { return c.shared }

// View runs fn with the committed state. fn must not keep the Reader or
// change what it returns.
func (c *Core) View(fn func(Reader)) {
	c.state.RLock()
	defer c.state.RUnlock()
	fn(&c.state.st.records)
}

// Snapshot returns the committed state.
func (c *Core) Snapshot() api.Snapshot {
	c.state.RLock()
	defer c.state.RUnlock()
	return c.state.st.snapshot()
}

// Auth returns the current credential table.
func (c *Core) Auth() *AuthTable { return c.auth.Load() }

// Replay returns the recorded answer of the write sent with idempotency
// key by caller on route, if that write was committed. A key recorded
// for another caller or route is an error.
func (c *Core) Replay(key, caller, route string) (Result, bool, error) {
	c.state.RLock()
	o := c.state.st.outcomes.byID[outcomeID(key)]
	c.state.RUnlock()
	if o == nil {
		return Result{}, false, nil
	}
	res, err := replay(key, caller, route, o)
	return res, err == nil, err
}

// Write is one write.
type Write struct {
	// Op makes the write's changes in t and returns its answer; an error
	// undoes its changes. It runs in the writer: it must not block.
	Op func(t *Txn) (Result, error)
	// Key is the client's idempotency key ("": none). A write whose key
	// has a recorded answer gets that answer instead of running again.
	Key string
	// Caller (a hash of the credential that sent the write) and Route
	// (method and path) must match the recorded ones for a replay.
	Caller, Route string
}

// Result is a write's answer.
type Result struct {
	Status int
	Body   []byte // JSON; nil for none
}

// Errors a write may end with besides its own.
var (
	ErrUnavailable = &api.Error{Code: api.CodeUnavailable, Message: "broker is shutting down"}
	errBusy        = &api.Error{Code: api.CodeUnavailable, Message: "the broker's replicas are busy writing the same state; nothing was written; retry"}
	errNotWritten  = &api.Error{Code: api.CodeInternal, Message: "storage write failed; nothing was written; retry"}
	errUnknown     = &api.Error{Code: api.CodeOutcomeUnknown,
		Message: "the store did not confirm the write in time, so it may or may not have been made; retry it with the same Idempotency-Key to learn its outcome"}
)

// Do runs w in the writer and returns its answer once its changes are
// durable. It waits at most WriteWait: then the outcome is unknown
// (CodeOutcomeUnknown) and the write may still be made.
func (c *Core) Do(ctx context.Context, w Write) (Result, error) {
	r := &request{w: w, done: make(chan answer, 1)}
	select {
	case c.reqs <- r:
	case <-c.closing:
		return Result{}, ErrUnavailable
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	// Once queued, the outcome is awaited even if the client goes away,
	// so that a write that became durable is never reported as failed.
	t := time.NewTimer(c.cfg.WriteWait)
	defer t.Stop()
	select {
	case a := <-r.done:
		return a.res, a.err
	case <-t.C:
	case <-c.closing:
		select {
		case a := <-r.done:
			return a.res, a.err
		case <-t.C:
		}
	}
	// A write not started yet is dropped; one started finishes.
	r.abandoned.Store(true)
	select {
	case a := <-r.done:
		return a.res, a.err
	default:
	}
	c.metrics.unknown.Inc()
	return Result{}, errUnknown
}

// pruneLoop deletes the recorded answers older than OutcomeRetention.
func (c *Core) pruneLoop() {
	defer c.wg.Done()
	every := min(c.cfg.OutcomeRetention/4, time.Minute)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-c.closing:
			return
		case <-tick.C:
		}
		var prune func(t *Txn) error
		prune = func(t *Txn) error {
			if t.pruneOutcomes(time.Now().Add(-c.cfg.OutcomeRetention)) {
				t.Continue(prune)
			}
			return nil
		}
		_, err := c.Do(context.Background(), Write{Op: func(t *Txn) (Result, error) { return Result{}, prune(t) }})
		if err != nil && !errors.Is(err, ErrUnavailable) {
			c.log.Warn("prune recorded write outcomes", "err", err)
		}
	}
}

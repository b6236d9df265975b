package broker

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
)

// Config configures a Broker. Zero values take the defaults below.
type Config struct {
	// Store holds the records. Required.
	Store store.Store
	// StaleAfter marks a gateway stale when its last heartbeat is older.
	StaleAfter time.Duration
	// TunnelCIDR is the pool of per-cluster tunnel IPs.
	TunnelCIDR netip.Prefix
	// LogRetention is how many changes are kept for watch resumption.
	LogRetention int
	// BookmarkInterval is how often an idle watch stream gets a bookmark.
	BookmarkInterval time.Duration
	// MaxBodyBytes limits request bodies.
	MaxBodyBytes int64
	// MaxBatch caps how many writes share one commit.
	MaxBatch int
	// ReadTimeout bounds reading a request (headers and body); watch
	// streams lift it once the request is read. Default 30 s.
	ReadTimeout time.Duration
	// WatchCoalesce is the pause after each flush of a watch stream during
	// which further changes gather into the next flush. Negative: none.
	WatchCoalesce time.Duration
	// ResponseTimeout bounds writing any response but a watch stream, so a
	// client that never reads cannot pin a handler and its buffers.
	ResponseTimeout time.Duration
	// WatchWriteTimeout bounds writing each chunk of a watch stream; a
	// watcher that does not take a chunk in time is dropped and resumes
	// from its revision when it reconnects.
	WatchWriteTimeout time.Duration
	// MaxWatchesPerCredential caps the watch streams one credential holds
	// open at once; more are refused with 429.
	MaxWatchesPerCredential int
	// MaxHeartbeatBytes limits a heartbeat's body (one health entry per
	// remote cluster, ~150 bytes each).
	MaxHeartbeatBytes int64
	Logger            *slog.Logger
}

// Defaults.
const (
	DefaultStaleAfter       = 30 * time.Second
	DefaultLogRetention     = 50000
	DefaultBookmarkInterval = 10 * time.Second
	DefaultMaxBodyBytes     = 1 << 20
	DefaultMaxBatch         = 512
	DefaultWatchCoalesce    = 100 * time.Millisecond
	DefaultResponseTimeout  = time.Minute
	DefaultWatchWrite       = 30 * time.Second
	DefaultWatchesPerCred   = 16
	DefaultHeartbeatBytes   = 16 << 20
)

// DefaultTunnelCIDR is the default pool of tunnel IPs.
var DefaultTunnelCIDR = netip.MustParsePrefix("100.127.0.0/16")

func (c *Config) setDefaults() {
	if c.StaleAfter <= 0 {
		c.StaleAfter = DefaultStaleAfter
	}
	if !c.TunnelCIDR.IsValid() {
		c.TunnelCIDR = DefaultTunnelCIDR
	}
	if c.LogRetention <= 0 {
		c.LogRetention = DefaultLogRetention
	}
	if c.BookmarkInterval <= 0 {
		c.BookmarkInterval = DefaultBookmarkInterval
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.WatchCoalesce == 0 {
		c.WatchCoalesce = DefaultWatchCoalesce
	}
	if c.ResponseTimeout <= 0 {
		c.ResponseTimeout = DefaultResponseTimeout
	}
	if c.WatchWriteTimeout <= 0 {
		c.WatchWriteTimeout = DefaultWatchWrite
	}
	if c.MaxWatchesPerCredential <= 0 {
		c.MaxWatchesPerCredential = DefaultWatchesPerCred
	}
	if c.MaxHeartbeatBytes <= 0 {
		c.MaxHeartbeatBytes = DefaultHeartbeatBytes
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Broker holds the state and serves the API (see Handler).
type Broker struct {
	cfg     Config
	log     *slog.Logger
	store   store.Store
	started time.Time

	// mu guards st. The writer holds it across apply and commit, so
	// readers of st see only durable state.
	mu sync.RWMutex
	st *state
	// version is the store's position of st (store.State.Version), the
	// base every commit is guarded by. Written by the writer only.
	version int64
	// follow reports other replicas' commits (nil for a bbolt store).
	follow       <-chan store.Batch
	followCancel context.CancelFunc
	// shared: other replicas write the store too (set once in New).
	shared bool
	// maxChanges caps the changes of one commit (0: no cap).
	maxChanges int

	// logMu guards the watch log, which watchers read without waiting for
	// commits in progress.
	logMu  sync.RWMutex
	log_   []logEntry    // retained changes, oldest first
	logRev int64         // revision of the last committed change
	notify chan struct{} // closed and replaced after every commit

	// creds is the authentication table, replaced after commits that
	// change credentials, so requests authenticate without waiting for
	// commits either.
	creds atomic.Pointer[authTable]

	// status is the gateways' liveness and health (soft state, unwatched).
	status statusTable
	// replica names this process among the replicas sharing a store;
	// peerSeen is when the other replicas last heard from each gateway.
	replica  string
	peerSeen atomic.Pointer[map[string]time.Time]
	hbSlots  chan struct{} // heartbeats being decoded at once
	// streams are the open watch streams by credential, so a credential's
	// streams can be counted and ended when it is revoked.
	streams streamSet

	snapMu    sync.Mutex
	snapRev   int64
	snapLine  []byte
	reqs      chan *writeReq
	closing   chan struct{}
	closeOnce sync.Once
	// draining is closed when shutdown starts: readiness fails and watch
	// streams end, while in-flight writes still complete.
	draining  chan struct{}
	drainOnce sync.Once
	wg        sync.WaitGroup

	metrics *metrics
}

type writeReq struct {
	op   func(*txn) error
	done chan error
}

// New loads the state from cfg.Store and starts the writer and the stale sweep.
func New(cfg Config) (*Broker, error) {
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
	b := &Broker{
		cfg:      cfg,
		log:      cfg.Logger,
		store:    cfg.Store,
		started:  time.Now(),
		st:       st,
		notify:   make(chan struct{}),
		reqs:     make(chan *writeReq, 4096),
		closing:  make(chan struct{}),
		draining: make(chan struct{}),
		hbSlots:  make(chan struct{}, max(2, runtime.GOMAXPROCS(0))),
		replica:  newReplicaID(),
	}
	for _, ch := range loaded.Log {
		e, err := logEntryFromChange(ch)
		if err != nil {
			return nil, err
		}
		b.log_ = append(b.log_, e)
	}
	b.logRev = st.rev
	b.version = loaded.Version
	if l, ok := cfg.Store.(interface{ MaxChanges() int }); ok {
		b.maxChanges = l.MaxChanges()
	}
	b.startFollow()
	b.shared = b.follow != nil
	b.creds.Store(newAuthTable(st))
	b.metrics = newMetrics(b)
	b.wg.Add(2)
	go b.writeLoop()
	go b.sweepLoop()
	b.log.Info("broker state loaded", "revision", st.rev, "clusters", len(st.clusters),
		"gateways", len(st.gateways), "exports", len(st.exports), "logEntries", len(b.log_))
	return b, nil
}

func newReplicaID() string {
	h, _ := os.Hostname()
	var r [4]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%s-%d-%x", h, os.Getpid(), r)
}

// Registry returns the broker's Prometheus registry.
func (b *Broker) Registry() *prometheus.Registry { return b.metrics.reg }

// Close stops the writer and the sweep; pending writes fail with Unavailable.
// It does not close the Store.
func (b *Broker) Close() {
	b.drain()
	b.closeOnce.Do(func() { close(b.closing) })
	b.wg.Wait()
	if b.followCancel != nil {
		b.followCancel()
	}
}

func (b *Broker) drain() { b.drainOnce.Do(func() { close(b.draining) }) }

var errUnavailable = &api.Error{Code: api.CodeUnavailable, Message: "broker is shutting down"}

// do runs op in the writer and returns once its changes are durable.
func (b *Broker) do(ctx context.Context, op func(*txn) error) error {
	r := &writeReq{op: op, done: make(chan error, 1)}
	select {
	case b.reqs <- r:
	case <-b.closing:
		return errUnavailable
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued, wait for the outcome even if the client goes away, so
	// the caller never reports failure for a write that became durable.
	select {
	case err := <-r.done:
		return err
	case <-b.closing:
		select {
		case err := <-r.done:
			return err
		case <-time.After(5 * time.Second):
			return errUnavailable
		}
	}
}

func (b *Broker) writeLoop() {
	defer b.wg.Done()
	for {
		var first *writeReq
		select {
		case first = <-b.reqs:
		case batch, ok := <-b.follow:
			b.mu.Lock()
			b.applyFollowed(batch, ok)
			b.mu.Unlock()
			continue
		case <-b.closing:
			b.failPending()
			return
		}
		batch := []*writeReq{first}
	drain:
		for len(batch) < b.cfg.MaxBatch {
			select {
			case r := <-b.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		for len(batch) > 0 {
			batch = b.commitBatch(batch)
		}
	}
}

func (b *Broker) failPending() {
	for {
		select {
		case r := <-b.reqs:
			r.done <- errUnavailable
		default:
			return
		}
	}
}

// commitTimeout bounds one commit, so that a store that lost its quorum
// fails writes instead of holding them forever.
const commitTimeout = 30 * time.Second

// maxConflictRetries bounds how often one batch is re-validated after
// other replicas won the commit; each retry follows at least one commit.
const maxConflictRetries = 50

// commitBatch runs the batch's operations as one transaction and commits
// it, answering each request. When the store allows fewer changes per
// commit than the batch makes, the operations that do not fit are
// returned, to run in the next transaction. When another replica committed
// first (store.ErrConflict), the changes are undone, the other commits are
// applied and the operations run again on the newer state: every write is
// validated against exactly the state it commits on top of.
func (b *Broker) commitBatch(batch []*writeReq) (rest []*writeReq) {
	results := make([]error, len(batch))
	b.mu.Lock()
	for attempt := 0; ; attempt++ {
		t := &txn{s: b.st}
		start := t.mark()
		n := len(batch)
		for i, r := range batch {
			m := t.mark()
			results[i] = r.op(t)
			if b.maxChanges > 0 && len(t.changes) > b.maxChanges && i > 0 {
				t.rollback(m)
				n = i
				break
			}
		}
		batch, rest, results = batch[:n], batch[n:], results[:n]
		if len(t.changes) == 0 {
			break
		}
		begin := time.Now()
		cctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
		version, err := b.store.Commit(cctx, b.version, t.changes, b.st.rev, b.cfg.LogRetention)
		cancel()
		b.metrics.commitSeconds.Observe(time.Since(begin).Seconds())
		if errors.Is(err, store.ErrConflict) {
			b.metrics.conflicts.Inc()
			t.rollback(start)
			if attempt < maxConflictRetries && b.catchUp() {
				continue
			}
			for i := range results {
				if results[i] == nil {
					results[i] = &api.Error{Code: api.CodeUnavailable, Message: "the broker's replicas are busy writing the same state; retry"}
				}
			}
			break
		}
		b.metrics.batchSize.Observe(float64(len(batch)))
		if err != nil {
			// Back to the last committed state. bbolt wrote nothing; an
			// etcd transaction that did commit after all (a timeout after
			// raft agreed) arrives through Follow like another replica's.
			b.log.Error("commit failed; changes undone", "err", err)
			t.rollback(start)
			msg := "storage write failed; retry"
			if errors.Is(err, store.ErrTooLarge) {
				msg = "this change is too large for one store transaction: " + err.Error()
			}
			for i := range results {
				if results[i] == nil {
					results[i] = &api.Error{Code: api.CodeInternal, Message: msg}
				}
			}
			break
		}
		b.version = max(b.version, version)
		b.publish(t.changes, t.events)
		break
	}
	b.mu.Unlock()
	for i, r := range batch {
		r.done <- results[i]
	}
	return rest
}

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

// publish makes committed changes visible: the watch log, the watchers'
// wake-up and the credential table. Caller holds mu, st is updated.
func (b *Broker) publish(changes []store.Change, events []logEntry) {
	b.logMu.Lock()
	b.log_ = append(b.log_, events...)
	if n := len(b.log_); n > b.cfg.LogRetention+b.cfg.LogRetention/4 {
		b.log_ = append([]logEntry(nil), b.log_[n-b.cfg.LogRetention:]...)
	}
	b.logRev = b.st.rev
	close(b.notify)
	b.notify = make(chan struct{})
	b.logMu.Unlock()
	credsChanged := false
	for _, ch := range changes {
		if ch.Kind == store.KindCredential || ch.Kind == store.KindMeta {
			credsChanged = true
		}
	}
	if credsChanged {
		// The new table first: a stream that registers after
		// endStreams then fails its re-check against it.
		b.creds.Store(newAuthTable(b.st))
		for _, ch := range changes {
			switch {
			case ch.Kind == store.KindCredential:
				b.streams.end(credKeyCluster(ch.Key))
			case ch.Kind == store.KindMeta && ch.Key == metaAdminHash:
				b.streams.end(credKeyAdmin)
			}
		}
	}
}

// reload replaces the in-memory state with the store's. Caller holds mu.
func (b *Broker) reload() error {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	loaded, err := b.store.Load(ctx, b.cfg.LogRetention)
	if err != nil {
		return err
	}
	st, err := loadState(loaded)
	if err != nil {
		return err
	}
	var log []logEntry
	for _, ch := range loaded.Log {
		e, err := logEntryFromChange(ch)
		if err != nil {
			return err
		}
		log = append(log, e)
	}
	b.st = st
	b.version = max(b.version, loaded.Version)
	b.creds.Store(newAuthTable(st))
	b.logMu.Lock()
	b.log_, b.logRev = log, st.rev
	close(b.notify)
	b.notify = make(chan struct{})
	b.logMu.Unlock()
	return nil
}

// Snapshot returns the committed state.
func (b *Broker) Snapshot() api.Snapshot {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.st.snapshot()
}

// Revision returns the current revision.
func (b *Broker) Revision() int64 {
	b.logMu.RLock()
	defer b.logMu.RUnlock()
	return b.logRev
}

// authTable is an immutable copy of the credential hashes.
type authTable struct {
	adminHash string
	creds     map[string]string
}

func newAuthTable(s *state) *authTable {
	t := &authTable{adminHash: s.adminHash, creds: make(map[string]string, len(s.creds))}
	for k, v := range s.creds {
		t.creds[k] = v
	}
	return t
}

func (b *Broker) sweepLoop() {
	defer b.wg.Done()
	every := b.cfg.StaleAfter / 4
	if every < 100*time.Millisecond {
		every = 100 * time.Millisecond
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-b.closing:
			return
		case <-tick.C:
		}
		if ps, ok := b.store.(presenceStore); ok {
			b.exchangePresence(ps)
		}
		// After a restart gateways get one full TTL to heartbeat again.
		if time.Since(b.started) < b.cfg.StaleAfter {
			continue
		}
		b.sweepStale()
	}
}

// watchNext returns retained events after cursor (at most max), or, when
// cursor is 0, in the future or older than the retained log, a snapshot
// line. notify is closed at the next commit.
func (b *Broker) watchNext(cursor int64, max int) (lines [][]byte, next int64, snapshot bool, notify <-chan struct{}) {
	b.logMu.RLock()
	notify = b.notify
	rev := b.logRev
	oldest := rev + 1
	if len(b.log_) > 0 {
		oldest = b.log_[0].rev
	}
	if cursor <= 0 || cursor > rev || cursor < oldest-1 {
		b.logMu.RUnlock()
		line, srev := b.snapshotLine()
		return [][]byte{line}, srev, true, notify
	}
	// Binary search the first entry after cursor.
	i, j := 0, len(b.log_)
	for i < j {
		h := (i + j) / 2
		if b.log_[h].rev <= cursor {
			i = h + 1
		} else {
			j = h
		}
	}
	next = cursor
	for ; i < len(b.log_) && len(lines) < max; i++ {
		lines = append(lines, b.log_[i].line)
		next = b.log_[i].rev
	}
	b.logMu.RUnlock()
	return lines, next, false, notify
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

// snapshotLine encodes the current state as one SNAPSHOT event, reusing the
// encoding while the revision is unchanged.
func (b *Broker) snapshotLine() ([]byte, int64) {
	b.snapMu.Lock()
	defer b.snapMu.Unlock()
	b.mu.RLock()
	if b.snapLine != nil && b.snapRev == b.st.rev {
		b.mu.RUnlock()
		return b.snapLine, b.snapRev
	}
	snap := b.st.snapshot()
	b.mu.RUnlock()
	e := newLogEntry(api.Event{Type: api.EventSnapshot, Revision: snap.Revision, Snapshot: &snap})
	b.snapLine, b.snapRev = e.line, snap.Revision
	return e.line, snap.Revision
}

package broker

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/core"
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
	// CommitTimeout bounds one store commit (core.DefaultCommitTimeout).
	CommitTimeout time.Duration
	// WriteWait bounds how long a write request waits for its commit;
	// past it the answer is OutcomeUnknown (core.DefaultWriteWait).
	WriteWait time.Duration
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
	// MaxHeartbeatBytes limits a heartbeat's body; 0: sized from the
	// number of members (one health entry per remote cluster).
	MaxHeartbeatBytes int64
	// MaxGatewaysPerCluster caps the gateways one cluster registers
	// (every replica keeps each one's liveness and health).
	MaxGatewaysPerCluster int
	// MaxExportsPerCluster caps the exports one cluster publishes (every
	// ClusterSetIP import takes a ClusterIP in every importing cluster).
	MaxExportsPerCluster int
	// MaxSlicesPerExport caps the EndpointSlices one export makes in every
	// importing cluster; at most api.MaxSlicesPerExport, which importers
	// enforce too.
	MaxSlicesPerExport int
	Logger             *slog.Logger
}

// Defaults.
const (
	DefaultStaleAfter = 30 * time.Second
	// MinStaleAfter is the shortest TTL a broker serves with: replicas
	// publish their heartbeat summaries every StaleAfter/4 and sweep only
	// with summaries at most StaleAfter/2 old, so an etcd write and read
	// must fit in the StaleAfter/4 between (750 ms at 3 s).
	MinStaleAfter           = 3 * time.Second
	DefaultLogRetention     = core.DefaultLogRetention
	DefaultBookmarkInterval = 10 * time.Second
	DefaultMaxBodyBytes     = 1 << 20
	DefaultMaxBatch         = core.DefaultMaxBatch
	DefaultWatchCoalesce    = 100 * time.Millisecond
	DefaultResponseTimeout  = time.Minute
	DefaultWatchWrite       = 30 * time.Second
	DefaultWatchesPerCred   = 16
	// A cluster runs a gateway on each candidate node, two or three in
	// practice: 16 leaves room for large clusters and renamed nodes.
	DefaultGatewaysPerCluster = 16
	// Hundreds of exported services per cluster is already large; each
	// ClusterSetIP import takes a ClusterIP in every importing cluster.
	DefaultExportsPerCluster = 500
	DefaultSlicesPerExport   = api.MaxSlicesPerExport
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
	if c.MaxGatewaysPerCluster <= 0 {
		c.MaxGatewaysPerCluster = DefaultGatewaysPerCluster
	}
	if c.MaxExportsPerCluster <= 0 {
		c.MaxExportsPerCluster = DefaultExportsPerCluster
	}
	if c.MaxSlicesPerExport <= 0 || c.MaxSlicesPerExport > api.MaxSlicesPerExport {
		c.MaxSlicesPerExport = DefaultSlicesPerExport
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Broker serves the broker's API over its core (package core): the HTTP
// handlers, authentication, watch streams, and the gateways' liveness.
type Broker struct {
	cfg     Config
	log     *slog.Logger
	core    *core.Core
	store   store.Store // for backups
	started time.Time
	// replica names this process among the replicas sharing a store.
	replica string

	// live is the gateways' liveness and health (soft state, unwatched).
	live liveness
	// hbSlots bounds the heartbeats being decoded at once, hbQueue those
	// waiting for a slot (maxHeartbeatQueue).
	hbSlots, hbQueue chan struct{}
	// authWaiters bounds the requests waiting for this replica to apply
	// another's commit (recheck).
	authWaiters chan struct{}
	// streams are the open watch streams by credential.
	streams streamSet

	// draining is closed when shutdown starts: readiness fails and watch
	// streams end, while in-flight writes still complete.
	draining  chan struct{}
	drainOnce sync.Once
	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	metrics *metrics
}

// New loads the state from cfg.Store and starts the writer and the stale sweep.
func New(cfg Config) (*Broker, error) {
	cfg.setDefaults()
	if cfg.Store == nil {
		return nil, errors.New("broker: no store")
	}
	c, err := core.New(core.Config{Store: cfg.Store, LogRetention: cfg.LogRetention, MaxBatch: cfg.MaxBatch,
		CommitTimeout: cfg.CommitTimeout, WriteWait: cfg.WriteWait, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	b := &Broker{
		cfg:         cfg,
		log:         cfg.Logger,
		core:        c,
		store:       cfg.Store,
		started:     time.Now(),
		replica:     newReplicaID(),
		hbSlots:     make(chan struct{}, max(2, runtime.GOMAXPROCS(0))),
		hbQueue:     make(chan struct{}, maxHeartbeatQueue),
		authWaiters: make(chan struct{}, maxAuthWaiters),
		draining:    make(chan struct{}),
		closing:     make(chan struct{}),
	}
	b.metrics = newMetrics(c)
	b.wg.Add(1)
	go b.sweepLoop()
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
	b.core.Close()
}

func (b *Broker) drain() { b.drainOnce.Do(func() { close(b.draining) }) }

var errUnavailable = core.ErrUnavailable

// Snapshot returns the committed state.
func (b *Broker) Snapshot() api.Snapshot { return b.core.Snapshot() }

// Revision returns the current revision.
func (b *Broker) Revision() int64 { return b.core.Revision() }

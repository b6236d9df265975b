// Package store persists the broker's records and its change log. The
// broker keeps its working state in memory and writes every change through
// a Store before acknowledging it; Load rebuilds that state after a restart.
package store

import (
	"context"
	"errors"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// Record kinds the broker stores. Cluster, gateway and export records are
// the watched state; token, credential and meta records are private and
// never appear in the change log.
const (
	KindCluster    = api.KindCluster
	KindGateway    = api.KindGateway
	KindExport     = api.KindExport
	KindToken      = "token"
	KindCredential = "credential"
	KindMeta       = "meta"
	// KindOutcome records the answers of idempotent writes (sealed), so
	// that a retried write gets the answer of the one that was made.
	KindOutcome = "outcome"
)

// Kinds lists every kind a Store must hold.
var Kinds = []string{KindCluster, KindGateway, KindExport, KindToken, KindCredential, KindMeta, KindOutcome}

// laterKinds were added after schema version 1: a store made before them
// gets their place when opened for writing, and reads as empty without it.
var laterKinds = []string{KindOutcome}

// Change is one write. A nil Value deletes the key. Revision is the
// revision the change creates, or 0 for private kinds (not logged).
type Change struct {
	Revision int64  `json:"rev"`
	Kind     string `json:"kind"`
	Key      string `json:"key"`
	Value    []byte `json:"value,omitempty"`
}

// State is everything a Store holds, as Load returns it.
type State struct {
	// Revision is the revision of the last committed change.
	Revision int64
	// Records maps kind, then key, to the stored value.
	Records map[string]map[string][]byte
	// Log holds the retained changes in revision order, oldest first.
	Log []Change
	// Version is the store's position at this state (etcd: the etcd
	// revision read), the base of the next Commit; 0 for bbolt.
	Version int64
}

// Batch is one commit as Follow reports it.
type Batch struct {
	// Version is the store's position after the commit.
	Version int64
	// Revision is the broker revision after the commit.
	Revision int64
	// Changes are the commit's changes, watched ones in revision order.
	Changes []Change
	// Reset means Follow lost its place (history compacted, or a record it
	// could not read, in Err): the follower must Load again. The channel
	// closes after it.
	Reset bool
	Err   error
}

// Store is the broker's durable storage. Implementations: bbolt (Bolt),
// one writer; etcd (Etcd), shared by several broker replicas.
type Store interface {
	// Load returns every record, the current revision and up to the
	// newest logLimit changes of the log.
	Load(ctx context.Context, logLimit int) (*State, error)
	// Commit writes the changes atomically and returns only once they are
	// durable. revision is the new current revision. The log is trimmed
	// to the newest retain entries. base is the Version of the state the
	// changes were computed from: a shared store refuses the commit with
	// ErrConflict when anything was committed after it. It returns the
	// Version after the commit.
	Commit(ctx context.Context, base int64, changes []Change, revision int64, retain int) (int64, error)
	// Follow reports commits after Version after, in order, until ctx
	// ends, so that a replica applies what the others commit. A store
	// with one writer (Bolt) returns nil: nothing ever arrives.
	Follow(ctx context.Context, after int64) <-chan Batch
	Close() error
}

// ErrOutcomeUnknown marks a Commit error after which the changes may or
// may not have been committed (an etcd request that timed out after it was
// sent): the caller must not report them as not made.
var ErrOutcomeUnknown = errors.New("the store did not confirm the commit; it may have been made")

// ErrClosed is returned by a Store after Close.
var ErrClosed = errors.New("store closed")

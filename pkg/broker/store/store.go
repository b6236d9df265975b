// Package store persists the broker's records and its change log. The
// broker keeps its working state in memory and writes every change through
// a Store before acknowledging it; Load rebuilds that state after a restart.
package store

import (
	"context"
	"errors"
)

// Record kinds the broker stores. Cluster, gateway and export records are
// the watched state; token, credential and meta records are private and
// never appear in the change log.
const (
	KindCluster    = "cluster"
	KindGateway    = "gateway"
	KindExport     = "export"
	KindToken      = "token"
	KindCredential = "credential"
	KindMeta       = "meta"
)

// Kinds lists every kind a Store must hold.
var Kinds = []string{KindCluster, KindGateway, KindExport, KindToken, KindCredential, KindMeta}

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
}

// Store is the broker's durable storage. Implementations: bbolt (Bolt).
// An etcd implementation would map Commit to one transaction guarded by
// the revision key.
type Store interface {
	// Load returns every record, the current revision and up to the
	// newest logLimit changes of the log.
	Load(ctx context.Context, logLimit int) (*State, error)
	// Commit writes the changes atomically and returns only once they are
	// durable. revision is the new current revision. The log is trimmed
	// to the newest retain entries.
	Commit(ctx context.Context, changes []Change, revision int64, retain int) error
	Close() error
}

// ErrClosed is returned by a Store after Close.
var ErrClosed = errors.New("store closed")

package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/fsutil"
	"github.com/tunnelmesh/tunnelmesh/pkg/gossip"
)

// Follower hands onChange the whole state after every change until ctx
// ends: the broker's watch (brokerclient.Client.Follow) to a Source, a
// Source to the engine.
type Follower interface {
	Follow(ctx context.Context, onChange func(api.Snapshot)) error
}

// SourceConfig configures a Source.
type SourceConfig struct {
	// Broker is the live watch; nil: none (the other layers only).
	Broker Follower
	// StateFile keeps the last view on the node so a gateway restarted
	// during a broker outage comes back with its tunnels; empty: none.
	StateFile string
	// Local decides whether a view changes what the data plane needs (the
	// state file is rewritten only then).
	Local Local
	Log   *slog.Logger
}

// Source is the one owner of the gateway's inputs. It layers them, in this
// order of precedence:
//
//  1. the state file, read once at start: the base until anything else answers;
//  2. a stored view (Adopt: the view a previous active kept in its cluster),
//     which replaces the base only when it is at least as new by revision —
//     a standby taking over during a broker outage builds its tunnels from it;
//  3. the broker's watch, which replaces the base whenever it delivers: it is
//     the authority, also when its revision went backwards (a restored broker);
//  4. cross-cluster gossip (SetRemotes), laid over whatever base is current by
//     gossip.Overlay: only a remote cluster's newer active gateway, never a
//     cluster the base does not list.
//
// Gossip is learned, never said by the broker: the state file keeps the
// base only, a stored view keeps the gossip apart from the base
// (StoredView), and gossip.Overlay verifies every announcement again
// against the current base each time it is laid over it.
//
// Every change of the resulting view is handed to the follower (the engine)
// and announced on Changed.
type Source struct {
	cfg SourceConfig
	log *slog.Logger

	pushMu sync.Mutex // one push at a time, so views reach the follower in order

	mu       sync.Mutex
	base     *api.Snapshot
	remotes  map[string]gossip.Remote // live gossip
	stored   map[string]gossip.Remote // gossip of a stored view
	overlaid []string
	onChange func(api.Snapshot)
	saved    *Desired // what the base in the state file needs of the data plane
	changed  chan struct{}
}

// NewSource reads the state file (its one reader) and returns the Source.
func NewSource(cfg SourceConfig) *Source {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Source{cfg: cfg, log: cfg.Log, changed: make(chan struct{})}
	if snap, ok := s.loadState(); ok {
		s.base = &snap
		d := Compute(cfg.Local, snap)
		s.saved = &d
	}
	return s
}

// Follow hands the current view (if any) to onChange, then every change,
// following the broker (resumed across its outages) until ctx ends. One
// follower at a time.
func (s *Source) Follow(ctx context.Context, onChange func(api.Snapshot)) error {
	s.mu.Lock()
	s.onChange = onChange
	if s.base != nil {
		s.log.Info("applying last known broker state until the broker answers", "revision", s.base.Revision)
	}
	s.mu.Unlock()
	s.push()
	if s.cfg.Broker == nil {
		<-ctx.Done()
		return nil
	}
	for ctx.Err() == nil {
		err := s.cfg.Broker.Follow(ctx, s.fromBroker)
		if ctx.Err() == nil {
			s.log.Warn("broker watch ended, retrying", "err", err)
			sleep(ctx, 2*time.Second)
		}
	}
	return nil
}

func (s *Source) fromBroker(snap api.Snapshot) {
	s.mu.Lock()
	s.base = &snap
	s.mu.Unlock()
	s.push()
}

// StoredView is the view an active keeps in its cluster for the next one:
// the broker's snapshot and, apart from it, the gossip laid over it (signed
// announcements, verified again whenever they are used).
type StoredView struct {
	Base   api.Snapshot             `json:"base"`
	Gossip map[string]gossip.Remote `json:"gossip,omitempty"`
}

// View is the base with the stored gossip laid over it (what a gateway
// adopting it would use).
func (v StoredView) View() api.Snapshot {
	out, _ := gossip.Overlay(v.Base, "", v.Gossip)
	return out
}

// Adopt takes a stored view: its base replaces the current base unless
// that is newer; its gossip is kept apart from the live gossip.
func (s *Source) Adopt(v StoredView) bool {
	s.mu.Lock()
	if s.base != nil && s.base.Revision > v.Base.Revision {
		s.mu.Unlock()
		return false
	}
	b := v.Base
	s.base = &b
	s.stored = v.Gossip
	s.mu.Unlock()
	s.push()
	return true
}

// Stored is what to keep in the cluster: the base and the gossip, apart.
func (s *Source) Stored() (StoredView, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.base == nil {
		return StoredView{}, false
	}
	return StoredView{Base: *s.base, Gossip: s.gossipLocked()}, true
}

// SetRemotes takes gossip's current knowledge of the other clusters.
func (s *Source) SetRemotes(r map[string]gossip.Remote) {
	s.mu.Lock()
	s.remotes = r
	s.mu.Unlock()
	s.push()
}

// Base is the latest base snapshot without gossip (nil: none yet).
func (s *Source) Base() *api.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.base
}

// View is the base with gossip laid over it; ok is false without a base.
func (s *Source) View() (api.Snapshot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.viewLocked()
}

// Changed is closed at the next change of the view.
func (s *Source) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// gossipLocked is the live gossip over the stored one, cluster by cluster
// the newer epoch.
func (s *Source) gossipLocked() map[string]gossip.Remote {
	if len(s.stored) == 0 {
		return s.remotes
	}
	out := make(map[string]gossip.Remote, len(s.stored)+len(s.remotes))
	for id, r := range s.stored {
		out[id] = r
	}
	for id, r := range s.remotes {
		if o, ok := out[id]; !ok || r.Epoch >= o.Epoch {
			out[id] = r
		}
	}
	return out
}

func (s *Source) viewLocked() (api.Snapshot, bool) {
	if s.base == nil {
		return api.Snapshot{}, false
	}
	v, over := gossip.Overlay(*s.base, s.cfg.Local.ClusterID, s.gossipLocked())
	if !slices.Equal(over, s.overlaid) {
		if len(over) > 0 {
			s.log.Info("endpoints of remote clusters' new active gateways from gossip (newer than the broker's records)", "clusters", over)
		} else {
			s.log.Info("the broker's records of every remote cluster are current again; gossip overrides nothing")
		}
	}
	s.overlaid = over
	return v, true
}

// push hands the view to the follower, keeps the base (never the gossip)
// in the state file when it changes what the data plane needs, and
// announces the change.
func (s *Source) push() {
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	s.mu.Lock()
	v, ok := s.viewLocked()
	cb := s.onChange
	close(s.changed)
	s.changed = make(chan struct{})
	var save *api.Snapshot
	if ok {
		if d := Compute(s.cfg.Local, *s.base); s.saved == nil || !s.saved.Equal(d) {
			s.saved, save = &d, s.base
		}
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	if save != nil {
		s.saveState(*save)
	}
	if cb != nil {
		cb(v)
	}
}

func (s *Source) saveState(v api.Snapshot) {
	if s.cfg.StateFile == "" {
		return
	}
	b, err := json.Marshal(v)
	if err == nil {
		if err = os.MkdirAll(filepath.Dir(s.cfg.StateFile), 0o700); err == nil {
			err = fsutil.WriteFileAtomic(s.cfg.StateFile, b, 0o600)
		}
	}
	if err != nil {
		s.log.Warn("save state file", "err", err)
	}
}

func (s *Source) loadState() (api.Snapshot, bool) {
	var snap api.Snapshot
	if s.cfg.StateFile == "" {
		return snap, false
	}
	b, err := os.ReadFile(s.cfg.StateFile)
	if err != nil {
		return snap, false
	}
	if err := json.Unmarshal(b, &snap); err != nil {
		s.log.Warn("ignoring unreadable state file", "file", s.cfg.StateFile, "err", err)
		return snap, false
	}
	return snap, true
}

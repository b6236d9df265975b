package broker

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// liveness holds every gateway's liveness and health as its heartbeats
// report them. It is soft state: never stored, never a revision, never a
// watch event, so heartbeats cost the members nothing. After a restart the
// broker gives every gateway one full TTL to heartbeat again, so nothing is
// lost by not persisting it (a heartbeat every 10 s would otherwise be an
// fsync of every peer's counters for data that is old in 10 s).
type liveness struct {
	mu sync.RWMutex
	m  map[string]gatewayLive // key: cluster/hostname

	// peerSeen is when the other replicas sharing the store last heard
	// from each gateway; peersAt is how current that is: the time of the
	// oldest summary it was made of, zero when it is incomplete (a
	// summary too old, or the exchange failed).
	peerSeen atomic.Pointer[map[string]time.Time]
	peersAt  atomic.Int64 // unix nanoseconds
	// flips are the stale-flag clearings in flight, by gateway key.
	flips sync.Map
}

func (l *liveness) set(g gatewayLive) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]gatewayLive{}
	}
	l.m[api.GatewayKey(g.cluster, g.host)] = g
}

// touch records a sign of life without changing the reported health.
func (l *liveness) touch(cluster, host string, epoch int64, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]gatewayLive{}
	}
	k := api.GatewayKey(cluster, host)
	g := l.m[k]
	g.cluster, g.host, g.epoch, g.last = cluster, host, epoch, at
	l.m[k] = g
}

// get returns a gateway's liveness and health as the API reports them.
func (l *liveness) get(key string) (api.GatewayStatus, bool) {
	l.mu.RLock()
	g, ok := l.m[key]
	l.mu.RUnlock()
	return g.status(), ok
}

// lastHeartbeat is when this replica last heard from a gateway.
func (l *liveness) lastHeartbeat(key string) (time.Time, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	g, ok := l.m[key]
	return g.last, ok
}

// keep forgets the gateways that are not in keep (removed ones).
func (l *liveness) keep(keep map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k := range l.m {
		if !keep[k] {
			delete(l.m, k)
		}
	}
}

// lastSeen is when the gateway last proved it is alive: its latest
// heartbeat or registration on this replica or (shared store) any other,
// or this broker's start when it has done neither since (the restart grace).
func (b *Broker) lastSeen(key string) time.Time {
	seen := b.started
	if t, ok := b.live.lastHeartbeat(key); ok && t.After(seen) {
		seen = t
	}
	if p := b.live.peerSeen.Load(); p != nil {
		if t := (*p)[key]; t.After(seen) {
			seen = t
		}
	}
	return seen
}

// presenceStore is a store several replicas share that also carries their
// liveness summaries, outside the revisioned state (store.Etcd).
type presenceStore interface {
	PutPresence(ctx context.Context, replica string, data []byte, ttl time.Duration) error
	Presence(ctx context.Context) (map[string][]byte, error)
}

// presenceAt is the key of a summary's own time in it (no gateway key is
// empty); a summary without it (an older replica's) counts as recent.
const presenceAt = ""

// exchangePresence publishes when this replica last heard from each
// gateway and learns the same from the other replicas, so that a gateway
// heartbeating to one replica is not marked stale by another. Heartbeats
// stay soft state: this is one small write per replica per sweep, not one
// per heartbeat, and it makes no revision. The other replicas' view counts
// as complete only when this exchange worked and every summary is within
// window: a replica that could not publish (its store unreachable) may have
// heard from gateways that nobody else did.
func (b *Broker) exchangePresence(ps presenceStore, window time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.StaleAfter/2)
	defer cancel()
	now := time.Now()
	own := map[string]int64{presenceAt: now.UnixMilli()}
	b.live.mu.RLock()
	for k, g := range b.live.m {
		if g.last.After(b.started) {
			own[k] = g.last.UnixMilli()
		}
	}
	b.live.mu.RUnlock()
	data, _ := json.Marshal(own)
	// The summary outlives a replica that stops by one TTL at most.
	if err := ps.PutPresence(ctx, b.replica, data, b.cfg.StaleAfter); err != nil {
		b.log.Warn("publish gateway liveness to the other replicas", "err", err)
		b.live.peersAt.Store(0)
		return
	}
	all, err := ps.Presence(ctx)
	if err != nil {
		b.log.Warn("read the other replicas' gateway liveness", "err", err)
		b.live.peersAt.Store(0)
		return
	}
	merged := map[string]time.Time{}
	complete, oldest := true, now
	for id, v := range all {
		if id == b.replica {
			continue
		}
		var m map[string]int64
		if json.Unmarshal(v, &m) != nil {
			continue
		}
		if ms, ok := m[presenceAt]; ok {
			at := time.UnixMilli(ms)
			if now.Sub(at) > window {
				complete = false // that replica has not published lately
			}
			if at.Before(oldest) {
				oldest = at
			}
		}
		delete(m, presenceAt)
		for k, ms := range m {
			if t := time.UnixMilli(ms); t.After(merged[k]) {
				merged[k] = t
			}
		}
	}
	b.live.peerSeen.Store(&merged)
	if complete {
		b.live.peersAt.Store(oldest.UnixNano())
	} else {
		b.live.peersAt.Store(0)
	}
}

package broker

import (
	"context"
	"errors"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/broker/core"
)

// The sweep: every StaleAfter/4 it exchanges liveness with the other
// replicas, finishes removals cut short, and marks quiet gateways stale.

func (b *Broker) sweepLoop() {
	defer b.wg.Done()
	every := b.cfg.StaleAfter / 4
	if every < 100*time.Millisecond {
		every = 100 * time.Millisecond
	}
	// How old this replica's view of the other replicas' heartbeats may be
	// and still count: two of their exchanges. The view is as old as the
	// oldest summary in it (not as the exchange that read it), so a gateway
	// that heartbeats twice per TTL to another replica is seen within
	// window + StaleAfter/2 <= StaleAfter, never stale.
	window := 2 * every
	tick := time.NewTicker(every)
	defer tick.Stop()
	ps, shared := b.store.(presenceStore)
	shared = shared && b.core.Shared()
	for {
		select {
		case <-b.closing:
			return
		case <-tick.C:
		}
		if shared {
			b.exchangePresence(ps, window)
		}
		b.finishRemovals()
		// After a restart gateways get one full TTL to heartbeat again.
		if time.Since(b.started) < b.cfg.StaleAfter {
			continue
		}
		// Without a recent, complete view of the other replicas'
		// heartbeats, a gateway heartbeating to another replica would
		// look stale here: no sweep until the view is back.
		if shared && time.Since(time.Unix(0, b.live.peersAt.Load())) > window {
			continue
		}
		b.sweepStale()
	}
}

// sweepStale marks gateways stale whose last sign of life is older than
// the TTL. Only the flip is a write; a gateway already stale costs nothing.
// Many gateways going quiet at once are marked over several commits.
func (b *Broker) sweepStale() {
	cutoff := time.Now().Add(-b.cfg.StaleAfter)
	due := 0
	keep := map[string]bool{}
	b.core.View(func(s core.Reader) {
		for _, k := range s.GatewayKeys("") {
			keep[k] = true
			if !s.Gateway(k).Stale && b.lastSeen(k).Before(cutoff) {
				due++
			}
		}
	})
	b.live.keep(keep)
	if due == 0 {
		return
	}
	var mark func(t *core.Txn) error
	mark = func(t *core.Txn) error {
		cutoff := time.Now().Add(-b.cfg.StaleAfter)
		for _, k := range t.GatewayKeys("") {
			g := t.Gateway(k)
			seen := b.lastSeen(k)
			if g.Stale || !seen.Before(cutoff) {
				continue
			}
			if t.Room() == 0 {
				t.Continue(mark)
				return nil
			}
			ng := *g
			ng.Stale = true
			t.PutGateway(&ng)
			b.log.Info("gateway marked stale", "cluster", g.ClusterID, "hostname", g.Hostname, "lastSeen", seen)
		}
		return nil
	}
	_, err := b.core.Do(context.Background(), core.Write{Op: func(t *core.Txn) (core.Result, error) { return noContent, mark(t) }})
	if err != nil && !errors.Is(err, errUnavailable) {
		b.log.Warn("stale sweep", "err", err)
	}
}

// finishRemovals completes the removal of clusters whose credential is gone
// but whose records are not (a removal cut short by a crash or a failed
// commit).
func (b *Broker) finishRemovals() {
	var left []string
	b.core.View(func(s core.Reader) {
		for _, c := range s.Clusters() {
			if _, ok := s.Credential(c.ID); !ok {
				left = append(left, c.ID)
			}
		}
	})
	for _, id := range left {
		_, err := b.core.Do(context.Background(), core.Write{Op: func(t *core.Txn) (core.Result, error) {
			if _, ok := t.Credential(id); !ok && t.Cluster(id) != nil {
				purgeCluster(t, id)
			}
			return noContent, nil
		}})
		if err != nil && !errors.Is(err, errUnavailable) {
			b.log.Warn("finish removing a cluster", "cluster", id, "err", err)
		} else if err == nil {
			b.log.Info("finished removing a cluster", "cluster", id)
		}
	}
}

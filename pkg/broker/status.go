package broker

import (
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/validate"
)

// statusTable holds every gateway's liveness and health as its heartbeats
// report them. It is soft state: never stored, never a revision, never a
// watch event, so heartbeats cost the members nothing. After a restart the
// broker gives every gateway one full TTL to heartbeat again, so nothing is
// lost by not persisting it (a heartbeat every 10 s would otherwise be an
// fsync of every peer's counters for data that is old in 10 s).
type statusTable struct {
	mu sync.RWMutex
	m  map[string]api.GatewayStatus // key: cluster/hostname
}

func (t *statusTable) set(s api.GatewayStatus) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]api.GatewayStatus{}
	}
	t.m[api.GatewayKey(s.ClusterID, s.Hostname)] = s
}

// touch records a sign of life without changing the reported health.
func (t *statusTable) touch(cluster, host string, epoch int64, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]api.GatewayStatus{}
	}
	k := api.GatewayKey(cluster, host)
	s := t.m[k]
	s.ClusterID, s.Hostname, s.Epoch, s.LastHeartbeat = cluster, host, epoch, at
	t.m[k] = s
}

func (t *statusTable) get(key string) (api.GatewayStatus, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	s, ok := t.m[key]
	return s, ok
}

func (t *statusTable) delete(keys ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range keys {
		delete(t.m, k)
	}
}

// lastSeen is when the gateway last proved it is alive: its latest
// heartbeat or registration on this replica or (shared store) any other,
// or this broker's start when it has done neither since (the restart grace).
func (b *Broker) lastSeen(key string) time.Time {
	seen := b.started
	if s, ok := b.status.get(key); ok && s.LastHeartbeat.After(seen) {
		seen = s.LastHeartbeat
	}
	if p := b.peerSeen.Load(); p != nil {
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

// exchangePresence publishes when this replica last heard from each
// gateway and learns the same from the other replicas, so that a gateway
// heartbeating to one replica is not marked stale by another. Heartbeats
// stay soft state: this is one small write per replica per sweep, not one
// per heartbeat, and it makes no revision.
func (b *Broker) exchangePresence(ps presenceStore) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.StaleAfter/2)
	defer cancel()
	own := map[string]int64{}
	b.status.mu.RLock()
	for k, s := range b.status.m {
		if s.LastHeartbeat.After(b.started) {
			own[k] = s.LastHeartbeat.UnixMilli()
		}
	}
	b.status.mu.RUnlock()
	data, _ := json.Marshal(own)
	if err := ps.PutPresence(ctx, b.replica, data, 3*b.cfg.StaleAfter); err != nil {
		b.log.Warn("publish gateway liveness to the other replicas", "err", err)
	}
	all, err := ps.Presence(ctx)
	if err != nil {
		b.log.Warn("read the other replicas' gateway liveness", "err", err)
		return
	}
	merged := map[string]time.Time{}
	for id, v := range all {
		if id == b.replica {
			continue
		}
		var m map[string]int64
		if json.Unmarshal(v, &m) != nil {
			continue
		}
		for k, ms := range m {
			if t := time.UnixMilli(ms); t.After(merged[k]) {
				merged[k] = t
			}
		}
	}
	b.peerSeen.Store(&merged)
}

// Status returns the liveness and health of the registered gateways of
// cluster ("" = every cluster), sorted by cluster and hostname. Gateways
// that have not heartbeated since the broker started are left out.
func (b *Broker) Status(cluster string) []api.GatewayStatus {
	b.mu.RLock()
	keys := sortedKeys(b.st.gateways)
	epochs := make(map[string]int64, len(keys))
	for _, k := range keys {
		epochs[k] = b.st.gateways[k].Epoch
	}
	b.mu.RUnlock()
	out := make([]api.GatewayStatus, 0, len(keys))
	peers := b.peerSeen.Load()
	for _, k := range keys {
		s, ok := b.status.get(k)
		if p := peers; p != nil {
			// Heartbeats another replica took: their time, not their
			// health (health stays with the replica that received it).
			if t, seen := (*p)[k]; seen && t.After(s.LastHeartbeat) {
				cl, host, _ := strings.Cut(k, "/")
				s = api.GatewayStatus{ClusterID: cl, Hostname: host, LastHeartbeat: t}
				ok = true
			}
		}
		if !ok || (cluster != "" && s.ClusterID != cluster) {
			continue
		}
		s.Epoch = epochs[k]
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		return api.GatewayKey(out[i].ClusterID, out[i].Hostname) < api.GatewayKey(out[j].ClusterID, out[j].Hostname)
	})
	return out
}

// handleStatus serves GET /v1/status[?cluster=ID]: the admin reads every
// cluster's gateways, a cluster credential its own cluster's.
func (b *Broker) handleStatus(w http.ResponseWriter, r *http.Request) {
	p, err := b.authenticate(r)
	if err != nil {
		b.writeError(w, r, err)
		return
	}
	cluster := r.URL.Query().Get("cluster")
	if !p.admin {
		if cluster != "" && cluster != p.cluster {
			b.writeError(w, r, &api.Error{Code: api.CodeForbidden, Cluster: cluster,
				Message: "a cluster credential reads only its own cluster's status; use the admin credential for others"})
			return
		}
		cluster = p.cluster
	}
	writeJSON(w, http.StatusOK, b.Status(cluster))
}

// handleHeartbeat records liveness and health. It writes (and makes a
// revision) only when the gateway's watched record changes: it was stale,
// or the broker now sees it from another address.
func (b *Broker) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	cluster, host := r.PathValue("cluster"), r.PathValue("hostname")
	if err := b.requireCluster(r, cluster, false); err != nil {
		b.writeError(w, r, err)
		return
	}
	// Few heartbeats decode at once: a heartbeat body is one entry per
	// remote cluster, and a burst of them waiting here holds no memory yet
	// (their bodies are still unread).
	select {
	case b.hbSlots <- struct{}{}:
		defer func() { <-b.hbSlots }()
	case <-r.Context().Done():
		return
	}
	var hb api.HeartbeatRequest
	if err := b.decodeHeartbeat(w, r, &hb); err != nil {
		b.writeError(w, r, err)
		return
	}
	if err := validate.Health("health", hb.Health); err != nil {
		b.writeError(w, r, err)
		return
	}
	// An exact-size copy: the decoder's spare capacity would otherwise be
	// kept for every gateway until its next heartbeat.
	hb.Health = append([]api.PeerHealth(nil), hb.Health...)
	b.internHealth(hb.Health)
	observed := remoteIP(r)
	key := api.GatewayKey(cluster, host)
	b.mu.RLock()
	g := b.st.gateways[key]
	b.mu.RUnlock()
	if g == nil {
		b.writeError(w, r, errNotRegistered(cluster, host))
		return
	}
	// Record liveness before reading the record again: a stale sweep that
	// commits after this sees the heartbeat; one that committed before is
	// seen below and undone.
	b.status.set(api.GatewayStatus{ClusterID: cluster, Hostname: host, Epoch: g.Epoch,
		LastHeartbeat: time.Now().UTC(), Health: hb.Health})
	b.mu.RLock()
	g = b.st.gateways[key]
	b.mu.RUnlock()
	if g == nil {
		b.writeError(w, r, errNotRegistered(cluster, host))
		return
	}
	if !g.Stale && g.ObservedIP == observed {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	b.commit(w, r, func(t *txn) error {
		old := t.s.gateways[key]
		if old == nil {
			return errNotRegistered(cluster, host)
		}
		if !old.Stale && old.ObservedIP == observed {
			return nil
		}
		ng := *old
		ng.Stale = false
		ng.ObservedIP = observed
		t.putGateway(&ng)
		return nil
	})
}

// decodeHeartbeat is decodeBody with the heartbeat's own size limit: a
// heartbeat carries one entry per remote cluster, so it is bounded by
// bytes (MaxHeartbeatBytes), not by a count of peers.
func (b *Broker) decodeHeartbeat(w http.ResponseWriter, r *http.Request, v any) *api.Error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return &api.Error{Code: api.CodeUnsupportedMedia, Message: "request body must be Content-Type: application/json"}
	}
	return validate.Decode(http.MaxBytesReader(w, r.Body, b.cfg.MaxHeartbeatBytes), v, b.cfg.MaxHeartbeatBytes)
}

// internHealth makes the status table share one copy of each cluster ID
// and status string instead of holding one per entry per gateway.
func (b *Broker) internHealth(hs []api.PeerHealth) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for i := range hs {
		if c, ok := b.st.clusters[hs[i].Cluster]; ok {
			hs[i].Cluster = c.ID
		}
		switch hs[i].Status {
		case api.StatusConnected:
			hs[i].Status = api.StatusConnected
		case api.StatusConnecting:
			hs[i].Status = api.StatusConnecting
		case api.StatusError:
			hs[i].Status = api.StatusError
		}
	}
}

func errNotRegistered(cluster, host string) *api.Error {
	return &api.Error{Code: api.CodeNotFound, Cluster: cluster,
		Message: "gateway " + host + " of cluster \"" + cluster + "\" is not registered; register it first"}
}

// sweepStale marks gateways stale whose last sign of life is older than
// the TTL. Only the flip is a write; a gateway already stale costs nothing.
func (b *Broker) sweepStale() {
	cutoff := time.Now().Add(-b.cfg.StaleAfter)
	b.mu.RLock()
	due := 0
	for k, g := range b.st.gateways {
		if !g.Stale && b.lastSeen(k).Before(cutoff) {
			due++
		}
	}
	b.mu.RUnlock()
	if due == 0 {
		return
	}
	err := b.do(context.Background(), func(t *txn) error {
		cutoff := time.Now().Add(-b.cfg.StaleAfter)
		for _, k := range sortedKeys(t.s.gateways) {
			g := t.s.gateways[k]
			if seen := b.lastSeen(k); !g.Stale && seen.Before(cutoff) {
				ng := *g
				ng.Stale = true
				t.putGateway(&ng)
				b.log.Info("gateway marked stale", "cluster", g.ClusterID, "hostname", g.Hostname, "lastSeen", seen)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errUnavailable) {
		b.log.Warn("stale sweep", "err", err)
	}
}

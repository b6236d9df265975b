package broker

import (
	"context"
	"errors"
	"mime"
	"net/http"
	"sort"
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
	t.m[gatewayKey(s.ClusterID, s.Hostname)] = s
}

// touch records a sign of life without changing the reported health.
func (t *statusTable) touch(cluster, host string, epoch int64, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]api.GatewayStatus{}
	}
	k := gatewayKey(cluster, host)
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
// heartbeat or registration, or the broker's start when it has done
// neither since (the restart grace).
func (b *Broker) lastSeen(key string) time.Time {
	if s, ok := b.status.get(key); ok && s.LastHeartbeat.After(b.started) {
		return s.LastHeartbeat
	}
	return b.started
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
	for _, k := range keys {
		s, ok := b.status.get(k)
		if !ok || (cluster != "" && s.ClusterID != cluster) {
			continue
		}
		s.Epoch = epochs[k]
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		return gatewayKey(out[i].ClusterID, out[i].Hostname) < gatewayKey(out[j].ClusterID, out[j].Hostname)
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
	key := gatewayKey(cluster, host)
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

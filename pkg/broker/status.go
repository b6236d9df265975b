package broker

import (
	"context"
	"errors"
	"mime"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/core"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/validate"
)

// Status returns the liveness and health of the registered gateways of
// cluster ("" = every cluster), sorted by cluster and hostname. Gateways
// that have not heartbeated since the broker started are left out.
func (b *Broker) Status(cluster string) []api.GatewayStatus {
	var keys []string
	epochs := map[string]int64{}
	b.core.View(func(s core.Reader) {
		keys = s.GatewayKeys("")
		for _, k := range keys {
			epochs[k] = s.Gateway(k).Epoch
		}
	})
	out := make([]api.GatewayStatus, 0, len(keys))
	peers := b.live.peerSeen.Load()
	for _, k := range keys {
		s, ok := b.live.get(k)
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

// Heartbeats decode a few at once (hbSlots): a body is one entry per
// remote cluster. At most maxHeartbeatQueue wait for a slot, each holding
// what its client sent ahead (up to the HTTP/2 stream window); one beyond
// (the broker is short of CPU) is taken as a sign of life only — its
// health is not read and the gateway's last report stays — so the memory
// and goroutines heartbeats hold are bounded whatever the load, and no
// gateway turns stale because the broker was busy.
const maxHeartbeatQueue = 64

// readHealth reads, checks and compacts a heartbeat's health report; read
// is false when the broker is too busy to read it (see maxHeartbeatQueue).
func (b *Broker) readHealth(w http.ResponseWriter, r *http.Request, cluster string) (health []peerHealth, read bool, err error) {
	select {
	case b.hbQueue <- struct{}{}:
		defer func() { <-b.hbQueue }()
	default:
		b.metrics.healthShed.Inc()
		return nil, false, nil
	}
	select {
	case b.hbSlots <- struct{}{}:
		defer func() { <-b.hbSlots }()
	case <-r.Context().Done():
		return nil, false, r.Context().Err()
	}
	var hb api.HeartbeatRequest
	if err := b.decodeHeartbeat(w, r, &hb); err != nil {
		return nil, false, err
	}
	if err := validate.Health("health", hb.Health); err != nil {
		return nil, false, err
	}
	return b.keepHealth(cluster, hb.Health), true, nil
}

// flipWait bounds how long a heartbeat waits for the write that clears
// its gateway's stale flag: the heartbeat's own job, recording liveness,
// is done, and a later heartbeat clears the flag if this write fails.
const flipWait = 2 * time.Second

// handleHeartbeat records liveness and health. It writes (and makes a
// revision) only when the gateway's watched record changes: it was stale,
// or the broker now sees it from another address. It never waits long on
// the store: heartbeats are answered while the store is slow or down.
func (b *Broker) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	cluster, host := r.PathValue("cluster"), r.PathValue("hostname")
	if err := b.requireCluster(r, cluster, false); err != nil {
		b.writeError(w, r, err)
		return
	}
	health, read, err := b.readHealth(w, r, cluster)
	if err != nil {
		b.writeError(w, r, err)
		return
	}
	observed := remoteIP(r)
	key := api.GatewayKey(cluster, host)
	gateway := func() (g api.Gateway, ok bool) {
		b.core.View(func(s core.Reader) {
			if p := s.Gateway(key); p != nil {
				g, ok = *p, true
			}
		})
		return g, ok
	}
	g, ok := gateway()
	if !ok {
		b.writeError(w, r, errNotRegistered(cluster, host))
		return
	}
	// Record liveness before reading the record again: a stale sweep that
	// commits after this sees the heartbeat; one that committed before is
	// seen below and undone.
	if read {
		b.live.set(gatewayLive{cluster: cluster, host: host, epoch: g.Epoch, last: time.Now().UTC(), health: health})
	} else {
		b.live.touch(cluster, host, g.Epoch, time.Now().UTC())
	}
	if g, ok = gateway(); !ok {
		b.writeError(w, r, errNotRegistered(cluster, host))
		return
	}
	if !g.Stale && g.ObservedIP == observed {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err := b.refresh(key, observed); err != nil {
		b.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// refresh clears a gateway's stale flag and records the address it is
// seen from, waiting at most flipWait; one write per gateway is in flight
// at once. A gateway removed meanwhile is an error.
func (b *Broker) refresh(key, observed string) error {
	done := make(chan error, 1)
	if _, busy := b.live.flips.LoadOrStore(key, struct{}{}); busy {
		return nil // another heartbeat's write is on its way
	}
	go func() {
		defer b.live.flips.Delete(key)
		_, err := b.core.Do(context.Background(), core.Write{Op: func(t *core.Txn) (core.Result, error) {
			old := t.Gateway(key)
			if old == nil {
				cl, host, _ := strings.Cut(key, "/")
				return core.Result{}, errNotRegistered(cl, host)
			}
			if !old.Stale && old.ObservedIP == observed {
				return noContent, nil
			}
			ng := *old
			ng.Stale = false
			ng.ObservedIP = observed
			t.PutGateway(&ng)
			return noContent, nil
		}})
		done <- err
	}()
	t := time.NewTimer(flipWait)
	defer t.Stop()
	select {
	case err := <-done:
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.CodeNotFound {
			return err
		}
		if err != nil {
			b.log.Warn("clear a gateway's stale flag; the next heartbeat tries again", "gateway", key, "err", err)
		}
	case <-t.C:
	}
	return nil
}

// Heartbeat size: a heartbeat carries one health entry per remote
// cluster, so its limit follows the member count: heartbeatBase plus
// heartbeatPerMember for each member. A real entry is about 200 bytes
// of JSON.
const (
	heartbeatBase      = 64 << 10
	heartbeatPerMember = 2 << 10
)

// heartbeatLimit is the most bytes a heartbeat's body may hold now.
func (b *Broker) heartbeatLimit() int64 {
	if b.cfg.MaxHeartbeatBytes > 0 {
		return b.cfg.MaxHeartbeatBytes
	}
	n := 0
	b.core.View(func(s core.Reader) { n = s.ClusterCount() })
	return heartbeatBase + int64(n)*heartbeatPerMember
}

// decodeHeartbeat is decodeBody with the heartbeat's own size limit.
func (b *Broker) decodeHeartbeat(w http.ResponseWriter, r *http.Request, v any) *api.Error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return &api.Error{Code: api.CodeUnsupportedMedia, Message: "request body must be Content-Type: application/json"}
	}
	limit := b.heartbeatLimit()
	return validate.Decode(http.MaxBytesReader(w, r.Body, limit), v, limit)
}

func errNotRegistered(cluster, host string) *api.Error {
	return &api.Error{Code: api.CodeNotFound, Cluster: cluster,
		Message: "gateway " + host + " of cluster \"" + cluster + "\" is not registered; register it first"}
}

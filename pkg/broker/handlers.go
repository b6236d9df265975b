package broker

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/auth"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/rules"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/validate"
)

// principal is who made a request.
type principal struct {
	admin   bool
	cluster string // set for a cluster credential
}

var errUnauthorized = &api.Error{Code: api.CodeUnauthorized,
	Message: "missing or invalid credential; send Authorization: Bearer <admin or cluster credential>"}

func bearer(r *http.Request) (api.Credential, bool) {
	p, err := auth.FromHeader(r.Header.Get("Authorization"))
	return p, err == nil
}

// joinTokenError says why p is not a usable join token, or nil; tr is the
// stored record of p's ID, nil if none.
func joinTokenError(tr *tokenRecord, p api.Credential, now time.Time) *api.Error {
	switch {
	case tr == nil || !auth.Match(p.Raw, tr.Hash):
		return &api.Error{Code: api.CodeUnauthorized, Message: "unknown join token"}
	case tr.RevokedAt != nil:
		return &api.Error{Code: api.CodeUnauthorized, Message: fmt.Sprintf("join token %s was revoked", tr.ID)}
	case !now.Before(tr.ExpiresAt):
		return &api.Error{Code: api.CodeUnauthorized,
			Message: fmt.Sprintf("join token %s expired at %s; ask the operator for a new one", tr.ID, tr.ExpiresAt.Format(time.RFC3339))}
	}
	return nil
}

// replicaLag bounds how long a replica waits for a record another replica
// wrote (followed commits arrive within milliseconds): a join token made
// on one replica and used at once on another, or a credential issued by
// one and presented to another, is found instead of refused. An unknown
// token costs its sender this delay, never a store read.
const replicaLag = 2 * time.Second

// awaitReplica waits, on a replicated store only, until known() or
// replicaLag has passed; it reports known().
func (b *Broker) awaitReplica(ctx context.Context, known func() bool) bool {
	if known() || !b.shared {
		return known()
	}
	ctx, cancel := context.WithTimeout(ctx, replicaLag)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return known()
		case <-tick.C:
			if known() {
				return true
			}
		}
	}
}

// authenticate accepts admin and cluster credentials (not join tokens).
func (b *Broker) authenticate(r *http.Request) (principal, *api.Error) {
	p, ok := bearer(r)
	if !ok {
		return principal{}, errUnauthorized
	}
	tab := b.creds.Load()
	switch p.Prefix {
	case api.PrefixAdmin:
		if auth.Match(p.Raw, tab.adminHash) {
			return principal{admin: true}, nil
		}
	case api.PrefixCluster:
		h, ok := tab.creds[p.ID]
		if !ok && b.awaitReplica(r.Context(), func() bool { _, ok := b.creds.Load().creds[p.ID]; return ok }) {
			h, ok = b.creds.Load().creds[p.ID]
		}
		if ok && auth.Match(p.Raw, h) {
			return principal{cluster: p.ID}, nil
		}
	}
	return principal{}, errUnauthorized
}

func (b *Broker) requireAdmin(r *http.Request) *api.Error {
	p, err := b.authenticate(r)
	if err != nil {
		return err
	}
	if !p.admin {
		return &api.Error{Code: api.CodeForbidden, Message: "this operation needs the admin credential"}
	}
	return nil
}

// requireCluster allows only the named cluster's own credential (and the
// admin when allowAdmin).
func (b *Broker) requireCluster(r *http.Request, cluster string, allowAdmin bool) *api.Error {
	p, err := b.authenticate(r)
	if err != nil {
		return err
	}
	if p.cluster == cluster || (p.admin && allowAdmin) {
		return nil
	}
	who := "the admin credential"
	if p.cluster != "" {
		who = fmt.Sprintf("the credential of cluster %q", p.cluster)
	}
	return &api.Error{Code: api.CodeForbidden, Cluster: cluster,
		Message: fmt.Sprintf("%s may not write records of cluster %q", who, cluster)}
}

func (b *Broker) metricsHandler() http.Handler {
	return promhttp.HandlerFor(b.metrics.reg, promhttp.HandlerOpts{})
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().String()
	}
	return host
}

// ---- join ----

func (b *Broker) handleJoin(w http.ResponseWriter, r *http.Request) {
	p, ok := bearer(r)
	if !ok || p.Prefix != api.PrefixJoin {
		b.writeError(w, r, &api.Error{Code: api.CodeUnauthorized,
			Message: "joining needs a join token: Authorization: Bearer tmj.…"})
		return
	}
	// The token is checked before the body is read, so that a caller
	// without a valid token learns nothing about the body rules; it is
	// checked again in the transaction, which may run after a revocation.
	known := func() bool {
		b.mu.RLock()
		defer b.mu.RUnlock()
		return b.st.tokens[p.ID] != nil
	}
	b.awaitReplica(r.Context(), known)
	b.mu.RLock()
	terr := joinTokenError(b.st.tokens[p.ID], p, time.Now())
	b.mu.RUnlock()
	if terr != nil {
		b.writeError(w, r, terr)
		return
	}
	var req api.JoinRequest
	if err := b.decodeBody(w, r, &req); err != nil {
		b.writeError(w, r, err)
		return
	}
	prefixes, verr := validate.JoinRequest(&req)
	if verr != nil {
		b.writeError(w, r, verr)
		return
	}
	var resp api.JoinResponse
	err := b.do(r.Context(), func(t *txn) error {
		now := time.Now().UTC()
		tr := t.s.tokens[p.ID]
		if err := joinTokenError(tr, p, now); err != nil {
			return err
		}
		if _, ok := t.s.clusters[req.ClusterID]; ok {
			return &api.Error{Code: api.CodeClusterExists, Field: "clusterID", Cluster: req.ClusterID,
				Message: fmt.Sprintf("cluster %q has already joined; remove it first (admin) or pick another ID", req.ClusterID)}
		}
		clusters := t.s.clusterList()
		if err := api.CheckOverlaps(b.cfg.TunnelCIDR, clusters, req, prefixes); err != nil {
			return err
		}
		tip, err := rules.AllocateTunnelIP(b.cfg.TunnelCIDR, clusters)
		if err != nil {
			return err
		}
		cred := api.NewClusterCredential(req.ClusterID)
		c := &api.Cluster{
			ID:           req.ClusterID,
			PodCIDRs:     req.PodCIDRs,
			ServiceCIDRs: req.ServiceCIDRs,
			Labels:       req.Labels,
			TunnelIP:     tip.String(),
			JoinedAt:     now,
		}
		t.putCluster(c)
		t.putCred(c.ID, auth.Hash(cred))
		ntr := *tr
		ntr.Uses++
		t.putToken(&ntr)
		resp = api.JoinResponse{Cluster: *c, Credential: cred}
		return nil
	})
	if err != nil {
		b.writeError(w, r, err)
		return
	}
	b.log.Info("cluster joined", "cluster", resp.Cluster.ID, "tunnelIP", resp.Cluster.TunnelIP,
		"podCIDRs", resp.Cluster.PodCIDRs, "serviceCIDRs", resp.Cluster.ServiceCIDRs)
	writeJSON(w, http.StatusCreated, resp)
}

// ---- tokens ----

func (b *Broker) handleCreateToken(w http.ResponseWriter, r *http.Request) {
	if err := b.requireAdmin(r); err != nil {
		b.writeError(w, r, err)
		return
	}
	var req api.CreateTokenRequest
	if err := b.decodeBody(w, r, &req); err != nil {
		b.writeError(w, r, err)
		return
	}
	if err := validate.TokenRequest(&req); err != nil {
		b.writeError(w, r, err)
		return
	}
	ttl := time.Duration(req.TTLSeconds) * time.Second
	if ttl == 0 {
		ttl = 24 * time.Hour
	}
	tok, id := api.NewJoinToken()
	now := time.Now().UTC()
	tr := &tokenRecord{TokenInfo: api.TokenInfo{ID: id, Description: req.Description,
		CreatedAt: now, ExpiresAt: now.Add(ttl)}, Hash: auth.Hash(tok)}
	if err := b.do(r.Context(), func(t *txn) error { t.putToken(tr); return nil }); err != nil {
		b.writeError(w, r, err)
		return
	}
	b.log.Info("join token created", "id", id, "expiresAt", tr.ExpiresAt, "description", req.Description)
	writeJSON(w, http.StatusCreated, api.CreateTokenResponse{Token: tok, Info: tr.TokenInfo})
}

func (b *Broker) handleListTokens(w http.ResponseWriter, r *http.Request) {
	if err := b.requireAdmin(r); err != nil {
		b.writeError(w, r, err)
		return
	}
	b.mu.RLock()
	out := make([]api.TokenInfo, 0, len(b.st.tokens))
	for _, id := range sortedKeys(b.st.tokens) {
		out = append(out, b.st.tokens[id].TokenInfo)
	}
	b.mu.RUnlock()
	writeJSON(w, http.StatusOK, out)
}

func (b *Broker) handleRevokeToken(w http.ResponseWriter, r *http.Request) {
	if err := b.requireAdmin(r); err != nil {
		b.writeError(w, r, err)
		return
	}
	id := r.PathValue("id")
	err := b.do(r.Context(), func(t *txn) error {
		tr := t.s.tokens[id]
		if tr == nil {
			return &api.Error{Code: api.CodeNotFound, Field: "id", Message: fmt.Sprintf("no join token %q", id)}
		}
		if tr.RevokedAt != nil {
			return nil
		}
		ntr := *tr
		now := time.Now().UTC()
		ntr.RevokedAt = &now
		t.putToken(&ntr)
		return nil
	})
	if err != nil {
		b.writeError(w, r, err)
		return
	}
	b.log.Info("join token revoked", "id", id)
	w.WriteHeader(http.StatusNoContent)
}

// ---- reads ----

func (b *Broker) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	if _, err := b.authenticate(r); err != nil {
		b.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, b.Snapshot())
}

// handleWatch streams NDJSON events after ?since=REV: a SNAPSHOT first when
// REV is 0 or no longer retained, then every change in revision order, and
// a BOOKMARK on idle streams.
func (b *Broker) handleWatch(w http.ResponseWriter, r *http.Request) {
	p, aerr := b.authenticate(r)
	if aerr != nil {
		b.writeError(w, r, aerr)
		return
	}
	var since int64
	if s := r.URL.Query().Get("since"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			b.writeError(w, r, &api.Error{Code: api.CodeBadRequest, Field: "since",
				Message: fmt.Sprintf("since=%q is not a revision (a non-negative integer)", s)})
			return
		}
		since = v
	}
	// The stream lives until the client goes, the broker drains, or the
	// credential is revoked (its cluster removed): then end ends it.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	release, ok := b.streams.open(p.credKey(), b.cfg.MaxWatchesPerCredential, cancel)
	if !ok {
		writeJSON(w, http.StatusTooManyRequests, &api.Error{Code: api.CodeTooManyRequests,
			Message: fmt.Sprintf("this credential already holds %d open watch streams, the most the broker allows; "+
				"close one (one watch per process is enough) or raise --max-watches-per-credential", b.cfg.MaxWatchesPerCredential)})
		return
	}
	defer release()
	// Revoked between authenticate and open: end now (end ran before open).
	if _, err := b.authenticate(r); err != nil {
		b.writeError(w, r, err)
		return
	}
	b.metrics.watches.Inc()
	defer b.metrics.watches.Dec()
	if b.shared && since > 0 {
		b.awaitCatchUp(ctx, since)
	}
	rc := http.NewResponseController(w)
	// The server's ReadTimeout guards request reading; lift it so that it
	// can never cut a long-lived stream.
	_ = rc.SetReadDeadline(time.Time{})
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	write := func(lines [][]byte) error {
		// A watcher that cannot take a chunk in time is dropped; it
		// resumes from its last revision when it reconnects.
		_ = rc.SetWriteDeadline(time.Now().Add(b.cfg.WatchWriteTimeout))
		for _, l := range lines {
			if _, err := w.Write(l); err != nil {
				return err
			}
		}
		return rc.Flush()
	}
	bookmark := time.NewTicker(b.cfg.BookmarkInterval)
	defer bookmark.Stop()
	cursor := since
	for {
		lines, next, _, notify := b.watchNext(cursor, 1024)
		if len(lines) > 0 {
			if err := write(lines); err != nil {
				return
			}
			cursor = next
			if len(lines) == 1024 {
				continue
			}
			// Under a burst of commits, gather changes for a moment
			// rather than waking and flushing once per commit: with
			// many watchers the per-flush cost dominates. An idle
			// stream still gets its first change at once.
			if b.cfg.WatchCoalesce > 0 {
				t := time.NewTimer(b.cfg.WatchCoalesce)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return
				case <-b.draining:
					t.Stop()
					return
				}
			}
		}
		select {
		case <-notify:
		case <-bookmark.C:
			e := newLogEntry(api.Event{Type: api.EventBookmark, Revision: cursor})
			if err := write([][]byte{e.line}); err != nil {
				return
			}
		case <-ctx.Done():
			return
		case <-b.draining:
			return
		}
	}
}

// ---- cluster-owned records ----

func (b *Broker) handleRemoveCluster(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("cluster")
	if err := b.requireCluster(r, id, true); err != nil {
		b.writeError(w, r, err)
		return
	}
	err := b.do(r.Context(), func(t *txn) error {
		if _, ok := t.s.clusters[id]; !ok {
			return &api.Error{Code: api.CodeNotFound, Cluster: id, Message: fmt.Sprintf("no cluster %q", id)}
		}
		for _, k := range t.s.clusterExports(id) {
			t.deleteExport(k)
		}
		for _, k := range t.s.clusterGateways(id) {
			t.deleteGateway(k)
			b.status.delete(k)
		}
		t.deleteCred(id)
		t.deleteCluster(id)
		return nil
	})
	if err != nil {
		b.writeError(w, r, err)
		return
	}
	b.log.Info("cluster removed", "cluster", id)
	w.WriteHeader(http.StatusNoContent)
}

// pathMatch fills an empty body field from the path or refuses a mismatch.
func pathMatch(field string, body *string, path string) *api.Error {
	if *body == "" {
		*body = path
		return nil
	}
	if *body != path {
		return &api.Error{Code: api.CodeInvalid, Field: field,
			Message: fmt.Sprintf("%s %q in the body does not match %q in the URL", field, *body, path)}
	}
	return nil
}

func clusterMustExist(s *state, id string) *api.Error {
	if _, ok := s.clusters[id]; !ok {
		return &api.Error{Code: api.CodeNotFound, Cluster: id, Message: fmt.Sprintf("no cluster %q; join first", id)}
	}
	return nil
}

func (b *Broker) handlePutGateway(w http.ResponseWriter, r *http.Request) {
	cluster, host := r.PathValue("cluster"), r.PathValue("hostname")
	if err := b.requireCluster(r, cluster, false); err != nil {
		b.writeError(w, r, err)
		return
	}
	var g api.Gateway
	if err := b.decodeBody(w, r, &g); err != nil {
		b.writeError(w, r, err)
		return
	}
	if err := pathMatch("clusterID", &g.ClusterID, cluster); err != nil {
		b.writeError(w, r, err)
		return
	}
	if err := pathMatch("hostname", &g.Hostname, host); err != nil {
		b.writeError(w, r, err)
		return
	}
	if err := validate.Gateway(&g); err != nil {
		b.writeError(w, r, err)
		return
	}
	g.ObservedIP = remoteIP(r)
	g.Stale = false
	// A registration is a sign of life; recorded first so that a stale
	// sweep racing with this write does not mark the new record stale.
	b.status.touch(cluster, host, g.Epoch, time.Now().UTC())
	b.commit(w, r, func(t *txn) error {
		if err := clusterMustExist(t.s, cluster); err != nil {
			return err
		}
		writes, err := rules.Registration(t.s.gatewayList(), g)
		if err != nil {
			return err
		}
		for i := range writes {
			t.putGateway(&writes[i])
		}
		return nil
	})
}

func (b *Broker) handleDeleteGateway(w http.ResponseWriter, r *http.Request) {
	cluster, host := r.PathValue("cluster"), r.PathValue("hostname")
	if err := b.requireCluster(r, cluster, true); err != nil {
		b.writeError(w, r, err)
		return
	}
	b.commit(w, r, func(t *txn) error {
		k := api.GatewayKey(cluster, host)
		if _, ok := t.s.gateways[k]; ok {
			t.deleteGateway(k)
		}
		b.status.delete(k)
		return nil
	})
}

func (b *Broker) handlePutExport(w http.ResponseWriter, r *http.Request) {
	cluster, ns, name := r.PathValue("cluster"), r.PathValue("namespace"), r.PathValue("name")
	if err := b.requireCluster(r, cluster, false); err != nil {
		b.writeError(w, r, err)
		return
	}
	var e api.Export
	if err := b.decodeBody(w, r, &e); err != nil {
		b.writeError(w, r, err)
		return
	}
	for _, m := range []struct {
		f    string
		body *string
		path string
	}{{"clusterID", &e.ClusterID, cluster}, {"namespace", &e.Namespace, ns}, {"name", &e.Name, name}} {
		if err := pathMatch(m.f, m.body, m.path); err != nil {
			b.writeError(w, r, err)
			return
		}
	}
	if err := validate.Export(&e); err != nil {
		b.writeError(w, r, err)
		return
	}
	b.commit(w, r, func(t *txn) error {
		if err := clusterMustExist(t.s, cluster); err != nil {
			return err
		}
		// Re-publishing an unchanged export makes no new revision.
		if old := t.s.exports[api.ExportKey(cluster, ns, name)]; old != nil && reflect.DeepEqual(*old, e) {
			return nil
		}
		ne := e
		t.putExport(&ne)
		return nil
	})
}

func (b *Broker) handleDeleteExport(w http.ResponseWriter, r *http.Request) {
	cluster, ns, name := r.PathValue("cluster"), r.PathValue("namespace"), r.PathValue("name")
	if err := b.requireCluster(r, cluster, true); err != nil {
		b.writeError(w, r, err)
		return
	}
	b.commit(w, r, func(t *txn) error {
		k := api.ExportKey(cluster, ns, name)
		if _, ok := t.s.exports[k]; ok {
			t.deleteExport(k)
		}
		return nil
	})
}

// commit applies fn as one durable transaction and answers 204, or the error.
func (b *Broker) commit(w http.ResponseWriter, r *http.Request, fn func(*txn) error) {
	if err := b.do(r.Context(), fn); err != nil {
		b.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

package broker

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/auth"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/core"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/rules"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/validate"
)

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

// write runs op as the request's write and answers with its result. The
// write carries the request's Idempotency-Key: a retry of a write that was
// made gets the answer it got.
func (b *Broker) write(w http.ResponseWriter, r *http.Request, op func(*core.Txn) (core.Result, error)) error {
	res, err := b.core.Do(r.Context(), core.Write{Op: op, Key: r.Header.Get(api.HeaderIdempotencyKey),
		Caller: caller(r), Route: route(r)})
	if err != nil {
		b.writeError(w, r, err)
		return err
	}
	writeResult(w, res)
	return nil
}

// route names a write for its recorded outcome.
func route(r *http.Request) string { return r.Method + " " + r.URL.EscapedPath() }

var noContent = core.Result{Status: http.StatusNoContent}

// result is a JSON answer.
func result(status int, v any) (core.Result, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return core.Result{}, err
	}
	return core.Result{Status: status, Body: append(body, '\n')}, nil
}

func writeResult(w http.ResponseWriter, res core.Result) {
	if res.Body == nil {
		w.WriteHeader(res.Status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(res.Status)
	_, _ = w.Write(res.Body)
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
	token := func() (tr *core.TokenRecord) {
		b.core.View(func(s core.Reader) { tr = s.Token(p.ID) })
		return tr
	}
	terr := joinTokenError(token(), p, time.Now())
	if terr != nil && b.recheck(r.Context(), func() bool { terr = joinTokenError(token(), p, time.Now()); return terr == nil }) {
		terr = nil
	}
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
	var joined *api.Cluster
	err := b.write(w, r, func(t *core.Txn) (core.Result, error) {
		now := time.Now().UTC()
		tr := t.Token(p.ID)
		if err := joinTokenError(tr, p, now); err != nil {
			return core.Result{}, err
		}
		if t.Cluster(req.ClusterID) != nil {
			return core.Result{}, &api.Error{Code: api.CodeClusterExists, Field: "clusterID", Cluster: req.ClusterID,
				Message: fmt.Sprintf("cluster %q has already joined; remove it first (admin) or pick another ID", req.ClusterID)}
		}
		// The broker's own ranges (tunnel and mapped pools) first: no
		// policy can let those in, so that is the refusal to report.
		clusters := t.Clusters()
		own, members, err := rules.Join(b.addressPlan(t), clusters, req, prefixes)
		if err != nil {
			return core.Result{}, err
		}
		pol, _ := t.Policy()
		if err := pol.Check(req, prefixes); err != nil {
			return core.Result{}, err
		}
		if err := api.CheckCoversGateways(t.Gateways(), req, prefixes); err != nil {
			return core.Result{}, err
		}
		tip, err := rules.AllocateTunnelIP(b.cfg.TunnelCIDR, clusters)
		if err != nil {
			return core.Result{}, err
		}
		cred := api.NewClusterCredential(req.ClusterID)
		c := &api.Cluster{
			ID:           req.ClusterID,
			PodCIDRs:     req.PodCIDRs,
			ServiceCIDRs: req.ServiceCIDRs,
			Labels:       req.Labels,
			TunnelIP:     tip.String(),
			JoinedAt:     now,
			Translations: own,
		}
		t.PutCluster(c)
		resp := api.JoinResponse{Cluster: *c, Credential: cred}
		for i := range members {
			// The members this join overlaps are translated in the same
			// commit: their gateways, route agents and importers follow it
			// from their watch, with no restart.
			t.PutCluster(&members[i])
			resp.Translated = append(resp.Translated, members[i])
		}
		t.PutCredential(c.ID, auth.Hash(cred))
		ntr := *tr
		ntr.Uses++
		t.PutToken(&ntr)
		joined = c
		return result(http.StatusCreated, resp)
	})
	if err == nil && joined != nil {
		b.log.Info("cluster joined", "cluster", joined.ID, "tunnelIP", joined.TunnelIP,
			"podCIDRs", joined.PodCIDRs, "serviceCIDRs", joined.ServiceCIDRs, "translations", joined.Translations)
	}
}

// addressPlan is what the address rules need: the tunnel pool, and the
// mapped pool and overlap rule of the clusterset policy.
func (b *Broker) addressPlan(r core.Reader) rules.AddressPlan {
	pol, _ := r.Policy()
	plan := rules.AddressPlan{Tunnel: b.cfg.TunnelCIDR, Overlap: pol.OverlapRule()}
	for _, s := range pol.MappedPool() {
		if p, err := netip.ParsePrefix(s); err == nil { // stored policies were validated
			plan.Mapped = append(plan.Mapped, p)
		}
	}
	return plan
}

// handleTranslate serves POST /v1/clusters/{cluster}/translations (admin):
// the cluster's CIDRs named (all when none) get mapped CIDRs. Everyone
// follows the new record from their watch: the cluster's gateway starts
// translating, the others route its mapped CIDRs, its exporter publishes
// mapped addresses. Translating what is translated changes nothing.
func (b *Broker) handleTranslate(w http.ResponseWriter, r *http.Request) {
	if err := b.requireAdmin(r); err != nil {
		b.writeError(w, r, err)
		return
	}
	id := r.PathValue("cluster")
	var req api.TranslateRequest
	if err := b.decodeBody(w, r, &req); err != nil {
		b.writeError(w, r, err)
		return
	}
	if err := validate.TranslateRequest(&req); err != nil {
		b.writeError(w, r, err)
		return
	}
	var changed *api.Cluster
	err := b.write(w, r, func(t *core.Txn) (core.Result, error) {
		c, ok, err := rules.Translate(b.addressPlan(t), t.Clusters(), id, req.CIDRs)
		if err != nil {
			return core.Result{}, err
		}
		if ok {
			t.PutCluster(&c)
			changed = &c
		}
		return result(http.StatusOK, c)
	})
	if err == nil && changed != nil {
		b.log.Info("cluster translated", "cluster", id, "translations", changed.Translations)
	}
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
	tr := &core.TokenRecord{TokenInfo: api.TokenInfo{ID: id, Description: req.Description,
		CreatedAt: now, ExpiresAt: now.Add(ttl)}, Hash: auth.Hash(tok)}
	err := b.write(w, r, func(t *core.Txn) (core.Result, error) {
		t.PutToken(tr)
		return result(http.StatusCreated, api.CreateTokenResponse{Token: tok, Info: tr.TokenInfo})
	})
	if err != nil {
		return
	}
	b.log.Info("join token created", "id", id, "expiresAt", tr.ExpiresAt, "description", req.Description)
}

func (b *Broker) handleListTokens(w http.ResponseWriter, r *http.Request) {
	if err := b.requireAdmin(r); err != nil {
		b.writeError(w, r, err)
		return
	}
	var out []api.TokenInfo
	b.core.View(func(s core.Reader) {
		ids := s.TokenIDs()
		out = make([]api.TokenInfo, 0, len(ids))
		for _, id := range ids {
			out = append(out, s.Token(id).TokenInfo)
		}
	})
	writeJSON(w, http.StatusOK, out)
}

func (b *Broker) handleRevokeToken(w http.ResponseWriter, r *http.Request) {
	if err := b.requireAdmin(r); err != nil {
		b.writeError(w, r, err)
		return
	}
	id := r.PathValue("id")
	err := b.write(w, r, func(t *core.Txn) (core.Result, error) {
		tr := t.Token(id)
		if tr == nil {
			return core.Result{}, &api.Error{Code: api.CodeNotFound, Field: "id", Message: fmt.Sprintf("no join token %q", id)}
		}
		if tr.RevokedAt != nil {
			return noContent, nil
		}
		ntr := *tr
		now := time.Now().UTC()
		ntr.RevokedAt = &now
		t.PutToken(&ntr)
		return noContent, nil
	})
	if err == nil {
		b.log.Info("join token revoked", "id", id)
	}
}

// ---- reads ----

func (b *Broker) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	if _, err := b.authenticate(r); err != nil {
		b.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, b.Snapshot())
}

// ---- cluster-owned records ----

func (b *Broker) handleRemoveCluster(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("cluster")
	if err := b.requireCluster(r, id, true); err != nil {
		b.writeError(w, r, err)
		return
	}
	err := b.write(w, r, func(t *core.Txn) (core.Result, error) {
		if t.Cluster(id) == nil {
			return core.Result{}, &api.Error{Code: api.CodeNotFound, Cluster: id, Message: fmt.Sprintf("no cluster %q", id)}
		}
		// The credential goes first: from this commit on the cluster
		// writes nothing more and its streams end, and a cluster without
		// one is being removed (the sweep finishes what is left).
		t.DeleteCredential(id)
		purgeCluster(t, id)
		return noContent, nil
	})
	if err == nil {
		b.log.Info("cluster removed", "cluster", id)
	}
}

// purgeCluster deletes a removed cluster's exports, gateways and record,
// as many as fit in t, and continues in the next transactions.
func purgeCluster(t *core.Txn, id string) {
	more := func() { t.Continue(func(t *core.Txn) error { purgeCluster(t, id); return nil }) }
	for _, k := range t.ExportKeys(id + "/") {
		if t.Room() == 0 {
			more()
			return
		}
		t.DeleteExport(k)
	}
	for _, k := range t.GatewayKeys(id + "/") {
		if t.Room() == 0 {
			more()
			return
		}
		t.DeleteGateway(k)
	}
	if t.Cluster(id) != nil {
		if t.Room() == 0 {
			more()
			return
		}
		t.DeleteCluster(id)
	}
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

func clusterMustExist(s core.Reader, id string) *api.Error {
	if s.Cluster(id) == nil {
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
	b.live.touch(cluster, host, g.Epoch, time.Now().UTC())
	_ = b.write(w, r, func(t *core.Txn) (core.Result, error) {
		if err := clusterMustExist(t, cluster); err != nil {
			return core.Result{}, err
		}
		writes, err := rules.Registration(rules.Members{Clusters: t.Clusters(), Gateways: t.Gateways(),
			Tunnel: b.cfg.TunnelCIDR, MaxGatewaysPerCluster: b.cfg.MaxGatewaysPerCluster}, g)
		if err != nil {
			return core.Result{}, err
		}
		for i := range writes {
			t.PutGateway(&writes[i])
		}
		return noContent, nil
	})
}

func (b *Broker) handleDeleteGateway(w http.ResponseWriter, r *http.Request) {
	cluster, host := r.PathValue("cluster"), r.PathValue("hostname")
	if err := b.requireCluster(r, cluster, true); err != nil {
		b.writeError(w, r, err)
		return
	}
	_ = b.write(w, r, func(t *core.Txn) (core.Result, error) {
		if k := api.GatewayKey(cluster, host); t.Gateway(k) != nil {
			t.DeleteGateway(k)
		}
		return noContent, nil
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
	lim := rules.ExportLimits{PerCluster: b.cfg.MaxExportsPerCluster, SlicesPerExport: b.cfg.MaxSlicesPerExport}
	_ = b.write(w, r, func(t *core.Txn) (core.Result, error) {
		c := t.Cluster(cluster)
		if c == nil {
			return core.Result{}, clusterMustExist(t, cluster)
		}
		old := t.Export(api.ExportKey(cluster, ns, name))
		count := 0
		if old == nil {
			count = len(t.ExportKeys(cluster + "/"))
		}
		ne, err := rules.Publication(*c, old, count, e, lim, time.Now().UTC())
		if err != nil {
			return core.Result{}, err
		}
		// Re-publishing an unchanged export makes no new revision.
		if old != nil && reflect.DeepEqual(*old, ne) {
			return noContent, nil
		}
		t.PutExport(&ne)
		return noContent, nil
	})
}

func (b *Broker) handleDeleteExport(w http.ResponseWriter, r *http.Request) {
	cluster, ns, name := r.PathValue("cluster"), r.PathValue("namespace"), r.PathValue("name")
	if err := b.requireCluster(r, cluster, true); err != nil {
		b.writeError(w, r, err)
		return
	}
	_ = b.write(w, r, func(t *core.Txn) (core.Result, error) {
		if k := api.ExportKey(cluster, ns, name); t.Export(k) != nil {
			t.DeleteExport(k)
		}
		return noContent, nil
	})
}

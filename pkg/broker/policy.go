package broker

import (
	"fmt"
	"net/http"
	"net/netip"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/core"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/validate"
)

// policyStatus is the policy as r holds it, with the members outside it.
func policyStatus(r core.Reader) api.PolicyStatus {
	pol, set := r.Policy()
	return api.PolicyStatus{Policy: pol, Default: !set, Outside: pol.Outside(r.Clusters())}
}

// handlePolicy serves GET /v1/policy to the admin and every member: the
// ranges members may claim, and the members outside them.
func (b *Broker) handlePolicy(w http.ResponseWriter, r *http.Request) {
	if _, err := b.authenticate(r); err != nil {
		b.writeError(w, r, err)
		return
	}
	var st api.PolicyStatus
	b.core.View(func(s core.Reader) { st = policyStatus(s) })
	writeJSON(w, http.StatusOK, st)
}

// handleSetPolicy serves PUT /v1/policy (admin). It applies to joins from
// then on; members outside a tightened policy stay, flagged in the answer
// and in GET /v1/policy: removing them would cut their traffic, so that is
// the admin's own step (DELETE /v1/clusters/ID).
func (b *Broker) handleSetPolicy(w http.ResponseWriter, r *http.Request) {
	if err := b.requireAdmin(r); err != nil {
		b.writeError(w, r, err)
		return
	}
	var p api.Policy
	if err := b.decodeBody(w, r, &p); err != nil {
		b.writeError(w, r, err)
		return
	}
	if err := validate.Policy(&p); err != nil {
		b.writeError(w, r, err)
		return
	}
	for i, s := range p.MappedCIDRs {
		if q := netip.MustParsePrefix(s); q.Overlaps(b.cfg.TunnelCIDR) { // validated above
			b.writeError(w, r, &api.Error{Code: api.CodeInvalid, Field: fmt.Sprintf("mappedCIDRs[%d]", i), Message: fmt.Sprintf(
				"mappedCIDRs[%d]: %s overlaps the broker's tunnel pool %s; pick a mapped pool clear of it", i, s, b.cfg.TunnelCIDR)})
			return
		}
	}
	var st api.PolicyStatus
	err := b.write(w, r, func(t *core.Txn) (core.Result, error) {
		t.PutPolicy(p)
		st = policyStatus(t)
		return result(http.StatusOK, st)
	})
	if err != nil {
		return
	}
	b.log.Info("clusterset policy set", "policy", p.String())
	for _, v := range st.Outside {
		b.log.Warn("member outside the clusterset policy (kept; remove it if you mean to)", "cluster", v.Cluster, "cidr", v.CIDR, "reason", v.Reason)
	}
}

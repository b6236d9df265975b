package broker

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/auth"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/core"
)

// principal is who made a request.
type principal struct {
	admin   bool
	cluster string // set for a cluster credential
	hash    string // the stored hash the credential matched
}

// credKey names the credential in the stream table.
func (p principal) credKey() string {
	if p.admin {
		return "admin"
	}
	return "cluster/" + p.cluster
}

// valid reports whether the credential still holds in tab (a removed
// cluster's or a replaced admin credential does not).
func (p principal) valid(tab *core.AuthTable) bool {
	if p.admin {
		return tab.AdminHash == p.hash
	}
	return tab.Clusters[p.cluster] == p.hash
}

var errUnauthorized = &api.Error{Code: api.CodeUnauthorized,
	Message: "missing or invalid credential; send Authorization: Bearer <admin or cluster credential>"}

func bearer(r *http.Request) (api.Credential, bool) {
	p, err := auth.FromHeader(r.Header.Get("Authorization"))
	return p, err == nil
}

// caller identifies who sent a request for the recorded outcome of its
// write: the hash of its credential, whatever kind ("" for none).
func caller(r *http.Request) string {
	if p, ok := bearer(r); ok {
		return auth.Hash(p.Raw)
	}
	return ""
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
	if known() || !b.core.Shared() {
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
	tab := b.core.Auth()
	switch p.Prefix {
	case api.PrefixAdmin:
		if auth.Match(p.Raw, tab.AdminHash) {
			return principal{admin: true, hash: tab.AdminHash}, nil
		}
	case api.PrefixCluster:
		h, ok := tab.Clusters[p.ID]
		if !ok && b.awaitReplica(r.Context(), func() bool { _, ok := b.core.Auth().Clusters[p.ID]; return ok }) {
			h, ok = b.core.Auth().Clusters[p.ID]
		}
		if ok && auth.Match(p.Raw, h) {
			return principal{cluster: p.ID, hash: h}, nil
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

// joinTokenError says why p is not a usable join token, or nil; tr is the
// stored record of p's ID, nil if none.
func joinTokenError(tr *core.TokenRecord, p api.Credential, now time.Time) *api.Error {
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

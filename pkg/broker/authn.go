package broker

import (
	"context"
	"fmt"
	"net/http"
	"strings"
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
// committed (followed commits arrive within milliseconds): a join token
// made on one replica and used at once on another, or a credential issued
// by one and presented to another, is found instead of refused.
const replicaLag = 2 * time.Second

// maxAuthWaiters bounds the requests waiting at once for this replica to
// catch up; more are answered with what it holds.
const maxAuthWaiters = 64

// dummyHash is compared against when a credential names no known record,
// so that an unknown ID costs what a known one with a wrong secret does.
var dummyHash = auth.Hash("tmc.unknown." + strings.Repeat("A", 43))

// recheck runs after a credential or join token did not match what this
// replica holds. Every failure takes the same steps whatever the ID, so
// that the time of a refusal does not tell which cluster IDs or token IDs
// exist: on a replicated store, ask (with the other failures of the
// moment, in one store read) whether another replica committed what this
// one has not applied; only then wait for it (bounded, and at most
// maxAuthWaiters requests at once) and check again. It reports check().
func (b *Broker) recheck(ctx context.Context, check func() bool) bool {
	target, behind, err := b.core.Behind(ctx)
	if err != nil || !behind {
		return check()
	}
	return b.awaitReplica(ctx, target, check)
}

// awaitReplica waits until this replica applied the store's Version target
// or replicaLag passed, and reports check().
func (b *Broker) awaitReplica(ctx context.Context, target int64, check func() bool) bool {
	select {
	case b.authWaiters <- struct{}{}:
		defer func() { <-b.authWaiters }()
	default:
		return check()
	}
	ctx, cancel := context.WithTimeout(ctx, replicaLag)
	defer cancel()
	_ = b.core.AwaitApplied(ctx, target)
	return check()
}

// matchCluster checks a cluster credential against tab: the stored hash of
// its cluster, or dummyHash for an unknown cluster (same work either way).
func matchCluster(tab *core.AuthTable, p api.Credential) (hash string, ok bool) {
	h, known := tab.Clusters[p.ID]
	if !known {
		h = dummyHash
	}
	return h, auth.Match(p.Raw, h) && known
}

// authenticate accepts admin and cluster credentials (not join tokens).
func (b *Broker) authenticate(r *http.Request) (principal, *api.Error) {
	p, ok := bearer(r)
	if !ok {
		return principal{}, errUnauthorized
	}
	switch p.Prefix {
	case api.PrefixAdmin:
		if h := b.core.Auth().AdminHash; auth.Match(p.Raw, h) {
			return principal{admin: true, hash: h}, nil
		}
	case api.PrefixCluster:
		var h string
		match := func() bool { h, ok = matchCluster(b.core.Auth(), p); return ok }
		if match() || b.recheck(r.Context(), match) {
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
	h := dummyHash // an unknown token costs what a wrong secret does
	if tr != nil {
		h = tr.Hash
	}
	switch {
	case !auth.Match(p.Raw, h) || tr == nil:
		return &api.Error{Code: api.CodeUnauthorized, Message: "unknown join token"}
	case tr.RevokedAt != nil:
		return &api.Error{Code: api.CodeUnauthorized, Message: fmt.Sprintf("join token %s was revoked", tr.ID)}
	case !now.Before(tr.ExpiresAt):
		return &api.Error{Code: api.CodeUnauthorized,
			Message: fmt.Sprintf("join token %s expired at %s; ask the operator for a new one", tr.ID, tr.ExpiresAt.Format(time.RFC3339))}
	}
	return nil
}

// Package broker is the tunnelmesh broker: an HTTPS+JSON service that keeps
// every cluster's CIDRs, gateway endpoints and exported services, and streams
// revisioned changes to watchers.
//
// All writes go through one writer goroutine that applies a batch of
// requests to the in-memory state, commits the batch to the Store in one
// durable transaction (group commit) and only then acknowledges each request
// and wakes the watchers. Readers see only committed state.
//
// Several replicas may share one etcd store. Each keeps the whole state in
// memory; a commit succeeds only if no replica committed since the state
// the batch was validated against (store.ErrConflict otherwise: the batch
// is undone, the newer commits applied, and the batch run again). Every
// replica applies every commit (store.Follow) with the same revisions, so
// watchers may resume on any replica. Replicas share when they last heard
// from each gateway, not the heartbeats themselves.
//
// Heartbeats are not writes: a gateway's liveness and per-peer health live
// in an in-memory status table served by GET /v1/status, so they make no
// revision and no watch event. Only a change of what peers need (a gateway
// turning stale or fresh, a new observed address) is a revisioned write.
// The membership rules themselves (CIDR overlap, tunnel addresses, the one
// active gateway per cluster with epoch fencing) are pure functions in
// package rules.
package broker

// Package broker is the tunnelmesh broker: an HTTPS+JSON service that keeps
// every cluster's CIDRs, gateway endpoints and exported services, and streams
// revisioned changes to watchers.
//
// It is two layers. Package core is the state machine: the records, the one
// writer that commits batches of writes to the Store (group commit), the
// following of other replicas' commits, the watch log, and the recorded
// answers that make writes safe to retry. This package is the HTTP layer
// over it: handlers (each write is a core.Write whose operation runs in the
// writer), authentication, watch streams, and the gateways' liveness.
//
// Readers never wait for a commit in flight: they read the last committed
// state. Every write may carry an Idempotency-Key; a retry of a write that
// was made, on any replica, gets the answer the write got, so a client may
// retry any write whose answer it did not get (a timeout, a 503, a replica
// killed mid-write). A write that the store did not confirm in time is
// answered OutcomeUnknown, never "not done".
//
// Heartbeats are not writes: a gateway's liveness and per-peer health live
// in an in-memory table served by GET /v1/status, so they make no revision
// and no watch event. Only a change of what peers need (a gateway turning
// stale or fresh, a new observed address) is a revisioned write. Replicas
// share when they last heard from each gateway, not the heartbeats
// themselves. The membership rules (tunnel addresses, the one active
// gateway per cluster with epoch fencing, gateway endpoints outside every
// member's CIDRs, what an export may name and when it was made, the
// per-cluster caps) are pure functions in package rules; the CIDR rules a
// join must pass — the clusterset policy (api.Policy, set by the admin),
// no overlap left untranslated (rules.Join: both sides of an overlap get
// mapped CIDRs from the policy's mapped pool, or the join is refused when
// the policy says refuse; api.CheckMesh is the rule kept), no existing
// gateway endpoint covered (api.CheckCoversGateways) — are the contract's,
// which meshctl shares.
//
// What a member cannot make the broker hold without bound: gateways and
// exports per cluster and EndpointSlices per export are capped (Config),
// a heartbeat's size follows the member count, and only health about
// clusters that exist is kept, compact (health.go).
package broker

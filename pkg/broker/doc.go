// Package broker is the tunnelmesh broker: an HTTPS+JSON service that keeps
// every cluster's CIDRs, gateway endpoints and exported services, and streams
// revisioned changes to watchers.
//
// All writes go through one writer goroutine that applies a batch of
// requests to the in-memory state, commits the batch to the Store in one
// durable transaction (group commit) and only then acknowledges each request
// and wakes the watchers. Readers see only committed state.
package broker

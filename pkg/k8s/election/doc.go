// Package election chooses one active gateway per cluster among the candidate
// nodes (label tunnelmesh.io/gateway=true), with a coordination.k8s.io/v1 Lease
// as the single source of truth and hashicorp/memberlist among the candidates
// as a fast failure detector.
//
// Why not client-go's leaderelection: it can only take a Lease after it has
// expired on the observer's clock, so failover time is at least LeaseDuration
// (15 s in the best-known system of this field), and a shorter lease multiplies
// writes and false step-downs under apiserver latency. It has no way to let a
// standby preempt a holder that another detector has already proven dead, and
// it exposes no fencing token. This package keeps the same safety rules (a
// holder steps down when it cannot renew within RenewDeadline; a standby takes
// an expired Lease only after LeaseDuration on its own clock) and adds:
//
//   - Preemption: when memberlist declares the holder dead (after its probe and
//     suspicion timeouts, ~1 s with the defaults) a standby takes the Lease at
//     once with a compare-and-swap update (resourceVersion), before expiry.
//     Several standbys may try; the apiserver lets exactly one win.
//   - Fencing: the epoch is the Lease's leaseTransitions, incremented by every
//     acquisition. Callers carry it in the broker record; the broker refuses
//     older epochs, so a partitioned old active cannot reclaim.
//   - Fast step-down: a holder that sees another holder (the Lease is watched)
//     or a failed compare-and-swap steps down at once; one that cannot renew
//     for RenewDeadline steps down then. RenewDeadline is shorter than the
//     quickest memberlist death verdict, so a fully partitioned holder has
//     stepped down before a standby can preempt it.
//
// The residual risk is a memberlist false positive (the holder is alive for the
// apiserver but unreachable for the other candidates): the standby preempts
// and the old holder steps down at its next renewal or Lease event, at most
// RenewInterval later; the epoch fences the broker in between.
//
// Graceful stop is two steps so that the caller can tear its data plane down
// while still holding the Lease: the caller stops using the active role, then
// calls Release, which hands the Lease over (holder emptied, watched by the
// standbys, so they take it within one apiserver round trip) and leaves the
// memberlist. Cancelling Run's context without Release is a crash as far as the
// other candidates can tell.
//
// Known limit: when no candidate can reach the apiserver for longer than
// RenewDeadline (a control-plane outage), the active steps down like any
// Lease holder must, since it cannot tell that outage from its own
// partition; the next holder (often itself) takes over with a new epoch
// when the apiserver is back.
//
// The candidates' memberlist port (DefaultGossipPort, TCP and UDP) must be
// open between candidate nodes; gossip is encrypted with a key derived from
// the cluster's WireGuard key, so only candidates can vouch for each other.
//
// Identity is the node name and one gateway process runs per node (a
// DaemonSet without surge): a restarted process that finds its own node named
// as holder knows the previous tenure is over and takes the Lease with a new
// epoch at once.
package election

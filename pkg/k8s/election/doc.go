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
//   - Fencing: the epoch is the Lease's leaseTransitions, raised by every
//     acquisition. Callers carry it in the broker record; the broker refuses
//     older epochs, so a partitioned old active cannot reclaim. The epoch
//     never goes back, even when the Lease does (deleted with its
//     namespace, rolled back with a restored etcd): a new tenure's epoch is
//     above the Lease's, every epoch this candidate has seen and every one
//     recorded elsewhere (Config.EpochFloor: the broker's records, the
//     MeshGateway status, the stored view); a holder that finds its Lease
//     deleted or rolled back below its epoch rewrites it with a higher one
//     and keeps the role (the standbys give it LeaseDuration to do so while
//     memberlist shows it alive), and a holder whose epoch the recorded
//     floor passes takes a higher one at its next renewal, so the fences
//     (broker 409, MeshGateway and stored view, the other clusters' gossip)
//     never lock the cluster out.
//   - Fast step-down: a holder that sees another holder (the Lease is watched)
//     or a failed compare-and-swap steps down at once; one that cannot renew
//     for RenewDeadline steps down then, unless it holds through an
//     apiserver outage (below). RenewDeadline is shorter than the
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
// Apiserver outage. A holder that cannot renew for RenewDeadline keeps the
// role, instead of stepping down, while all of the following hold (checked
// on every tick; the first that fails ends the tenure as before):
//
//   - its renewals fail (an error, not a conflict: a conflict means someone
//     else wrote the Lease, and that always ends the tenure);
//   - every labelled candidate (the latest list of nodes labelled
//     tunnelmesh.io/gateway=true, Config.Labelled) has been seen in
//     memberlist — one that cannot gossip with the holder (7947 blocked,
//     another gossip key, just labelled, or the holder just restarted and
//     has not met it yet) could take the expired Lease unseen — and every
//     other candidate it has ever seen is alive in memberlist and
//     answered one of its direct pings within RenewDeadline (two-way
//     contact, as fresh as a renewal would be);
//   - none of them announces itself active (memberlist metadata);
//   - none of them reaches the apiserver (metadata too: a standby whose
//     Lease watch goes quiet reads the Lease itself to find out) — judged
//     once the holder has been silent for twice RenewDeadline, so that the
//     others have noticed the silence and said so, and only for a candidate
//     that has said so for longer than RenewDeadline (an apiserver that has
//     just come back gives the holder time to renew too).
//
// Holding without a renewal is bounded (Config.MaxHold, 30 s): past it the
// holder steps down whatever memberlist says, since a candidate labelled
// after its last node list and unable to gossip with it could have taken
// the Lease. An outage longer than that takes the data plane down until the
// apiserver answers again; the bound is the price of never running two
// actives with one WireGuard key for long.
//
// Why no split brain: a candidate becomes active only through a successful
// write to the apiserver. Under the rules above no other candidate reaches
// the apiserver, so none can write. A standby never takes an expired Lease
// from a holder that memberlist shows alive and announcing itself active:
// that holder is holding through an outage and renews the same tenure once
// it can. A standby still preempts on memberlist's death verdict, which
// needs at least ProbeTimeout + SuspicionMult×ProbeInterval (0.9 s) of
// silence from the holder; the holder, missing a fresh ping answer for
// RenewDeadline (0.65 s), has stepped down before — the same margin as for
// renewals. If the holder is the one cut off from the apiserver while the
// others reach it, they say so and it steps down after 2×RenewDeadline; the
// standbys then take the Lease on expiry as before (or at once on the
// death verdict if the holder is cut off from them as well).
//
// Conservative by design: a candidate that crashed or left during the
// outage and never came back counts as "could act", so the holder steps
// down (the behaviour without this rule); a cluster with a single labelled
// candidate holds through an outage up to MaxHold, since nobody could take
// over.
// The cost of holding is only that the MeshGateway status is not written
// and the route agents keep following the Lease holder they knew, which is
// still right.
//
// Slowness rather than an outage (renewals answered late or timing out on
// a loaded apiserver, the holder's loop not scheduled in time) keeps the
// tenure for as long as no other candidate can take over (Elector.actUntil):
// RenewDeadline after the last two-way memberlist contact with each other
// candidate that could declare the holder dead, and never past the point
// where the Lease nears expiry. A candidate gone since before the tenure
// began (the crashed holder it replaced) sets no bound: restarted, it
// rejoins memberlist and counts from then on, or it waits for the Lease to
// expire. Stepping down sooner only tore the data plane down and took the
// Lease again a moment later with a new epoch — seen in kind whenever a
// crashed gateway came back and its start starved the control plane.
// Renewals run beside the election's loop, so a slow answer neither stops
// the loop nor the entitlement below from following memberlist's contact.
//
// The WireGuard fence. Config.Entitled tells the caller until when this
// candidate may act as the active one — as long as it keeps its tenure
// (above), or through an outage RenewDeadline after the oldest ping answer
// it holds on, plus half a RenewInterval for the next tick — and the node keeps
// its WireGuard port closed in the kernel past that time (pkg/nft.Fence).
// That ends before memberlist's quickest death verdict, the earliest a
// standby can take over, so whatever the role of a frozen, starved or
// partitioned old holder says, it sends nothing on the tunnel once another
// could be active: its first packets after a thaw would make the remote
// gateways roam to it, away from the new active.

// The candidates' memberlist port (DefaultGossipPort, TCP and UDP) must be
// open between candidate nodes; gossip is encrypted with a key derived from
// the cluster's WireGuard key, so only candidates can vouch for each other.
//
// Identity is the node name and one gateway process runs per node (a
// DaemonSet without surge): a restarted process that finds its own node named
// as holder knows the previous tenure is over and takes the Lease with a new
// epoch at once.
package election

// Package k8s is the root of the gateway's Kubernetes parts; each
// subpackage has one job and none depends on pkg/gateway:
//
//   - election: one active gateway per cluster (Lease + memberlist, epoch).
//   - keysecret: the cluster's WireGuard key in a Secret, created once.
//   - discovery: the cluster's pod and service CIDRs; Compare with the broker.
//   - status: the MeshGateway object kubectl, meshctl and route agents read.
//   - k8stest: helpers for tests against a real apiserver.
//
// How `gateway k8s` is meant to use them on a candidate node:
//
//  1. key := keysecret.Store{...}.Ensure — create-or-conflict is what makes a
//     start-up create safe (one key wins, nobody regenerates); meshctl join
//     calls the same before installing, so usually this only reads.
//  2. cidrs := discovery.Discover (flags as Overrides); after the broker
//     answers, discovery.Compare with the cluster record and report a
//     mismatch rather than route with either silently.
//  3. e := election.New with Gossip.SecretKey = keysecret.GossipKey(key) and
//     Peers = election.CandidatePeers(client, port), then
//     election.Drive(ctx, e, handler): handler.Activate(State) brings the data
//     plane up and registers with the broker at State.Epoch (the broker
//     refuses older ones; a new epoch while up means re-register), and
//     writes status with status.Writer (ErrStale: a successor exists);
//     handler.Deactivate tears it down, at once when the role is lost. When
//     ctx ends (SIGTERM) Drive deactivates first and then releases the
//     Lease, so the successor starts after this node let go.
//
// Route agents (nodes without the candidate label) need no key: they follow
// election.Observe for the active node and read the remote CIDRs from the
// MeshGateway status.
package k8s

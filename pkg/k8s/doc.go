// Package k8s is the root of the gateway's Kubernetes parts; each
// subpackage has one job and none depends on pkg/gateway:
//
//   - election: one active gateway per cluster (Lease + memberlist, epoch).
//   - keysecret: the cluster's WireGuard key in a Secret, created once.
//   - discovery: the cluster's pod and service CIDRs; Compare with the broker.
//   - status: the MeshGateway object kubectl, meshctl and route agents read.
//   - k8stest: helpers for tests against a real apiserver.
//   - node: what `gateway k8s` runs on a node, built from the above.
//
// On a candidate node (pkg/k8s/node):
//
//  1. key := keysecret.Store{...}.Ensure — create-or-conflict is what makes a
//     start-up create safe (one key wins, nobody regenerates, no election
//     first); meshctl join calls the same before installing, so usually
//     this only reads.
//  2. cidrs := discovery.Discover (flags as Overrides); the broker's record
//     is compared with it and a mismatch reported rather than routed around.
//  3. election.New with Gossip.SecretKey = keysecret.GossipKey(key) and
//     Peers = election.CandidatePeers(client, port), run beside the data
//     plane; each State brings the active role up at State.Epoch (broker
//     registration, MeshGateway status, the stored view, clusterset gossip)
//     or down at once. When ctx ends (SIGTERM) the data plane is torn down
//     first and the Lease released after, so the successor starts after
//     this node let go.
//
// Route agents (nodes without the candidate label) need no key: they watch
// the Lease for the active node and read the remote CIDRs from the
// MeshGateway status.
package k8s

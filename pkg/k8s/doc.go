// Package k8s is the root of the gateway's Kubernetes parts; each
// subpackage has one job and none depends on pkg/gateway's engine:
//
//   - brokersecret: the member Secret `meshctl join` writes (broker URL, CA,
//     credential, gossip key) and the gateway and MCS controller read.
//   - keysecret: the cluster's WireGuard key in a Secret, created once.
//   - discovery: the cluster's pod and service CIDRs; Compare with the broker.
//   - election: one active gateway per cluster (Lease + memberlist, epoch).
//   - status: the MeshGateway object kubectl, meshctl and route agents read.
//   - node: what `gateway k8s` runs on a node, built from the above.
//   - rbac: no code; its test proves every grant of deploy/gateway/rbac.yaml
//     is needed by the account that has it.
//   - k8stest: helpers for tests against a real apiserver.
//
// Two DaemonSets run the same binary (deploy/gateway), each with its own
// ServiceAccount so that a plain node holds no secret:
//
//   - `gateway k8s --role=candidate` on nodes labelled
//     tunnelmesh.io/gateway=true. It reads the member Secret and the key
//     Secret (keysecret.Store.Ensure: create-or-conflict, so one key wins and
//     nobody regenerates; meshctl join calls it first, so usually this only
//     reads), discovers the CIDRs (a mismatch with the broker's record is
//     reported, not routed around), opens the data plane in the standby
//     shape and runs the elector (election.New with the gossip key derived
//     from the WireGuard key). Each election State brings the active role up
//     at State.Epoch — broker registration, MeshGateway status, the stored
//     view, clusterset gossip — or down at once. On SIGTERM the data plane is
//     torn down first and the Lease released after, so the successor starts
//     after this node let go.
//   - `gateway k8s --role=agent` on every node, with read-only access to the
//     Lease, the Nodes and the cluster's own MeshGateway: it routes the remote
//     CIDRs the MeshGateway lists (minus every refusal) to the node holding
//     the Lease. It learns all of it from the cluster, never from the broker.
package k8s

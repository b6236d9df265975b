// Package node runs one Kubernetes node's tunnelmesh roles, as the gateway
// DaemonSet does on every node (`gateway k8s`):
//
//   - Every node runs the route agent (pkg/routeagent). It learns the active
//     gateway node from the Lease holder and that node's InternalIPs, and the
//     remote clusters' CIDRs from the MeshGateway status the active gateway
//     writes: from the cluster, never from the broker, so a broker outage or an
//     agent restart changes nothing.
//   - Nodes labelled tunnelmesh.io/gateway=true are also candidates: the data
//     plane is opened in the standby shape with the cluster's key (Secret
//     tunnelmesh-wireguard, created once by whichever candidate gets there
//     first), the elector (pkg/k8s/election) chooses the active one, and its
//     State drives the gateway engine's role and epoch. The active writes the
//     MeshGateway status and, for its tenure (tenure.go), takes over and keeps
//     the view its data plane is built from in the Secret
//     tunnelmesh-gateway-state (so a standby on another node has tunnels
//     even while the broker is down) and gossips with the other clusters'
//     active gateways over the tunnel addresses (pkg/gossip), whose news is
//     laid over the broker's snapshot (gossip.Overlay). On a graceful stop
//     the data plane is torn down first and the Lease released after, so a
//     standby takes over within one apiserver round trip.
//   - `gateway sysctl` (SetSysctls) is the DaemonSet's privileged init
//     container: the kernel settings the unprivileged main container cannot set.
//
// The plain inputs (the route agent's Input, the status object, the sysctl
// plan, the gossip overlay) are computed by pure functions (AgentInput,
// BuildStatus, PlanSysctls, gossip.Overlay); Run only wires watches, loops
// and appliers.
package node

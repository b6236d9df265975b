// Package node runs one Kubernetes node's tunnelmesh roles, as the gateway
// DaemonSet does on every node (`gateway k8s`):
//
//   - Every node runs the route agent (pkg/routeagent; agent.go). It learns
//     the active gateway node from the Lease holder and that node's
//     InternalIPs, and the remote clusters' CIDRs from the MeshGateway status
//     the active gateway writes: from the cluster, never from the broker, so
//     a broker outage or an agent restart changes nothing.
//   - Nodes labelled tunnelmesh.io/gateway=true are also candidates
//     (candidate.go wires them, roles.go runs them): the data plane is opened
//     in the standby shape with the cluster's key (Secret tunnelmesh-wireguard,
//     created once by whichever candidate gets there first), the elector
//     (pkg/k8s/election) chooses the active one, and its State drives the
//     gateway engine's role and epoch. The active writes the MeshGateway
//     status (statusloop.go) and, for its tenure (tenure.go), takes over and
//     keeps the view its data plane is built from in the Secret
//     tunnelmesh-gateway-state (lastview.go; so a standby on another node has
//     tunnels even while the broker is down) and gossips with the other
//     clusters' active gateways over the tunnel addresses (pkg/gossip). On a
//     graceful stop the data plane is torn down first and the Lease released
//     after, so a standby takes over within one apiserver round trip.
//
// Who owns what: the gateway's inputs (state file, stored view, broker
// watch, gossip) are layered by one gateway.Source with explicit
// precedence; this package only feeds it the stored view (Adopt) and what
// gossip learns (SetRemotes). The engine announces what it applied
// (Engine.Changed) and is never polled. The plain inputs (the route agent's
// Input, the status object) are computed by pure functions (AgentInput,
// BuildStatus); the kernel settings are pkg/sysctl's one plan.
package node

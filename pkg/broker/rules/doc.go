// Package rules holds the broker's membership rules as pure functions over
// plain records: tunnel address allocation; what a gateway registration
// may be (its endpoint outside every member's CIDRs and the tunnel pool,
// a capped number per cluster, which gateway of a cluster is active, with
// epoch fencing); and what an export may publish (its own pods and
// ClusterIPs, capped exports and EndpointSlices, the broker's time of
// first receipt). The CIDR rules of a join, which meshctl checks too, are
// the contract's (api.Policy, api.CheckOverlaps, api.CheckCoversGateways).
// The HTTP handlers only gather the records, call these and store the
// outcome.
package rules

// Package nft keeps tunnelmesh's nftables table (family inet) applied: the
// MSS clamp for TCP leaving through the tunnel, the SNAT of host-network
// traffic leaving it, and the tunnel's ingress filter (only the cluster's own
// pod and service CIDRs and its nodes' addresses are forwarded into the
// tunnel), all written once against named interval sets of the local,
// remote and node addresses. A change of CIDRs or nodes only adds or deletes
// set elements; the rules stay, and their number never depends on the size
// of the mesh or the cluster. A translated cluster's table also holds the
// stateless prefix translation of its translated CIDRs (two rules per CIDR,
// one each way; see Desired.Translate).
package nft

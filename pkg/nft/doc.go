// Package nft keeps tunnelmesh's nftables table (family inet) applied: the
// MSS clamp for TCP leaving through the tunnel and the SNAT of host-network
// traffic leaving it, both written once against named interval sets of the
// local and remote CIDRs. A change of CIDRs only adds or deletes set
// elements; the rules stay, and their number never depends on the size of
// the mesh.
package nft

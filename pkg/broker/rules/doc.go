// Package rules holds the broker's membership rules as pure functions over
// plain records: CIDR overlap between clusters, tunnel address allocation,
// and which gateway of a cluster is active (with epoch fencing). The HTTP
// handlers only gather the records, call these and store the outcome.
package rules

// Package rules holds the broker's membership rules as pure functions over
// plain records: tunnel address allocation and which gateway of a cluster
// is active (with epoch fencing). The CIDR overlap rule, which meshctl
// checks too, is the contract's (api.CheckOverlaps). The HTTP
// handlers only gather the records, call these and store the outcome.
package rules

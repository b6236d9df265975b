package discovery

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// Mismatch is one range set that differs between the cluster and the broker.
type Mismatch struct {
	Kind    string // "pod" or "service"
	Cluster []netip.Prefix
	From    string // where the cluster's value came from
	Broker  []string
}

// MismatchError lists every disagreement with the broker's record; it is
// never to be ignored: routes built from the broker's record would miss (or
// steal) addresses the cluster really uses.
type MismatchError struct {
	ClusterID  string
	Mismatches []Mismatch
}

func (e *MismatchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "the broker's record of cluster %q does not match the cluster:", e.ClusterID)
	for _, m := range e.Mismatches {
		fmt.Fprintf(&b, " %s CIDRs are %s here (from %s) but %s at the broker;", m.Kind, Join(m.Cluster), m.From, orNone(strings.Join(m.Broker, ",")))
	}
	b.WriteString(" re-join the cluster with the right --pod-cidr/--service-cidr, or fix the flags of this gateway")
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// Compare checks the discovered CIDRs against the broker's cluster record,
// as sets (order and equivalent spellings do not matter). It returns a
// *MismatchError naming every difference, or nil.
func Compare(local CIDRs, rec api.Cluster) error {
	var ms []Mismatch
	check := func(kind string, mine []netip.Prefix, from string, theirs []string) {
		ps, err := parsePrefixes(theirs)
		if err != nil || !slices.Equal(Merge(mine), Merge(ps)) {
			ms = append(ms, Mismatch{Kind: kind, Cluster: mine, From: from, Broker: theirs})
		}
	}
	check("pod", local.Pod, local.PodFrom, rec.PodCIDRs)
	check("service", local.Service, local.ServiceFrom, rec.ServiceCIDRs)
	if len(ms) == 0 {
		return nil
	}
	return &MismatchError{ClusterID: rec.ID, Mismatches: ms}
}

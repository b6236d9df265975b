package node

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/gateway"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/discovery"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/election"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types of the MeshGateway written here.
const (
	// CondCIDRsMatch: the CIDRs found in the cluster equal the broker's record.
	CondCIDRsMatch = "CIDRsMatchBroker"
	// CondBrokerKnown: the gateway has a broker state (live or from its file).
	CondBrokerKnown = "BrokerStateKnown"
)

// StatusInput is what the active gateway knows.
type StatusInput struct {
	ClusterID string
	Node      string
	Epoch     int64
	PublicKey string
	Endpoint  string
	CIDRs     discovery.CIDRs
	// Snapshot is the latest broker state (live or from the state file); nil
	// when none is known.
	Snapshot        *api.Snapshot
	Health          []api.PeerHealth
	BrokerReachable bool
	// Refused are the remote CIDRs the gateway refused (Engine.Refused).
	Refused []gateway.RefusedCIDR
	// Candidates are the gateway candidates as the elector sees them.
	Candidates []election.Candidate
}

// BuildStatus computes the MeshGateway status. The remote clusters' CIDRs
// come from the broker's snapshot; a mismatch between the discovered CIDRs and
// the broker's record of this cluster is a False condition naming it. Pure.
func BuildStatus(in StatusInput) status.GatewayStatus {
	st := status.GatewayStatus{
		ClusterID: in.ClusterID, ActiveNode: in.Node, Epoch: in.Epoch, PublicKey: in.PublicKey, Endpoint: in.Endpoint,
		PodCIDRs: strs(in.CIDRs.Pod), ServiceCIDRs: strs(in.CIDRs.Service), BrokerReachable: in.BrokerReachable,
		Standbys: standbys(in.Node, in.Candidates),
	}
	if in.Snapshot == nil {
		st.Conditions = append(st.Conditions,
			cond(CondBrokerKnown, false, "NoBrokerState", "the broker has not answered yet and there is no state file"),
			cond(CondCIDRsMatch, false, "Unknown", "no broker record of this cluster known yet"))
		return st
	}
	st.Conditions = append(st.Conditions, cond(CondBrokerKnown, true, "Known", fmt.Sprintf("broker revision %d", in.Snapshot.Revision)))
	st.Remotes = status.Remotes(in.ClusterID, in.Snapshot.Clusters, in.Snapshot.Gateways, in.Health)
	for i := range st.Remotes {
		for _, r := range in.Refused {
			if r.Cluster == st.Remotes[i].Cluster {
				st.Remotes[i].Refused = append(st.Remotes[i].Refused, status.RefusedCIDR{CIDR: r.CIDR.String(),
					Reason: fmt.Sprintf("covers %s (%s)", r.Covers, r.What)})
			}
		}
	}
	var self *api.Cluster
	for i := range in.Snapshot.Clusters {
		if in.Snapshot.Clusters[i].ID == in.ClusterID {
			self = &in.Snapshot.Clusters[i]
		}
	}
	switch err := mismatch(in.ClusterID, in.CIDRs, self); {
	case self == nil:
		st.Conditions = append(st.Conditions, cond(CondCIDRsMatch, false, "NotInBroker", "the broker has no record of cluster "+in.ClusterID))
	case err != nil:
		st.Conditions = append(st.Conditions, cond(CondCIDRsMatch, false, "Mismatch", err.Error()))
	default:
		st.TunnelIP = self.TunnelIP
		st.Conditions = append(st.Conditions, cond(CondCIDRsMatch, true, "Match", "discovered CIDRs equal the broker's record"))
	}
	if self != nil {
		st.TunnelIP = self.TunnelIP
		st.Translations = self.Translations
	}
	return st
}

// standbys are the candidates other than the active one. Pure.
func standbys(active string, cs []election.Candidate) []status.Standby {
	var out []status.Standby
	for _, c := range cs {
		if c.Name == active {
			continue
		}
		sb := status.Standby{Node: c.Name, Ready: c.Ready}
		switch {
		case !c.Ready:
			sb.Reason = "not in the candidates' memberlist (its gateway is down or restarting, or port 7947 is blocked): a failover now waits for it"
		case !c.Labelled:
			sb.Reason = "answers in memberlist but its node is no longer labelled " + election.CandidateLabel + "=true"
		}
		out = append(out, sb)
	}
	return out
}

// mismatch compares the discovered CIDRs with the broker's record.
func mismatch(id string, c discovery.CIDRs, rec *api.Cluster) error {
	if rec == nil {
		return nil
	}
	err := discovery.Compare(c, *rec)
	var me *discovery.MismatchError
	if err != nil && !errors.As(err, &me) {
		return fmt.Errorf("compare CIDRs of %s: %w", id, err)
	}
	return err
}

func cond(typ string, ok bool, reason, msg string) metav1.Condition {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg}
}

func strs(ps []netip.Prefix) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

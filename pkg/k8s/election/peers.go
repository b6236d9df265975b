package election

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// CandidatePeers returns a GossipConfig.Peers that lists the candidate nodes
// (CandidateLabel=true) and gives each one's InternalIP with port, so that
// candidates find each other with no configuration.
func CandidatePeers(client kubernetes.Interface, port int) func(context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: CandidateLabel + "=true"})
		if err != nil {
			return nil, fmt.Errorf("list gateway candidate nodes (label %s=true): %w", CandidateLabel, err)
		}
		return candidateAddrs(nodes.Items, port), nil
	}
}

func candidateAddrs(nodes []corev1.Node, port int) []string {
	var out []string
	for _, n := range nodes {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				out = append(out, net.JoinHostPort(a.Address, strconv.Itoa(port)))
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// CandidateNames returns a Config.Labelled that lists the names of the
// candidate nodes (CandidateLabel=true).
func CandidateNames(client kubernetes.Interface) func(context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: CandidateLabel + "=true"})
		if err != nil {
			return nil, fmt.Errorf("list gateway candidate nodes (label %s=true): %w", CandidateLabel, err)
		}
		names := make([]string, 0, len(nodes.Items))
		for _, n := range nodes.Items {
			names = append(names, n.Name)
		}
		sort.Strings(names)
		return names, nil
	}
}

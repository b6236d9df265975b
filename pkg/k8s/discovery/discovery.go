// Package discovery finds a cluster's pod and service CIDRs from the cluster
// itself, so that joining needs no flags in the common case, and compares
// them with what the broker records.
//
// Read gathers the raw facts (thin, one API read each); Decide is a pure
// function from facts and flag overrides to the CIDRs and where each came
// from. Pod CIDRs: flag, else kubeadm's networking.podSubnet (the whole
// range, covering nodes not yet created), else the union of the nodes'
// spec.podCIDRs. Service CIDRs: flag, else the networking.k8s.io/v1
// ServiceCIDR objects where that API is served (they are what the apiserver
// allocates from, extensions included), else kubeadm's serviceSubnet, else
// the kube-apiserver static pod's --service-cluster-ip-range.
package discovery

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/tunnelmesh/tunnelmesh/pkg/cidr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// Where the kubeadm configuration and static pods are.
const (
	KubeadmNamespace   = "kube-system"
	KubeadmConfigMap   = "kubeadm-config"
	KubeadmClusterKey  = "ClusterConfiguration"
	APIServerPodLabel  = "component=kube-apiserver"
	serviceRangeFlag   = "--service-cluster-ip-range"
	sourceFlag         = "flag"
	sourceKubeadm      = "kubeadm-config ConfigMap"
	sourceNodes        = "Node spec.podCIDRs"
	sourceServiceCIDRs = "ServiceCIDR objects"
	sourceAPIServer    = "kube-apiserver --service-cluster-ip-range"
)

// Facts is what the cluster says, each source on its own (nil: absent).
type Facts struct {
	NodePodCIDRs map[string][]netip.Prefix // node name -> spec.podCIDRs
	KubeadmPod   []netip.Prefix
	KubeadmSvc   []netip.Prefix
	// ServiceCIDRs is nil when the ServiceCIDR API is not served.
	ServiceCIDRs []netip.Prefix
	APIServerSvc []netip.Prefix
	// Unreadable lists sources this client may not read (a missing
	// permission is shown, not silently taken as absence).
	Unreadable []string
}

// Overrides are the operator's flags; non-empty wins over discovery.
type Overrides struct {
	Pod, Service []netip.Prefix
}

// CIDRs is the decision: the cluster's ranges and where each came from.
type CIDRs struct {
	Pod         []netip.Prefix
	Service     []netip.Prefix
	PodFrom     string
	ServiceFrom string
	// Warnings are disagreements worth showing (e.g. a node's podCIDR
	// outside the chosen pod ranges).
	Warnings []string
}

// Discover reads the facts and decides.
func Discover(ctx context.Context, client kubernetes.Interface, ov Overrides) (CIDRs, error) {
	f, err := Read(ctx, client, ov)
	if err != nil {
		return CIDRs{}, err
	}
	return Decide(f, ov)
}

// Read gathers the facts. Sources that a flag makes unnecessary are not read
// (so a least-privileged caller with flags needs no extra permissions),
// except nodes, which are always read to check the pod ranges.
func Read(ctx context.Context, client kubernetes.Interface, ov Overrides) (Facts, error) {
	var f Facts
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return f, fmt.Errorf("list nodes for their spec.podCIDRs: %w", err)
	}
	f.NodePodCIDRs = map[string][]netip.Prefix{}
	for _, n := range nodes.Items {
		cidrs := n.Spec.PodCIDRs
		if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
			cidrs = []string{n.Spec.PodCIDR}
		}
		ps, err := parsePrefixes(cidrs)
		if err != nil {
			return f, fmt.Errorf("node %s spec.podCIDRs: %w", n.Name, err)
		}
		if len(ps) > 0 {
			f.NodePodCIDRs[n.Name] = ps
		}
	}
	if len(ov.Pod) > 0 && len(ov.Service) > 0 {
		return f, nil
	}
	cm, err := client.CoreV1().ConfigMaps(KubeadmNamespace).Get(ctx, KubeadmConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		// Not a kubeadm cluster: other sources decide.
	case apierrors.IsForbidden(err):
		f.Unreadable = append(f.Unreadable, fmt.Sprintf("%s/%s ConfigMap (forbidden)", KubeadmNamespace, KubeadmConfigMap))
	case err != nil:
		return f, fmt.Errorf("read %s/%s: %w", KubeadmNamespace, KubeadmConfigMap, err)
	default:
		if f.KubeadmPod, f.KubeadmSvc, err = ParseKubeadm(cm.Data[KubeadmClusterKey]); err != nil {
			return f, err
		}
	}
	if len(ov.Service) > 0 {
		return f, nil
	}
	scs, err := client.NetworkingV1().ServiceCIDRs().List(ctx, metav1.ListOptions{})
	switch {
	case apierrors.IsNotFound(err):
		// The API is not served (before Kubernetes 1.33 or disabled).
	case err != nil:
		return f, fmt.Errorf("list ServiceCIDR objects: %w", err)
	default:
		f.ServiceCIDRs = []netip.Prefix{}
		for _, sc := range scs.Items {
			if sc.DeletionTimestamp != nil {
				continue
			}
			ps, err := parsePrefixes(sc.Spec.CIDRs)
			if err != nil {
				return f, fmt.Errorf("ServiceCIDR %s: %w", sc.Name, err)
			}
			f.ServiceCIDRs = append(f.ServiceCIDRs, ps...)
		}
	}
	if len(f.ServiceCIDRs) > 0 || len(f.KubeadmSvc) > 0 {
		return f, nil
	}
	pods, err := client.CoreV1().Pods(KubeadmNamespace).List(ctx, metav1.ListOptions{LabelSelector: APIServerPodLabel})
	if apierrors.IsForbidden(err) {
		f.Unreadable = append(f.Unreadable, fmt.Sprintf("kube-apiserver pods in %s (forbidden)", KubeadmNamespace))
	}
	if err != nil && !apierrors.IsForbidden(err) {
		return f, fmt.Errorf("list kube-apiserver pods in %s: %w", KubeadmNamespace, err)
	}
	if err == nil {
		for _, p := range pods.Items {
			if f.APIServerSvc, err = serviceRangeOf(p); err != nil || len(f.APIServerSvc) > 0 {
				return f, err
			}
		}
	}
	return f, nil
}

// ParseKubeadm reads networking.podSubnet and serviceSubnet (comma-separated
// for dual stack) from a kubeadm ClusterConfiguration document.
func ParseKubeadm(doc string) (pod, svc []netip.Prefix, err error) {
	var c struct {
		Networking struct {
			PodSubnet     string `json:"podSubnet"`
			ServiceSubnet string `json:"serviceSubnet"`
		} `json:"networking"`
	}
	if err := yaml.Unmarshal([]byte(doc), &c); err != nil {
		return nil, nil, fmt.Errorf("parse %s/%s %s: %w", KubeadmNamespace, KubeadmConfigMap, KubeadmClusterKey, err)
	}
	if pod, err = parsePrefixes(splitList(c.Networking.PodSubnet)); err != nil {
		return nil, nil, fmt.Errorf("%s networking.podSubnet: %w", KubeadmConfigMap, err)
	}
	if svc, err = parsePrefixes(splitList(c.Networking.ServiceSubnet)); err != nil {
		return nil, nil, fmt.Errorf("%s networking.serviceSubnet: %w", KubeadmConfigMap, err)
	}
	return pod, svc, nil
}

func serviceRangeOf(p corev1.Pod) ([]netip.Prefix, error) {
	for _, c := range p.Spec.Containers {
		args := append(append([]string{}, c.Command...), c.Args...)
		for i, a := range args {
			v, ok := strings.CutPrefix(a, serviceRangeFlag+"=")
			if !ok && a == serviceRangeFlag && i+1 < len(args) {
				v, ok = args[i+1], true
			}
			if ok {
				ps, err := parsePrefixes(splitList(v))
				if err != nil {
					return nil, fmt.Errorf("pod %s/%s %s: %w", p.Namespace, p.Name, serviceRangeFlag, err)
				}
				return ps, nil
			}
		}
	}
	return nil, nil
}

// Decide picks the cluster's CIDRs from the facts and the flags.
func Decide(f Facts, ov Overrides) (CIDRs, error) {
	var out CIDRs
	for _, u := range f.Unreadable {
		out.Warnings = append(out.Warnings, "could not read "+u+"; the CIDRs were found without it")
	}
	nodeUnion := nodePodUnion(f.NodePodCIDRs)
	switch {
	case len(ov.Pod) > 0:
		out.Pod, out.PodFrom = Merge(ov.Pod), sourceFlag
	case len(f.KubeadmPod) > 0:
		out.Pod, out.PodFrom = Merge(f.KubeadmPod), sourceKubeadm
	case len(nodeUnion) > 0:
		out.Pod, out.PodFrom = nodeUnion, sourceNodes
	default:
		return out, fmt.Errorf("cannot find the cluster's pod CIDRs: no node has spec.podCIDRs and there is no %s/%s; pass them as a flag (e.g. --pod-cidr=10.244.0.0/16)", KubeadmNamespace, KubeadmConfigMap)
	}
	for _, name := range sortedKeys(f.NodePodCIDRs) {
		for _, p := range f.NodePodCIDRs[name] {
			if !coveredBy(p, out.Pod) {
				out.Warnings = append(out.Warnings, fmt.Sprintf("node %s has podCIDR %s outside the pod CIDRs %s (from %s): its pods will not be reachable from other clusters", name, p, Join(out.Pod), out.PodFrom))
			}
		}
	}
	switch {
	case len(ov.Service) > 0:
		out.Service, out.ServiceFrom = Merge(ov.Service), sourceFlag
	case len(f.ServiceCIDRs) > 0:
		out.Service, out.ServiceFrom = Merge(f.ServiceCIDRs), sourceServiceCIDRs
	case len(f.KubeadmSvc) > 0:
		out.Service, out.ServiceFrom = Merge(f.KubeadmSvc), sourceKubeadm
	case len(f.APIServerSvc) > 0:
		out.Service, out.ServiceFrom = Merge(f.APIServerSvc), sourceAPIServer
	default:
		return out, fmt.Errorf("cannot find the cluster's service CIDRs: no ServiceCIDR objects, no %s/%s and no kube-apiserver pod with %s; pass them as a flag (e.g. --service-cidr=10.96.0.0/12)", KubeadmNamespace, KubeadmConfigMap, serviceRangeFlag)
	}
	return out, nil
}

func nodePodUnion(m map[string][]netip.Prefix) []netip.Prefix {
	var all []netip.Prefix
	for _, ps := range m {
		all = append(all, ps...)
	}
	return Merge(all)
}

// Merge returns the smallest set of prefixes covering exactly the union of
// ps: contained prefixes dropped, sibling halves joined (two nodes'
// 10.244.0.0/24 and 10.244.1.0/24 become 10.244.0.0/23). Sorted.
func Merge(ps []netip.Prefix) []netip.Prefix {
	if len(ps) == 0 {
		return nil
	}
	cur := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		cur = append(cur, p.Masked())
	}
	for {
		slices.SortFunc(cur, comparePrefix)
		next := cur[:0:0]
		changed := false
		for _, p := range cur {
			if n := len(next); n > 0 {
				last := next[n-1]
				switch {
				case last.Overlaps(p) && last.Bits() <= p.Bits():
					changed = true
					continue // p inside last
				case last.Bits() == p.Bits() && last.Bits() > 0 && sibling(last, p):
					parent, _ := last.Addr().Prefix(last.Bits() - 1)
					next[n-1] = parent
					changed = true
					continue
				}
			}
			next = append(next, p)
		}
		cur = next
		if !changed {
			return cur
		}
	}
}

func sibling(a, b netip.Prefix) bool {
	pa, _ := a.Addr().Prefix(a.Bits() - 1)
	pb, _ := b.Addr().Prefix(b.Bits() - 1)
	return pa == pb && a != b
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

func coveredBy(p netip.Prefix, set []netip.Prefix) bool {
	for _, s := range set {
		if s.Bits() <= p.Bits() && s.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// ParsePrefixes parses CIDR strings (as flags give them); host bits are
// an error: "10.0.0.1/8" is refused, not taken as 10.0.0.0/8.
func ParsePrefixes(ss []string) ([]netip.Prefix, error) { return parsePrefixes(ss) }

func parsePrefixes(ss []string) ([]netip.Prefix, error) { return cidr.ParseList(ss, cidr.Strict) }

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// Join prints prefixes comma-separated.
func Join(ps []netip.Prefix) string {
	ss := make([]string, len(ps))
	for i, p := range ps {
		ss[i] = p.String()
	}
	return strings.Join(ss, ",")
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

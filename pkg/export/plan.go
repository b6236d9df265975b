package export

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// MaxEndpointsPerSlice is the size at which slices are split, as the
// EndpointSlice controller does by default.
const MaxEndpointsPerSlice = 100

// Import is what one namespace of an importing cluster must hold for one
// multi-cluster service. Owner references and, for ClusterSetIP, the
// ServiceImport's ips and ipFamilies are filled in by the applier from the
// objects the apiserver returns.
type Import struct {
	ServiceImport *mcsv1beta1.ServiceImport
	Derived       *corev1.Service
	Slices        []*discoveryv1.EndpointSlice
}

// DerivedName is the name of the derived Service of ServiceImport name: a
// hash, so that it cannot be confused with a user's Service and fits any
// name length.
func DerivedName(name string) string {
	h := sha256.Sum256([]byte(name))
	return DerivedPrefix + hex.EncodeToString(h[:])[:10]
}

// PlanImport computes the ServiceImport, the derived Service and the
// EndpointSlices for s. Endpoints come from every exporting cluster for
// which reachable is true (the local cluster always is: the caller says so),
// one set of slices per source cluster, address family and port set.
//
// A ClusterSetIP import gets a selector-less ClusterIP Service; kube-proxy
// load-balances its ClusterIP (the ServiceImport's ips) over the pods of
// every cluster, since the slices carry kubernetes.io/service-name of the
// derived Service. A headless import gets a headless derived Service, so its
// slices too belong to a real Service; CoreDNS answers from the slices.
func PlanImport(s Service, reachable func(cluster string) bool) Import {
	derived := DerivedName(s.Name)
	si := &mcsv1beta1.ServiceImport{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name,
			Labels: map[string]string{}, Annotations: map[string]string{}},
		Spec: mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.ServiceImportType(s.Type)},
	}
	for k, v := range s.Labels {
		si.Labels[k] = v
	}
	si.Labels[LabelManagedBy] = ManagedBy
	for k, v := range s.Annotations {
		si.Annotations[k] = v
	}
	si.Spec.Ports = []mcsv1beta1.ServicePort{}
	for _, p := range s.Ports {
		mp := mcsv1beta1.ServicePort{Name: p.Name, Protocol: corev1.Protocol(p.Protocol), Port: p.Port}
		if p.AppProtocol != "" {
			ap := p.AppProtocol
			mp.AppProtocol = &ap
		}
		si.Spec.Ports = append(si.Spec.Ports, mp)
	}
	si.Spec.SessionAffinity = corev1.ServiceAffinity(s.SessionAffinity)
	if s.SessionAffinity == string(corev1.ServiceAffinityClientIP) {
		t := timeout(s.SessionAffinityTimeoutSeconds)
		si.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &t}}
	}
	for _, f := range s.IPFamilies {
		si.Spec.IPFamilies = append(si.Spec.IPFamilies, corev1.IPFamily(f))
	}
	if s.InternalTrafficPolicy != "" {
		p := corev1.ServiceInternalTrafficPolicy(s.InternalTrafficPolicy)
		si.Spec.InternalTrafficPolicy = &p
	}
	if s.TrafficDistribution != "" {
		td := s.TrafficDistribution
		si.Spec.TrafficDistribution = &td
	}
	for _, c := range s.Clusters() {
		si.Status.Clusters = append(si.Status.Clusters, mcsv1beta1.ClusterStatus{Cluster: c})
	}

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: derived,
			Labels: map[string]string{LabelManagedBy: ManagedBy, LabelImportName: s.Name}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP,
			SessionAffinity: si.Spec.SessionAffinity, SessionAffinityConfig: si.Spec.SessionAffinityConfig,
			InternalTrafficPolicy: si.Spec.InternalTrafficPolicy, TrafficDistribution: si.Spec.TrafficDistribution},
	}
	for _, p := range si.Spec.Ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port,
			TargetPort: intstr.FromInt32(p.Port), AppProtocol: p.AppProtocol})
	}
	if s.Type == api.TypeHeadless {
		svc.Spec.ClusterIP = corev1.ClusterIPNone
		svc.Spec.SessionAffinity, svc.Spec.SessionAffinityConfig = corev1.ServiceAffinityNone, nil
	}
	svc.Spec.IPFamilies = si.Spec.IPFamilies
	switch len(si.Spec.IPFamilies) {
	case 0:
	case 1:
		p := corev1.IPFamilyPolicySingleStack
		svc.Spec.IPFamilyPolicy = &p
	default:
		// Prefer, not require: a cluster with one family still imports.
		p := corev1.IPFamilyPolicyPreferDualStack
		svc.Spec.IPFamilyPolicy = &p
	}

	imp := Import{ServiceImport: si, Derived: svc}
	for _, e := range s.Exports {
		if reachable(e.ClusterID) {
			imp.Slices = append(imp.Slices, slicesOf(s, derived, e)...)
		}
	}
	return imp
}

// slicesOf is one cluster's endpoints as EndpointSlices of the derived
// Service, grouped by address family and port set, split at
// MaxEndpointsPerSlice; names are stable for the same grouping.
func slicesOf(s Service, derived string, e api.Export) []*discoveryv1.EndpointSlice {
	type group struct {
		family discoveryv1.AddressType
		ports  []api.ServicePort
		eps    []discoveryv1.Endpoint
	}
	groups := map[string]*group{}
	var order []string
	for _, ep := range e.Endpoints {
		for _, fam := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6} {
			var addrs []string
			for _, a := range ep.Addresses {
				if ip, err := netip.ParseAddr(a); err == nil && (ip.Is4() == (fam == discoveryv1.AddressTypeIPv4)) {
					addrs = append(addrs, ip.String())
				}
			}
			if len(addrs) == 0 {
				continue
			}
			sig := string(fam) + "|" + portsSig(ep.Ports)
			g := groups[sig]
			if g == nil {
				g = &group{family: fam, ports: ep.Ports}
				groups[sig] = g
				order = append(order, sig)
			}
			ready := ep.Ready
			de := discoveryv1.Endpoint{Addresses: addrs,
				Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &ready, Terminating: ptr(false)}}
			if ep.Hostname != "" {
				h := ep.Hostname
				de.Hostname = &h
			}
			g.eps = append(g.eps, de)
		}
	}
	slices.Sort(order)
	var out []*discoveryv1.EndpointSlice
	for _, sig := range order {
		g := groups[sig]
		for i := 0; i < len(g.eps); i += MaxEndpointsPerSlice {
			chunk := g.eps[i:min(i+MaxEndpointsPerSlice, len(g.eps))]
			h := sha256.Sum256(fmt.Appendf(nil, "%s|%d", sig, i/MaxEndpointsPerSlice))
			es := &discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace,
					Name: derived + "-" + e.ClusterID + "-" + hex.EncodeToString(h[:])[:8],
					Labels: map[string]string{
						mcsv1beta1.LabelServiceName:   s.Name,
						mcsv1beta1.LabelSourceCluster: e.ClusterID,
						discoveryv1.LabelManagedBy:    ManagedBy,
						discoveryv1.LabelServiceName:  derived,
					}},
				AddressType: g.family,
				Endpoints:   chunk,
				Ports:       []discoveryv1.EndpointPort{},
			}
			for _, p := range g.ports {
				ep := discoveryv1.EndpointPort{Name: ptr(p.Name), Protocol: ptr(corev1.Protocol(p.Protocol)), Port: ptr(p.Port)}
				if p.AppProtocol != "" {
					ep.AppProtocol = ptr(p.AppProtocol)
				}
				es.Ports = append(es.Ports, ep)
			}
			out = append(out, es)
		}
	}
	return out
}

func portsSig(ps []api.ServicePort) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "%s/%s/%d/%s;", p.Name, p.Protocol, p.Port, p.AppProtocol)
	}
	return b.String()
}

func ptr[T any](v T) *T { return &v }

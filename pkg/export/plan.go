package export

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// Import is what one namespace of an importing cluster must hold for one
// multi-cluster service. Owner references and, for ClusterSetIP, the
// ServiceImport's ips and ipFamilies are filled in by the applier from the
// objects the apiserver returns.
type Import struct {
	ServiceImport *mcsv1beta1.ServiceImport
	Derived       *corev1.Service
	Slices        []*discoveryv1.EndpointSlice
	// Withheld are the exporting clusters whose endpoints the slices hold
	// but mark not ready, and why.
	Withheld map[string]Withholding
	// Dropped says what of the exports an EndpointSlice cannot hold (and the
	// apiserver would refuse), left out so that the rest is imported.
	Dropped []string
}

// DerivedName is the name of the derived Service of ServiceImport name: a
// hash, so that it cannot be confused with a user's Service and fits any
// name length.
func DerivedName(name string) string {
	h := sha256.Sum256([]byte(name))
	return DerivedPrefix + hex.EncodeToString(h[:])[:10]
}

// Withholding is why one cluster's endpoints are withheld from an import.
type Withholding struct {
	Reason  string // a Withheld* reason
	Message string
}

// Reasons a cluster's endpoints are withheld, the value of LabelWithheld on
// its slices.
const (
	// WithheldTunnelDown: this cluster's active gateway reports the tunnel
	// to that cluster broken (its health probes go unanswered).
	WithheldTunnelDown = "TunnelDown"
	// WithheldGatewaysStale: the broker marks every gateway of that cluster
	// stale (their heartbeats stopped).
	WithheldGatewaysStale = "GatewaysStale"
	// WithheldClusterLeft: the cluster is no longer in the clusterset.
	WithheldClusterLeft = "ClusterLeft"
	// WithheldLocalFirst: the service asks for the same cluster first
	// (trafficDistribution or internalTrafficPolicy: Local) and this
	// cluster has a ready endpoint of its own.
	WithheldLocalFirst = "LocalFirst"
)

// Scope is what the importing cluster knows beyond the service itself.
type Scope struct {
	// Local is this cluster's ID.
	Local string
	// Clusters are the broker's records by ID: their translations decide
	// the addresses imports use (see importable).
	Clusters map[string]api.Cluster
	// Withdrawn are the remote clusters whose endpoints leave every import
	// (TunnelDown, GatewaysStale, ClusterLeft); never the local cluster.
	Withdrawn map[string]Withholding
}

// LocalFirst reports whether s asks importing clusters to use their own
// endpoints while any is ready: a trafficDistribution that prefers close
// endpoints, or internalTrafficPolicy Local (whose node-locality has no
// meaning across clusters, so it means the same cluster here).
func LocalFirst(s Service) bool {
	switch s.TrafficDistribution {
	case corev1.ServiceTrafficDistributionPreferClose, corev1.ServiceTrafficDistributionPreferSameZone,
		corev1.ServiceTrafficDistributionPreferSameNode:
		return true
	}
	return policy(s.InternalTrafficPolicy) == string(corev1.ServiceInternalTrafficPolicyLocal)
}

// withheld decides, per exporting cluster, whether its endpoints are
// withheld from this cluster's import of s.
func withheld(s Service, sc Scope) map[string]Withholding {
	out := map[string]Withholding{}
	localReady := false
	for _, e := range s.Exports {
		if e.ClusterID == sc.Local {
			localReady = slices.ContainsFunc(e.Endpoints, func(ep api.Endpoint) bool { return ep.Ready })
		}
	}
	for _, e := range s.Exports {
		if e.ClusterID == sc.Local {
			continue
		}
		if w, ok := sc.Withdrawn[e.ClusterID]; ok {
			out[e.ClusterID] = w
		} else if localReady && LocalFirst(s) {
			out[e.ClusterID] = Withholding{Reason: WithheldLocalFirst,
				Message: "the service prefers the same cluster and " + sc.Local + " has ready endpoints; used when none is ready"}
		}
	}
	return out
}

// PlanImport computes the ServiceImport, the derived Service and the
// EndpointSlices for s. Every exporting cluster has its set of slices, one
// per address family and port set; a withheld cluster's (see Scope and
// LocalFirst) mark every endpoint not ready and carry LabelWithheld, so
// that kube-proxy and CoreDNS use none of them while the import still
// shows where they are and why they are out.
//
// A ClusterSetIP import gets a selector-less ClusterIP Service; kube-proxy
// load-balances its ClusterIP (the ServiceImport's ips) over the ready
// endpoints of every cluster, since the slices carry
// kubernetes.io/service-name of the derived Service. A headless import gets
// a headless derived Service, so its slices too belong to a real Service;
// CoreDNS answers from the ready endpoints of the slices.
func PlanImport(s Service, sc Scope) Import {
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

	// The derived Service's internalTrafficPolicy is always Cluster: our
	// slices name no nodes, so Local would leave kube-proxy no endpoint on
	// any node; the import's Local means the same cluster first instead
	// (LocalFirst). kube-proxy (v1.36) acts on endpoint hints alone, never on
	// the Service's trafficDistribution, and our slices carry no hints: the
	// field is copied for whoever reads the Service.
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: derived,
			Labels: map[string]string{LabelManagedBy: ManagedBy, LabelImportName: s.Name}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP,
			SessionAffinity: si.Spec.SessionAffinity, SessionAffinityConfig: si.Spec.SessionAffinityConfig,
			InternalTrafficPolicy: ptr(corev1.ServiceInternalTrafficPolicyCluster), TrafficDistribution: si.Spec.TrafficDistribution},
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

	imp := Import{ServiceImport: si, Derived: svc, Withheld: withheld(s, sc)}
	for _, e := range s.Exports {
		e = sc.importable(e)
		var why *Withholding
		if w, ok := imp.Withheld[e.ClusterID]; ok {
			why = &w
		}
		var dropped []string
		e.Endpoints, dropped = sliceable(e.Endpoints)
		for _, d := range dropped {
			imp.Dropped = append(imp.Dropped, e.ClusterID+": "+d)
		}
		ss := slicesOf(s, derived, e, why)
		if len(ss) > api.MaxSlicesPerExport {
			// The broker refuses such an export; a record that got past it
			// still makes no more slices here than any export may.
			left := 0
			for _, es := range ss[api.MaxSlicesPerExport:] {
				left += len(es.Endpoints)
			}
			imp.Dropped = append(imp.Dropped, fmt.Sprintf("%s: %d endpoints (beyond %d EndpointSlices per export)", e.ClusterID, left, api.MaxSlicesPerExport))
			ss = ss[:api.MaxSlicesPerExport]
		}
		imp.Slices = append(imp.Slices, ss...)
	}
	return imp
}

// sliceable returns the endpoints as an EndpointSlice can hold them, and
// what it left out: addresses the apiserver refuses for an endpoint
// (unspecified, loopback, link-local, zoned or IPv4-mapped), invalid
// hostnames, and ports whose name, protocol, number or appProtocol it
// refuses or whose name repeats. One exporter's bad record must not keep
// the slices of the others, or the service's IPs, from being written.
func sliceable(eps []api.Endpoint) ([]api.Endpoint, []string) {
	var out []api.Endpoint
	var dropped []string
	seen := map[string]bool{}
	drop := func(msg string) {
		if !seen[msg] {
			seen[msg] = true
			dropped = append(dropped, msg)
		}
	}
	for _, ep := range eps {
		var addrs []string
		for _, a := range ep.Addresses {
			ip, err := netip.ParseAddr(a)
			if err != nil || ip.Zone() != "" || ip.Is4In6() || ip.IsUnspecified() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() {
				drop(fmt.Sprintf("endpoint address %q (not an address a Service may route to)", a))
				continue
			}
			addrs = append(addrs, ip.String())
		}
		if len(addrs) == 0 {
			continue
		}
		ep.Addresses = addrs
		if ep.Hostname != "" && len(validation.IsDNS1123Label(ep.Hostname)) > 0 {
			drop(fmt.Sprintf("endpoint hostname %q (not a DNS-1123 label)", ep.Hostname))
			ep.Hostname = ""
		}
		var ports []api.ServicePort
		names := map[string]bool{}
		for _, p := range ep.Ports {
			switch {
			case p.Name != "" && len(validation.IsDNS1123Label(p.Name)) > 0:
				drop(fmt.Sprintf("endpoint port %q (name not a DNS-1123 label)", p.Name))
			case names[p.Name]:
				drop(fmt.Sprintf("endpoint port %q (name repeated)", p.Name))
			case p.Protocol != string(corev1.ProtocolTCP) && p.Protocol != string(corev1.ProtocolUDP) && p.Protocol != string(corev1.ProtocolSCTP):
				drop(fmt.Sprintf("endpoint port %q (protocol %q)", p.Name, p.Protocol))
			case p.Port < 1 || p.Port > 65535:
				drop(fmt.Sprintf("endpoint port %q (number %d)", p.Name, p.Port))
			case p.AppProtocol != "" && len(validation.IsQualifiedName(p.AppProtocol)) > 0:
				drop(fmt.Sprintf("endpoint port %q (appProtocol %q)", p.Name, p.AppProtocol))
			default:
				names[p.Name] = true
				ports = append(ports, p)
			}
		}
		ep.Ports = ports
		out = append(out, ep)
	}
	return out, dropped
}

// slicesOf is one cluster's endpoints as EndpointSlices of the derived
// Service, grouped by address family and port set, split at
// api.MaxEndpointsPerSlice; names are stable for the same grouping, withheld or
// not, so that withholding and restoring a cluster are updates in place.
func slicesOf(s Service, derived string, e api.Export, why *Withholding) []*discoveryv1.EndpointSlice {
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
			sig := string(fam) + "|" + api.PortSetKey(ep.Ports)
			g := groups[sig]
			if g == nil {
				g = &group{family: fam, ports: ep.Ports}
				groups[sig] = g
				order = append(order, sig)
			}
			ready := ep.Ready && why == nil
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
		for i := 0; i < len(g.eps); i += api.MaxEndpointsPerSlice {
			chunk := g.eps[i:min(i+api.MaxEndpointsPerSlice, len(g.eps))]
			h := sha256.Sum256(fmt.Appendf(nil, "%s|%d", sig, i/api.MaxEndpointsPerSlice))
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
			if why != nil {
				es.Labels[LabelWithheld] = why.Reason
				es.Annotations = map[string]string{AnnotationWithheld: why.Message}
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

func ptr[T any](v T) *T { return &v }

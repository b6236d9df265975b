package export

import (
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// Validity is the verdict on one ServiceExport: its Valid condition.
type Validity struct {
	Valid   bool
	Reason  mcsv1beta1.ServiceExportConditionReason
	Message string
}

// BuildExport turns a ServiceExport, its Service (nil when missing) and the
// Service's EndpointSlices into the record published to the broker. The
// export is only meaningful when the returned Validity is Valid.
//
// Endpoints are the pods behind the Service, for ClusterSetIP exports too:
// the importing cluster's kube-proxy then balances over every pod of every
// exporting cluster (see PlanImport).
func BuildExport(clusterID string, se *mcsv1beta1.ServiceExport, svc *corev1.Service, eps []*discoveryv1.EndpointSlice) (api.Export, Validity) {
	// CreatedAt is the broker's own time of first receipt; ours is sent
	// for brokers from before it kept one (which require it).
	e := api.Export{ClusterID: clusterID, Namespace: se.Namespace, Name: se.Name,
		CreatedAt: se.CreationTimestamp.Time.UTC()}
	if svc == nil || !svc.DeletionTimestamp.IsZero() {
		return e, Validity{Reason: mcsv1beta1.ServiceExportReasonNoService,
			Message: "Service " + se.Namespace + "/" + se.Name + " does not exist; create it or delete the ServiceExport"}
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return e, Validity{Reason: mcsv1beta1.ServiceExportReasonInvalidServiceType,
			Message: "Service " + se.Namespace + "/" + se.Name + " is of type ExternalName, which cannot be exported"}
	}
	// NodePort and LoadBalancer Services export as ClusterSetIP: only their
	// cluster-internal part crosses the clusterset.
	e.Type = api.TypeClusterSetIP
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		e.Type = api.TypeHeadless
	} else {
		e.IPs = slices.Clone(svc.Spec.ClusterIPs)
	}
	for _, p := range svc.Spec.Ports {
		e.Ports = append(e.Ports, api.ServicePort{Name: p.Name, Protocol: protocol(p.Protocol), Port: p.Port, AppProtocol: deref(p.AppProtocol)})
	}
	for _, f := range svc.Spec.IPFamilies {
		e.IPFamilies = append(e.IPFamilies, string(f))
	}
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		e.SessionAffinity = string(corev1.ServiceAffinityClientIP)
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			t := *c.ClientIP.TimeoutSeconds
			e.SessionAffinityTimeoutSeconds = &t
		}
	} else {
		e.SessionAffinity = string(corev1.ServiceAffinityNone)
	}
	if p := svc.Spec.InternalTrafficPolicy; p != nil {
		e.InternalTrafficPolicy = string(*p)
	}
	e.TrafficDistribution = deref(svc.Spec.TrafficDistribution)
	if len(se.Spec.ExportedLabels) > 0 {
		e.Labels = se.Spec.ExportedLabels
	}
	if len(se.Spec.ExportedAnnotations) > 0 {
		e.Annotations = se.Spec.ExportedAnnotations
	}
	e.Endpoints = endpointsOf(svc.Name, eps)
	return e, Validity{Valid: true, Reason: mcsv1beta1.ServiceExportReasonValid, Message: "Service is valid for export"}
}

// endpointsOf collects the backends of Service name from its EndpointSlices
// (our own imported slices excluded), one record per address family of a
// pod as the slices hold them, sorted, ready ones first when they must be
// cut to the broker's limit.
func endpointsOf(name string, eps []*discoveryv1.EndpointSlice) []api.Endpoint {
	seen := map[string]bool{}
	var out []api.Endpoint
	for _, s := range eps {
		if s.Labels[discoveryv1.LabelServiceName] != name || s.Labels[discoveryv1.LabelManagedBy] == ManagedBy {
			continue
		}
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN slices have no address a remote cluster can route to
		}
		var ports []api.ServicePort
		for _, p := range s.Ports {
			if p.Port == nil {
				continue
			}
			var pr corev1.Protocol
			if p.Protocol != nil {
				pr = *p.Protocol
			}
			ports = append(ports, api.ServicePort{Name: deref(p.Name), Protocol: protocol(pr), Port: *p.Port, AppProtocol: deref(p.AppProtocol)})
		}
		sortPorts(ports)
		for _, ep := range s.Endpoints {
			var addrs []string
			for _, a := range ep.Addresses {
				if ip, err := netip.ParseAddr(a); err == nil && ip.Zone() == "" {
					addrs = append(addrs, ip.String())
				}
			}
			if len(addrs) == 0 || len(addrs) > api.MaxAddresses {
				continue
			}
			key := strings.Join(addrs, ",")
			if seen[key] {
				continue // the same pod seen in an old and a new slice while they change
			}
			seen[key] = true
			// A nil ready means unknown, which consumers read as ready.
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			out = append(out, api.Endpoint{Addresses: addrs, Hostname: deref(ep.Hostname), Ready: ready, Ports: ports})
		}
	}
	slices.SortFunc(out, func(a, b api.Endpoint) int {
		if a.Ready != b.Ready {
			if a.Ready {
				return -1
			}
			return 1
		}
		return compareAddr(a.Addresses[0], b.Addresses[0])
	})
	if len(out) > api.MaxEndpoints {
		out = out[:api.MaxEndpoints]
	}
	return out
}

func compareAddr(a, b string) int {
	x, errx := netip.ParseAddr(a)
	y, erry := netip.ParseAddr(b)
	if errx != nil || erry != nil {
		return strings.Compare(a, b)
	}
	return x.Compare(y)
}

func sortPorts(ps []api.ServicePort) {
	slices.SortFunc(ps, func(a, b api.ServicePort) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		if c := strings.Compare(a.Protocol, b.Protocol); c != 0 {
			return c
		}
		return int(a.Port - b.Port)
	})
}

func protocol(p corev1.Protocol) string {
	if p == "" {
		return string(corev1.ProtocolTCP)
	}
	return string(p)
}

func deref[T ~string](p *T) string {
	if p == nil {
		return ""
	}
	return string(*p)
}

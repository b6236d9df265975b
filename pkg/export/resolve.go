package export

import (
	"maps"
	"slices"
	"strings"

	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// defaultAffinityTimeout is what the apiserver sets when ClientIP affinity
// has no timeout: a missing and an explicit 10800 s do not conflict.
const defaultAffinityTimeout = 10800

// Service is one multi-cluster service: every cluster's export of one
// namespace/name, resolved into the properties the clusterset sees.
type Service struct {
	Namespace, Name string
	// Exports of every cluster, oldest first (ties broken by cluster ID).
	Exports []api.Export
	// The resolved properties: the oldest export's, ports the union.
	Type                          string
	Ports                         []api.ServicePort
	IPFamilies                    []string
	SessionAffinity               string
	SessionAffinityTimeoutSeconds *int32
	InternalTrafficPolicy         string
	TrafficDistribution           string
	Labels, Annotations           map[string]string
	// Conflicts are the KEP reasons (TypeConflict, PortConflict, ...) in a
	// fixed order; every export of the service carries them.
	Conflicts []mcsv1beta1.ServiceExportConditionReason
}

// Key is namespace/name.
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// Clusters lists the exporting clusters, sorted.
func (s *Service) Clusters() []string {
	out := make([]string, 0, len(s.Exports))
	for _, e := range s.Exports {
		out = append(out, e.ClusterID)
	}
	slices.Sort(out)
	return out
}

// ConflictReason is the Conflict condition's reason: the comma-joined
// conflict reasons, or NoConflicts.
func (s *Service) ConflictReason() mcsv1beta1.ServiceExportConditionReason {
	if len(s.Conflicts) == 0 {
		return mcsv1beta1.ServiceExportReasonNoConflicts
	}
	parts := make([]string, len(s.Conflicts))
	for i, c := range s.Conflicts {
		parts[i] = string(c)
	}
	return mcsv1beta1.ServiceExportConditionReason(strings.Join(parts, ","))
}

// conflictOrder is the order reasons are listed in.
var conflictOrder = []mcsv1beta1.ServiceExportConditionReason{
	mcsv1beta1.ServiceExportReasonTypeConflict,
	mcsv1beta1.ServiceExportReasonPortConflict,
	mcsv1beta1.ServiceExportReasonSessionAffinityConflict,
	mcsv1beta1.ServiceExportReasonSessionAffinityConfigConflict,
	mcsv1beta1.ServiceExportReasonInternalTrafficPolicyConflict,
	mcsv1beta1.ServiceExportReasonTrafficDistributionConflict,
	mcsv1beta1.ServiceExportReasonIPFamilyConflict,
	mcsv1beta1.ServiceExportReasonLabelsConflict,
	mcsv1beta1.ServiceExportReasonAnnotationsConflict,
}

// Resolve groups exports by namespace/name and applies KEP-1645's conflict
// rules: the export with the oldest creation time wins each property, the
// ports are the union (merged by name, then by protocol and port, the older
// export winning a clash), and any disagreement is a conflict of the whole
// service. The result is sorted by key.
func Resolve(exports []api.Export) []Service {
	groups := map[string][]api.Export{}
	for _, e := range exports {
		k := e.Namespace + "/" + e.Name
		groups[k] = append(groups[k], e)
	}
	out := make([]Service, 0, len(groups))
	for _, k := range slices.Sorted(maps.Keys(groups)) {
		out = append(out, resolveOne(groups[k]))
	}
	return out
}

func resolveOne(es []api.Export) Service {
	es = slices.Clone(es)
	slices.SortFunc(es, func(a, b api.Export) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ClusterID, b.ClusterID)
	})
	w := es[0]
	s := Service{Namespace: w.Namespace, Name: w.Name, Exports: es,
		Type: w.Type, IPFamilies: w.IPFamilies,
		SessionAffinity: affinity(w.SessionAffinity), SessionAffinityTimeoutSeconds: w.SessionAffinityTimeoutSeconds,
		InternalTrafficPolicy: w.InternalTrafficPolicy, TrafficDistribution: w.TrafficDistribution}
	found := map[mcsv1beta1.ServiceExportConditionReason]bool{}
	for _, e := range es[1:] {
		if e.Type != w.Type {
			found[mcsv1beta1.ServiceExportReasonTypeConflict] = true
		}
		if affinity(e.SessionAffinity) != s.SessionAffinity {
			found[mcsv1beta1.ServiceExportReasonSessionAffinityConflict] = true
		} else if s.SessionAffinity == "ClientIP" && timeout(e.SessionAffinityTimeoutSeconds) != timeout(w.SessionAffinityTimeoutSeconds) {
			found[mcsv1beta1.ServiceExportReasonSessionAffinityConfigConflict] = true
		}
		if policy(e.InternalTrafficPolicy) != policy(w.InternalTrafficPolicy) {
			found[mcsv1beta1.ServiceExportReasonInternalTrafficPolicyConflict] = true
		}
		if e.TrafficDistribution != w.TrafficDistribution {
			found[mcsv1beta1.ServiceExportReasonTrafficDistributionConflict] = true
		}
		// The order of families only picks the primary one; a different set
		// would reach some backends over one protocol only. A headless
		// export has no virtual IP (a selector-less one even lists both
		// families), so only ClusterSetIP exports are compared.
		if e.Type == api.TypeClusterSetIP && w.Type == api.TypeClusterSetIP && !sameSet(e.IPFamilies, w.IPFamilies) {
			found[mcsv1beta1.ServiceExportReasonIPFamilyConflict] = true
		}
	}
	var portClash, labelClash, annClash bool
	s.Ports, portClash = mergePorts(es)
	s.Labels, labelClash = mergeMaps(es, func(e api.Export) map[string]string { return e.Labels })
	s.Annotations, annClash = mergeMaps(es, func(e api.Export) map[string]string { return e.Annotations })
	found[mcsv1beta1.ServiceExportReasonPortConflict] = portClash
	found[mcsv1beta1.ServiceExportReasonLabelsConflict] = labelClash
	found[mcsv1beta1.ServiceExportReasonAnnotationsConflict] = annClash
	for _, r := range conflictOrder {
		if found[r] {
			s.Conflicts = append(s.Conflicts, r)
		}
	}
	return s
}

// mergePorts is the union of every export's ports, oldest export first. A
// port whose name is taken by a different port, or whose protocol and port
// are taken under another name, is a clash: the older one stays.
func mergePorts(es []api.Export) ([]api.ServicePort, bool) {
	var out []api.ServicePort
	clash := false
	byName := map[string]api.ServicePort{}
	type pp struct {
		proto string
		port  int32
	}
	byPort := map[pp]string{}
	for _, e := range es {
		for _, p := range e.Ports {
			// A Service with several ports must name them all: an unnamed
			// port cannot join named ones (nor they it).
			if len(out) > 0 && (p.Name == "") != (out[0].Name == "") {
				clash = true
				continue
			}
			if q, ok := byName[p.Name]; ok {
				if q != p {
					clash = true
				}
				continue
			}
			if n, ok := byPort[pp{p.Protocol, p.Port}]; ok && n != p.Name {
				clash = true
				continue
			}
			byName[p.Name] = p
			byPort[pp{p.Protocol, p.Port}] = p.Name
			out = append(out, p)
		}
	}
	return out, clash
}

// mergeMaps is the union of exported labels or annotations; a key with two
// values is a clash and the oldest export's value stays.
func mergeMaps(es []api.Export, get func(api.Export) map[string]string) (map[string]string, bool) {
	var out map[string]string
	clash := false
	for _, e := range es {
		for k, v := range get(e) {
			if out == nil {
				out = map[string]string{}
			}
			if old, ok := out[k]; ok {
				if old != v {
					clash = true
				}
				continue
			}
			out[k] = v
		}
	}
	// Labels present on some exports only are a clash as well: the
	// ServiceImport cannot carry what one cluster asked for and another not.
	for _, e := range es {
		if len(get(e)) != len(out) {
			clash = true
		}
	}
	return out, clash
}

func affinity(a string) string {
	if a == "" {
		return "None"
	}
	return a
}

func policy(p string) string {
	if p == "" {
		return "Cluster"
	}
	return p
}

func timeout(t *int32) int32 {
	if t == nil {
		return defaultAffinityTimeout
	}
	return *t
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

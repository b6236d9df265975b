package export

import (
	"fmt"
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
	// Disagree names, per conflict reason, the clusters involved, sorted:
	// the oldest export's and those that differ from it (for ports: every
	// exporter, since any difference makes the union differ from each).
	Disagree map[mcsv1beta1.ServiceExportConditionReason][]string
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

// ConflictMessage is the Conflict condition's message: per reason, the
// clusters whose exports disagree and what the clusterset sees instead.
func (s *Service) ConflictMessage() string {
	if len(s.Conflicts) == 0 {
		return "no conflicts with the exports of other clusters"
	}
	oldest := s.Exports[0].ClusterID
	parts := make([]string, 0, len(s.Conflicts))
	for _, r := range s.Conflicts {
		others := joinClusters(slices.DeleteFunc(slices.Clone(s.Disagree[r]), func(c string) bool { return c == oldest }))
		switch r {
		case mcsv1beta1.ServiceExportReasonPortConflict:
			parts = append(parts, fmt.Sprintf("%s: the ports of clusters %s differ; the ServiceImport has their union (a clash of names or protocol/port keeps the oldest export's, cluster %s)",
				r, joinClusters(s.Disagree[r]), oldest))
		case mcsv1beta1.ServiceExportReasonLabelsConflict, mcsv1beta1.ServiceExportReasonAnnotationsConflict:
			parts = append(parts, fmt.Sprintf("%s: clusters %s export another set than the oldest export (cluster %s), whose whole set the ServiceImport carries", r, others, oldest))
		default:
			parts = append(parts, fmt.Sprintf("%s: clusters %s differ from the oldest export (cluster %s), which wins", r, others, oldest))
		}
	}
	return strings.Join(parts, "; ")
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
	s.Labels, s.Annotations = maps.Clone(w.Labels), maps.Clone(w.Annotations)
	disagree := map[mcsv1beta1.ServiceExportConditionReason][]string{}
	note := func(r mcsv1beta1.ServiceExportConditionReason, cluster string) {
		disagree[r] = append(disagree[r], cluster)
	}
	for _, e := range es[1:] {
		if e.Type != w.Type {
			note(mcsv1beta1.ServiceExportReasonTypeConflict, e.ClusterID)
		}
		if affinity(e.SessionAffinity) != s.SessionAffinity {
			note(mcsv1beta1.ServiceExportReasonSessionAffinityConflict, e.ClusterID)
		} else if s.SessionAffinity == "ClientIP" && timeout(e.SessionAffinityTimeoutSeconds) != timeout(w.SessionAffinityTimeoutSeconds) {
			note(mcsv1beta1.ServiceExportReasonSessionAffinityConfigConflict, e.ClusterID)
		}
		if policy(e.InternalTrafficPolicy) != policy(w.InternalTrafficPolicy) {
			note(mcsv1beta1.ServiceExportReasonInternalTrafficPolicyConflict, e.ClusterID)
		}
		if e.TrafficDistribution != w.TrafficDistribution {
			note(mcsv1beta1.ServiceExportReasonTrafficDistributionConflict, e.ClusterID)
		}
		// The order of families only picks the primary one; a different set
		// would reach some backends over one protocol only. A headless
		// export has no virtual IP (a selector-less one even lists both
		// families), so only ClusterSetIP exports are compared.
		if e.Type == api.TypeClusterSetIP && w.Type == api.TypeClusterSetIP && !sameSet(e.IPFamilies, w.IPFamilies) {
			note(mcsv1beta1.ServiceExportReasonIPFamilyConflict, e.ClusterID)
		}
		// Exported labels and annotations are taken as a whole from the
		// oldest export, never merged: any other set is a conflict.
		if !maps.Equal(e.Labels, w.Labels) {
			note(mcsv1beta1.ServiceExportReasonLabelsConflict, e.ClusterID)
		}
		if !maps.Equal(e.Annotations, w.Annotations) {
			note(mcsv1beta1.ServiceExportReasonAnnotationsConflict, e.ClusterID)
		}
	}
	s.Ports = mergePorts(es)
	if cs := portsDiffer(es); len(cs) > 0 {
		disagree[mcsv1beta1.ServiceExportReasonPortConflict] = cs
	}
	for _, r := range conflictOrder {
		if cs, ok := disagree[r]; ok {
			s.Conflicts = append(s.Conflicts, r)
			if r != mcsv1beta1.ServiceExportReasonPortConflict {
				cs = append([]string{w.ClusterID}, cs...)
			}
			slices.Sort(cs)
			if s.Disagree == nil {
				s.Disagree = map[mcsv1beta1.ServiceExportConditionReason][]string{}
			}
			s.Disagree[r] = cs
		}
	}
	return s
}

// mergePorts is the union of every export's ports, oldest export first. A
// port whose name is taken by a different port, or whose protocol and port
// are taken under another name, is left out: the older one stays.
func mergePorts(es []api.Export) []api.ServicePort {
	var out []api.ServicePort
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
				continue
			}
			if _, ok := byName[p.Name]; ok {
				continue
			}
			if n, ok := byPort[pp{p.Protocol, p.Port}]; ok && n != p.Name {
				continue
			}
			byName[p.Name] = p
			byPort[pp{p.Protocol, p.Port}] = p.Name
			out = append(out, p)
		}
	}
	return out
}

// portsDiffer returns, sorted, the clusters whose exports' port sets (order
// aside) are not all equal: KEP-1645 makes any difference a PortConflict,
// even ports that merge into a union without a clash. Nil when all agree.
func portsDiffer(es []api.Export) []string {
	key := func(e api.Export) string {
		ps := slices.Clone(e.Ports)
		sortPorts(ps)
		return api.PortSetKey(ps)
	}
	first := key(es[0])
	differ := false
	for _, e := range es[1:] {
		if key(e) != first {
			differ = true
			break
		}
	}
	if !differ {
		return nil
	}
	out := make([]string, 0, len(es))
	for _, e := range es {
		out = append(out, e.ClusterID)
	}
	return out
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

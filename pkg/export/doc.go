// Package export is tunnelmesh's Multi-Cluster Services controller
// (KEP-1645, sigs.k8s.io/mcs-api v1beta1).
//
// Export side: every ServiceExport of the cluster is turned, with its
// Service and the Service's EndpointSlices, into an api.Export published to
// the broker, and gets its Valid, Ready and Conflict conditions.
//
// Import side: every cluster's exports, as the broker shows them, become in
// every namespace of this cluster a ServiceImport, a selector-less derived
// Service (whose ClusterIPs are the ServiceImport's ips) and one set of
// EndpointSlices per source cluster, labelled so that kube-proxy spreads
// connections over the pods of every exporting cluster and CoreDNS's
// `multicluster` option answers clusterset.local.
//
// Conflicts follow KEP-1645 as its conformance suite reads it (Resolve):
// the oldest export wins each property; ports are the union of every
// export's (a clash of names or protocol/port keeps the oldest's), and
// port sets that differ at all are a PortConflict even when they merge;
// exported labels and annotations are the oldest export's whole set, never
// a merge, and any other set is a LabelsConflict/AnnotationsConflict. Every
// export of the service carries Conflict=True with the reasons, and the
// message names, per reason, the clusters involved.
//
// # Same cluster first, and dead clusters out
//
// An importing cluster withholds a cluster's endpoints from its imports
// when that cluster is withdrawn — its tunnel reported down by this
// cluster's active gateway (health probes unanswered for
// gateway.ProbeDownAfter), all its gateways stale at the broker, or gone
// from the clusterset (Withdrawals) — and, for a service that asks for the
// same cluster first (trafficDistribution PreferClose, PreferSameZone or
// PreferSameNode, or internalTrafficPolicy Local, whose node-locality means
// nothing across clusters), every other cluster's endpoints while the
// importing cluster has a ready endpoint of its own (LocalFirst). Without
// those fields every cluster's endpoints are used, spread by kube-proxy.
//
// A withheld cluster keeps its slices, every endpoint written not ready
// (and not serving), the slice labelled LabelWithheld with the reason and
// annotated with why; withholding and restoring are updates in place.
// `meshctl show imports` reads those labels.
//
// Why readiness and not topology hints. kube-proxy v1.36
// (pkg/proxy/topology.go) acts on hints alone, never on the Service's
// trafficDistribution: it narrows to the endpoints hinted for its node's
// zone only when every ready endpoint carries a zone hint and one names the
// zone in the Node's topology.kubernetes.io/zone label, and it falls back
// to all ready endpoints when none does. Local-first through hints would
// hint our own endpoints for every zone of the cluster and the others' for
// a zone no node has. It would leave remote endpoints "ready", but: a node
// without the zone label (kind, many on-premises clusters) matches only an
// empty-named hint, a corner of that code, not a documented contract; an
// endpoint takes at most 8 hints, so a cluster of more zones could not be
// covered; other data planes implement hints with rules of their own; and
// CoreDNS ignores hints, so headless imports would need a second mechanism
// anyway. Readiness is honoured the same way by every kube-proxy mode, by
// other data planes and by CoreDNS, so one rule serves the ClusterSetIP
// and headless DNS alike. What it costs: withheld endpoints look not ready
// to anyone reading the slices (the label says why), and per-host names of
// a withheld cluster's pods (<host>.<cluster>.<svc>...) do not resolve
// while withheld. The decision is per importing cluster, which is what
// "same cluster first" asks. Either way the local endpoints' readiness
// reaches the derived slices through this controller (export, broker,
// import), so neither spills faster.
//
// The rules are pure functions (BuildExport, Resolve, PlanImport,
// Withdrawals and the condition helpers) with table tests; Controller
// holds only thin loops that compare and apply.
package export

// Names this controller writes into the cluster.
const (
	// ManagedBy is the endpointslice.kubernetes.io/managed-by value of the
	// slices we write, and the app.kubernetes.io/managed-by value of our
	// ServiceImports and derived Services. A label value cannot hold a "/",
	// hence the form of endpointslice-controller.k8s.io.
	ManagedBy = "export-controller.tunnelmesh.io"
	// LabelManagedBy marks ServiceImports and derived Services as ours.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// LabelImportName names, on a derived Service, the ServiceImport it serves.
	LabelImportName = "tunnelmesh.io/service-import"
	// DerivedPrefix starts the name of every derived Service.
	DerivedPrefix = "derived-"
	// LabelWithheld marks the slices of a cluster whose endpoints are
	// withheld from an import (all written not ready); its value is the
	// reason (WithheldTunnelDown, ...). AnnotationWithheld says why in words.
	LabelWithheld      = "tunnelmesh.io/withheld"
	AnnotationWithheld = "tunnelmesh.io/withheld-message"
)

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
// The rules are pure functions (BuildExport, Resolve, PlanImport and the
// condition helpers) with table tests; Controller holds only thin loops that
// compare and apply.
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

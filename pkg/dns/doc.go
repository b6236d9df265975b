// Package dns configures the cluster's own CoreDNS to answer the
// Multi-Cluster Services zone (clusterset.local): CoreDNS's kubernetes
// plugin (since 1.12.2) serves it from ServiceImports and the EndpointSlices
// labelled multicluster.kubernetes.io/service-name once the zone is one of
// its zones and listed in its `multicluster` option. EnableMulticluster is
// that edit as pure text: every other line of the user's Corefile stays.
// CoreDNS's ServiceAccount also needs to list and watch ServiceImports
// (deploy/mcs/coredns-rbac.yaml).
//
// Checked against CoreDNS v1.14.2 with a real DNS client
// (pkg/export TestCoreDNSAnswersClusterset): A <svc>.<ns>.svc.clusterset.local
// gives the ServiceImport's ips, SRV _<port>._<proto>.… its named ports,
// a headless import the ready endpoints and <hostname>.<clusterid>.… per
// endpoint, unknown names NXDOMAIN, a missing family NODATA, and
// cluster.local is unchanged. Where CoreDNS differs from the MCS DNS
// specification:
//   - TXT dns-version.clusterset.local answers "1.1.0" (the cluster.local
//     schema version) where the specification says "1.0.0".
//   - It reads ServiceImports as multicluster.x-k8s.io/v1alpha1; the
//     mcs-api v0.5.2 CRD serves v1alpha1 next to v1beta1 (the storage
//     version), so this works as long as v1alpha1 is served.
//   - Headless endpoints without a hostname get a name made from their
//     address; the export controller publishes the pods' hostnames so that
//     StatefulSet pods answer by name.
//
// The edit also adds the zone to the `disable success` and `disable
// denial` lines of a cache block (adding them when missing), as kubeadm
// does for cluster.local: the plugin answers from its watch, and a cached
// answer would keep a dead or withheld cluster's pods in DNS for up to the
// cache's 30 s. A one-line `cache` is left as it is. Records still carry
// the plugin's ttl (30 s in kubeadm's Corefile) for clients that cache.
package dns

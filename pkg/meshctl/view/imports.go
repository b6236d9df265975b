package view

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/tunnelmesh/tunnelmesh/pkg/export"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/output"
)

// Import is one ServiceImport of this cluster as `show imports` prints it.
type Import struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Type      string   `json:"type"`
	IPs       []string `json:"ips,omitempty"`
	Ports     []string `json:"ports,omitempty"`
	Clusters  []string `json:"clusters"`
	// Withheld are the exporting clusters whose endpoints this cluster
	// does not use now, and why (a dead cluster, or same cluster first).
	Withheld  []Withheld `json:"withheld,omitempty"`
	CreatedAt time.Time  `json:"createdAt"`
}

// Withheld is one exporting cluster left out of an import.
type Withheld struct {
	Cluster string `json:"cluster"`
	Reason  string `json:"reason"` // export.Withheld*: TunnelDown, GatewaysStale, ClusterLeft, LocalFirst
	Message string `json:"message,omitempty"`
}

// LoadImports lists the cluster's ServiceImports (every namespace).
func LoadImports(ctx context.Context, cfg *rest.Config) ([]mcsv1beta1.ServiceImport, error) {
	c, err := mcsclient.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	l, err := c.MulticlusterV1beta1().ServiceImports(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list ServiceImports: %w", err)
	}
	return l.Items, nil
}

// LoadWithheld lists the import EndpointSlices that the controller marks
// withheld (every namespace).
func LoadWithheld(ctx context.Context, cfg *rest.Config) ([]discoveryv1.EndpointSlice, error) {
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	sel := discoveryv1.LabelManagedBy + "=" + export.ManagedBy + "," + export.LabelWithheld
	l, err := c.DiscoveryV1().EndpointSlices(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, fmt.Errorf("list withheld EndpointSlices: %w", err)
	}
	return l.Items, nil
}

// withheld maps namespace/name of an import to its withheld clusters, from
// the labels the controller puts on their slices.
func (d *Data) withheld() map[string][]Withheld {
	seen := map[string]bool{}
	out := map[string][]Withheld{}
	for _, s := range d.WithheldSlices {
		key := s.Namespace + "/" + s.Labels[mcsv1beta1.LabelServiceName]
		c := s.Labels[mcsv1beta1.LabelSourceCluster]
		if seen[key+"/"+c] || s.Labels[export.LabelWithheld] == "" {
			continue
		}
		seen[key+"/"+c] = true
		out[key] = append(out[key], Withheld{Cluster: c, Reason: s.Labels[export.LabelWithheld], Message: s.Annotations[export.AnnotationWithheld]})
	}
	for _, ws := range out {
		sort.Slice(ws, func(i, j int) bool { return ws[i].Cluster < ws[j].Cluster })
	}
	return out
}

// Imports is `show imports`: what this cluster imports, from its own
// ServiceImports (not the broker), so it shows what CoreDNS and kube-proxy
// of this cluster actually see, with the exporting clusters whose
// endpoints are withheld now and why.
func (d *Data) Imports() ([]Import, output.Grid) {
	out := make([]Import, 0, len(d.ServiceImports))
	withheld := d.withheld()
	for _, si := range d.ServiceImports {
		im := Import{Namespace: si.Namespace, Name: si.Name, Type: string(si.Spec.Type), IPs: si.Spec.IPs, CreatedAt: si.CreationTimestamp.Time,
			Withheld: withheld[si.Namespace+"/"+si.Name]}
		for _, p := range si.Spec.Ports {
			s := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
			if p.Name != "" {
				s = p.Name + ":" + s
			}
			im.Ports = append(im.Ports, s)
		}
		for _, c := range si.Status.Clusters {
			im.Clusters = append(im.Clusters, c.Cluster)
		}
		sort.Strings(im.Clusters)
		out = append(out, im)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	g := output.Grid{Headers: []string{"NAMESPACE", "NAME", "TYPE", "IPS", "PORTS", "CLUSTERS", "WITHHELD", "AGE"}}
	for _, im := range out {
		var wh []string
		for _, w := range im.Withheld {
			wh = append(wh, w.Cluster+" ("+w.Reason+")")
		}
		g.Rows = append(g.Rows, []string{im.Namespace, im.Name, im.Type, strings.Join(im.IPs, ","), strings.Join(im.Ports, ","),
			strings.Join(im.Clusters, ","), strings.Join(wh, ","), Age(d.Now, im.CreatedAt)})
	}
	return out, g
}

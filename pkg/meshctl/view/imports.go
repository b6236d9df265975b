package view

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/output"
)

// Import is one ServiceImport of this cluster as `show imports` prints it.
type Import struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	IPs       []string  `json:"ips,omitempty"`
	Ports     []string  `json:"ports,omitempty"`
	Clusters  []string  `json:"clusters"`
	CreatedAt time.Time `json:"createdAt"`
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

// Imports is `show imports`: what this cluster imports, from its own
// ServiceImports (not the broker), so it shows what CoreDNS and kube-proxy
// of this cluster actually see.
func (d *Data) Imports() ([]Import, output.Grid) {
	out := make([]Import, 0, len(d.ServiceImports))
	for _, si := range d.ServiceImports {
		im := Import{Namespace: si.Namespace, Name: si.Name, Type: string(si.Spec.Type), IPs: si.Spec.IPs, CreatedAt: si.CreationTimestamp.Time}
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
	g := output.Grid{Headers: []string{"NAMESPACE", "NAME", "TYPE", "IPS", "PORTS", "CLUSTERS", "AGE"}}
	for _, im := range out {
		g.Rows = append(g.Rows, []string{im.Namespace, im.Name, im.Type, strings.Join(im.IPs, ","), strings.Join(im.Ports, ","),
			strings.Join(im.Clusters, ","), Age(d.Now, im.CreatedAt)})
	}
	return out, g
}

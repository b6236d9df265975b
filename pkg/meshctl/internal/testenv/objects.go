package testenv

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
)

// Listing every kind warns about deprecated ones; the tests need no such noise.
func init() { rest.SetDefaultWarningHandler(rest.NoWarnings{}) }

// volatile resources change on their own (the API server's lease and
// events), so object snapshots leave them out.
var volatile = map[string]bool{"leases": true, "events": true}

// Objects lists every object of every listable kind: key → resourceVersion.
func (c *Cluster) Objects(t *testing.T) map[string]string {
	t.Helper()
	ctx := context.Background()
	dc := c.Client.Discovery()
	lists, err := dc.ServerPreferredResources()
	if err != nil && !discovery.IsGroupDiscoveryFailedError(err) {
		t.Fatalf("discovery: %v", err)
	}
	out := map[string]string{}
	for _, l := range lists {
		gv, _ := schema.ParseGroupVersion(l.GroupVersion)
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || volatile[r.Name] || !slices.Contains(r.Verbs, "list") {
				continue
			}
			items, err := c.Kube.Dynamic.Resource(gv.WithResource(r.Name)).List(ctx, metav1.ListOptions{})
			if apierrors.IsNotFound(err) {
				continue // its CRD was just deleted
			}
			if err != nil {
				t.Fatalf("list %s: %v", r.Name, err)
			}
			for _, it := range items.Items {
				out[fmt.Sprintf("%s/%s/%s", r.Name, it.GetNamespace(), it.GetName())] = it.GetResourceVersion()
			}
		}
	}
	return out
}

// Diff describes how after differs from before ("" when equal).
func Diff(before, after map[string]string) string {
	var d []string
	for k, v := range after {
		if bv, ok := before[k]; !ok {
			d = append(d, "+ "+k)
		} else if bv != v {
			d = append(d, "~ "+k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			d = append(d, "- "+k)
		}
	}
	sort.Strings(d)
	return strings.Join(d, "\n")
}

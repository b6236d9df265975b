package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
)

// Found is one object found by Find.
type Found struct {
	GVR       schema.GroupVersionResource
	Namespace string
	Name      string
}

func (f Found) String() string {
	if f.Namespace == "" {
		return f.GVR.Resource + "/" + f.Name
	}
	return f.GVR.Resource + "/" + f.Namespace + "/" + f.Name
}

// Find lists the objects of every deletable kind that match selector
// (cluster-wide; none when it is empty), plus, when inNamespace is set,
// every object in it.
func (c *Cluster) Find(ctx context.Context, selector, inNamespace string) ([]Found, error) {
	lists, err := c.Client.Discovery().ServerPreferredResources()
	if err != nil && !discovery.IsGroupDiscoveryFailedError(err) {
		return nil, fmt.Errorf("discover resources: %w", err)
	}
	seen := map[Found]bool{}
	var out []Found
	add := func(f Found) {
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	for _, l := range lists {
		gv, _ := schema.ParseGroupVersion(l.GroupVersion)
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || !slices.Contains(r.Verbs, "list") || !slices.Contains(r.Verbs, "delete") || r.Name == "events" {
				continue
			}
			gvr := gv.WithResource(r.Name)
			if selector != "" {
				items, err := c.Dynamic.Resource(gvr).List(ctx, metav1.ListOptions{LabelSelector: selector})
				if apierrors.IsNotFound(err) {
					continue // a CRD being deleted
				}
				if err != nil {
					return nil, fmt.Errorf("list %s: %w", r.Name, err)
				}
				for _, it := range items.Items {
					add(Found{gvr, it.GetNamespace(), it.GetName()})
				}
			}
			if inNamespace != "" && r.Namespaced {
				items, err := c.Dynamic.Resource(gvr).Namespace(inNamespace).List(ctx, metav1.ListOptions{})
				if err != nil && !apierrors.IsNotFound(err) {
					return nil, fmt.Errorf("list %s: %w", r.Name, err)
				}
				if err == nil {
					for _, it := range items.Items {
						add(Found{gvr, it.GetNamespace(), it.GetName()})
					}
				}
			}
		}
	}
	return out, nil
}

// DeleteFound deletes objs (missing ones are fine): namespaced objects
// first, then cluster-scoped ones (CRDs and namespaces last).
func (c *Cluster) DeleteFound(ctx context.Context, objs []Found) error {
	rank := func(f Found) int {
		switch {
		case f.Namespace != "":
			return 0
		case f.GVR.Resource == "customresourcedefinitions":
			return 2
		case f.GVR.Resource == "namespaces":
			return 3
		}
		return 1
	}
	sorted := slices.Clone(objs)
	slices.SortStableFunc(sorted, func(a, b Found) int { return rank(a) - rank(b) })
	bg := metav1.DeletePropagationBackground
	for _, f := range sorted {
		ri := c.Dynamic.Resource(f.GVR)
		var err error
		if f.Namespace != "" {
			err = ri.Namespace(f.Namespace).Delete(ctx, f.Name, metav1.DeleteOptions{PropagationPolicy: &bg})
		} else {
			err = ri.Delete(ctx, f.Name, metav1.DeleteOptions{PropagationPolicy: &bg})
		}
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsMethodNotSupported(err) {
			return fmt.Errorf("delete %s: %w", f, err)
		}
	}
	return nil
}

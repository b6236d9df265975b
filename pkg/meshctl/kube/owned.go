package kube

import (
	"context"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Ownership is recorded on the object itself: meshctl creates what it
// installs with CreatedByAnnotation, and never applies over, nor deletes, an
// object that exists without it. A label (app.kubernetes.io/part-of) is no
// record: users put it on their own objects.
const (
	CreatedByAnnotation = "tunnelmesh.io/created-by"
	CreatedBy           = FieldManager
)

// Owned reports whether tunnelmesh created u: it carries our annotation, or
// (installed by a meshctl older than the annotation) our part-of label set by
// our own field manager.
func Owned(u *unstructured.Unstructured) bool {
	if u.GetAnnotations()[CreatedByAnnotation] == CreatedBy {
		return true
	}
	if u.GetLabels()[PartOfLabel] != PartOf {
		return false
	}
	return slices.ContainsFunc(u.GetManagedFields(), func(m metav1.ManagedFieldsEntry) bool {
		return m.Manager == FieldManager && m.Operation == metav1.ManagedFieldsOperationApply
	})
}

// MarkOwned sets the ownership annotation on objects meshctl is about to
// create.
func MarkOwned(objs []*unstructured.Unstructured) {
	for _, o := range objs {
		a := o.GetAnnotations()
		if a == nil {
			a = map[string]string{}
		}
		a[CreatedByAnnotation] = CreatedBy
		o.SetAnnotations(a)
	}
}

// SortOut splits objs into those meshctl may apply (absent, or ours) and
// those that exist and are someone else's (returned as they are in the
// cluster). Namespaces are always applied: tunnelmesh-system is ours by name.
func (c *Cluster) SortOut(ctx context.Context, objs []*unstructured.Unstructured) (apply, foreign []*unstructured.Unstructured, err error) {
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			apply = append(apply, o)
			continue
		}
		ri, err := c.Resource(o)
		if err != nil {
			// The kind is not served yet (its CRD comes with this install).
			apply = append(apply, o)
			continue
		}
		cur, err := ri.Get(ctx, o.GetName(), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			apply = append(apply, o)
		case err != nil:
			return nil, nil, fmt.Errorf("read %s: %w", Key(o), err)
		case Owned(cur):
			apply = append(apply, o)
		default:
			foreign = append(foreign, cur)
		}
	}
	return apply, foreign, nil
}

// DeleteOwned deletes those of objs that exist and are ours, in reverse
// order, and returns the keys of those it left because they are not.
func (c *Cluster) DeleteOwned(ctx context.Context, objs []*unstructured.Unstructured) (kept []string, err error) {
	var del []*unstructured.Unstructured
	for _, o := range objs {
		ri, err := c.Resource(o)
		if err != nil {
			continue // its CRD is gone already
		}
		cur, err := ri.Get(ctx, o.GetName(), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, fmt.Errorf("read %s: %w", Key(o), err)
		case o.GetKind() == "Namespace" || Owned(cur):
			del = append(del, o)
		default:
			kept = append(kept, Key(o))
		}
	}
	_, err = c.Delete(ctx, del)
	return kept, err
}

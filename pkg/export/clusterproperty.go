package export

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// ClusterProperty objects (KEP-2149, group about.k8s.io) naming this
// cluster and its clusterset.
var ClusterPropertyGVR = schema.GroupVersionResource{Group: "about.k8s.io", Version: "v1alpha1", Resource: "clusterproperties"}

const (
	PropertyClusterID    = "cluster.clusterset.k8s.io"
	PropertyClusterSetID = "clusterset.k8s.io"
)

// EnsureClusterProperties creates the ClusterProperty holding the cluster
// ID (and the clusterset's, when clusterSetID is set). One that exists with
// another value is an error: the ID is what other clusters know this one by.
func EnsureClusterProperties(ctx context.Context, dc dynamic.Interface, clusterID, clusterSetID string) error {
	props := [][2]string{{PropertyClusterID, clusterID}}
	if clusterSetID != "" {
		props = append(props, [2]string{PropertyClusterSetID, clusterSetID})
	}
	client := dc.Resource(ClusterPropertyGVR)
	for _, p := range props {
		name, value := p[0], p[1]
		cur, err := client.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			obj := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": ClusterPropertyGVR.GroupVersion().String(), "kind": "ClusterProperty",
				"metadata": map[string]any{"name": name, "labels": map[string]any{LabelManagedBy: ManagedBy}},
				"spec":     map[string]any{"value": value},
			}}
			_, err = client.Create(ctx, obj, metav1.CreateOptions{})
			if apierrors.IsNotFound(err) {
				return fmt.Errorf("ClusterProperty %s: the about.k8s.io CRD is not installed; apply deploy/mcs: %w", name, err)
			}
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("create ClusterProperty %s: %w", name, err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("read ClusterProperty %s: %w", name, err)
		}
		if v, _, _ := unstructured.NestedString(cur.Object, "spec", "value"); v != value {
			return fmt.Errorf("ClusterProperty %s holds %q but this controller runs as %q: fix the cluster ID given to the controller or delete the ClusterProperty if it is wrong", name, v, value)
		}
	}
	return nil
}

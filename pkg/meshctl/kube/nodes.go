package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// NodeReady reports whether n's Ready condition is True.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// InternalIP returns n's first InternalIP ("" if none).
func InternalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// PickNode returns the named node, or the Ready node already carrying
// label=true, or the first Ready node by name. why says which rule chose it.
func PickNode(nodes []corev1.Node, name, label string) (n *corev1.Node, why string) {
	sorted := append([]corev1.Node(nil), nodes...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	if name != "" {
		for i := range sorted {
			if sorted[i].Name == name {
				return &sorted[i], "chosen with the flag"
			}
		}
		return nil, ""
	}
	for i := range sorted {
		if sorted[i].Labels[label] == "true" && NodeReady(&sorted[i]) {
			return &sorted[i], "already labelled " + label + "=true"
		}
	}
	for i := range sorted {
		if NodeReady(&sorted[i]) {
			return &sorted[i], "the first Ready node"
		}
	}
	return nil, ""
}

// kubeletMaxImages is how many images a kubelet reports by default
// (nodeStatusMaxImages); a longer list may be truncated.
const kubeletMaxImages = 50

// MissingImages returns the images of want that n does not report having.
// It returns nil when n reports no images or a possibly truncated list, as
// absence then proves nothing.
func MissingImages(n *corev1.Node, want []string) []string {
	if len(n.Status.Images) == 0 || len(n.Status.Images) >= kubeletMaxImages {
		return nil
	}
	have := map[string]bool{}
	for _, img := range n.Status.Images {
		for _, name := range img.Names {
			have[NormalizeImage(name)] = true
		}
	}
	var missing []string
	for _, w := range want {
		if !have[NormalizeImage(w)] {
			missing = append(missing, w)
		}
	}
	return missing
}

// NormalizeImage drops the implicit Docker Hub registry and library/ prefix
// so that "tunnelmesh/broker:dev" and "docker.io/tunnelmesh/broker:dev" match.
func NormalizeImage(s string) string {
	s = strings.TrimPrefix(s, "docker.io/")
	s = strings.TrimPrefix(s, "library/")
	if !strings.Contains(s[strings.LastIndex(s, "/")+1:], ":") && !strings.Contains(s, "@") {
		s += ":latest"
	}
	return s
}

// Images lists the container images (init containers included) of the
// workloads in objs, sorted, without duplicates.
func Images(objs []*unstructured.Unstructured) []string {
	seen := map[string]bool{}
	for _, o := range objs {
		var specPath []string
		switch o.GetKind() {
		case "Deployment", "DaemonSet", "StatefulSet", "Job":
			specPath = []string{"spec", "template", "spec"}
		case "Pod":
			specPath = []string{"spec"}
		default:
			continue
		}
		for _, field := range []string{"containers", "initContainers"} {
			cs, _, _ := unstructured.NestedSlice(o.Object, append(specPath, field)...)
			for _, c := range cs {
				if m, ok := c.(map[string]any); ok {
					if img, ok := m["image"].(string); ok && img != "" {
						seen[img] = true
					}
				}
			}
		}
	}
	out := make([]string, 0, len(seen))
	for img := range seen {
		out = append(out, img)
	}
	sort.Strings(out)
	return out
}

// AddedLabelsAnnotation records, on a node, the labels meshctl added to it
// (comma-separated): leave and uninstall remove those and no other, so a
// label the user had set before join stays.
const AddedLabelsAnnotation = "tunnelmesh.io/added-labels"

// LabelNode sets label=true on node name, recording that meshctl added it
// unless the node had the label already.
func (c *Cluster) LabelNode(ctx context.Context, name, label string) error {
	n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("label node %s %s=true: %w", name, label, err)
	}
	if _, had := n.Labels[label]; had {
		return nil
	}
	added := addedLabels(n)
	if !slices.Contains(added, label) {
		added = append(added, label)
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"labels":          map[string]string{label: "true"},
		"annotations":     map[string]string{AddedLabelsAnnotation: strings.Join(added, ",")},
		"resourceVersion": n.ResourceVersion, // the annotation was read with it
	}})
	if _, err := c.Client.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager}); err != nil {
		return fmt.Errorf("label node %s %s=true: %w", name, label, err)
	}
	return nil
}

// UnlabelNodes removes, from every node, those of labels that meshctl added
// (AddedLabelsAnnotation), and its record of them.
func (c *Cluster) UnlabelNodes(ctx context.Context, labels ...string) error {
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	for _, n := range nodes.Items {
		added := addedLabels(&n)
		drop := map[string]any{}
		var keep []string
		for _, l := range added {
			if !slices.Contains(labels, l) {
				keep = append(keep, l)
				continue
			}
			if _, ok := n.Labels[l]; ok {
				drop[l] = nil
			}
		}
		if len(keep) == len(added) {
			continue
		}
		var ann any // null removes the annotation
		if len(keep) > 0 {
			ann = strings.Join(keep, ",")
		}
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": drop,
			"annotations": map[string]any{AddedLabelsAnnotation: ann}, "resourceVersion": n.ResourceVersion}})
		if _, err := c.Client.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager}); err != nil {
			return fmt.Errorf("unlabel node %s: %w", n.Name, err)
		}
	}
	return nil
}

func addedLabels(n *corev1.Node) []string {
	v := n.Annotations[AddedLabelsAnnotation]
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

package kube

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// ImageDigestsAnnotation on a workload's pod template records the content
// of the images it runs, as the nodes report it. Re-running join after an
// image was rebuilt and loaded under the same tag changes it, so the
// workload rolls and its new pods start from the new content (with
// IfNotPresent and one tag, nothing else would make them).
const ImageDigestsAnnotation = "tunnelmesh.io/image-digests"

// ImageDigests returns, for each image of want, the digests that Ready
// nodes report for it: the "@sha256:" names of the node's image entry that
// carries the tag. `kind load` imports with digest references and a
// registry pull records the repository digest, so both show here. An image
// with no reported digest is absent from the map. Pure.
func ImageDigests(nodes []corev1.Node, want []string) map[string][]string {
	wanted := map[string]string{}
	for _, w := range want {
		wanted[NormalizeImage(w)] = w
	}
	sets := map[string]map[string]bool{}
	for i := range nodes {
		if !NodeReady(&nodes[i]) {
			continue
		}
		for _, img := range nodes[i].Status.Images {
			var tags, digests []string
			for _, name := range img.Names {
				if at := strings.LastIndex(name, "@"); at >= 0 {
					digests = append(digests, name[at+1:])
				} else if w, ok := wanted[NormalizeImage(name)]; ok {
					tags = append(tags, w)
				}
			}
			for _, w := range tags {
				for _, d := range digests {
					if sets[w] == nil {
						sets[w] = map[string]bool{}
					}
					sets[w][d] = true
				}
			}
		}
	}
	out := map[string][]string{}
	for w, set := range sets {
		for d := range set {
			out[w] = append(out[w], d)
		}
		sort.Strings(out[w])
	}
	return out
}

// StampImageDigests annotates the pod template of every workload in objs
// with a hash of the digests of the images it runs (those in digests);
// workloads whose images have none known are left as they are. Pure: it
// returns copies.
func StampImageDigests(objs []*unstructured.Unstructured, digests map[string][]string) []*unstructured.Unstructured {
	out := make([]*unstructured.Unstructured, len(objs))
	for i, o := range objs {
		out[i] = o
		switch o.GetKind() {
		case "Deployment", "DaemonSet", "StatefulSet":
		default:
			continue
		}
		var lines []string
		for _, img := range Images([]*unstructured.Unstructured{o}) {
			for _, d := range digests[img] {
				lines = append(lines, img+"="+d)
			}
		}
		if len(lines) == 0 {
			continue
		}
		sort.Strings(lines)
		sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
		c := o.DeepCopy()
		ann, _, _ := unstructured.NestedStringMap(c.Object, "spec", "template", "metadata", "annotations")
		if ann == nil {
			ann = map[string]string{}
		}
		ann[ImageDigestsAnnotation] = hex.EncodeToString(sum[:8])
		_ = unstructured.SetNestedStringMap(c.Object, ann, "spec", "template", "metadata", "annotations")
		out[i] = c
	}
	return out
}

package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func imgNode(name string, ready bool, images ...[]string) corev1.Node {
	n := node(name, ready, nil)
	for _, names := range images {
		n.Status.Images = append(n.Status.Images, corev1.ContainerImage{Names: names})
	}
	return n
}

func workload(kind, name string, images ...string) *unstructured.Unstructured {
	var cs []any
	for _, img := range images {
		cs = append(cs, map[string]any{"name": "c", "image": img})
	}
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "apps/v1", "kind": kind,
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"template": map[string]any{"spec": map[string]any{"containers": cs}}}}}
}

func TestImageDigestsAndStamp(t *testing.T) {
	gw, br := "tunnelmesh/gateway:dev", "tunnelmesh/broker:dev"
	nodes := []corev1.Node{
		// As `kind load` leaves it: the tag and an import digest reference.
		imgNode("a", true, []string{"docker.io/library/import-2026-11-22@sha256:aaa", "docker.io/tunnelmesh/gateway:dev"},
			[]string{"registry.k8s.io/pause:3.10", "registry.k8s.io/pause@sha256:ppp"}),
		imgNode("b", true, []string{"docker.io/tunnelmesh/gateway:dev", "docker.io/tunnelmesh/gateway@sha256:aaa"}),
		imgNode("down", false, []string{"docker.io/tunnelmesh/gateway:dev", "x@sha256:old"}),
		imgNode("c", true, []string{"docker.io/tunnelmesh/broker:dev"}), // no digest known
	}
	d := ImageDigests(nodes, []string{gw, br})
	if len(d) != 1 || len(d[gw]) != 1 || d[gw][0] != "sha256:aaa" {
		t.Fatalf("digests: %v", d)
	}
	objs := []*unstructured.Unstructured{workload("DaemonSet", "gw", gw), workload("Deployment", "broker", br),
		{Object: map[string]any{"kind": "ConfigMap", "metadata": map[string]any{"name": "x"}}}}
	stamped := StampImageDigests(objs, d)
	ann := func(o *unstructured.Unstructured) string {
		v, _, _ := unstructured.NestedString(o.Object, "spec", "template", "metadata", "annotations", ImageDigestsAnnotation)
		return v
	}
	first := ann(stamped[0])
	if first == "" || ann(stamped[1]) != "" || ann(objs[0]) != "" {
		t.Fatalf("stamps: gw %q broker %q original %q", first, ann(stamped[1]), ann(objs[0]))
	}
	if again := ann(StampImageDigests(objs, ImageDigests(nodes, []string{gw}))[0]); again != first {
		t.Errorf("same content, another stamp: %q vs %q", again, first)
	}
	// The image rebuilt and loaded again under the same tag: a new stamp.
	nodes[0].Status.Images[0].Names[0] = "docker.io/library/import-2026-11-23@sha256:bbb"
	nodes[1].Status.Images[0].Names[1] = "docker.io/tunnelmesh/gateway@sha256:bbb"
	if rebuilt := ann(StampImageDigests(objs, ImageDigests(nodes, []string{gw}))[0]); rebuilt == first || rebuilt == "" {
		t.Errorf("rebuilt image, stamp %q (was %q)", rebuilt, first)
	}
}

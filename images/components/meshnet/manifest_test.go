package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"text/template"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
)

// TestDefaultCNIManifest renders default-cni.yaml the way kind does (a Go template
// with .PodSubnet, because of the marker text) and checks every document decodes
// into a known object and the DaemonSet is what kind's env patch and meshnet expect.
func TestDefaultCNIManifest(t *testing.T) {
	raw, err := os.ReadFile("default-cni.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, marker := range []string{"would you kindly template this file", "would you kindly patch this file"} {
		if !bytes.Contains(raw, []byte(marker)) {
			t.Fatalf("manifest lacks kind's marker %q", marker)
		}
	}
	manifest := strings.ReplaceAll(string(raw), "@MESHNET_IMAGE@", "tunnelmesh/meshnet:v0.1.0")
	tmpl, err := template.New("cni").Parse(manifest)
	if err != nil {
		t.Fatalf("kind could not parse the manifest as a template: %v", err)
	}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, struct{ PodSubnet string }{"10.244.0.0/16"}); err != nil {
		t.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(&out))
	kinds := map[string]bool{}
	var ds *appsv1.DaemonSet
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("document does not decode: %v\n%s", err, doc)
		}
		kinds[gvk.Kind] = true
		if d, ok := obj.(*appsv1.DaemonSet); ok {
			ds = d
		}
	}
	for _, k := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap", "DaemonSet"} {
		if !kinds[k] {
			t.Errorf("manifest has no %s", k)
		}
	}
	if ds == nil {
		t.Fatal("no DaemonSet")
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || len(spec.Containers) == 0 {
		t.Fatal("DaemonSet must be hostNetwork with a container")
	}
	c := spec.Containers[0]
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if env["POD_SUBNET"].Value != "10.244.0.0/16" {
		t.Fatalf("POD_SUBNET not templated: %+v", env["POD_SUBNET"])
	}
	if env["NODE_NAME"].ValueFrom == nil || env["NODE_NAME"].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Fatal("NODE_NAME must come from spec.nodeName")
	}
	if c.Image != "tunnelmesh/meshnet:v0.1.0" || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Fatalf("image %q policy %q: nodes have no registry, the preloaded image must be used", c.Image, c.ImagePullPolicy)
	}
	if len(spec.Tolerations) == 0 || spec.Tolerations[0].Operator != corev1.TolerationOpExists {
		t.Fatal("meshnet must tolerate every taint (control-plane and not-ready nodes)")
	}
}

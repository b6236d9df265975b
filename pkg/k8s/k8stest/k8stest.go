// Package k8stest helps controller tests against a real apiserver
// (internal/kubeapi): apply tunnelmesh's own YAML as meshctl does, and build
// clients that impersonate a ServiceAccount.
package k8stest

import (
	"io/fs"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
)

// Files reads the named files of fsys (e.g. deploy.FS) as objects, decoded
// as meshctl decodes what it applies.
func Files(fsys fs.FS, names ...string) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, n := range names {
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, err
		}
		objs, err := kube.Decode(b, n)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}

// Apply applies the objects in order as meshctl does (server-side apply,
// each CRD established before the objects that may use it).
func Apply(t testing.TB, cfg *rest.Config, objs []*unstructured.Unstructured) {
	t.Helper()
	c, err := kube.New(cfg, "")
	if err != nil {
		t.Fatalf("k8stest: %v", err)
	}
	if err := c.Apply(t.Context(), objs); err != nil {
		t.Fatalf("k8stest: %v", err)
	}
}

// Impersonate returns a copy of cfg that acts as the ServiceAccount ns/name
// (with its groups), as the apiserver would see the pod using its token.
func Impersonate(cfg *rest.Config, ns, name string) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + ns + ":" + name,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	return c
}

package svcexport

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	mcscrd "sigs.k8s.io/mcs-api/config/crd"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/internal/testenv"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
)

var seGVR = schema.GroupVersionResource{Group: "multicluster.x-k8s.io", Version: "v1beta1", Resource: "serviceexports"}

// controller stands in for the export controller: it sets the conditions
// cond(name) returns on every ServiceExport of ns.
func controller(ctx context.Context, c *testenv.Cluster, ns string, cond func(name string) []any) {
	go func() {
		for ctx.Err() == nil {
			list, err := c.Kube.Dynamic.Resource(seGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
			if err == nil {
				for _, it := range list.Items {
					it.Object["status"] = map[string]any{"conditions": cond(it.GetName())}
					_, _ = c.Kube.Dynamic.Resource(seGVR).Namespace(ns).UpdateStatus(ctx, &it, metav1.UpdateOptions{})
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
}

func cond(typ, status, reason string) map[string]any {
	return map[string]any{"type": typ, "status": status, "reason": reason, "message": reason + " message", "lastTransitionTime": "2026-11-22T04:00:00Z"}
}

func TestExport(t *testing.T) {
	c := testenv.Start(t, "kind-x")
	ctx := t.Context()
	_, err := Export(ctx, c.Kube, "demo", "web", Options{})
	if cli.ExitCode(err) != cli.ExitRefused || !strings.Contains(err.Error(), "has not joined") {
		t.Fatalf("without the CRD: %v", err)
	}
	var crds []byte
	crds = append(append(crds, mcscrd.ServiceExportCRD...), "\n---\n"...)
	objs, err := kube.Decode(append(crds, mcscrd.ServiceImportCRD...), "crd")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Kube.Apply(ctx, kube.Prepare(objs)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := c.Objects(t)
	_, err = Export(ctx, c.Kube, "demo", "web", Options{Wait: true})
	if cli.ExitCode(err) != cli.ExitRefused || !strings.Contains(err.Error(), "service demo/web does not exist") {
		t.Fatalf("no service: %v", err)
	}
	if d := testenv.Diff(before, c.Objects(t)); d != "" {
		t.Fatalf("refused export changed the cluster:\n%s", d)
	}
	for _, name := range []string{"web", "ext", "slow"} {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "demo"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
		if _, err := c.Client.CoreV1().Services("demo").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	controller(ctx, c, "demo", func(name string) []any {
		switch name {
		case "web":
			return []any{cond("Valid", "True", "Valid"), cond("Ready", "True", "Exported"), cond("Conflict", "False", "NoConflicts")}
		case "ext":
			return []any{cond("Valid", "False", "InvalidServiceType")}
		}
		return []any{cond("Valid", "True", "Valid"), cond("Ready", "False", "Pending")}
	})
	conds, err := Export(ctx, c.Kube, "demo", "web", Options{Wait: true, Timeout: time.Minute})
	if err != nil || len(conds) != 3 {
		t.Fatalf("export web: %v %+v", err, conds)
	}
	before = c.Objects(t)
	if _, err := Export(ctx, c.Kube, "demo", "web", Options{Wait: true, Timeout: time.Minute}); err != nil {
		t.Fatalf("export web again: %v", err)
	}
	if d := testenv.Diff(before, c.Objects(t)); d != "" {
		t.Errorf("exporting twice changed the cluster:\n%s", d)
	}
	_, err = Export(ctx, c.Kube, "demo", "ext", Options{Wait: true, Timeout: time.Minute})
	if cli.ExitCode(err) != cli.ExitFailure || !strings.Contains(err.Error(), "InvalidServiceType") {
		t.Errorf("invalid export: %v", err)
	}
	_, err = Export(ctx, c.Kube, "demo", "slow", Options{Wait: true, Timeout: 2 * time.Second})
	if cli.ExitCode(err) != cli.ExitTimeout || !strings.Contains(err.Error(), "Ready=False Pending") {
		t.Errorf("slow export: %v", err)
	}
	for i, want := range []bool{true, false} {
		if got, err := Unexport(ctx, c.Kube, "demo", "web"); err != nil || got != want {
			t.Errorf("unexport #%d: %v %v", i+1, got, err)
		}
	}
}

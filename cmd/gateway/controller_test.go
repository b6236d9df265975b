package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/tunnelmesh/tunnelmesh/deploy"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/brokersecret"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
)

func TestControllerCmdNeedsTheBrokerSecret(t *testing.T) {
	dir := t.TempDir()
	c := controllerCmd()
	c.SetArgs([]string{"--broker-dir", dir, "--identity", "test"})
	c.SilenceUsage, c.SilenceErrors = true, true
	err := c.ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "mount Secret tunnelmesh-broker") {
		t.Fatalf("missing broker files: %v", err)
	}
	for k, v := range map[string]string{"url": "https://127.0.0.1:1", "ca.crt": "", "credential": "c", "cluster-id": "east"} {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	err = c.ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "ca.crt") {
		t.Fatalf("empty ca.crt: %v", err)
	}
}

// The controller's pod mounts of the broker Secret only the keys the
// controller reads: not the clusterset's gossip key, nor anything added later.
func TestControllerMountsOnlyWhatItReads(t *testing.T) {
	objs, err := kube.Manifests(deploy.FS, "mcs")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		var d appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
			t.Fatal(err)
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Secret == nil || v.Secret.SecretName != brokersecret.Name {
				continue
			}
			var keys []string
			for _, it := range v.Secret.Items {
				keys = append(keys, it.Key)
			}
			if !slices.Equal(keys, controllerKeys) {
				t.Errorf("%s mounts keys %v of Secret %s (none listed: all of them); the controller reads %v", d.Name, keys, brokersecret.Name, controllerKeys)
			}
			return
		}
	}
	t.Fatal("no Deployment in deploy/mcs mounts the broker Secret")
}

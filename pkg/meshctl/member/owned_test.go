package member

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	mcscrd "sigs.k8s.io/mcs-api/config/crd"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/internal/testenv"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// TestNothingOfTheUsersIsTakenOrDeleted is a cluster that had, before join,
// the MCS CRDs (another implementation's, or the user's) with a user's
// ServiceExport, a gateway node the user labelled, an object of the user's
// labelled app.kubernetes.io/part-of=tunnelmesh, and whose Corefile others
// edit after join. Join must not take the CRDs over; leave and uninstall
// must leave all of it as it was, and take out of the Corefile exactly
// join's edit.
func TestNothingOfTheUsersIsTakenOrDeleted(t *testing.T) {
	tb := brokertest.Start(t, brokertest.Options{})
	c := testenv.Start(t, "kind-u")
	c.AddNode(t, "u-gw", true, "10.0.0.1", "tunnelmesh/gateway:dev")
	ctx := t.Context()
	labelNode := func(name, label string) {
		patch := []byte(`{"metadata":{"labels":{"` + label + `":"true"}}}`)
		if _, err := c.Client.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-label"}); err != nil {
			t.Fatal(err)
		}
	}
	labelNode("u-gw", kube.GatewayLabel)
	// The MCS CRDs as another installer made them, and a user's export.
	for _, b := range [][]byte{mcscrd.ServiceExportCRD, mcscrd.ServiceImportCRD} {
		objs, err := kube.Decode(b, "crd")
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			o.SetLabels(map[string]string{"owner": "other-mcs"})
			if _, err := c.Kube.Dynamic.Resource(crdGVR).Create(ctx, o, metav1.CreateOptions{FieldManager: "other-mcs"}); err != nil {
				t.Fatal(err)
			}
			if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				u, err := c.Kube.Dynamic.Resource(crdGVR).Get(ctx, o.GetName(), metav1.GetOptions{})
				return err == nil && kube.ConditionTrue(u, "Established"), nil
			}); err != nil {
				t.Fatalf("CRD %s not established: %v", o.GetName(), err)
			}
		}
	}
	for _, ns := range []string{"demo"} {
		if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	seGVR := schema.GroupVersionResource{Group: "multicluster.x-k8s.io", Version: "v1beta1", Resource: "serviceexports"}
	se := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
		"metadata": map[string]any{"name": "web", "namespace": "demo"}}}
	if _, err := c.Kube.Dynamic.Resource(seGVR).Namespace("demo").Create(ctx, se, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mine := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "my-notes", Namespace: "demo", Labels: map[string]string{kube.PartOfLabel: kube.PartOf}}}
	if _, err := c.Client.CoreV1().ConfigMaps("demo").Create(ctx, mine, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const corefile = ".:53 {\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure\n    }\n    cache 30\n    reload\n}\n"
	if _, err := c.Client.CoreV1().ConfigMaps("kube-system").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns"},
		Data: map[string]string{"Corefile": corefile}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// What others do to the Corefile while the cluster is a member.
	othersEdit := func(cf string) string {
		return strings.Replace(cf, "cache 30", "cache 60", 1) + "example.com:53 {\n    forward . 10.0.0.10\n}\n"
	}
	editCorefile := func(f func(string) string) {
		cm, err := c.Client.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data["Corefile"] = f(cm.Data["Corefile"])
		if _, err := c.Client.CoreV1().ConfigMaps("kube-system").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	corefileNow := func() string {
		cm, err := c.Client.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return cm.Data["Corefile"]
	}

	join := func() {
		t.Helper()
		readyDaemonSets(ctx, c)
		if _, err := Join(ctx, c.Kube, JoinOptions{Info: api.BrokerInfo{URL: tb.URL, CA: string(tb.CA), JoinToken: tb.JoinToken("u")},
			PodCIDRs: []string{"10.4.0.0/16"}, ServiceCIDRs: []string{"10.96.4.0/24"}, Manifests: testManifests, Timeout: time.Minute,
			Corefile: fakeEditor}); err != nil {
			t.Fatalf("join: %v", err)
		}
	}
	// The user's things, as they were before join.
	usersThingsIntact := func(when string) {
		t.Helper()
		for _, name := range []string{"serviceexports.multicluster.x-k8s.io", "serviceimports.multicluster.x-k8s.io"} {
			crd, err := c.Kube.Dynamic.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Errorf("%s: CRD %s: %v", when, name, err)
				continue
			}
			if crd.GetLabels()["owner"] != "other-mcs" || crd.GetLabels()[kube.PartOfLabel] != "" {
				t.Errorf("%s: CRD %s relabelled: %v", when, name, crd.GetLabels())
			}
			for _, m := range crd.GetManagedFields() {
				if m.Manager == kube.FieldManager {
					t.Errorf("%s: CRD %s was written by meshctl (%s)", when, name, m.Operation)
				}
			}
		}
		if _, err := c.Kube.Dynamic.Resource(seGVR).Namespace("demo").Get(ctx, "web", metav1.GetOptions{}); err != nil {
			t.Errorf("%s: the user's ServiceExport demo/web: %v", when, err)
		}
		if _, err := c.Client.CoreV1().ConfigMaps("demo").Get(ctx, "my-notes", metav1.GetOptions{}); err != nil {
			t.Errorf("%s: the user's ConfigMap labelled part-of=tunnelmesh: %v", when, err)
		}
		if n, err := c.Client.CoreV1().Nodes().Get(ctx, "u-gw", metav1.GetOptions{}); err != nil || n.Labels[kube.GatewayLabel] != "true" {
			t.Errorf("%s: the label %s the user set on node u-gw is gone", when, kube.GatewayLabel)
		}
	}

	runCleanups(ctx, c)
	join()
	usersThingsIntact("after join")
	editCorefile(othersEdit)
	if left, err := Leave(ctx, c.Kube, LeaveOptions{Manifests: testManifests}); err != nil || !left {
		t.Fatalf("leave: %v %v", left, err)
	}
	usersThingsIntact("after leave")
	if got, want := corefileNow(), othersEdit(corefile); got != want {
		t.Errorf("after leave the Corefile is\n%s\nwant join's edit out and the others' kept:\n%s", got, want)
	}

	editCorefile(func(string) string { return corefile })
	join()
	finalizeNamespaces(ctx, c)
	if err := Uninstall(ctx, c.Kube, LeaveOptions{Manifests: testManifests, Timeout: time.Minute}); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	usersThingsIntact("after uninstall")
	if got := corefileNow(); got != corefile {
		t.Errorf("after uninstall the Corefile is\n%s\nwant\n%s", got, corefile)
	}
}

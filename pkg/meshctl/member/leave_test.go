package member

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/access"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/internal/testenv"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
)

// fakeEditor stands in for pkg/dns.EnableMulticluster (pure text edit).
func fakeEditor(cf string) (string, bool, error) {
	if strings.Contains(cf, "multicluster") {
		return cf, false, nil
	}
	return strings.Replace(cf, "ip6.arpa {\n", "ip6.arpa clusterset.local {\n       multicluster clusterset.local\n", 1), true, nil
}

// readyDaemonSets stands in for the DaemonSet controller and kubelets.
func readyDaemonSets(ctx context.Context, c *testenv.Cluster) {
	go func() {
		_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			d, err := c.Client.AppsV1().DaemonSets(defaults.Namespace).Get(ctx, "tunnelmesh-gateway", metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			d.Status = appsv1.DaemonSetStatus{ObservedGeneration: d.Generation, DesiredNumberScheduled: 1, CurrentNumberScheduled: 1, NumberReady: 1, UpdatedNumberScheduled: 1, NumberAvailable: 1}
			_, err = c.Client.AppsV1().DaemonSets(defaults.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
			return err == nil, nil
		})
	}()
}

// cleanupRuns stands in for the DaemonSet controller and the kubelets for
// the node cleanup: it records each cleanup DaemonSet that leave or
// uninstall starts, and reports it ready (every node's cleanup done).
type cleanupRuns struct {
	mu   sync.Mutex
	seen map[types.UID]*appsv1.DaemonSet
}

func runCleanups(ctx context.Context, c *testenv.Cluster) *cleanupRuns {
	r := &cleanupRuns{seen: map[types.UID]*appsv1.DaemonSet{}}
	go func() {
		for ctx.Err() == nil {
			d, err := c.Client.AppsV1().DaemonSets(defaults.Namespace).Get(ctx, CleanupDaemonSet, metav1.GetOptions{})
			if err == nil && d.Status.NumberReady == 0 {
				r.mu.Lock()
				r.seen[d.UID] = d.DeepCopy()
				r.mu.Unlock()
				d.Status = appsv1.DaemonSetStatus{ObservedGeneration: d.Generation, DesiredNumberScheduled: 1, CurrentNumberScheduled: 1, NumberReady: 1, UpdatedNumberScheduled: 1, NumberAvailable: 1}
				_, _ = c.Client.AppsV1().DaemonSets(defaults.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return r
}

// ran returns the cleanup DaemonSets started so far.
func (r *cleanupRuns) ran() []*appsv1.DaemonSet {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*appsv1.DaemonSet
	for _, d := range r.seen {
		out = append(out, d)
	}
	return out
}

// checkCleanup: exactly n node cleanups ran, each on every node with the
// privileges it needs, and none is left.
func checkCleanup(t *testing.T, c *testenv.Cluster, r *cleanupRuns, n int, when string) {
	t.Helper()
	runs := r.ran()
	if len(runs) != n {
		t.Errorf("%s: %d node cleanup(s) ran, want %d: the nodes keep tunnelmesh's routes, devices, tables and settings", when, len(runs), n)
	}
	for _, d := range runs {
		ps := d.Spec.Template.Spec
		if !ps.HostNetwork || len(ps.InitContainers) != 1 || ps.InitContainers[0].Args[0] != "cleanup" ||
			ps.InitContainers[0].SecurityContext == nil || ps.InitContainers[0].SecurityContext.Privileged == nil || !*ps.InitContainers[0].SecurityContext.Privileged ||
			len(ps.Tolerations) != 1 || ps.Tolerations[0].Operator != corev1.TolerationOpExists {
			t.Errorf("%s: the cleanup DaemonSet does not run `gateway cleanup` privileged in the host network on every node: %+v", when, ps)
		}
	}
	if _, err := c.Client.AppsV1().DaemonSets(defaults.Namespace).Get(t.Context(), CleanupDaemonSet, metav1.GetOptions{}); err == nil {
		t.Errorf("%s: the cleanup DaemonSet is left", when)
	}
}

// finalizeNamespaces stands in for the namespace controller: a deleted
// namespace whose objects are gone is finalized.
func finalizeNamespaces(ctx context.Context, c *testenv.Cluster) {
	go func() {
		for ctx.Err() == nil {
			ns, err := c.Client.CoreV1().Namespaces().Get(ctx, defaults.Namespace, metav1.GetOptions{})
			if err == nil && ns.DeletionTimestamp != nil {
				ns.Spec.Finalizers = nil
				_, _ = c.Client.CoreV1().Namespaces().Finalize(ctx, ns, metav1.UpdateOptions{})
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
}

// TestLeaveAndUninstall: after join, leave takes the cluster out of the
// broker and removes the components; uninstall leaves no object of
// tunnelmesh behind (every kind listed).
func TestLeaveAndUninstall(t *testing.T) {
	tb := brokertest.Start(t, brokertest.Options{})
	c := testenv.Start(t, "kind-c")
	c.AddNode(t, "c-gw", true, "10.0.0.1", "tunnelmesh/gateway:dev")
	ctx := t.Context()
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const corefile = ".:53 {\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure\n    }\n    reload\n}\n"
	if _, err := c.Client.CoreV1().ConfigMaps("kube-system").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns"},
		Data: map[string]string{"Corefile": corefile}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	corefileNow := func() (string, bool) {
		cm, err := c.Client.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, annotated := cm.Annotations["tunnelmesh.io/original-corefile"]
		return cm.Data["Corefile"], annotated
	}
	pristine := c.Objects(t)

	join := func() {
		t.Helper()
		readyDaemonSets(ctx, c)
		_, err := Join(ctx, c.Kube, JoinOptions{Info: api.BrokerInfo{URL: tb.URL, CA: string(tb.CA), JoinToken: tb.JoinToken("c")},
			PodCIDRs: []string{"10.3.0.0/16"}, ServiceCIDRs: []string{"10.96.3.0/24"}, Manifests: testManifests, Timeout: time.Minute,
			Corefile: fakeEditor})
		if err != nil {
			t.Fatalf("join: %v", err)
		}
		if cf, annotated := corefileNow(); !strings.Contains(cf, "multicluster clusterset.local") || !annotated {
			t.Fatalf("join left the Corefile as %q (annotated %v)", cf, annotated)
		}
	}
	join()
	// What the running components would add: an unlabelled Lease in our
	// namespace and a user's ServiceExport.
	if _, err := c.Client.CoordinationV1().Leases(defaults.Namespace).Create(ctx, &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "gateway-leader"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	se := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
		"metadata": map[string]any{"name": "web", "namespace": "demo"}}}
	seGVR := schema.GroupVersionResource{Group: "multicluster.x-k8s.io", Version: "v1beta1", Resource: "serviceexports"}
	if _, err := c.Kube.Dynamic.Resource(seGVR).Namespace("demo").Create(ctx, se, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	cleanups := runCleanups(ctx, c)
	left, err := Leave(ctx, c.Kube, LeaveOptions{Manifests: testManifests})
	if err != nil || !left {
		t.Fatalf("leave: %v %v", left, err)
	}
	checkCleanup(t, c, cleanups, 1, "leave")
	snap, _ := tb.Admin().Snapshot(ctx)
	if len(snap.Clusters) != 0 {
		t.Errorf("broker still has %+v", snap.Clusters)
	}
	if m, _ := access.ReadMember(ctx, c.Kube); m != nil {
		t.Error("member Secret survived leave")
	}
	if _, err := c.Client.AppsV1().DaemonSets(defaults.Namespace).Get(ctx, "tunnelmesh-gateway", metav1.GetOptions{}); err == nil {
		t.Error("gateway DaemonSet survived leave")
	}
	if n, _ := c.Client.CoreV1().Nodes().Get(ctx, "c-gw", metav1.GetOptions{}); n.Labels[kube.GatewayLabel] != "" {
		t.Error("gateway label survived leave")
	}
	if cf, annotated := corefileNow(); cf != corefile || annotated {
		t.Errorf("leave did not restore the Corefile: %q (annotated %v)", cf, annotated)
	}
	if left, err := Leave(ctx, c.Kube, LeaveOptions{Manifests: testManifests}); err != nil || left {
		t.Errorf("second leave: %v %v", left, err)
	}

	join() // a member again, then uninstall (join created the MCS CRDs: --delete-crds takes them)
	finalizeNamespaces(ctx, c)
	if err := Uninstall(ctx, c.Kube, LeaveOptions{Manifests: testManifests, Timeout: time.Minute, DeleteCRDs: true}); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	checkCleanup(t, c, cleanups, 2, "uninstall")
	// The API server drops the APIService entries of deleted CRD groups a
	// moment after the CRDs go, so what is left is read until it is gone.
	var extra []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		extra = extra[:0]
		for k := range c.Objects(t) {
			if _, ok := pristine[k]; !ok {
				extra = append(extra, k)
			}
		}
		if len(extra) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(extra) > 0 {
		t.Errorf("left behind after uninstall:\n%s", strings.Join(extra, "\n"))
	}
	if cf, annotated := corefileNow(); cf != corefile || annotated {
		t.Errorf("uninstall did not restore the Corefile: %q (annotated %v)", cf, annotated)
	}
	nodes, _ := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	for _, n := range nodes.Items {
		for l := range n.Labels {
			if strings.HasPrefix(l, "tunnelmesh.io/") {
				t.Errorf("node %s keeps label %s", n.Name, l)
			}
		}
	}
	if snap, _ := tb.Admin().Snapshot(ctx); len(snap.Clusters) != 0 {
		t.Errorf("broker still has %+v after uninstall", snap.Clusters)
	}
	// Uninstall again: nothing to do, no error.
	if err := Uninstall(ctx, c.Kube, LeaveOptions{Manifests: testManifests, Timeout: time.Minute}); err != nil {
		t.Fatalf("second uninstall: %v", err)
	}
}

package cmd

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	mcscrd "sigs.k8s.io/mcs-api/config/crd"

	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/access"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/internal/testenv"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/probe"
)

// probeMember makes c look like a joined member: the broker Secret, the
// ServiceExport CRD, a gateway node and a plain worker with the test images.
func probeMember(t *testing.T, c *testenv.Cluster, id string, images ...string) {
	t.Helper()
	ctx := t.Context()
	crd, err := kube.Decode(mcscrd.ServiceExportCRD, "mcs-api")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Kube.Apply(ctx, crd); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: defaults.Namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	m := access.Member{URL: "https://broker.example:8443", CA: []byte("ca"), Credential: "tmc." + id + ".x", ClusterID: id}
	if _, err := c.Client.CoreV1().Secrets(defaults.Namespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: kube.BrokerSecret}, Data: m.Data()}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	gw := c.AddNode(t, id+"-gw", true, "", images...)
	gw.Labels[kube.GatewayLabel] = "true"
	if _, err := c.Client.CoreV1().Nodes().Update(ctx, gw, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.AddNode(t, id+"-worker", true, "", images...)
}

// kubelet plays the kubelet (and the export controller) for test pods of c:
// server pods become Ready with an IP, ServiceExports Ready; it records
// every pod it sees by name.
type kubelet struct {
	mu   sync.Mutex
	pods map[string]corev1.Pod
}

func (k *kubelet) seen(name string) (corev1.Pod, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.pods[name]
	return p, ok
}

func standInKubelet(t *testing.T, c *testenv.Cluster, podIP string) *kubelet {
	k := &kubelet{pods: map[string]corev1.Pod{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: probe.RunLabel})
			if err == nil {
				for _, p := range pods.Items {
					k.mu.Lock()
					k.pods[p.Name] = p
					k.mu.Unlock()
					if p.Labels["tunnelmesh.io/probe-role"] == "server" && p.Status.PodIP == "" {
						p.Status.PodIP, p.Status.Phase = podIP, corev1.PodRunning
						p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
						_, _ = c.Client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, &p, metav1.UpdateOptions{})
					}
				}
			}
			ri := c.Kube.Dynamic.Resource(schema.GroupVersionResource{Group: "multicluster.x-k8s.io", Version: "v1beta1", Resource: "serviceexports"})
			{
				list, err := ri.List(ctx, metav1.ListOptions{LabelSelector: probe.RunLabel})
				if err == nil {
					for _, u := range list.Items {
						u := u
						_ = unstructured.SetNestedSlice(u.Object, []any{map[string]any{"type": "Ready", "status": "True", "reason": "Exported",
							"message": "", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}}, "status", "conditions")
						_, _ = ri.Namespace(u.GetNamespace()).UpdateStatus(ctx, &u, metav1.UpdateOptions{})
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return k
}

// TestVerifyAndBenchmarkObjects runs verify and benchmark against two real
// API servers with no kubelet: a stand-in makes the server pods Ready and
// the export Ready, so verify gets as far as the client pod in the other
// cluster, which never finishes. The runs time out (exit 4) and leave
// nothing behind in either cluster; the pods had the specs meant.
func TestVerifyAndBenchmarkObjects(t *testing.T) {
	east := testenv.Start(t, "kind-east")
	west := testenv.Start(t, "kind-west")
	probeMember(t, east, "east", probe.EchoImage, probe.ClientImage)
	probeMember(t, west, "west", probe.ClientImage)
	eastK := standInKubelet(t, east, "10.1.0.7")
	westK := standInKubelet(t, west, "10.2.0.9")
	pair := []string{"--kubeconfig", east.Kubeconfig, "--to-kubeconfig", west.Kubeconfig}

	// Usage: no second cluster; the same cluster twice.
	if _, stderr, code := run(t, "verify", "--kubeconfig", east.Kubeconfig); code != cli.ExitUsage || !strings.Contains(stderr, "needs a second cluster") {
		t.Fatalf("verify without --to-context: exit %d\n%s", code, stderr)
	}
	if _, stderr, code := run(t, "verify", "--kubeconfig", east.Kubeconfig, "--to-kubeconfig", east.Kubeconfig); code != cli.ExitUsage || !strings.Contains(stderr, `both contexts are cluster "east"`) {
		t.Fatalf("verify against itself: exit %d\n%s", code, stderr)
	}
	// West's nodes lack the echo image: verify the other way round is refused before creating anything.
	before := west.Objects(t)
	if _, stderr, code := run(t, "verify", "--kubeconfig", west.Kubeconfig, "--to-kubeconfig", east.Kubeconfig); code != cli.ExitRefused || !strings.Contains(stderr, "kind load docker-image tunnelmesh/echoserver:dev") {
		t.Fatalf("verify with the image missing: exit %d\n%s", code, stderr)
	}
	if d := testenv.Diff(before, west.Objects(t)); d != "" {
		t.Fatalf("refused verify changed west:\n%s", d)
	}

	out, stderr, code := run(t, append([]string{"verify", "--timeout", "8s", "-o", "json"}, pair...)...)
	if code != cli.ExitTimeout || !strings.Contains(stderr, `verify timed out at "client"`) {
		t.Fatalf("verify: exit %d\n%s%s", code, out, stderr)
	}
	var rep probe.VerifyReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, out)
	}
	var results []string
	for _, s := range rep.Steps {
		results = append(results, s.Step+"="+s.Result)
	}
	if strings.Join(results, " ") != "server-ready=pass export-ready=pass client=fail" {
		t.Errorf("steps: %v", results)
	}
	if rep.Server.Node != "east-worker" || rep.Client.Node != "west-worker" || rep.Client.Role != probe.RoleWorker {
		t.Errorf("placements: %+v %+v", rep.Server, rep.Client)
	}
	srv, ok := eastK.seen("echo-server")
	if !ok || srv.Spec.NodeName != "east-worker" || srv.Spec.Containers[0].Image != probe.EchoImage || srv.Labels[probe.RunLabel] != rep.Run {
		t.Errorf("server pod: %v %+v", ok, srv.Spec)
	}
	cl, ok := westK.seen("verify-client")
	if !ok || cl.Namespace != "tmesh-verify-"+rep.Run || !strings.Contains(strings.Join(cl.Spec.Containers[0].Args, " "), "pod-ip-tcp=http:http://10.1.0.7:8080/verify") {
		t.Errorf("client pod: %v %+v", ok, cl.Spec)
	}
	r := probe.Run{ID: rep.Run, Kind: "verify"}
	for _, c := range []*testenv.Cluster{east, west} {
		left, err := probe.Leftovers(t.Context(), c.Kube, r)
		if err != nil || len(left) > 0 {
			t.Errorf("%s: left behind %v (%v)", c.Context, left, err)
		}
	}

	// Ctrl-C while the client waits: cleaned up all the same.
	ctx, cancel := context.WithCancel(t.Context())
	p, err := probe.Members(ctx, east.Kube, west.Kube)
	if err != nil {
		t.Fatal(err)
	}
	var interrupted probe.Run
	go func() {
		for ctx.Err() == nil {
			if _, ok := westK.seen("verify-client"); ok && interrupted.ID != "" {
				if pods, _ := west.Client.CoreV1().Pods(interrupted.Namespace()).List(ctx, metav1.ListOptions{}); pods != nil && len(pods.Items) > 0 {
					cancel()
					return
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	_, err = probe.Verify(ctx, p, probe.VerifyOptions{Timeout: time.Minute, OnCreate: func(r probe.Run) { interrupted = r }})
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("interrupted verify: %v", err)
	}
	for _, c := range []*testenv.Cluster{east, west} {
		left, err := probe.Leftovers(t.Context(), c.Kube, interrupted)
		if err != nil || len(left) > 0 {
			t.Errorf("%s after Ctrl-C: left behind %v (%v)", c.Context, left, err)
		}
	}

	// Benchmark: clients on west's gateway and on its worker, the first never finishes.
	out, stderr, code = run(t, append([]string{"benchmark", "latency", "--timeout", "5s"}, pair...)...)
	if code != cli.ExitTimeout || !strings.Contains(stderr, "benchmark timed out (west/west-gw (standby gateway))") {
		t.Fatalf("benchmark: exit %d\n%s%s", code, out, stderr)
	}
	bs, ok := eastK.seen("bench-server")
	if !ok || bs.Spec.NodeName != "east-worker" || strings.Join(bs.Spec.Containers[0].Args, " ") != "bench-server -listen=:5201" {
		t.Errorf("bench server: %v %+v", ok, bs.Spec)
	}
	bc, ok := westK.seen("bench-client-0")
	if !ok || bc.Spec.NodeName != "west-gw" || !strings.Contains(strings.Join(bc.Spec.Containers[0].Args, " "), "bench latency") ||
		!strings.HasSuffix(strings.Join(bc.Spec.Containers[0].Args, " "), "10.1.0.7:5201") {
		t.Errorf("bench client: %v %+v", ok, bc.Spec)
	}
	br := probe.Run{ID: bc.Labels[probe.RunLabel], Kind: "benchmark"}
	for _, c := range []*testenv.Cluster{east, west} {
		left, err := probe.Leftovers(t.Context(), c.Kube, br)
		if err != nil || len(left) > 0 {
			t.Errorf("%s after benchmark: left behind %v (%v)", c.Context, left, err)
		}
	}
}

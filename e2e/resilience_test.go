//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/kindbed"
)

var (
	serviceExportGVR = schema.GroupVersionResource{Group: "multicluster.x-k8s.io", Version: "v1alpha1", Resource: "serviceexports"}
	serviceImportGVR = schema.GroupVersionResource{Group: "multicluster.x-k8s.io", Version: "v1alpha1", Resource: "serviceimports"}
)

// plainWorker is east's worker that is no gateway candidate.
const plainWorker = "tm-east-worker3"

// testUDPAndLargePayloads: UDP pod → pod both ways with the client's pod
// address seen; 64 KiB over TCP echoed back intact (segments larger than
// the tunnel MTU would be lost without the gateway's MSS clamp or working
// path-MTU discovery); a 4000-byte UDP datagram, larger than the tunnel
// MTU, arrives whole. The sender fragments it (a datagram over the route's
// MTU leaves without DF) and the gateway fragments 1500-byte fragments
// again for the tunnel; the receiver reassembles.
func testUDPAndLargePayloads(ctx context.Context, t *testing.T, east, west meshCluster) {
	var wg sync.WaitGroup
	for _, pair := range [][2]meshCluster{{east, west}, {west, east}} {
		from, to := pair[0], pair[1]
		srcNodes, err := from.NodeNames(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// a server on a node that is no gateway candidate: the path crosses
		// both clusters' route agents
		dst, err := echoPodOn(ctx, to.Cluster, to.Spec.Name+"-control-plane")
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("%s:%d", dst, kindbed.EchoPort)
		for _, src := range srcNodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := from.RunCheck(ctx, src, "-wait", "30s", "-timeout", "2s", "udp", addr)
				if err != nil {
					t.Errorf("UDP %s/%s → %s: %v", from.id, src, addr, err)
					return
				}
				r, err := kindbed.ParseEcho(out)
				if err != nil {
					t.Error(err)
					return
				}
				checkClient(t, from, src, r)
				if r.PodIP != dst {
					t.Errorf("UDP %s/%s → %s answered by %s", from.id, src, dst, r.PodIP)
				}
			}()
		}
		src := srcNodes[len(srcNodes)-1]
		wg.Add(2)
		go func() {
			defer wg.Done()
			url := fmt.Sprintf("http://%s/echo", addr)
			out, err := from.RunCheck(ctx, src, "-wait", "30s", "-timeout", "10s", "post", url, "65536")
			if err != nil {
				t.Errorf("64 KiB over TCP %s/%s → %s: %v", from.id, src, url, err)
				return
			}
			if !strings.Contains(out, `"size":65536`) {
				t.Errorf("64 KiB over TCP %s → %s: server reply %q", from.id, url, out)
			}
			logf("64 KiB over TCP %s/%s → %s came back intact", from.id, src, addr)
		}()
		go func() {
			defer wg.Done()
			out, err := from.RunCheck(ctx, src, "-wait", "30s", "-timeout", "2s", "-size", "4000", "udp", addr)
			if err != nil {
				t.Errorf("4000-byte UDP datagram %s/%s → %s: %v", from.id, src, addr, err)
				return
			}
			r, err := kindbed.ParseEcho(out)
			if err != nil {
				t.Error(err)
				return
			}
			if !strings.Contains(out, `"size":4000`) {
				t.Errorf("4000-byte UDP datagram %s → %s: the server got %q", from.id, addr, out)
			}
			checkClient(t, from, src, r)
		}()
	}
	wg.Wait()
}

// testNodeStopFailover stops the container of east's active gateway node
// (docker stop: the node shuts down) while a UDP flow runs from east's
// plain worker to a west pod; the standby takes over and the flow moves
// again (the gap is printed); the node is started again and the mesh
// converges: the node Ready, every gateway pod ready, both tunnels up, and
// a pod on the restarted node reaches west.
func testNodeStopFailover(ctx context.Context, t *testing.T, east, west meshCluster) {
	m, err := activeGateway(ctx, east)
	if err != nil || m.Status.ActiveNode == "" {
		t.Fatalf("no active gateway in east: %v", err)
	}
	old, oldEpoch := m.Status.ActiveNode, m.Status.Epoch
	dst, err := echoPodOn(ctx, west.Cluster, "tm-west-control-plane")
	if err != nil {
		t.Fatal(err)
	}
	f := startFlow(ctx, east.Cluster, plainWorker, fmt.Sprintf("%s:%d", dst, kindbed.EchoPort), 40*time.Second, 100*time.Millisecond)
	if err := waitFlowRunning(ctx, east.Cluster, f); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	if _, err := docker(ctx, "stop", old); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_, _ = docker(context.Background(), "start", old)
		}
	})
	logf("node %s stopped (docker stop took %s)", old, time.Since(stopped).Round(time.Millisecond))
	newActive, toActive := waitNewActive(ctx, t, east, old, oldEpoch, stopped, false)
	rep, err := f.wait()
	if err != nil {
		t.Fatal(err)
	}
	hold("graceful failover, active gateway's node container stopped (docker stop: systemd shuts down, SIGTERM) (%s → %s): new active %s after `docker stop` began; %s; %d/%d probes (every 100 ms) answered; gaps: %s",
		old, newActive, toActive.Round(time.Millisecond), flowOutage(rep, stopped, stopped.Add(toActive)), rep.OK, rep.Sent, rep.gapsSince(stopped))
	checkFailoverGaps(t, rep, stopped)

	restartedAt := time.Now()
	if _, err := docker(ctx, "start", old); err != nil {
		t.Fatal(err)
	}
	restarted = true
	if err := waitConverged(ctx, east, west, old); err != nil {
		t.Fatalf("after restarting %s: %v", old, err)
	}
	logf("node %s restarted; mesh converged %s later", old, time.Since(restartedAt).Round(time.Second))
}

// maxFailoverGap bounds a failover's outage in kind on a busy 2-core
// machine (the target, ≤ 3 s, is held by make bench-failover).
const maxFailoverGap = 10 * time.Second

// checkFailoverGaps fails t when the flow stood still longer than
// maxFailoverGap at any time.
func checkFailoverGaps(t *testing.T, rep flowReport, at time.Time) {
	t.Helper()
	for _, g := range rep.Gaps {
		if d := time.Duration(g.ToMs-g.FromMs) * time.Millisecond; d > maxFailoverGap {
			t.Errorf("the flow stood still %s (from %+.1fs after the event), over %s", d, time.UnixMilli(g.FromMs).Sub(at).Seconds(), maxFailoverGap)
		}
	}
}

// flowOutage says how long the flow stood still at an event at at whose
// failover was seen done at until (at itself when nothing failed over).
func flowOutage(rep flowReport, at, until time.Time) string {
	longest, total, resumed, n := rep.failoverGap(at, until)
	switch n {
	case 0:
		return "the flow saw no gap over 200 ms at the event"
	case 1:
		return fmt.Sprintf("the flow stood still %s and moved again %s after it", longest.Round(time.Millisecond), resumed.Round(time.Millisecond))
	}
	return fmt.Sprintf("the flow stood still %s at the longest (%d gaps, %s in all) and moved again for good %s after it",
		longest.Round(time.Millisecond), n, total.Round(time.Millisecond), resumed.Round(time.Millisecond))
}

// waitNewActive waits until another node than old holds east's active role
// with a newer epoch, and returns it with the time since since.
//
// With sameNode, old's own node may be the new active (at a higher epoch):
// the kubelet restarts a killed gateway at once, and the restarted process
// may take the Lease its node held before the standby does.
func waitNewActive(ctx context.Context, t *testing.T, c meshCluster, old string, oldEpoch int64, since time.Time, sameNode bool) (string, time.Duration) {
	t.Helper()
	for {
		if m, err := activeGateway(ctx, c); err == nil && m.Status.ActiveNode != "" && (sameNode || m.Status.ActiveNode != old) && m.Status.Epoch > oldEpoch {
			return m.Status.ActiveNode, time.Since(since)
		}
		if time.Since(since) > 2*time.Minute {
			t.Fatalf("no new active gateway in %s 2 minutes after %s went", c.id, old)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitConverged waits until node is Ready with every tunnelmesh pod ready,
// both clusters' active gateways report their tunnel, and a pod on node
// reaches a west pod with its own address.
func waitConverged(ctx context.Context, east, west meshCluster, node string) error {
	if err := awaitConverged(ctx, 4*time.Minute, east, west); err != nil {
		return err
	}
	dst, err := echoPodOn(ctx, west.Cluster, "tm-west-control-plane")
	if err != nil {
		return err
	}
	r, err := east.GetEcho(ctx, node, fmt.Sprintf("http://%s:%d/", dst, kindbed.EchoPort))
	if err != nil {
		return fmt.Errorf("from a pod on the restarted node: %w", err)
	}
	if r.PodIP != dst {
		return fmt.Errorf("from the restarted node: answered by %s, want %s", r.PodIP, dst)
	}
	return nil
}

// awaitConverged polls notConverged every second until it reports
// nothing; after within (or ctx's end), its last report is the error.
func awaitConverged(ctx context.Context, within time.Duration, clusters ...meshCluster) error {
	deadline := time.Now().Add(within)
	for {
		last := notConverged(ctx, clusters...)
		if last == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not converged after %s: %s", within, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not converged (%v): %s", ctx.Err(), last)
		case <-time.After(time.Second):
		}
	}
}

// notConverged says what keeps clusters from being converged ("" when
// nothing does): a node or a tunnelmesh pod not ready, or an active gateway
// without a tunnel to every other cluster given.
func notConverged(ctx context.Context, clusters ...meshCluster) string {
	for _, c := range clusters {
		if msg := c.NotReady(ctx); msg != "" {
			return c.id + ": " + msg
		}
		pods, err := c.Client.CoreV1().Pods(defaults.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err.Error()
		}
		for _, p := range pods.Items {
			if !podReady(&p) {
				return fmt.Sprintf("%s: pod %s not ready", c.id, p.Name)
			}
		}
		m, err := activeGateway(ctx, c)
		if err != nil {
			return err.Error()
		}
		if want := len(clusters) - 1; m.Status.Connected != want || m.Status.Total != want {
			return fmt.Sprintf("%s: active %s, %d/%d tunnels up", c.id, m.Status.ActiveNode, m.Status.Connected, m.Status.Total)
		}
	}
	return ""
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil
		}
	}
	return false
}

// testBrokerOutage scales the broker (deployed into east by meshctl) to
// zero for over a minute. Meanwhile a UDP flow east → west keeps moving,
// pod → pod requests and a clusterset.local name exported before keep
// answering, and a Service exported during the outage (a ServiceExport
// created as a user would, with the API) appears in east once the broker
// is back.
func testBrokerOutage(ctx context.Context, t *testing.T, east, west meshCluster) {
	name := "echo." + kindbed.Namespace + ".svc.clusterset.local"
	exported := time.Now()
	if _, err := meshctl(ctx, t, west.Cluster, "export", "service", "echo", "-n", kindbed.Namespace); err != nil {
		t.Fatal(err)
	}
	if _, err := east.RunCheck(ctx, plainWorker, "-wait", "150s", "-interval", "200ms", "dns", name); err != nil {
		t.Fatalf("%s before the outage: %v", name, err)
	}
	hold("`meshctl export` → DNS answer in the other cluster, CoreDNS already serving clusterset.local: %s (includes starting the client pod)", time.Since(exported).Round(time.Millisecond))
	dst, err := echoPodOn(ctx, west.Cluster, "tm-west-control-plane")
	if err != nil {
		t.Fatal(err)
	}
	f := startFlow(ctx, east.Cluster, plainWorker, fmt.Sprintf("%s:%d", dst, kindbed.EchoPort), 90*time.Second, 200*time.Millisecond)
	if err := waitFlowRunning(ctx, east.Cluster, f); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	if err := scaleBroker(ctx, east, 0); err != nil {
		t.Fatal(err)
	}
	back := false
	t.Cleanup(func() {
		if !back {
			_ = scaleBroker(context.Background(), east, 1)
		}
	})
	logf("broker scaled to 0; its pod gone %s after", time.Since(down).Round(time.Millisecond))

	// A change while the broker is away: a second Service exported from west.
	if err := exportWithAPI(ctx, west, "echo-late"); err != nil {
		t.Fatal(err)
	}
	late := "echo-late." + kindbed.Namespace + ".svc.clusterset.local"
	// Every 20 s for over a minute: names exported before resolve and
	// answer, pods reach each other both ways.
	for round := 0; time.Since(down) < 70*time.Second; round++ {
		if r, err := east.GetEcho(ctx, plainWorker, fmt.Sprintf("http://%s:%d/", name, kindbed.EchoPort)); err != nil {
			t.Errorf("broker down %s: east → %s: %v", time.Since(down).Round(time.Second), name, err)
		} else if r.Cluster != west.Spec.Name {
			t.Errorf("broker down: %s answered by %s", name, r.Cluster)
		}
		edst, err := echoPodOn(ctx, east.Cluster, plainWorker)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := west.GetEcho(ctx, "tm-west-control-plane", fmt.Sprintf("http://%s:%d/", edst, kindbed.EchoPort)); err != nil {
			t.Errorf("broker down %s: west → east pod %s: %v", time.Since(down).Round(time.Second), edst, err)
		}
		if round == 0 {
			// The API, not DNS: a lookup now would leave an NXDOMAIN in
			// CoreDNS's cache for 30 s.
			if ok, _ := hasImport(ctx, east, "echo-late"); ok {
				logf("note: echo-late was imported into east while the broker was down")
			}
		}
		time.Sleep(15 * time.Second)
	}
	outage := time.Since(down)
	// A second flow, probing every 100 ms, across the broker's return: the
	// data plane must not notice it (it stood still 1.8 s when it came back).
	fb := startFlow(ctx, east.Cluster, plainWorker, fmt.Sprintf("%s:%d", dst, kindbed.EchoPort), 50*time.Second, 100*time.Millisecond)
	if err := waitFlowRunning(ctx, east.Cluster, fb); err != nil {
		t.Fatal(err)
	}
	if err := scaleBroker(ctx, east, 1); err != nil {
		t.Fatal(err)
	}
	back = true
	up := time.Now()
	logf("broker back after an outage of %s", outage.Round(time.Second))
	// The export made during the outage, watched for from now on.
	importedIn := make(chan error, 1)
	var imported time.Duration
	go func() {
		for {
			ok, err := hasImport(ctx, east, "echo-late")
			if ok {
				imported = time.Since(up)
				importedIn <- nil
				return
			}
			if time.Since(up) > 3*time.Minute {
				importedIn <- fmt.Errorf("exported during the outage, echo-late is not imported into east 3 minutes after the broker returned (%v)", err)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	rep, err := f.wait()
	if err != nil {
		t.Fatalf("flow during the outage: %v", err)
	}
	// A gap of about a second can come from the gateway's Lease: on a
	// starved machine a renewal slower than its deadline makes the active
	// step down and take over again (seen in both clusters at once, with
	// the broker not involved). Longer is an outage the broker caused.
	for _, g := range rep.Gaps {
		if d := time.Duration(g.ToMs-g.FromMs) * time.Millisecond; d > 3*time.Second {
			t.Errorf("the flow east → west stood still %s during the broker outage (from %s)", d, time.UnixMilli(g.FromMs).Format(time.RFC3339Nano))
		}
	}
	hold("broker outage of %s: the flow east → west answered %d/%d probes (every 200 ms); gaps: %s", outage.Round(time.Second), rep.OK, rep.Sent, rep.gapsSince(down))
	repb, err := fb.wait()
	if err != nil {
		t.Errorf("flow across the broker's return: %v", err)
	}
	// The return reaches the clusters within seconds: watches reconnect
	// within 2 s, every gateway registers again at its next heartbeat
	// (10 s), the export made meanwhile is imported. The flow standing
	// still then (the 1.8 s stall this guards against) is the broker's
	// doing and fails; a single probe lost or late (a gap of 200–400 ms)
	// is what this shared 2-core machine does now and then with nothing
	// happening (the crash subtests' flows show the same), so it is
	// printed, like later gaps. The netns test bed (pkg/testbed, broker
	// outage subtest) holds the strict bound: 20 ms probes across the
	// return, no gap over 200 ms.
	for _, g := range repb.Gaps {
		d := time.Duration(g.ToMs-g.FromMs) * time.Millisecond
		from := time.UnixMilli(g.FromMs).Sub(up)
		if d > maxQuietGap && from < 12*time.Second && from+d > -5*time.Second {
			t.Errorf("the flow east → west stood still %s as the broker returned (%s after it was back)", d, from.Round(time.Millisecond))
		}
	}
	hold("broker back: the flow east → west across its return answered %d/%d probes (every 100 ms); gaps relative to the return: %s",
		repb.OK, repb.Sent, repb.gapsSince(up))
	if err := <-importedIn; err != nil {
		t.Fatal(err)
	}
	if _, err := east.RunCheck(ctx, plainWorker, "-wait", "180s", "dns", late); err != nil {
		t.Fatalf("exported during the outage, %s does not resolve in east after the broker returned: %v", late, err)
	}
	hold("a ServiceExport made during the broker outage: export → import %s after the broker answered again (its pod ready), resolving there %s after",
		imported.Round(time.Millisecond), time.Since(up).Round(time.Millisecond))
	if err := exportReady(ctx, west, "echo-late"); err != nil {
		t.Error(err)
	}
}

// hasImport reports whether c has the ServiceImport name in the e2e namespace.
func hasImport(ctx context.Context, c meshCluster, name string) (bool, error) {
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return false, err
	}
	_, err = dyn.Resource(serviceImportGVR).Namespace(kindbed.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// scaleBroker sets the replicas of the broker Deployment meshctl
// deploy-broker made and waits until that many pods run.
func scaleBroker(ctx context.Context, c meshCluster, n int32) error {
	deps := c.Client.AppsV1().Deployments(defaults.Namespace)
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
	if _, err := deps.Patch(ctx, "tunnelmesh-broker", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("scale the broker to %d: %w", n, err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		d, err := deps.Get(ctx, "tunnelmesh-broker", metav1.GetOptions{})
		if err == nil && d.Status.ReadyReplicas == n && d.Status.Replicas == n {
			pods, err := c.Client.CoreV1().Pods(defaults.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labelSelector(d.Spec.Selector.MatchLabels)})
			if err == nil && len(pods.Items) == int(n) {
				return nil
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("broker not at %d ready pods after 3 minutes", n)
}

func labelSelector(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

// exportWithAPI creates Service name (selecting the echo pods) in c and a
// ServiceExport for it, with the API as `kubectl apply` would.
func exportWithAPI(ctx context.Context, c meshCluster, name string) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: kindbed.Namespace},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "echo"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: kindbed.EchoPort, TargetPort: intstr.FromInt32(kindbed.EchoPort)}},
		},
	}
	if _, err := c.Client.CoreV1().Services(kindbed.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("%s: create service %s: %w", c.id, name, err)
	}
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	se := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
		"metadata": map[string]any{"name": name, "namespace": kindbed.Namespace},
	}}
	if _, err := dyn.Resource(serviceExportGVR).Namespace(kindbed.Namespace).Create(ctx, se, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("%s: create ServiceExport %s: %w", c.id, name, err)
	}
	return nil
}

// exportReady checks the ServiceExport's conditions: Valid and Ready true
// (eventually), none false.
func exportReady(ctx context.Context, c meshCluster, name string) error {
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	var last string
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		se, err := dyn.Resource(serviceExportGVR).Namespace(kindbed.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
		} else {
			conds, _, _ := unstructured.NestedSlice(se.Object, "status", "conditions")
			got := map[string]string{}
			var parts []string
			for _, c := range conds {
				m, _ := c.(map[string]any)
				typ, _ := m["type"].(string)
				st, _ := m["status"].(string)
				got[typ] = st
				parts = append(parts, fmt.Sprintf("%s=%s (%v: %v)", typ, st, m["reason"], m["message"]))
			}
			last = strings.Join(parts, "; ")
			if got["Ready"] == "True" && got["Conflict"] != "True" && got["Valid"] != "False" {
				return nil
			}
		}
		time.Sleep(time.Second)
	}
	return fmt.Errorf("%s: ServiceExport %s not Ready: %s", c.id, name, last)
}

// testLeave: `meshctl leave` in west takes west's exports out of east —
// its ServiceImports go and the name stops resolving.
func testLeave(ctx context.Context, t *testing.T, east, west meshCluster) {
	dyn, err := dynamic.NewForConfig(east.Config)
	if err != nil {
		t.Fatal(err)
	}
	imports := func() ([]string, error) {
		list, err := dyn.Resource(serviceImportGVR).Namespace(kindbed.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		var names []string
		for _, i := range list.Items {
			names = append(names, i.GetName())
		}
		return names, nil
	}
	before, err := imports()
	if err != nil || len(before) == 0 {
		t.Fatalf("east has no ServiceImports from west before leave (%v): nothing to prove", err)
	}
	if _, err := meshctl(ctx, t, west.Cluster, "leave"); err != nil {
		t.Fatal(err)
	}
	left := time.Now()
	var now []string
	for time.Since(left) < 2*time.Minute {
		now, err = imports()
		if err == nil && len(now) == 0 {
			break
		}
		time.Sleep(time.Second)
	}
	if len(now) != 0 {
		t.Fatalf("2 minutes after west left, east still imports %v", now)
	}
	logf("west left: east's ServiceImports %v gone %s later", before, time.Since(left).Round(time.Millisecond))
	// (CoreDNS does not cache clusterset.local: join's Corefile edit.)
	late := "echo-late." + kindbed.Namespace + ".svc.clusterset.local"
	for {
		_, err := east.RunCheck(ctx, plainWorker, "-timeout", "2s", "dns", late)
		if err != nil {
			logf("%s stopped resolving in east %s after west left", late, time.Since(left).Round(time.Second))
			break
		}
		if time.Since(left) > 90*time.Second {
			t.Fatalf("%s still resolves in east 90 s after west left", late)
		}
		time.Sleep(3 * time.Second)
	}
	// Every west node is clean (the route agents leave their state on a stop).
	nodes, err := west.NodeNames(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		for _, l := range nodeLeftovers(ctx, n) {
			t.Errorf("west: left on the node after leave: %s", l)
		}
	}
}

// userState is what a user had in a cluster before tunnelmesh: labels
// (of ours) they set on nodes, and an object of theirs labelled
// app.kubernetes.io/part-of=tunnelmesh.
type userState struct {
	nodeLabels map[string]map[string]string // node -> tunnelmesh.io/* labels
	sysctls    map[string]string            // node -> the kernel settings tunnelmesh may change
}

// nodeSysctls are the settings `gateway sysctl` may change, as the node has them.
const nodeSysctls = "sysctl net.ipv4.ip_forward net.ipv4.conf.all.rp_filter net.ipv4.conf.default.rp_filter net.ipv4.conf.eth0.rp_filter"

// nodeLeftovers lists what of tunnelmesh a node still has: routes with
// our protocols (77 gateway, 78 route agent), our devices, our nftables
// tables.
func nodeLeftovers(ctx context.Context, node string) []string {
	var left []string
	for _, cmd := range []string{"ip route show proto 77", "ip route show proto 78", "ip -6 route show proto 77", "ip -6 route show proto 78"} {
		if out, err := docker(ctx, "exec", node, "sh", "-c", cmd); err != nil || strings.TrimSpace(out) != "" {
			left = append(left, fmt.Sprintf("%s: `%s`: %s%v", node, cmd, out, errOrNil(err)))
		}
	}
	if out, err := docker(ctx, "exec", node, "ip", "-o", "link", "show"); err != nil || strings.Contains(out, "tmesh") {
		left = append(left, fmt.Sprintf("%s: devices: %s%v", node, out, errOrNil(err)))
	}
	out, err := docker(ctx, "exec", node, "nft", "list", "tables")
	for _, l := range strings.Split(out, "\n") { // ours, not the test CNI's inet tunnelmesh-cni
		if t := strings.TrimSpace(l); t == "table inet tunnelmesh" || t == "table inet tunnelmesh-agent" || t == "table inet tunnelmesh-fence" {
			left = append(left, fmt.Sprintf("%s: nftables %s", node, t))
		}
	}
	if err != nil {
		left = append(left, fmt.Sprintf("%s: nft list tables: %v", node, err))
	}
	return left
}

func errOrNil(err error) any {
	if err == nil {
		return ""
	}
	return err
}

const userObject = "users-own-notes" // a ConfigMap in kube-system

func recordUserState(ctx context.Context, c meshCluster) (userState, error) {
	st := userState{nodeLabels: map[string]map[string]string{}, sysctls: map[string]string{}}
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return st, err
	}
	for _, n := range nodes.Items {
		st.nodeLabels[n.Name] = ourLabels(n.Labels)
		if st.sysctls[n.Name], err = docker(ctx, "exec", n.Name, "sh", "-c", nodeSysctls); err != nil {
			return st, err
		}
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: userObject, Namespace: "kube-system",
		Labels: map[string]string{"app.kubernetes.io/part-of": "tunnelmesh"}}, Data: map[string]string{"mine": "yes"}}
	if _, err := c.Client.CoreV1().ConfigMaps("kube-system").Create(ctx, cm, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return st, err
	}
	return st, nil
}

func ourLabels(l map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range l {
		if strings.HasPrefix(k, "tunnelmesh.io/") {
			out[k] = v
		}
	}
	return out
}

// testUninstall: `meshctl uninstall --delete-crds` in both clusters leaves
// nothing of tunnelmesh: no namespace, no CRD of ours or of the MCS API
// (join made them), no ClusterRole or binding, no DaemonSet, no node label
// meshctl added, no clusterset block in CoreDNS's Corefile, and on every
// node no route with our protocols, no tmesh0 or tmesh-vx, no nftables
// table of ours and the kernel settings as they were before join; and
// everything the user had before join is still there (their node labels,
// their object labelled part-of=tunnelmesh).
func testUninstall(ctx context.Context, t *testing.T, before map[string]userState, clusters ...meshCluster) {
	for _, c := range clusters {
		if _, err := meshctl(ctx, t, c.Cluster, "uninstall", "--delete-crds"); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range clusters {
		var left []string
		deadline := time.Now().Add(2 * time.Minute)
		for {
			left = leftovers(ctx, c, before[c.id])
			if len(left) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(2 * time.Second)
		}
		for _, l := range left {
			t.Errorf("%s: left after uninstall: %s", c.id, l)
		}
		if _, err := c.Client.CoreV1().ConfigMaps("kube-system").Get(ctx, userObject, metav1.GetOptions{}); err != nil {
			t.Errorf("%s: the user's ConfigMap kube-system/%s (labelled part-of=tunnelmesh before join) is gone: %v", c.id, userObject, err)
		}
		nodes, err := c.NodeNames(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			for _, l := range nodeLeftovers(ctx, n) {
				t.Errorf("%s: left on the node after uninstall: %s", c.id, l)
			}
			now, err := docker(ctx, "exec", n, "sh", "-c", nodeSysctls)
			if want := before[c.id].sysctls[n]; err != nil || now != want {
				t.Errorf("%s: node %s's kernel settings after uninstall:\n%s%v\nbefore join:\n%s", c.id, n, now, errOrNil(err), want)
			}
		}
	}
}

// leftovers lists what of tunnelmesh is still in c (node labels: those that
// differ from the user's before join).
func leftovers(ctx context.Context, c meshCluster, before userState) []string {
	var left []string
	add := func(format string, args ...any) { left = append(left, fmt.Sprintf(format, args...)) }
	if _, err := c.Client.CoreV1().Namespaces().Get(ctx, defaults.Namespace, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		add("namespace %s (%v)", defaults.Namespace, err)
	}
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return []string{err.Error()}
	}
	crds, err := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}).List(ctx, metav1.ListOptions{})
	if err != nil {
		add("list CRDs: %v", err)
	} else {
		for _, crd := range crds.Items {
			if n := crd.GetName(); strings.Contains(n, "tunnelmesh") || strings.Contains(n, "multicluster") || strings.HasSuffix(n, "about.k8s.io") {
				add("CRD %s", n)
			}
		}
	}
	rbac := c.Client.RbacV1()
	if list, err := rbac.ClusterRoles().List(ctx, metav1.ListOptions{}); err != nil {
		add("list ClusterRoles: %v", err)
	} else {
		for _, r := range list.Items {
			if strings.Contains(r.Name, "tunnelmesh") || r.Labels["app.kubernetes.io/part-of"] == "tunnelmesh" {
				add("ClusterRole %s", r.Name)
			}
		}
	}
	if list, err := rbac.ClusterRoleBindings().List(ctx, metav1.ListOptions{}); err != nil {
		add("list ClusterRoleBindings: %v", err)
	} else {
		for _, r := range list.Items {
			if strings.Contains(r.Name, "tunnelmesh") || r.Labels["app.kubernetes.io/part-of"] == "tunnelmesh" {
				add("ClusterRoleBinding %s", r.Name)
			}
		}
	}
	if list, err := c.Client.AppsV1().DaemonSets("").List(ctx, metav1.ListOptions{}); err != nil {
		add("list DaemonSets: %v", err)
	} else {
		for _, d := range list.Items {
			if strings.Contains(d.Name, "tunnelmesh") || d.Labels["app.kubernetes.io/part-of"] == "tunnelmesh" {
				add("DaemonSet %s/%s", d.Namespace, d.Name)
			}
		}
	}
	if list, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		add("list nodes: %v", err)
	} else {
		for _, n := range list.Items {
			if got, want := ourLabels(n.Labels), before.nodeLabels[n.Name]; !maps.Equal(got, want) {
				add("node %s has labels %v, had %v before join", n.Name, got, want)
			}
		}
	}
	if cm, err := c.Client.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{}); err != nil {
		add("get CoreDNS ConfigMap: %v", err)
	} else if strings.Contains(cm.Data["Corefile"], "clusterset.local") || strings.Contains(cm.Data["Corefile"], "tunnelmesh") {
		add("CoreDNS Corefile still serves clusterset.local:\n%s", cm.Data["Corefile"])
	}
	return left
}

// testHeadlessExport: a headless Service of west (a StatefulSet's pods)
// exported; in east its clusterset.local name resolves to every pod, and
// <hostname>.<clusterid>.<svc>.<ns>.svc.clusterset.local to that one pod,
// which answers a request by that name; unexported, the name goes.
func testHeadlessExport(ctx context.Context, t *testing.T, east, west meshCluster) {
	const svc = "echo-sts"
	pods, err := west.EnsureEchoHeadless(ctx, svc, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := east.EnsureNamespace(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := meshctl(ctx, t, west.Cluster, "export", "service", svc, "-n", kindbed.Namespace); err != nil {
		t.Fatal(err)
	}
	if err := exportReady(ctx, west, svc); err != nil {
		t.Error(err)
	}
	name := svc + "." + kindbed.Namespace + ".svc.clusterset.local"
	var out string
	deadline := time.Now().Add(2 * time.Minute)
	for {
		// every pod's address, once both endpoints are imported
		out, err = east.RunCheck(ctx, plainWorker, "-wait", "60s", "-interval", "500ms", "dns", name)
		missing := 0
		for _, p := range pods {
			if !strings.Contains(out, p.Status.PodIP) {
				missing++
			}
		}
		if err == nil && missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s in east answered %q (%v), want every pod of %v", name, out, err, podIPs(pods))
		}
		time.Sleep(2 * time.Second)
	}
	for _, p := range pods {
		host := fmt.Sprintf("%s.%s.%s", p.Name, west.id, name)
		out, err := east.RunCheck(ctx, plainWorker, "-wait", "60s", "dns", host)
		if err != nil {
			t.Errorf("%s: %v", host, err)
			continue
		}
		if strings.TrimSpace(out) != p.Status.PodIP {
			t.Errorf("%s answered %q, want only %s", host, strings.TrimSpace(out), p.Status.PodIP)
		}
		r, err := east.GetEcho(ctx, plainWorker, fmt.Sprintf("http://%s:%d/", host, kindbed.EchoPort))
		if err != nil {
			t.Errorf("GET by %s: %v", host, err)
			continue
		}
		if r.PodIP != p.Status.PodIP {
			t.Errorf("GET by %s answered by %s, want %s", host, r.PodIP, p.Status.PodIP)
		}
		checkClient(t, east, plainWorker, r)
	}
	if _, err := meshctl(ctx, t, west.Cluster, "unexport", "service", svc, "-n", kindbed.Namespace); err != nil {
		t.Fatal(err)
	}
	unexported := time.Now()
	for {
		ok, err := hasImport(ctx, east, svc)
		if err == nil && !ok {
			break
		}
		if time.Since(unexported) > 2*time.Minute {
			t.Fatalf("ServiceImport %s still in east 2 minutes after unexport (%v)", svc, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	logf("headless %s: unexported, its ServiceImport left east after %s", svc, time.Since(unexported).Round(time.Millisecond))
}

func podIPs(pods []corev1.Pod) []string {
	var ips []string
	for _, p := range pods {
		ips = append(ips, p.Status.PodIP)
	}
	return ips
}

// testDiagnoseVerify: `meshctl diagnose` passes in both clusters and
// `meshctl verify` (its own server, client and export) passes both ways.
func testDiagnoseVerify(ctx context.Context, t *testing.T, east, west meshCluster) {
	for _, c := range []meshCluster{east, west} {
		if _, err := meshctl(ctx, t, c.Cluster, "diagnose"); err != nil {
			t.Errorf("diagnose %s: %v", c.id, err)
		}
	}
	for _, pair := range [][2]meshCluster{{east, west}, {west, east}} {
		server, client := pair[0], pair[1]
		start := time.Now()
		if _, err := meshctl(ctx, t, server.Cluster, "verify", "--to-kubeconfig", client.Kubeconfig, "--timeout", "3m"); err != nil {
			t.Errorf("verify server in %s, client in %s: %v", server.id, client.id, err)
			continue
		}
		logf("meshctl verify (server in %s, client in %s) passed in %s", server.id, client.id, time.Since(start).Round(time.Millisecond))
	}
}

// testBenchmark: meshctl benchmark runs between the linked clusters (server
// in east, clients on west's gateway and non-gateway nodes) and its figures
// are printed with the run's.
func testBenchmark(ctx context.Context, t *testing.T, east, west meshCluster) {
	for _, kind := range [][]string{{"throughput", "--duration", "3s"}, {"latency", "--samples", "300"}} {
		args := append([]string{"benchmark"}, kind...)
		out, err := meshctl(ctx, t, east.Cluster, append(args, "--to-kubeconfig", west.Kubeconfig)...)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		logf("meshctl benchmark %s (server in east, clients in west):\n%s", kind[0], out)
	}
}

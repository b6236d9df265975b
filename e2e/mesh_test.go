//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	"github.com/tunnelmesh/tunnelmesh/pkg/kindbed"
)

// meshCluster is a test-bed cluster with its clusterset identity.
type meshCluster struct {
	*kindbed.Cluster
	id      string
	podCIDR netip.Prefix
}

func meshClusters() (east, west meshCluster) {
	e, w := env.Cluster("tm-east"), env.Cluster("tm-west")
	return meshCluster{e, "east", netip.MustParsePrefix(e.Spec.PodSubnet)},
		meshCluster{w, "west", netip.MustParsePrefix(w.Spec.PodSubnet)}
}

// meshctl runs the meshctl binary (MESHCTL, built by `make e2e`) against c,
// exactly as README's walkthrough does, and returns its output.
func meshctl(ctx context.Context, t *testing.T, c *kindbed.Cluster, args ...string) (string, error) {
	t.Helper()
	bin := os.Getenv("MESHCTL")
	if bin == "" {
		bin = "../bin/meshctl"
	}
	args = append(args, "--kubeconfig", c.Kubeconfig)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = env.WorkDir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("meshctl %s (%s, %s):\n%s", strings.Join(args, " "), c.Spec.Name, time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		return out.String(), fmt.Errorf("meshctl %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), nil
}

// activeGateway reads the cluster's MeshGateway.
func activeGateway(ctx context.Context, c meshCluster) (*status.MeshGateway, error) {
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	return status.Get(ctx, dyn, defaults.Namespace, c.id)
}

// echoPodOn returns the IP of the echo pod on node.
func echoPodOn(ctx context.Context, c *kindbed.Cluster, node string) (string, error) {
	pods, err := c.EnsureEcho(ctx)
	if err != nil {
		return "", err
	}
	for _, p := range pods {
		if p.Spec.NodeName == node {
			return p.Status.PodIP, nil
		}
	}
	return "", fmt.Errorf("%s: no echo pod on %s", c.Spec.Name, node)
}

// TestMesh is the mission as a user runs it: a broker deployed into east,
// both clusters joined with meshctl, then traffic and names across them,
// failovers, a broker outage, leave and uninstall. Subtests depend on the
// join, so a failed join ends the test; leave and uninstall come last.
func TestMesh(t *testing.T) {
	ctx := testCtx(t, 35*time.Minute)
	east, west := meshClusters()
	info := filepath.Join(env.WorkDir, "broker-info.json")
	gatherOnFailure(t, east, west)
	// The uninstall at the end removes the gateway labels the test bed
	// gave; put them back for the next run on kept clusters.
	t.Cleanup(func() {
		for _, c := range []meshCluster{east, west} {
			if err := c.RestoreLabels(context.Background()); err != nil {
				t.Log(err)
			}
		}
	})

	// The first cross-cluster packet is timed from west's join by a
	// client in east that probes a west pod until it answers.
	for _, c := range []meshCluster{east, west} {
		if _, err := c.EnsureEcho(ctx); err != nil {
			t.Fatal(err)
		}
	}
	firstDst, err := echoPodOn(ctx, west.Cluster, "tm-west-control-plane")
	if err != nil {
		t.Fatal(err)
	}

	// What users had before tunnelmesh came: uninstall must leave it.
	before := map[string]userState{}
	for _, c := range []meshCluster{east, west} {
		st, err := recordUserState(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		before[c.id] = st
	}
	if _, err := meshctl(ctx, t, east.Cluster, "deploy-broker", "-f", info); err != nil {
		t.Fatal(err)
	}
	var joinWest time.Time
	type probe struct {
		run kindbed.ClientRun
		err error
	}
	first := make(chan probe, 1)
	for _, c := range []meshCluster{east, west} {
		if c.id == "west" {
			go func() {
				r, err := east.RunClient(ctx, kindbed.Namespace, plainWorker, "-stamp", "-wait", "5m", "-timeout", "300ms", "-interval", "100ms",
					"udp", fmt.Sprintf("%s:%d", firstDst, kindbed.EchoPort))
				first <- probe{r, err}
			}()
		}
		start := time.Now()
		if c.id == "west" {
			joinWest = start
		}
		if _, err := meshctl(ctx, t, c.Cluster, "join", info, "--cluster-id", c.id, "--timeout", "4m"); err != nil {
			t.Fatal(err)
		}
		logf("join %s took %s", c.id, time.Since(start).Round(time.Millisecond))
	}
	// The second join returns once west's gateway is up; wait until both
	// sides report the tunnel.
	start := time.Now()
	for _, c := range []meshCluster{east, west} {
		var last string
		for {
			m, err := activeGateway(ctx, c)
			if err == nil && m.Status.Total == 1 && m.Status.Connected == 1 {
				break
			}
			if err != nil {
				last = err.Error()
			} else {
				last = fmt.Sprintf("active %q, %d/%d connected", m.Status.ActiveNode, m.Status.Connected, m.Status.Total)
			}
			if ctx.Err() != nil || time.Since(start) > 3*time.Minute {
				t.Fatalf("%s: tunnel not up after %s: %s", c.id, time.Since(start).Round(time.Second), last)
			}
			time.Sleep(time.Second)
		}
	}
	logf("tunnels up in both clusters %s after the last join returned", time.Since(start).Round(time.Millisecond))
	p := <-first
	if p.err != nil {
		t.Fatalf("first cross-cluster packet: %v", p.err)
	}
	var at int64
	if _, err := fmt.Sscanf(p.run.Output, "at %d", &at); err != nil {
		t.Fatalf("first-packet probe output %q: %v", p.run.Output, err)
	}
	firstPacket := time.UnixMilli(at)
	msg := fmt.Sprintf("`meshctl join` (west, the second member) → first cross-cluster packet (east plain worker → west pod, UDP): %s",
		firstPacket.Sub(joinWest).Round(time.Millisecond))
	if started, node, err := gatewayStarted(ctx, west); err == nil {
		msg += fmt.Sprintf("; %s after west's active gateway container (%s) started", firstPacket.Sub(started).Round(time.Second), node)
	}
	hold("%s", msg)

	// Each subtest gathers logs when it fails, before later ones change
	// the clusters.
	sub := func(name string, f func(context.Context, *testing.T, meshCluster, meshCluster)) {
		t.Run(name, func(t *testing.T) {
			gatherOnFailure(t, east, west)
			f(ctx, t, east, west)
		})
	}
	sub("PodToPod", testPodToPod)
	sub("UDPAndLargePayloads", testUDPAndLargePayloads)
	sub("ServiceClusterIP", testServiceClusterIP)
	sub("ServiceExport", testServiceExport)
	sub("HeadlessExport", testHeadlessExport)
	sub("ServiceLocality", testServiceLocality)
	sub("Show", testShow)
	sub("DiagnoseVerify", testDiagnoseVerify)
	sub("Benchmark", testBenchmark)
	sub("FailoverPodDeleteGraceful", testFailover)
	sub("FailoverNodeStopGraceful", testNodeStopFailover)
	sub("Crash", testCrashes)
	sub("BrokerOutage", testBrokerOutage)
	sub("DeadCluster", testDeadCluster)
	sub("OverlappingCIDRs", testOverlappingCIDRs)
	sub("Leave", testLeave)
	sub("Uninstall", func(ctx context.Context, t *testing.T, east, west meshCluster) {
		testUninstall(ctx, t, before, west, east)
	})
}

// testShow: meshctl's views of the linked clusters succeed.
func testShow(ctx context.Context, t *testing.T, east, _ meshCluster) {
	for _, args := range [][]string{{"show", "all"}, {"show", "graph"}, {"show", "connections", "-o", "json"}} {
		if _, err := meshctl(ctx, t, east.Cluster, args...); err != nil {
			t.Error(err)
		}
	}
}

// gatewayStarted returns when the container of c's active gateway pod
// started running (second precision, the API's).
func gatewayStarted(ctx context.Context, c meshCluster) (time.Time, string, error) {
	m, err := activeGateway(ctx, c)
	if err != nil {
		return time.Time{}, "", err
	}
	pods, err := c.Client.CoreV1().Pods(defaults.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/component=gateway", FieldSelector: "spec.nodeName=" + m.Status.ActiveNode})
	if err != nil || len(pods.Items) == 0 {
		return time.Time{}, "", fmt.Errorf("gateway pod on %s: %v", m.Status.ActiveNode, err)
	}
	for _, cs := range pods.Items[0].Status.ContainerStatuses {
		if cs.State.Running != nil {
			return cs.State.Running.StartedAt.Time, m.Status.ActiveNode, nil
		}
	}
	return time.Time{}, "", fmt.Errorf("gateway pod on %s not running", m.Status.ActiveNode)
}

// testPodToPod: from every node of each cluster (active gateway, standby,
// plain workers, control plane) to an echo pod on the other cluster's
// gateway node and on a non-gateway node; the server sees the client's pod
// address (no NAT on the way).
func testPodToPod(ctx context.Context, t *testing.T, east, west meshCluster) {
	for _, pair := range [][2]meshCluster{{east, west}, {west, east}} {
		from, to := pair[0], pair[1]
		srcNodes, err := from.NodeNames(ctx)
		if err != nil {
			t.Fatal(err)
		}
		dstNodes, err := to.NodeNames(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var targets []string
		for _, n := range dstNodes {
			ip, err := echoPodOn(ctx, to.Cluster, n)
			if err != nil {
				t.Fatal(err)
			}
			targets = append(targets, ip)
		}
		var wg sync.WaitGroup
		for _, src := range srcNodes {
			for _, dst := range targets {
				wg.Add(1)
				go func() {
					defer wg.Done()
					url := fmt.Sprintf("http://%s:%d/", dst, kindbed.EchoPort)
					r, err := from.GetEcho(ctx, src, url)
					if err != nil {
						t.Errorf("%s/%s → %s: %v", from.id, src, url, err)
						return
					}
					checkClient(t, from, src, r)
					if r.PodIP != dst {
						t.Errorf("%s/%s → %s answered by %s", from.id, src, dst, r.PodIP)
					}
				}()
			}
		}
		wg.Wait()
	}
}

// checkClient fails unless the echo server saw a pod address of from.
func checkClient(t *testing.T, from meshCluster, node string, r kindbed.EchoReply) {
	t.Helper()
	ap, err := netip.ParseAddrPort(r.Client)
	if err != nil {
		t.Errorf("%s/%s: echo reply client %q: %v", from.id, node, r.Client, err)
		return
	}
	if !from.podCIDR.Contains(ap.Addr()) {
		t.Errorf("%s/%s: the server saw client %s, not a pod address of %s (%s): the source was translated", from.id, node, ap.Addr(), from.id, from.podCIDR)
	}
}

// testServiceClusterIP: a pod reaches the other cluster's Service by its
// ClusterIP over TCP and UDP (service CIDRs are routed through the tunnel).
func testServiceClusterIP(ctx context.Context, t *testing.T, east, west meshCluster) {
	for _, pair := range [][2]meshCluster{{east, west}, {west, east}} {
		from, to := pair[0], pair[1]
		if _, err := to.EnsureEcho(ctx); err != nil {
			t.Fatal(err)
		}
		svc, err := to.Client.CoreV1().Services(kindbed.Namespace).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		nodes, err := from.NodeNames(ctx)
		if err != nil {
			t.Fatal(err)
		}
		url := fmt.Sprintf("http://%s:%d/", svc.Spec.ClusterIP, kindbed.EchoPort)
		r, err := from.GetEcho(ctx, nodes[len(nodes)-1], url)
		if err != nil {
			t.Errorf("%s → %s Service %s: %v", from.id, to.id, url, err)
			continue
		}
		if r.Cluster != to.Spec.Name {
			t.Errorf("%s → %s: answered by cluster %q", from.id, url, r.Cluster)
		}
		checkClient(t, from, nodes[len(nodes)-1], r)
		// UDP through the same Service (kube-proxy's UDP rules, then the tunnel)
		addr := fmt.Sprintf("%s:%d", svc.Spec.ClusterIP, kindbed.EchoPort)
		out, err := from.RunCheck(ctx, nodes[len(nodes)-1], "-wait", "30s", "-timeout", "2s", "udp", addr)
		if err != nil {
			t.Errorf("UDP %s → %s Service %s: %v", from.id, to.id, addr, err)
			continue
		}
		if r, err := kindbed.ParseEcho(out); err != nil {
			t.Error(err)
		} else if r.Cluster != to.Spec.Name {
			t.Errorf("UDP %s → %s: answered by cluster %q", from.id, addr, r.Cluster)
		} else {
			checkClient(t, from, nodes[len(nodes)-1], r)
		}
	}
}

// testServiceExport: the echo Service exported from west resolves under
// clusterset.local in east and answers; exported from both, requests land
// in both clusters; unexported from west, only east answers.
func testServiceExport(ctx context.Context, t *testing.T, east, west meshCluster) {
	name := "echo." + kindbed.Namespace + ".svc.clusterset.local"
	start := time.Now()
	if _, err := meshctl(ctx, t, west.Cluster, "export", "service", "echo", "-n", kindbed.Namespace); err != nil {
		t.Fatal(err)
	}
	nodes, err := east.NodeNames(ctx)
	if err != nil {
		t.Fatal(err)
	}
	client := nodes[len(nodes)-1]
	// CoreDNS reloads the Corefile join edited within its reload interval.
	out, err := east.RunCheck(ctx, client, "-wait", "150s", "dns", name)
	if err != nil {
		t.Fatalf("%s does not resolve in east: %v", name, err)
	}
	hold("`meshctl export` → DNS answer in the other cluster: %s (%s; CoreDNS reloads the Corefile join edited within its reload interval, and this is the first lookup)", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	url := fmt.Sprintf("http://%s:%d/", name, kindbed.EchoPort)
	r, err := east.GetEcho(ctx, client, url)
	if err != nil {
		t.Fatalf("east → %s: %v", url, err)
	}
	if r.Cluster != west.Spec.Name {
		t.Errorf("east → %s answered by %q, want %s", url, r.Cluster, west.Spec.Name)
	}

	// Exported from both clusters: kube-proxy spreads over both.
	if _, err := meshctl(ctx, t, east.Cluster, "export", "service", "echo", "-n", kindbed.Namespace); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	deadline := time.Now().Add(2 * time.Minute)
	for len(seen) < 2 && time.Now().Before(deadline) {
		out, err := east.RunCheck(ctx, client, "-wait", "30s", "-count", "20", "http", url)
		if err != nil {
			t.Fatalf("east → %s: %v", url, err)
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			for _, c := range []string{east.Spec.Name, west.Spec.Name} {
				if strings.Contains(line, `"cluster":"`+c+`"`) {
					seen[c]++
				}
			}
		}
	}
	if len(seen) < 2 {
		t.Errorf("exported from both clusters, requests landed only in %v", seen)
	}

	for _, c := range []meshCluster{west, east} {
		if _, err := meshctl(ctx, t, c.Cluster, "unexport", "service", "echo", "-n", kindbed.Namespace); err != nil {
			t.Error(err)
		}
	}
}

// podFailover is what failoverByPodDelete saw.
type podFailover struct {
	old, newActive string
	toActive       time.Duration // from the delete to the new active
	killed         time.Time
	rep            flowReport
}

// failoverByPodDelete deletes c's active gateway pod with grace period 0
// while a flow (every 100 ms, 30 s) runs from a pod on node to addr, and
// waits for a new active gateway and the flow's end.
func failoverByPodDelete(ctx context.Context, t *testing.T, c meshCluster, node, addr string) podFailover {
	t.Helper()
	m, err := activeGateway(ctx, c)
	if err != nil || m.Status.ActiveNode == "" {
		t.Fatalf("no active gateway in %s: %v", c.id, err)
	}
	old, oldEpoch := m.Status.ActiveNode, m.Status.Epoch
	pods, err := c.Client.CoreV1().Pods(defaults.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/component=gateway", FieldSelector: "spec.nodeName=" + old})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("gateway pod on %s: %v (%d found)", old, err, len(pods.Items))
	}
	f := startFlow(ctx, c.Cluster, node, addr, 30*time.Second, 100*time.Millisecond)
	if err := waitFlowRunning(ctx, c.Cluster, f); err != nil {
		t.Fatal(err)
	}
	zero := int64(0)
	killed := time.Now()
	if err := c.Client.CoreV1().Pods(defaults.Namespace).Delete(ctx, pods.Items[0].Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	newActive, toActive := waitNewActive(ctx, t, c, old, oldEpoch, killed, false)
	rep, err := f.wait()
	if err != nil {
		t.Fatal(err)
	}
	return podFailover{old: old, newActive: newActive, toActive: toActive, killed: killed, rep: rep}
}

// testFailover deletes east's active gateway pod with grace period 0 while
// a UDP flow runs from east's plain worker to a west pod, and times until a
// standby is active and the flow moves again; then a new request from the
// plain worker keeps its pod address. This is a graceful handover, not a
// crash: the kubelet still sends SIGTERM, so the gateway tears its data
// plane down and releases the Lease (testCrashes has the crashes).
func testFailover(ctx context.Context, t *testing.T, east, west meshCluster) {
	dst, err := echoPodOn(ctx, west.Cluster, "tm-west-control-plane")
	if err != nil {
		t.Fatal(err)
	}
	fo := failoverByPodDelete(ctx, t, east, plainWorker, fmt.Sprintf("%s:%d", dst, kindbed.EchoPort))
	hold("graceful failover, active gateway pod deleted with grace 0 (SIGTERM: the Lease is handed over) (%s → %s): new active %s after the delete; %s; %d/%d probes (every 100 ms) answered; gaps: %s",
		fo.old, fo.newActive, fo.toActive.Round(time.Millisecond), flowOutage(fo.rep, fo.killed, fo.killed.Add(fo.toActive)), fo.rep.OK, fo.rep.Sent, fo.rep.gapsSince(fo.killed))
	checkFailoverGaps(t, fo.rep, fo.killed)
	url := fmt.Sprintf("http://%s:%d/", dst, kindbed.EchoPort)
	r, err := east.GetEcho(ctx, plainWorker, url)
	if err != nil {
		t.Fatalf("after failover to %s: %v", fo.newActive, err)
	}
	checkClient(t, east, plainWorker, r)
	// The killed pod's replacement must be a ready standby again before
	// the next failover test.
	if err := waitConverged(ctx, east, west, plainWorker); err != nil {
		t.Fatal(err)
	}
}

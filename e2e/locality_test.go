//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/tunnelmesh/tunnelmesh/pkg/export"
	"github.com/tunnelmesh/tunnelmesh/pkg/kindbed"
)

// importState is what c's import of name holds: its ClusterSetIP and, per
// source cluster, the ready endpoints and the withheld reason ("" when used).
type importState struct {
	ip       string
	ready    map[string]int
	withheld map[string]string
}

func (s importState) String() string {
	return fmt.Sprintf("ip %q ready %v withheld %v", s.ip, s.ready, s.withheld)
}

func readImport(ctx context.Context, c meshCluster, name string) (importState, error) {
	st := importState{ready: map[string]int{}, withheld: map[string]string{}}
	mc, err := mcsclient.NewForConfig(c.Config)
	if err != nil {
		return st, err
	}
	si, err := mc.MulticlusterV1beta1().ServiceImports(kindbed.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return st, err
	}
	if len(si.Spec.IPs) > 0 {
		st.ip = si.Spec.IPs[0]
	}
	sl, err := c.Client.DiscoveryV1().EndpointSlices(kindbed.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: mcsv1beta1.LabelServiceName + "=" + name + "," + discoveryv1.LabelManagedBy + "=" + export.ManagedBy})
	if err != nil {
		return st, err
	}
	for _, s := range sl.Items {
		src := s.Labels[mcsv1beta1.LabelSourceCluster]
		st.withheld[src] = s.Labels[export.LabelWithheld]
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && *e.Conditions.Ready {
				st.ready[src]++
			}
		}
	}
	return st, nil
}

// waitImport polls c's import of name until ok, returning how long it took.
func waitImport(ctx context.Context, c meshCluster, name string, limit time.Duration, ok func(importState) bool) (importState, time.Duration, error) {
	start := time.Now()
	var st importState
	var err error
	for time.Since(start) < limit && ctx.Err() == nil {
		if st, err = readImport(ctx, c, name); err == nil && ok(st) {
			return st, time.Since(start), nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return st, time.Since(start), fmt.Errorf("%s: import %s not as wanted after %s: %v (%v)", c.id, name, limit, st, err)
}

// answeredBy returns who answered the flow's probes between from and to:
// the clusters seen, in order of their first answer.
func (r flowReport) answeredBy(from, to time.Time) []string {
	var out []string
	for i, a := range r.Answers {
		end := r.EndMs
		if i+1 < len(r.Answers) {
			end = r.Answers[i+1].AtMs
		}
		if end < from.UnixMilli() || a.AtMs > to.UnixMilli() {
			continue
		}
		if !slices.Contains(out, a.Cluster) {
			out = append(out, a.Cluster)
		}
	}
	return out
}

// firstAnswer returns when cluster first answered at or after since, and
// whether it did.
func (r flowReport) firstAnswer(cluster string, since time.Time) (time.Time, bool) {
	for _, a := range r.Answers {
		if a.Cluster == cluster && a.AtMs >= since.UnixMilli() {
			return time.UnixMilli(a.AtMs), true
		}
	}
	return time.Time{}, false
}

// lastAnswer returns when, at or after since, cluster last answered (the
// start of the next answer by another cluster, or the flow's end; zero
// when it did not answer after since).
func (r flowReport) lastAnswer(cluster string, since time.Time) time.Time {
	var last time.Time
	for i, a := range r.Answers {
		if a.Cluster != cluster {
			continue
		}
		end := time.UnixMilli(r.EndMs)
		if i+1 < len(r.Answers) {
			end = time.UnixMilli(r.Answers[i+1].AtMs)
		}
		if end.After(since) && end.After(last) {
			last = end
		}
	}
	return last
}

// outageEnd returns when the last probe of the run of losses that began
// after since was sent: a run ends where no loss follows within quiet (a
// stray loss later, on a busy machine, is not the outage). Zero: no loss.
func (r flowReport) outageEnd(since time.Time, quiet time.Duration) time.Time {
	var last time.Time
	for _, ms := range r.LostMs {
		t := time.UnixMilli(ms)
		if !t.After(since) {
			continue
		}
		if !last.IsZero() && t.Sub(last) > quiet {
			break
		}
		last = t
	}
	return last
}

func (r flowReport) lostBetween(from, to time.Time) int {
	n := 0
	for _, ms := range r.LostMs {
		if ms >= from.UnixMilli() && ms <= to.UnixMilli() {
			n++
		}
	}
	return n
}

// testServiceLocality: a Service exported from both clusters with
// trafficDistribution PreferClose. East's clients are answered by east
// only; with east's Deployment scaled to 0 they are answered by west, and
// by east again once it has a ready pod. The spill and the return are
// timed from the traffic (a UDP probe every 100 ms to the ClusterSetIP).
func testServiceLocality(ctx context.Context, t *testing.T, east, west meshCluster) {
	const name = "near"
	for _, c := range []meshCluster{east, west} {
		if _, err := c.EnsureEchoApp(ctx, kindbed.Namespace, name, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Client.CoreV1().Services(kindbed.Namespace).Patch(ctx, name, types.MergePatchType,
			[]byte(`{"spec":{"trafficDistribution":"PreferClose"}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := meshctl(ctx, t, c.Cluster, "export", "service", name, "-n", kindbed.Namespace); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, c := range []meshCluster{east, west} {
			_, _ = meshctlQuiet(context.Background(), c.Cluster, "unexport", "service", name, "-n", kindbed.Namespace)
			_ = c.Client.AppsV1().Deployments(kindbed.Namespace).Delete(context.Background(), name, metav1.DeleteOptions{})
			_ = c.Client.CoreV1().Services(kindbed.Namespace).Delete(context.Background(), name, metav1.DeleteOptions{})
		}
	})
	local := func(st importState) bool {
		return st.ip != "" && st.ready["east"] > 0 && st.withheld["east"] == "" && st.withheld["west"] == export.WithheldLocalFirst
	}
	st, _, err := waitImport(ctx, east, name, 2*time.Minute, local)
	if err != nil {
		t.Fatal(err)
	}
	scale := func(n int32) time.Time {
		t.Helper()
		at := time.Now()
		if _, err := east.Client.AppsV1().Deployments(kindbed.Namespace).Patch(ctx, name, types.MergePatchType,
			fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, n), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		return at
	}

	f := startFlow(ctx, east.Cluster, plainWorker, fmt.Sprintf("%s:%d", st.ip, kindbed.EchoPort), 45*time.Second, 100*time.Millisecond)
	if err := waitFlowRunning(ctx, east.Cluster, f); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	down := scale(0)
	if _, _, err := waitImport(ctx, east, name, time.Minute, func(st importState) bool {
		return st.ready["east"] == 0 && st.ready["west"] > 0 && st.withheld["west"] == ""
	}); err != nil {
		t.Error(err)
	}
	spilledAPI := time.Since(down)
	time.Sleep(3 * time.Second)
	up := scale(1)
	if _, _, err := waitImport(ctx, east, name, 2*time.Minute, local); err != nil {
		t.Error(err)
	}
	rep, err := f.wait()
	if err != nil {
		t.Fatal(err)
	}
	before := rep.answeredBy(time.UnixMilli(rep.StartMs), down)
	spilled, ok := rep.firstAnswer(west.Spec.Name, down)
	back := rep.lastAnswer(west.Spec.Name, up)
	if back.IsZero() {
		back = up
	}
	hold("same cluster first (PreferClose, exported from both): before, east's requests answered by %v; east scaled to 0 → answered by west after %s (%d probes lost meanwhile; west's endpoints in east's import after %s); east back to 1 replica → answered by east only again after %s; %d/%d probes answered",
		before, spilled.Sub(down).Round(time.Millisecond), rep.lostBetween(down, spilled), spilledAPI.Round(time.Millisecond), back.Sub(up).Round(time.Millisecond), rep.OK, rep.Sent)
	if !slices.Equal(before, []string{east.Spec.Name}) {
		t.Errorf("with a ready pod in east, east's requests were answered by %v; want east only", before)
	}
	if !ok {
		t.Errorf("east scaled to 0: no request answered by west afterwards (answers %v, lost %d)", rep.Answers, len(rep.LostMs))
	}
	if after := rep.answeredBy(back.Add(time.Millisecond), time.UnixMilli(rep.EndMs)); !slices.Equal(after, []string{east.Spec.Name}) {
		t.Errorf("east back to 1 replica: requests answered by %v at the end; want east only", after)
	}
}

// testDeadCluster: the echo Service exported from both clusters (no
// preference: spread over both). Every gateway candidate of west is killed
// (SIGKILL of the node containers): east's clients stop being sent to west
// — east's active gateway finds the tunnel down, east's controller
// withholds west's endpoints, kube-proxy drops them — timed from the kill
// by the API (slices withheld) and by the traffic (the last probe lost or
// answered by west). The nodes come back and west's endpoints with them.
func testDeadCluster(ctx context.Context, t *testing.T, east, west meshCluster) {
	const name = "echo"
	for _, c := range []meshCluster{east, west} {
		if _, err := meshctl(ctx, t, c.Cluster, "export", "service", name, "-n", kindbed.Namespace); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, c := range []meshCluster{east, west} {
			_, _ = meshctlQuiet(context.Background(), c.Cluster, "unexport", "service", name, "-n", kindbed.Namespace)
		}
	})
	both := func(st importState) bool {
		return st.ip != "" && st.ready["east"] > 0 && st.ready["west"] > 0 && st.withheld["west"] == ""
	}
	st, _, err := waitImport(ctx, east, name, 2*time.Minute, both)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := west.GatewayNodes(ctx)
	if err != nil || len(pool) == 0 {
		t.Fatalf("west's gateway candidates: %v %v", pool, err)
	}

	f := startFlow(ctx, east.Cluster, plainWorker, fmt.Sprintf("%s:%d", st.ip, kindbed.EchoPort), 30*time.Second, 100*time.Millisecond)
	if err := waitFlowRunning(ctx, east.Cluster, f); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	killed := time.Now()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			for _, n := range pool {
				_, _ = docker(context.Background(), "start", n)
			}
		}
	})
	for _, n := range pool {
		if _, err := docker(ctx, "kill", n); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err = waitImport(ctx, east, name, time.Minute, func(st importState) bool {
		return st.withheld["west"] == export.WithheldTunnelDown && st.ready["west"] == 0
	})
	withheldAfter := time.Since(killed) // from before `docker kill` (which takes a while) began
	if err != nil {
		t.Error(err)
	}
	rep, err := f.wait()
	if err != nil {
		t.Fatal(err)
	}
	before := rep.answeredBy(killed.Add(-3*time.Second), killed)
	last := rep.outageEnd(killed, 2*time.Second)
	if w := rep.lastAnswer(west.Spec.Name, killed); w.After(last) {
		last = w
	}
	stopped := "no probe lost or sent to west after the kill"
	if !last.IsZero() {
		stopped = fmt.Sprintf("east's clients stopped being sent to west %s after the kill (the last probe of the outage lost; %d lost later, stray)",
			last.Sub(killed).Round(time.Millisecond), rep.lostBetween(last.Add(time.Millisecond), time.UnixMilli(rep.EndMs)))
	} else {
		last = killed
	}
	hold("dead cluster (every gateway candidate of west, %s, killed): west's endpoints withheld in east's import %s after the kill; %s (%d probes lost); %d/%d probes answered; before the kill answered by %v",
		strings.Join(pool, ","), withheldAfter.Round(time.Millisecond), stopped, len(rep.LostMs), rep.OK, rep.Sent, before)
	if len(before) != 2 {
		t.Errorf("before the kill, east's requests were answered by %v; want both clusters (no preference)", before)
	}
	if tail := rep.answeredBy(last.Add(time.Millisecond), time.UnixMilli(rep.EndMs)); !slices.Equal(tail, []string{east.Spec.Name}) {
		t.Errorf("after the kill, requests ended answered by %v; want east only", tail)
	}

	startedAt := time.Now()
	for _, n := range pool {
		if _, err := docker(ctx, "start", n); err != nil {
			t.Fatal(err)
		}
	}
	restarted = true
	if err := waitConverged(ctx, east, west, plainWorker); err != nil {
		t.Fatalf("after restarting %v: %v", pool, err)
	}
	if _, _, err := waitImport(ctx, east, name, 2*time.Minute, both); err != nil {
		t.Fatal(err)
	}
	logf("west's gateway pool restarted; mesh converged and west's endpoints back in east %s later", time.Since(startedAt).Round(time.Second))
}

//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/export"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/discovery"
	"github.com/tunnelmesh/tunnelmesh/pkg/kindbed"
)

// northSpec is a cluster made as `kind create cluster` makes one: one node,
// no subnets given (kind's defaults, pod 10.244.0.0/16 and service
// 10.96.0.0/16: east's CIDRs) and no labels (join picks the gateway node).
var northSpec = kindbed.ClusterSpec{Name: "tm-north", Nodes: []map[string]string{nil}}

// testOverlappingCIDRs: a third cluster made with kind's defaults — the
// same pod and service CIDRs as east — joins the running mesh with
// meshctl. The broker translates it and, live, east; west keeps its real
// addresses. Then, between every pair, a pod reaches a pod at its mesh
// address and the server sees the very pod that called at that pod's mesh
// address (mapped where its cluster is translated); a ClusterIP and a
// headless Service exported from the new cluster resolve under
// clusterset.local in east to mapped addresses and answer; meshctl verify
// and meshctl benchmark run between the two translated clusters. The new
// cluster leaves and is deleted; east and west go on.
func testOverlappingCIDRs(ctx context.Context, t *testing.T, east, west meshCluster) {
	start := time.Now()
	nc, err := env.AddCluster(ctx, northSpec)
	// registered before the log gathering below, so it runs after it
	t.Cleanup(func() {
		if nc == nil || !slices.Contains(env.Clusters, nc) {
			return
		}
		if os.Getenv("E2E_KEEP") == "1" && t.Failed() {
			logf("E2E_KEEP=1: %s kept (kubeconfig %s)", northSpec.Name, nc.Kubeconfig)
			return
		}
		if err := env.RemoveCluster(nc); err != nil {
			t.Log(err)
		}
	})
	north := meshCluster{nc, "north", netip.Prefix{}}
	if nc != nil && nc.Client != nil {
		gatherOnFailure(t, east, west, north)
	}
	if err != nil {
		t.Fatal(err)
	}
	nPod, nSvc, err := kubeadmSubnets(ctx, north)
	if err != nil {
		t.Fatal(err)
	}
	ePod, eSvc, err := kubeadmSubnets(ctx, east)
	if err != nil {
		t.Fatal(err)
	}
	if nPod != ePod || nSvc != eSvc {
		t.Fatalf("north was made with pod %s, service %s; east has pod %s, service %s: no overlap to test", nPod, nSvc, ePod, eSvc)
	}
	north.podCIDR = netip.MustParsePrefix(nPod)
	if _, err := north.EnsureEcho(ctx); err != nil {
		t.Fatal(err)
	}
	logf("north (kind's defaults: pod %s, service %s, as east's) ready %s after creation began", nPod, nSvc, time.Since(start).Round(time.Second))

	all := []meshCluster{east, west, north}
	info := filepath.Join(env.WorkDir, "broker-info.json")
	joined := time.Now()
	out, err := meshctl(ctx, t, north.Cluster, "join", info, "--cluster-id", north.id, "--timeout", "4m")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"overlap a member's", `Member "east" is translated too`} {
		if !strings.Contains(out, want) {
			t.Errorf("meshctl join of north did not say %q", want)
		}
	}
	if strings.Contains(out, `Member "west"`) {
		t.Errorf("meshctl join of north translated west, whose CIDRs overlap nobody's")
	}
	// Every active gateway reports both others; east and north are
	// translated (their MeshGateways carry the broker's record), west not.
	tr := map[string][]api.Translation{}
	var last string
	for {
		last = ""
		for _, c := range all {
			m, err := activeGateway(ctx, c)
			switch {
			case err != nil:
				last = fmt.Sprintf("%s: %v", c.id, err)
			case m.Status.Connected != 2 || m.Status.Total != 2:
				last = fmt.Sprintf("%s: %d/%d tunnels up", c.id, m.Status.Connected, m.Status.Total)
			case (c.id == "west") != (len(m.Status.Translations) == 0):
				last = fmt.Sprintf("%s: translations %s", c.id, api.DescribeTranslations(m.Status.Translations))
			default:
				tr[c.id] = m.Status.Translations
			}
			if last != "" {
				break
			}
		}
		if last == "" {
			break
		}
		if ctx.Err() != nil || time.Since(joined) > 4*time.Minute {
			t.Fatalf("4 minutes after north's join began: %s", last)
		}
		time.Sleep(time.Second)
	}
	for _, id := range []string{"east", "north"} {
		if mapped := (api.Cluster{Translations: tr[id]}).ToMesh(north.podCIDR.Addr()); !netip.MustParsePrefix("240.0.0.0/5").Contains(mapped) {
			t.Errorf("%s's pod CIDR %s is known as %s, outside the default mapped pool 240.0.0.0/5", id, north.podCIDR, mapped)
		}
	}
	hold("overlapping join: north (kind's defaults, the same CIDRs as east) joined a running mesh; every tunnel up %s after `meshctl join` began; east translated live (%s), north (%s), west untranslated",
		time.Since(joined).Round(time.Millisecond), api.DescribeTranslations(tr["east"]), api.DescribeTranslations(tr["north"]))
	out, err = meshctl(ctx, t, north.Cluster, "show", "clusters")
	if err != nil {
		t.Error(err)
	}
	for _, id := range []string{"east", "north"} {
		for _, x := range tr[id] {
			if !strings.Contains(out, x.Real+" as "+x.Mapped) {
				t.Errorf("meshctl show clusters does not show %s's %s as %s", id, x.Real, x.Mapped)
			}
		}
	}

	// pod → pod, every pair both ways, each server on a node that is no
	// gateway (north has one node)
	servers := map[string]string{"east": plainWorker, "west": "tm-west-control-plane", "north": "tm-north-control-plane"}
	clients := map[string]string{"east": plainWorker, "west": "tm-west-worker", "north": "tm-north-control-plane"}
	for _, from := range all {
		for _, to := range all {
			if from.id == to.id {
				continue
			}
			dst, err := echoPodOn(ctx, to.Cluster, servers[to.id])
			if err != nil {
				t.Fatal(err)
			}
			url := fmt.Sprintf("http://%s:%d/", meshAddr(tr, to.id, dst), kindbed.EchoPort)
			if line, err := getSeen(ctx, from, clients[from.id], url, tr, to.Spec.Name, dst); err != nil {
				t.Error(err)
			} else {
				logf("overlap: %s", line)
			}
		}
	}

	// A ClusterIP Service exported from north: east's import holds north's
	// mapped endpoint addresses, the clusterset name answers from north and
	// north's server sees east's client at its mapped address.
	const name = "echo"
	if _, err := meshctl(ctx, t, north.Cluster, "export", "service", name, "-n", kindbed.Namespace); err != nil {
		t.Fatal(err)
	}
	st, took, err := waitImport(ctx, east, name, 2*time.Minute, func(st importState) bool {
		return st.ip != "" && st.ready["north"] > 0 && st.ready["east"] == 0 && st.ready["west"] == 0
	})
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := importedAddrs(ctx, east, name, north.id)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if real := (api.Cluster{Translations: tr["north"]}).ToReal(netip.MustParseAddr(a)); real.String() == a || !north.podCIDR.Contains(real) {
			t.Errorf("east imports north's endpoint %s, not a mapped address of north's pods", a)
		}
	}
	logf("overlap: north's export of %s imported in east after %s, endpoints %v", name, took.Round(time.Millisecond), addrs)
	fqdn := name + "." + kindbed.Namespace + ".svc.clusterset.local"
	if _, err := east.RunCheck(ctx, plainWorker, "-wait", "60s", "dns", fqdn); err != nil {
		t.Fatalf("%s does not resolve in east: %v", fqdn, err)
	}
	if line, err := getSeen(ctx, east, plainWorker, fmt.Sprintf("http://%s:%d/", fqdn, kindbed.EchoPort), tr, north.Spec.Name, ""); err != nil {
		t.Error(err)
	} else {
		logf("overlap: ClusterIP import (ClusterSetIP %s): %s", st.ip, line)
	}

	// A headless Service exported from north: its names answer north's
	// pods' mapped addresses in east.
	const headless = "echo-sts"
	pods, err := north.EnsureEchoHeadless(ctx, headless, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := meshctl(ctx, t, north.Cluster, "export", "service", headless, "-n", kindbed.Namespace); err != nil {
		t.Fatal(err)
	}
	hfqdn := headless + "." + kindbed.Namespace + ".svc.clusterset.local"
	var mapped []string
	for _, p := range pods {
		mapped = append(mapped, meshAddr(tr, "north", p.Status.PodIP))
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err = east.RunCheck(ctx, plainWorker, "-wait", "60s", "-interval", "500ms", "dns", hfqdn)
		got := strings.Fields(out)
		slices.Sort(got)
		slices.Sort(mapped)
		if err == nil && slices.Equal(got, mapped) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s in east answered %q (%v); want north's pods' mapped addresses %v (pod IPs %v)", hfqdn, out, err, mapped, podIPs(pods))
		}
		time.Sleep(2 * time.Second)
	}
	p := pods[0]
	host := fmt.Sprintf("%s.%s.%s", p.Name, north.id, hfqdn)
	if line, err := getSeen(ctx, east, plainWorker, fmt.Sprintf("http://%s:%d/", host, kindbed.EchoPort), tr, north.Spec.Name, p.Status.PodIP); err != nil {
		t.Error(err)
	} else {
		logf("overlap: headless %s answers %v (north's pods %v): %s", hfqdn, mapped, podIPs(pods), line)
	}

	// meshctl's own end-to-end check between the two translated clusters.
	if _, err := meshctl(ctx, t, north.Cluster, "diagnose"); err != nil {
		t.Errorf("diagnose north: %v", err)
	}
	if _, err := meshctl(ctx, t, north.Cluster, "verify", "--to-kubeconfig", east.Kubeconfig, "--timeout", "3m"); err != nil {
		t.Errorf("verify, server in north, client in east (both translated): %v", err)
	}
	if out, err := meshctl(ctx, t, north.Cluster, "benchmark", "throughput", "--duration", "3s", "--to-kubeconfig", east.Kubeconfig); err != nil {
		t.Errorf("benchmark, server in north, clients in east (both translated): %v", err)
	} else {
		logf("meshctl benchmark throughput (server in north, clients in east; both translated):\n%s", out)
	}

	// east's active gateway goes (its pod deleted, as in testFailover)
	// while an east pod talks to a north pod: the standby takes over with
	// the translation already in hand, and afterwards both sides still see
	// each other's mapped addresses.
	testTranslatedFailover(ctx, t, east, north, tr, servers, clients)
	if t.Failed() {
		return
	}
	if err := awaitConverged(ctx, 4*time.Minute, all...); err != nil {
		t.Fatalf("after east's gateway failover: %v", err)
	}

	// north leaves; east and west go on (east keeps its mapped addresses
	// if the broker keeps its translation: read again, not assumed).
	if _, err := meshctl(ctx, t, north.Cluster, "leave"); err != nil {
		t.Fatal(err)
	}
	left := time.Now()
	if err := awaitConverged(ctx, 3*time.Minute, east, west); err != nil {
		t.Fatalf("after north left: %v", err)
	}
	m, err := activeGateway(ctx, east)
	if err != nil {
		t.Fatal(err)
	}
	tr["east"] = m.Status.Translations
	dst, err := echoPodOn(ctx, west.Cluster, servers["west"])
	if err != nil {
		t.Fatal(err)
	}
	if line, err := getSeen(ctx, east, plainWorker, fmt.Sprintf("http://%s:%d/", dst, kindbed.EchoPort), tr, west.Spec.Name, dst); err != nil {
		t.Error(err)
	} else {
		logf("overlap: north left (%s later east and west report only each other; east's translations now: %s): %s",
			time.Since(left).Round(time.Millisecond), api.DescribeTranslations(tr["east"]), line)
	}
	if err := env.RemoveCluster(nc); err != nil {
		t.Error(err)
	}
}

// testTranslatedFailover deletes translated east's active gateway pod
// (grace 0) while a flow runs from an east pod to a north pod at its
// mapped address: every packet of it is translated at east's gateway both
// ways, so the flow moves again only once the new active translates. The
// new active must report the same translations; then requests both ways
// show each client's mapped address.
func testTranslatedFailover(ctx context.Context, t *testing.T, east, north meshCluster, tr map[string][]api.Translation, servers, clients map[string]string) {
	dst, err := echoPodOn(ctx, north.Cluster, servers["north"])
	if err != nil {
		t.Fatal(err)
	}
	fo := failoverByPodDelete(ctx, t, east, clients["east"], fmt.Sprintf("%s:%d", meshAddr(tr, "north", dst), kindbed.EchoPort))
	checkFailoverGaps(t, fo.rep, fo.killed)
	m, err := activeGateway(ctx, east)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := api.DescribeTranslations(m.Status.Translations), api.DescribeTranslations(tr["east"]); got != want {
		t.Errorf("east's new active gateway %s translates %q; before the failover %q", m.Status.ActiveNode, got, want)
	}
	hold("translated failover: east (translated: %s) active gateway pod deleted with grace 0 (%s → %s): new active %s after the delete; east pod → north pod at its mapped address: %s; %d/%d probes (every 100 ms) answered",
		api.DescribeTranslations(tr["east"]), fo.old, fo.newActive, fo.toActive.Round(time.Millisecond), flowOutage(fo.rep, fo.killed, fo.killed.Add(fo.toActive)), fo.rep.OK, fo.rep.Sent)
	for _, pair := range [][2]meshCluster{{east, north}, {north, east}} {
		from, to := pair[0], pair[1]
		dst, err := echoPodOn(ctx, to.Cluster, servers[to.id])
		if err != nil {
			t.Fatal(err)
		}
		url := fmt.Sprintf("http://%s:%d/", meshAddr(tr, to.id, dst), kindbed.EchoPort)
		if line, err := getSeen(ctx, from, clients[from.id], url, tr, to.Spec.Name, dst); err != nil {
			t.Errorf("after east's failover to %s: %v", fo.newActive, err)
		} else {
			logf("overlap, after east's failover: %s", line)
		}
	}
}

// meshAddr is the address ip of cluster id has in the mesh: mapped where
// the cluster translates it.
func meshAddr(tr map[string][]api.Translation, id, ip string) string {
	return api.Cluster{Translations: tr[id]}.ToMesh(netip.MustParseAddr(ip)).String()
}

// getSeen fetches url from a check pod on node of from and checks the
// answer: from cluster wantCluster (and pod wantPod when given), with the
// server having seen the check pod's own mesh address — not another pod's,
// not a node's, not a shared egress address.
func getSeen(ctx context.Context, from meshCluster, node, url string, tr map[string][]api.Translation, wantCluster, wantPod string) (string, error) {
	r, err := from.RunClient(ctx, kindbed.Namespace, node, "-wait", "60s", "http", url)
	if err != nil {
		return "", fmt.Errorf("%s/%s → %s: %w", from.id, node, url, err)
	}
	e, err := kindbed.ParseEcho(r.Output)
	if err != nil {
		return "", err
	}
	if e.Cluster != wantCluster || (wantPod != "" && e.PodIP != wantPod) {
		return "", fmt.Errorf("%s/%s → %s answered by pod %s of %s; want %s of %s", from.id, node, url, e.PodIP, e.Cluster, wantPod, wantCluster)
	}
	seen, err := netip.ParseAddrPort(e.Client)
	if err != nil {
		return "", fmt.Errorf("echo reply client %q: %w", e.Client, err)
	}
	want := meshAddr(tr, from.id, r.PodIP)
	if seen.Addr().String() != want {
		return "", fmt.Errorf("%s/%s (pod %s) → %s: the server in %s saw %s; want the client pod's mesh address %s", from.id, node, r.PodIP, url, e.Cluster, seen.Addr(), want)
	}
	return fmt.Sprintf("%s pod %s → %s: answered by %s pod %s, which saw the client as %s", from.id, r.PodIP, url, e.Cluster, e.PodIP, seen.Addr()), nil
}

// kubeadmSubnets reads the pod and service subnets the cluster was made
// with (kubeadm's ClusterConfiguration, which kind writes), parsed as
// meshctl join's discovery parses them.
func kubeadmSubnets(ctx context.Context, c meshCluster) (pod, svc string, err error) {
	cm, err := c.Client.CoreV1().ConfigMaps(discovery.KubeadmNamespace).Get(ctx, discovery.KubeadmConfigMap, metav1.GetOptions{})
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", c.id, err)
	}
	p, sv, err := discovery.ParseKubeadm(cm.Data[discovery.KubeadmClusterKey])
	if err != nil || len(p) == 0 || len(sv) == 0 {
		return "", "", fmt.Errorf("%s: pod subnets %v, service subnets %v: %v", c.id, p, sv, err)
	}
	return discovery.Join(p), discovery.Join(sv), nil
}

// importedAddrs lists the endpoint addresses c's import of name holds from
// cluster src.
func importedAddrs(ctx context.Context, c meshCluster, name, src string) ([]string, error) {
	sl, err := c.Client.DiscoveryV1().EndpointSlices(kindbed.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: mcsv1beta1.LabelServiceName + "=" + name + "," + discoveryv1.LabelManagedBy + "=" + export.ManagedBy +
			"," + mcsv1beta1.LabelSourceCluster + "=" + src})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range sl.Items {
		for _, e := range s.Endpoints {
			out = append(out, e.Addresses...)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s imports no endpoint of %s from %s", c.id, name, src)
	}
	return out, nil
}

package testbed_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/testbed"
	"github.com/tunnelmesh/tunnelmesh/pkg/wg"
)

func TestMain(m *testing.M) {
	if testbed.RunHelper() || brokerHelper() || dataplaneHelper() {
		return
	}
	code := m.Run()
	testbed.RemoveBuilds()
	os.Exit(code)
}

// brokerHelper performs one broker call from inside a namespace (the broker
// is reachable only on the underlay): TB_BROKER=token|join|remove|status|snapshot|policy.
func brokerHelper() bool {
	action := os.Getenv("TB_BROKER")
	if action == "" {
		return false
	}
	err := func() error {
		ca, err := os.ReadFile(os.Getenv("TB_CA"))
		if err != nil {
			return err
		}
		cred := ""
		if f := os.Getenv("TB_CRED"); f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			cred = strings.TrimSpace(string(b))
		}
		c, err := brokerclient.New(os.Getenv("TB_URL"), ca, cred)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		switch action {
		case "token":
			tok, err := c.CreateToken(ctx, time.Hour, "testbed")
			if err != nil {
				return err
			}
			fmt.Print(tok)
		case "join":
			id := os.Getenv("TB_CLUSTER")
			r, err := c.Join(ctx, os.Getenv("TB_TOKEN"), api.JoinRequest{ClusterID: id,
				PodCIDRs: []string{os.Getenv("TB_POD")}, ServiceCIDRs: []string{os.Getenv("TB_SVC")}})
			if err != nil {
				return err
			}
			fmt.Print(r.Credential)
		case "remove":
			return c.RemoveCluster(ctx, os.Getenv("TB_CLUSTER"))
		case "status":
			s, err := c.Status(ctx)
			if err != nil {
				return err
			}
			return json.NewEncoder(os.Stdout).Encode(s)
		case "policy": // the default policy and the ranges in TB_ALLOW
			p := api.DefaultPolicy()
			p.AllowedCIDRs = append(p.AllowedCIDRs, strings.Split(os.Getenv("TB_ALLOW"), ",")...)
			_, err := c.SetPolicy(ctx, p)
			return err
		case "snapshot":
			s, err := c.Snapshot(ctx)
			if err != nil {
				return err
			}
			return json.NewEncoder(os.Stdout).Encode(s)
		default:
			return fmt.Errorf("unknown action %q", action)
		}
		return nil
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, "broker helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
	return true
}

type mesh struct {
	t        testing.TB
	mode     wg.Mode // the WireGuard implementation every gateway runs, named explicitly
	bed      *testbed.Bed
	ul       *testbed.Underlay
	brokerNS string
	dataDir  string
	broker   *testbed.Proc
	gwBin    string
	brBin    string
	clusters map[int]*cluster
}

type cluster struct {
	mode     wg.Mode // overrides the mesh's mode when set
	i        int
	id       string
	pod, svc string // the CIDRs the cluster joined with
	gwSvc    string // the service CIDR its gateway is given
	gwNS     string
	podNS    string
	podIP    string
	// meshIP is the pod's address in the mesh: podIP, or its mapped
	// address once the cluster is translated (setMeshIPs).
	meshIP string
	dir    string
	gw     *testbed.Proc
	pubKey string
}

const brokerURL = "https://192.0.2.2:8443"

// wgModes are the WireGuard implementations the test bed runs, each its own
// case: a test or benchmark never picks one silently.
var wgModes = []wg.Mode{wg.ModeUserspace, wg.ModeKernel}

// requireMode skips kernel mode, with the reason, where the module is absent.
func requireMode(t testing.TB, mode wg.Mode) {
	t.Helper()
	if mode == wg.ModeKernel {
		if err := wg.KernelAvailable(); err != nil {
			t.Skipf("kernel WireGuard: %v", err)
		}
	}
}

func newMesh(t testing.TB, mode wg.Mode) *mesh {
	bed := testbed.New(t)
	m := &mesh{t: t, mode: mode, bed: bed, clusters: map[int]*cluster{}}
	m.brBin = testbed.Build(t, "github.com/tunnelmesh/tunnelmesh/cmd/broker")
	m.gwBin = testbed.Build(t, "github.com/tunnelmesh/tunnelmesh/cmd/gateway")
	m.ul = bed.Underlay()
	m.brokerNS = bed.NS("broker")
	m.ul.Attach(m.brokerNS, "192.0.2.2/24")
	m.dataDir = filepath.Join(bed.Dir, "broker")
	if out, err := bed.Exec(m.brokerNS, m.brBin, "init", "--data-dir", m.dataDir, "--san", "192.0.2.2"); err != nil {
		t.Fatalf("broker init: %v %s", err, out)
	}
	m.startBroker()
	return m
}

func (m *mesh) startBroker() {
	m.broker = m.bed.Start(m.brokerNS, "broker", nil, m.brBin, "serve", "--data-dir", m.dataDir, "--listen", "192.0.2.2:8443")
	if err := testkit.Poll(20*time.Second, 200*time.Millisecond, func() error {
		_, err := m.brokerCall("token", nil)
		return err
	}); err != nil {
		m.t.Fatalf("broker not answering: %v\n%s", err, m.broker.Tail(2000))
	}
}

func (m *mesh) brokerCall(action string, env map[string]string) (string, error) {
	args := []string{"env", "TB_BROKER=" + action, "TB_URL=" + brokerURL, "TB_CA=" + filepath.Join(m.dataDir, "ca.crt")}
	if _, ok := env["TB_CRED"]; !ok {
		args = append(args, "TB_CRED="+filepath.Join(m.dataDir, "admin.token"))
	}
	for k, v := range env {
		args = append(args, k+"="+v)
	}
	exe, _ := os.Executable()
	out, err := m.bed.Exec(m.brokerNS, append(args, exe)...)
	return strings.TrimSpace(out), err
}

// addCluster builds cluster i's namespaces and joins it to the broker with
// pod CIDR 10.i.0.0/16 and service CIDR 10.(100+i).0.0/16.
func (m *mesh) addCluster(i int) *cluster {
	return m.addClusterSvc(i, fmt.Sprintf("10.%d.0.0/16", 100+i))
}

// addClusterSvc is addCluster with another service CIDR in the broker's record.
// Its gateway keeps the service CIDR 10.(100+i).0.0/16.
func (m *mesh) addClusterSvc(i int, svc string) *cluster {
	c := m.addClusterCIDRs(i, i, svc)
	c.gwSvc = fmt.Sprintf("10.%d.0.0/16", 100+i)
	return c
}

// addClusterCIDRs is addCluster with pod CIDR 10.net.0.0/16 (the pod is
// 10.net.0.2) and service CIDR svc: clusters may share them.
func (m *mesh) addClusterCIDRs(i, net int, svc string) *cluster {
	t := m.t
	c := &cluster{i: i, id: fmt.Sprintf("c%d", i), podIP: fmt.Sprintf("10.%d.0.2", net),
		pod: fmt.Sprintf("10.%d.0.0/16", net), svc: svc, gwSvc: svc}
	c.meshIP = c.podIP
	c.dir = filepath.Join(m.bed.Dir, c.id)
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	c.gwNS = m.bed.NS("gw" + c.id[1:])
	c.podNS = m.bed.NS("pod" + c.id[1:])
	m.ul.Attach(c.gwNS, fmt.Sprintf("192.0.2.%d/24", 10+i))
	m.bed.Veth(c.gwNS, "pods", c.podNS, "eth0")
	m.bed.MustIP(c.gwNS, "addr", "add", fmt.Sprintf("10.%d.0.1/24", net), "dev", "pods")
	m.bed.MustIP(c.podNS, "addr", "add", c.podIP+"/24", "dev", "eth0")
	m.bed.MustIP(c.podNS, "route", "add", "default", "via", fmt.Sprintf("10.%d.0.1", net))
	m.bed.StartHelper(c.podNS, "echo-"+c.id, "echo")

	tok, err := m.brokerCall("token", nil)
	if err != nil {
		t.Fatalf("create join token: %v", err)
	}
	cred, err := m.brokerCall("join", map[string]string{"TB_CRED": "", "TB_TOKEN": tok, "TB_CLUSTER": c.id,
		"TB_POD": c.pod, "TB_SVC": svc})
	if err != nil {
		t.Fatalf("join %s: %v", c.id, err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "credential"), []byte(cred), 0o600); err != nil {
		t.Fatal(err)
	}
	m.clusters[i] = c
	return c
}

func (m *mesh) startGateway(c *cluster) {
	mode := m.mode
	if c.mode != "" {
		mode = c.mode
	}
	c.gw = m.bed.Start(c.gwNS, "gateway-"+c.id, nil, m.gwBin, "run",
		"--cluster-id", c.id,
		"--pod-cidr", c.pod,
		"--service-cidr", c.gwSvc,
		"--broker", brokerURL,
		"--ca-file", filepath.Join(m.dataDir, "ca.crt"),
		"--credential-file", filepath.Join(c.dir, "credential"),
		"--key-file", filepath.Join(c.dir, "private.key"),
		"--listen-port", "51820",
		"--wireguard", string(mode),
		"--hostname", "gw-"+c.id,
		"--run-dir", filepath.Join(c.dir, "run"),
		"--metrics", "0.0.0.0:9570",
		"--node-ip", "172.31.1.2", // the plain node of the host-network subtest
	)
}

// wgDump returns `wg show tmesh0 dump` peer lines keyed by public key:
// [endpoint, allowed-ips, rx bytes].
func (m *mesh) wgDump(c *cluster) (string, map[string][3]string, error) {
	out, err := m.bed.Exec(c.gwNS, "nsenter", "-t", fmt.Sprint(c.gw.Pid()), "-m", "wg", "show", "tmesh0", "dump")
	if err != nil {
		return "", nil, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	self := strings.Fields(lines[0])
	peers := map[string][3]string{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) >= 6 {
			peers[f[0]] = [3]string{f[2], f[3], f[5]}
		}
	}
	return self[1], peers, nil
}

// reach checks TCP (larger than the tunnel MTU, many segments) and UDP
// (one small, one fragmented datagram) from a's pod to b's pod at its mesh
// address, and that b sees a's pod at its mesh address (no SNAT; mapped
// when a is translated).
func (m *mesh) reach(a, b *cluster) error {
	want := "FROM " + a.meshIP
	out, err := m.bed.Helper(a.podNS, "tcp", b.meshIP, "300000")
	if err != nil {
		return fmt.Errorf("TCP %s→%s: %w", a.id, b.id, err)
	}
	if out != want {
		return fmt.Errorf("TCP %s→%s: server saw %q, want %q", a.id, b.id, out, want)
	}
	for _, size := range []string{"1200", "4000"} {
		out, err := m.bed.Helper(a.podNS, "udp", b.meshIP, size)
		if err != nil {
			return fmt.Errorf("UDP %s bytes %s→%s: %w", size, a.id, b.id, err)
		}
		if out != want {
			return fmt.Errorf("UDP %s→%s: server saw %q", a.id, b.id, out)
		}
	}
	return nil
}

func (m *mesh) reachAll(t testing.TB, ids []int, timeout time.Duration) {
	t.Helper()
	for _, i := range ids {
		for _, j := range ids {
			if i == j {
				continue
			}
			a, b := m.clusters[i], m.clusters[j]
			if err := testkit.Poll(timeout, 500*time.Millisecond, func() error { return m.reach(a, b) }); err != nil {
				t.Fatalf("%v\n--- %s log:\n%s\n--- %s log:\n%s", err, a.id, a.gw.Tail(3000), b.id, b.gw.Tail(3000))
			}
		}
	}
}

func (m *mesh) ownedRoutes(c *cluster) string {
	out, _ := m.bed.IP(c.gwNS, "route", "show", "proto", "77")
	return out
}

// eachMode runs f as a subtest per WireGuard implementation available.
func eachMode(t *testing.T, f func(*testing.T, wg.Mode)) {
	for _, mode := range wgModes {
		t.Run(string(mode), func(t *testing.T) {
			requireMode(t, mode)
			f(t, mode)
		})
	}
}

func TestMesh(t *testing.T) { eachMode(t, testMesh) }

func testMesh(t *testing.T, mode wg.Mode) {
	m := newMesh(t, mode)
	for i := 1; i <= 3; i++ {
		m.startGateway(m.addCluster(i))
	}
	c1, c2, c3 := m.clusters[1], m.clusters[2], m.clusters[3]

	t.Run("pod to pod, every pair, TCP and UDP", func(t *testing.T) {
		m.reachAll(t, []int{1, 2, 3}, 45*time.Second)
		for _, c := range []*cluster{c1, c2, c3} {
			pub, peers, err := m.wgDump(c)
			if err != nil {
				t.Fatal(err)
			}
			c.pubKey = pub
			if len(peers) != 2 {
				t.Errorf("%s has %d peers, want 2: %v", c.id, len(peers), peers)
			}
			if r := m.ownedRoutes(c); strings.Count(r, "dev tmesh0") != 6 {
				t.Errorf("%s routes:\n%s", c.id, r)
			}
			// The MSS clamp saw the SYNs of the transfers above.
			out, err := m.bed.Exec(c.gwNS, "nft", "list", "table", "inet", "tunnelmesh")
			if err != nil || !regexp.MustCompile(`counter packets [1-9]\d* bytes \d+ tcp option maxseg size set rt mtu`).MatchString(out) {
				t.Errorf("%s nft table without a used MSS clamp: %v\n%s", c.id, err, out)
			}
		}
	})

	t.Run("host-network traffic of another node leaves as the cluster's tunnel IP", func(t *testing.T) {
		node := m.bed.NS("node1")
		m.bed.Veth(c1.gwNS, "node", node, "eth0")
		m.bed.MustIP(c1.gwNS, "addr", "add", "172.31.1.1/24", "dev", "node")
		m.bed.MustIP(node, "addr", "add", "172.31.1.2/24", "dev", "eth0")
		m.bed.MustIP(node, "route", "add", "default", "via", "172.31.1.1")
		out, err := m.brokerCall("snapshot", nil)
		if err != nil {
			t.Fatal(err)
		}
		var s api.Snapshot
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatal(err)
		}
		tunnelIP := ""
		for _, c := range s.Clusters {
			if c.ID == c1.id {
				tunnelIP = c.TunnelIP
			}
		}
		want := "FROM " + tunnelIP
		if got, err := m.bed.Helper(node, "tcp", c2.podIP, "100000"); err != nil || got != want {
			t.Errorf("TCP from a non-gateway node's host network: %q (%v), want %q", got, err, want)
		}
		if got, err := m.bed.Helper(node, "udp", c3.podIP, "1200"); err != nil || got != want {
			t.Errorf("UDP from a non-gateway node's host network: %q (%v), want %q", got, err, want)
		}
		// Pods keep their address (checked by reach) and so does the
		// gateway's own traffic, which leaves with the tunnel IP as source.
		if got, err := m.bed.Helper(c1.gwNS, "udp", c2.podIP, "100"); err != nil || got != want {
			t.Errorf("UDP from the gateway node itself: %q (%v), want %q", got, err, want)
		}
	})

	t.Run("health and metrics", func(t *testing.T) {
		err := testkit.Poll(20*time.Second, time.Second, func() error {
			out, err := m.bed.Helper(c1.podNS, "get", "http://10.1.0.1:9570/metrics")
			if err != nil {
				return err
			}
			for _, want := range []string{`tunnelmesh_gateway_connections{status="connected"} 2`,
				`tunnelmesh_gateway_connection_rtt_seconds{cluster="c2"}`, `tunnelmesh_gateway_rx_bytes_total{cluster="c3"}`,
				`tunnelmesh_gateway_last_handshake_age_seconds{cluster="c2"}`} {
				if !strings.Contains(out, want) {
					return fmt.Errorf("metrics lack %s", want)
				}
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	})

	t.Run("health reported to the broker", func(t *testing.T) {
		err := testkit.Poll(25*time.Second, time.Second, func() error {
			out, err := m.brokerCall("status", nil)
			if err != nil {
				return err
			}
			var s []api.GatewayStatus
			if err := json.Unmarshal([]byte(out), &s); err != nil {
				return err
			}
			for _, g := range s {
				n := 0
				for _, h := range g.Health {
					// PathMTU: a full-size don't-fragment probe crossed the tunnel both ways.
					if h.Status == api.StatusConnected && h.RTTMillis > 0 && h.PathMTU > 0 && h.PathMTULost == 0 {
						n++
					}
				}
				if n != 2 {
					return fmt.Errorf("gateway %s/%s reports %+v", g.ClusterID, g.Hostname, g.Health)
				}
			}
			if len(s) != 3 {
				return fmt.Errorf("%d gateways heartbeating", len(s))
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	})

	t.Run("a cluster announcing our underlay as a CIDR is refused, the mesh keeps working", func(t *testing.T) {
		// The broker refuses such a join by default (outside the clusterset
		// policy, or covering a gateway's endpoint): an admin allowing the
		// underlay's range by mistake lets in a CIDR covering the broker,
		// and the gateways still refuse it.
		if _, err := m.brokerCall("policy", map[string]string{"TB_ALLOW": "192.0.2.0/24"}); err != nil {
			t.Fatal(err)
		}
		c5 := m.addClusterSvc(5, "192.0.2.0/30") // part of the underlay: the broker
		m.startGateway(c5)
		m.reachAll(t, []int{1, 2, 5}, 45*time.Second)
		for _, c := range []*cluster{c1, c2} {
			if r := m.ownedRoutes(c); strings.Contains(r, "192.0.2.0/30") {
				t.Errorf("%s routes the underlay into the tunnel:\n%s", c.id, r)
			}
		}
		out, err := m.bed.Helper(c1.podNS, "get", "http://10.1.0.1:9570/metrics")
		for _, want := range []string{`tunnelmesh_gateway_refused_cidrs{cluster="c5"} 1`, "tunnelmesh_gateway_problems 1"} {
			if err != nil || !strings.Contains(out, want) {
				t.Errorf("metrics lack %s (%v)", want, err)
			}
		}
		if !strings.Contains(c1.gw.Tail(1<<20), "CIDR 192.0.2.0/30 covers") {
			t.Error("gateway log does not report the refused CIDR")
		}
		if _, err := m.brokerCall("remove", map[string]string{"TB_CLUSTER": "c5"}); err != nil {
			t.Fatal(err)
		}
		if err := c5.gw.Stop(15 * time.Second); err != nil {
			t.Errorf("c5 gateway exit: %v", err)
		}
		delete(m.clusters, 5)
	})

	t.Run("deleted route is put back", func(t *testing.T) {
		m.bed.MustIP(c1.gwNS, "route", "del", "10.2.0.0/16")
		if err := testkit.Poll(10*time.Second, 200*time.Millisecond, func() error {
			if !strings.Contains(m.ownedRoutes(c1), "10.2.0.0/16 dev tmesh0") {
				return fmt.Errorf("route to 10.2.0.0/16 not restored:\n%s", m.ownedRoutes(c1))
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		if !strings.Contains(c1.gw.Tail(1<<20), "route removed by someone else") {
			t.Error("gateway log does not show the route being put back")
		}
	})

	t.Run("gateway killed and restarted keeps its identity", func(t *testing.T) {
		_, before1, _ := m.wgDump(c1)
		_, before3, _ := m.wgDump(c3)
		c2.gw.Kill()
		if _, err := m.bed.IP(c2.gwNS, "link", "show", "tmesh0"); err == nil {
			t.Error("tmesh0 survived the killed gateway")
		}
		m.startGateway(c2)
		m.reachAll(t, []int{1, 2, 3}, 45*time.Second)
		pub, _, err := m.wgDump(c2)
		if err != nil || pub != c2.pubKey {
			t.Errorf("restarted gateway key %s, want %s (%v)", pub, c2.pubKey, err)
		}
		_, after1, _ := m.wgDump(c1)
		_, after3, _ := m.wgDump(c3)
		for _, pair := range [][2][3]string{{before1[c2.pubKey], after1[c2.pubKey]}, {before3[c2.pubKey], after3[c2.pubKey]}} {
			b, a := pair[0], pair[1]
			rxB, _ := strconv.ParseInt(b[2], 10, 64)
			rxA, _ := strconv.ParseInt(a[2], 10, 64)
			// Same endpoint and AllowedIPs, and counters never reset: the
			// peer was neither rewritten nor removed and re-added.
			if a[0] != b[0] || a[1] != b[1] || rxA < rxB || rxB == 0 {
				t.Errorf("peer c2 changed on a remote gateway: %v → %v", b, a)
			}
		}
	})

	t.Run("broker outage: flows keep working, late gateway appears after", func(t *testing.T) {
		c4 := m.addCluster(4)
		stream := m.bed.StartHelper(c1.podNS, "stream-c1-c3", "stream", c3.podIP, "65")
		if err := m.broker.Stop(10 * time.Second); err != nil {
			t.Fatalf("stop broker: %v", err)
		}
		start := time.Now()
		m.startGateway(c4) // joins the data plane while the broker is down
		// A gateway restarted during the outage comes back from its state file.
		c2.gw.Kill()
		m.startGateway(c2)
		m.reachAll(t, []int{1, 2}, 30*time.Second)
		select {
		case <-stream.Done():
		case <-time.After(90 * time.Second):
			t.Fatal("stream did not finish")
		}
		if stream.Err() != nil || !strings.Contains(stream.Tail(500), "ok ") {
			t.Fatalf("long flow broke during the broker outage: %v\n%s", stream.Err(), stream.Tail(1000))
		}
		t.Logf("flow c1→c3 kept working for %s of broker outage", time.Since(start).Round(time.Second))
		if time.Since(start) < 60*time.Second {
			t.Errorf("flow ended before 60 s of outage")
		}
		m.reachAll(t, []int{1, 2, 3}, 5*time.Second) // new flows too
		if err := m.reach(c4, c1); err == nil {
			t.Error("c4 reached c1 although the broker never saw its gateway")
		}
		// The broker's return must not disturb the data plane: a flow
		// probing every 20 ms across it, no gap over 200 ms.
		probe := m.bed.StartHelper(c1.podNS, "probe-c1-c3", "probe", c3.podIP, "20", "15")
		time.Sleep(3 * time.Second)
		m.startBroker()
		select {
		case <-probe.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("probe did not finish")
		}
		lines := strings.Split(strings.TrimSpace(probe.Tail(500)), "\n")
		out := lines[len(lines)-1] // "sent N answered M maxgap D"
		f := strings.Fields(out)
		if len(f) != 6 || f[0] != "sent" || probe.Err() != nil {
			t.Fatalf("probe across the broker's return: %v: %q", probe.Err(), out)
		}
		gap, err := time.ParseDuration(f[5])
		if err != nil {
			t.Fatalf("probe output %q: %v", out, err)
		}
		t.Logf("flow c1→c3 across the broker's return: %s", out)
		if gap > 200*time.Millisecond {
			t.Errorf("the flow c1→c3 stood still %s across the broker's return (%s)", gap, out)
		}
		m.reachAll(t, []int{1, 2, 3, 4}, 60*time.Second)
	})

	t.Run("removed cluster vanishes everywhere", func(t *testing.T) {
		if _, err := m.brokerCall("remove", map[string]string{"TB_CLUSTER": "c3"}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*cluster{c1, c2, m.clusters[4]} {
			err := testkit.Poll(20*time.Second, 500*time.Millisecond, func() error {
				_, peers, err := m.wgDump(c)
				if err != nil {
					return err
				}
				if _, ok := peers[c3.pubKey]; ok || len(peers) != 2 {
					return fmt.Errorf("%s still has c3's peer (%d peers)", c.id, len(peers))
				}
				if r := m.ownedRoutes(c); strings.Contains(r, "10.3.0.0/16") || strings.Contains(r, "10.103.0.0/16") {
					return fmt.Errorf("%s still routes c3:\n%s", c.id, r)
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}
		if err := m.reach(c1, c3); err == nil {
			t.Error("c1 still reaches removed c3")
		}
		m.reachAll(t, []int{1, 2, 4}, 10*time.Second)
	})

	t.Run("teardown leaves nothing", func(t *testing.T) {
		for _, i := range []int{1, 2, 3, 4} {
			c := m.clusters[i]
			rules, _ := m.bed.IP(c.gwNS, "rule", "show")
			// Things of others must survive our teardown.
			m.bed.MustIP(c.gwNS, "route", "add", "198.51.100.0/24", "dev", "pods")
			m.bed.MustExec(c.gwNS, "nft", "add", "table", "inet", "someoneelse")
			if err := c.gw.Stop(15 * time.Second); err != nil {
				t.Errorf("%s gateway exit: %v\n%s", c.id, err, c.gw.Tail(2000))
			}
			if _, err := m.bed.IP(c.gwNS, "link", "show", "tmesh0"); err == nil {
				t.Errorf("%s: tmesh0 left behind", c.id)
			}
			if r := m.ownedRoutes(c); strings.TrimSpace(r) != "" {
				t.Errorf("%s: routes left behind:\n%s", c.id, r)
			}
			if out, _ := m.bed.Exec(c.gwNS, "nft", "list", "tables"); strings.Contains(out, "tunnelmesh") || !strings.Contains(out, "someoneelse") {
				t.Errorf("%s: want our nft table gone and the other one kept:\n%s", c.id, out)
			}
			if out, _ := m.bed.IP(c.gwNS, "route", "show", "198.51.100.0/24"); !strings.Contains(out, "dev pods") {
				t.Errorf("%s: teardown removed a route that was not ours", c.id)
			}
			if after, _ := m.bed.IP(c.gwNS, "rule", "show"); after != rules {
				t.Errorf("%s: ip rules changed:\n%s", c.id, after)
			}
			if ents, _ := os.ReadDir(filepath.Join(c.dir, "run")); len(ents) != 0 {
				t.Errorf("%s: UAPI socket left behind: %v", c.id, ents)
			}
		}
	})
}

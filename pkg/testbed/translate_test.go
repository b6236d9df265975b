package testbed_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/gateway"
	"github.com/tunnelmesh/tunnelmesh/pkg/testbed"
	"github.com/tunnelmesh/tunnelmesh/pkg/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// snapshot reads the broker's state.
func (m *mesh) snapshot() api.Snapshot {
	m.t.Helper()
	out, err := m.brokerCall("snapshot", nil)
	if err != nil {
		m.t.Fatal(err)
	}
	var s api.Snapshot
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		m.t.Fatal(err)
	}
	return s
}

// setMeshIPs sets each cluster's pod mesh address from the broker's records.
func (m *mesh) setMeshIPs() {
	for _, rec := range m.snapshot().Clusters {
		for _, c := range m.clusters {
			if c.id == rec.ID {
				c.meshIP = rec.ToMesh(netip.MustParseAddr(c.podIP)).String()
			}
		}
	}
}

// translated counts the packets c's gateway translated each way.
func (m *mesh) translated(c *cluster) (in, out int, table string) {
	table, _ = m.bed.Exec(c.gwNS, "nft", "list", "table", "inet", "tunnelmesh")
	count := func(chain string) int {
		n := 0
		i := strings.Index(table, "chain "+chain+" ")
		if i < 0 {
			return 0
		}
		body := table[i:]
		if j := strings.Index(body, "}"); j >= 0 {
			body = body[:j]
		}
		for _, mm := range regexp.MustCompile(`counter packets (\d+)`).FindAllStringSubmatch(body, -1) {
			var k int
			fmt.Sscan(mm[1], &k)
			n += k
		}
		return n
	}
	return count("translate-in"), count("translate-out"), table
}

// TestTranslatedMesh: three clusters, c1 and c2 with identical CIDRs
// (kind's defaults, and the very same pod address 10.244.0.2 in each), c3
// with its own. c1 and c3 link first, untranslated; c2's join translates
// c1 too, live: c1's gateway (never restarted) starts translating and c3
// follows c1's mapped CIDRs. Then traffic flows both ways between every
// pair, TCP and UDP, each server seeing the caller's mapped address.
func TestTranslatedMesh(t *testing.T) { eachMode(t, testTranslatedMesh) }

func testTranslatedMesh(t *testing.T, mode wg.Mode) {
	m := newMesh(t, mode)
	c1 := m.addClusterCIDRs(1, 244, "10.96.0.0/12")
	m.startGateway(c1)
	c3 := m.addClusterCIDRs(3, 3, "10.200.0.0/16")
	m.startGateway(c3)

	t.Run("no overlap yet: real addresses", func(t *testing.T) {
		m.reachAll(t, []int{1, 3}, 45*time.Second)
		if in, out, table := m.translated(c1); in+out != 0 || strings.Contains(table, "translate-") {
			t.Errorf("c1 translates with nothing to overlap:\n%s", table)
		}
	})

	c2 := m.addClusterCIDRs(2, 244, "10.96.0.0/12")
	m.startGateway(c2)
	m.setMeshIPs()
	t.Run("identical CIDRs: every pair both ways, each caller seen at its mapped address", func(t *testing.T) {
		if c1.meshIP == c1.podIP || c2.meshIP == c2.podIP || c1.meshIP == c2.meshIP {
			t.Fatalf("mesh addresses c1 %s, c2 %s (pods %s): want two distinct mapped ones", c1.meshIP, c2.meshIP, c1.podIP)
		}
		if c3.meshIP != c3.podIP {
			t.Fatalf("c3 overlaps nobody but is known as %s", c3.meshIP)
		}
		m.reachAll(t, []int{1, 2, 3}, 45*time.Second)
		for _, c := range []*cluster{c1, c2} {
			if in, out, table := m.translated(c); in == 0 || out == 0 {
				t.Errorf("%s's gateway translated %d packets in, %d out:\n%s", c.id, in, out, table)
			}
		}
		if in, out, _ := m.translated(c3); in+out != 0 {
			t.Errorf("c3 translated %d/%d packets; it is not translated", in, out)
		}
		_, peers, err := m.wgDump(c3)
		if err != nil {
			t.Fatal(err)
		}
		var allowed []string
		for _, p := range peers {
			allowed = append(allowed, p[1])
		}
		got := strings.Join(allowed, " ")
		for _, want := range []string{"240.0.0.0/16", "240.1.0.0/16"} {
			if !strings.Contains(got, want) {
				t.Errorf("c3's peers allow %s, want %s among them", got, want)
			}
		}
		if strings.Contains(got, "10.244.0.0/16") {
			t.Errorf("c3 still routes a real CIDR two clusters share: %s", got)
		}
		select {
		case <-c1.gw.Done():
			t.Errorf("c1's gateway exited: %v", c1.gw.Err())
		default: // the translation rolled in without a restart
		}
		if n := strings.Count(c1.gw.Tail(1<<20), "WireGuard device up"); n != 1 {
			t.Errorf("c1's gateway opened its device %d times, want once", n)
		}
	})

	// A NetworkPolicy ipBlock is, in a policy-enforcing CNI, a filter on
	// the server pod's ingress by source address; here that filter in c3's
	// server pod. c1 and c2 share every real address, yet a rule naming
	// one's mapped pod CIDR lets exactly that cluster's pods in, and the
	// real CIDR they share names neither (no CNI in this test bed enforces
	// policies: the nft rule stands in for one, the packets are real).
	t.Run("ipBlock on a mapped CIDR tells clusters with identical CIDRs apart", func(t *testing.T) {
		snap := m.snapshot()
		mapped := map[string]string{}
		for _, rec := range snap.Clusters {
			mapped[rec.ID] = rec.MappedOf(c1.pod)
		}
		if mapped[c1.id] == "" || mapped[c2.id] == "" {
			t.Fatalf("mapped pod CIDRs %v: c1 and c2 should both be translated", mapped)
		}
		m.bed.MustExec(c3.podNS, "nft", "add", "table", "inet", "netpol")
		m.bed.MustExec(c3.podNS, "nft", "add", "chain", "inet", "netpol", "ingress", "{ type filter hook input priority 0 ; policy accept ; }")
		allowOnly := func(cidr string) {
			m.bed.MustExec(c3.podNS, "nft", "flush", "chain", "inet", "netpol", "ingress")
			m.bed.MustExec(c3.podNS, "nft", "add", "rule", "inet", "netpol", "ingress",
				"tcp", "dport", fmt.Sprint(testbed.EchoPort), "ip", "saddr", "!=", cidr, "reject", "with", "tcp", "reset")
		}
		check := func(policy string, from *cluster, allowed bool) {
			t.Helper()
			out, err := m.bed.Helper(from.podNS, "tcp", c3.meshIP, "1000")
			switch {
			case allowed && out != "FROM "+from.meshIP:
				t.Errorf("ipBlock %s: %s's pod (%s, known as %s) → c3: %q %v; want let in", policy, from.id, from.podIP, from.meshIP, out, err)
			case !allowed && err == nil:
				t.Errorf("ipBlock %s: %s's pod (%s, known as %s) got in (%q); want refused", policy, from.id, from.podIP, from.meshIP, out)
			}
		}
		for _, allow := range []*cluster{c1, c2} {
			allowOnly(mapped[allow.id])
			for _, from := range []*cluster{c1, c2} {
				check(mapped[allow.id]+" ("+allow.id+"'s mapped pod CIDR)", from, from == allow)
			}
		}
		allowOnly(c1.pod)
		for _, from := range []*cluster{c1, c2} {
			check(c1.pod+" (the real CIDR c1 and c2 share)", from, false)
		}
		m.bed.MustExec(c3.podNS, "nft", "delete", "table", "inet", "netpol")
	})
}

// TestTranslatedStandbyTakeover: clusters a and b with identical CIDRs,
// both translated; a's active gateway dies and its standby is promoted by
// one Set of the desired state it computes from the snapshot it already
// holds. Translation needs no state but that: a TCP connection that b's
// pod opened to a's pod at its mapped address before the failover carries
// on through it, and afterwards each side still sees the other's mapped
// address.
func TestTranslatedStandbyTakeover(t *testing.T) { eachMode(t, testTranslatedStandbyTakeover) }

func testTranslatedStandbyTakeover(t *testing.T, mode wg.Mode) {
	bed := testbed.New(t)
	ul := bed.Underlay()
	keyA, _ := wgtypes.GeneratePrivateKey()
	keyB, _ := wgtypes.GeneratePrivateKey()
	kind := func(id, tip, pods, svcs string) api.Cluster {
		return api.Cluster{ID: id, PodCIDRs: []string{"10.244.0.0/16"}, ServiceCIDRs: []string{"10.96.0.0/12"}, TunnelIP: tip,
			Translations: []api.Translation{{Real: "10.244.0.0/16", Mapped: pods}, {Real: "10.96.0.0/12", Mapped: svcs}}}
	}
	snap := api.Snapshot{Clusters: []api.Cluster{
		kind("a", "100.127.0.1", "240.0.0.0/16", "240.16.0.0/12"),
		kind("b", "100.127.0.2", "240.1.0.0/16", "240.32.0.0/12"),
	}, Gateways: []api.Gateway{
		{ClusterID: "a", Hostname: "a1", PrivateIP: "192.0.2.31", Port: 51820, PublicKey: keyA.PublicKey().String(), Active: true, Epoch: 1},
		{ClusterID: "b", Hostname: "b1", PrivateIP: "192.0.2.30", Port: 51820, PublicKey: keyB.PublicKey().String(), Active: true, Epoch: 1},
	}}
	start := func(n *dpNode, cluster string, key wgtypes.Key, role string) {
		t.Helper()
		d, path := n.writeDesired(t, bed, gateway.Local{ClusterID: cluster,
			PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}}, snap)
		if len(d.Peers) != 1 || len(d.Firewall.Translate) != 2 {
			t.Fatalf("%s desired: %+v", n.name, d)
		}
		n.start(t, bed, path, key, mode, role)
	}
	mk := func(name, addr string) *dpNode { return newDPNode(bed, ul, name, addr) }
	b1, a1, a2 := mk("b1", "192.0.2.30"), mk("a1", "192.0.2.31"), mk("a2", "192.0.2.32")
	// b's pod sits behind b1; a's pod on another node of a, which routes the
	// mesh through a's active gateway node (as a route agent in direct mode).
	bpod := bed.NS("bpod")
	bed.Veth(b1.ns, "pods", bpod, "eth0")
	bed.MustIP(b1.ns, "addr", "add", "10.244.0.1/24", "dev", "pods")
	bed.MustIP(bpod, "addr", "add", "10.244.0.2/24", "dev", "eth0")
	bed.MustIP(bpod, "route", "add", "default", "via", "10.244.0.1")
	apod := bed.NS("apod")
	ul.Attach(apod, "192.0.2.40/24")
	bed.MustIP(apod, "addr", "add", "10.244.0.2/32", "dev", "lo")
	bed.MustIP(apod, "route", "add", "240.0.0.0/5", "via", "192.0.2.31", "src", "10.244.0.2")
	for _, n := range []*dpNode{a1, a2} {
		bed.MustIP(n.ns, "route", "add", "10.244.0.2/32", "via", "192.0.2.40")
	}
	bed.StartHelper(apod, "echo-a", "echo")
	bed.StartHelper(bpod, "echo-b", "echo")
	start(b1, "b", keyB, "active")
	start(a1, "a", keyA, "active")
	start(a2, "a", keyA, "standby")

	both := func(timeout time.Duration) {
		t.Helper()
		for _, tc := range []struct{ from, to, want string }{
			{apod, "240.1.0.2", "FROM 240.0.0.2"}, {bpod, "240.0.0.2", "FROM 240.1.0.2"},
		} {
			var got string
			err := testkit.Poll(timeout, 200*time.Millisecond, func() error {
				var err error
				got, err = bed.Helper(tc.from, "tcp", tc.to, "100000")
				return err
			})
			if err != nil || got != tc.want {
				t.Fatalf("TCP to %s: %q, %v; want %q\n--- a1\n%s\n--- a2\n%s", tc.to, got, err, tc.want, a1.proc.Tail(2000), a2.proc.Tail(2000))
			}
		}
	}
	both(45 * time.Second)

	stream := bed.StartHelper(bpod, "stream-b-a", "stream", "240.0.0.2", "8")
	time.Sleep(1500 * time.Millisecond)
	a1.proc.Kill()
	if err := os.WriteFile(a2.role, []byte("active"), 0o600); err != nil {
		t.Fatal(err)
	}
	bed.MustIP(apod, "route", "replace", "240.0.0.0/5", "via", "192.0.2.32", "src", "10.244.0.2") // the route agent's move
	select {
	case <-stream.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the stream across the failover did not end")
	}
	if err := stream.Err(); err != nil || !strings.Contains(stream.Tail(1000), "ok ") {
		t.Fatalf("a connection opened to a's mapped address before the failover broke: %v\n%s", err, stream.Tail(2000))
	}
	both(15 * time.Second)
	out, _ := bed.Exec(a2.ns, "nft", "list", "chain", "inet", "tunnelmesh", "translate-in")
	if !regexp.MustCompile(`counter packets [1-9]`).MatchString(out) {
		t.Errorf("the promoted standby translated nothing:\n%s", out)
	}
}

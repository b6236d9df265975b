package nft

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/testbed"
)

func TestMain(m *testing.M) {
	if testbed.RunHelper() {
		return
	}
	os.Exit(testbed.MainInNetns(m))
}

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestNormalize(t *testing.T) {
	tests := []struct{ in, want []netip.Prefix }{
		{nil, []netip.Prefix{}},
		{pfx("10.2.0.0/16", "10.1.0.0/16"), pfx("10.1.0.0/16", "10.2.0.0/16")},
		{pfx("10.1.5.0/24", "10.1.0.0/16", "10.1.0.0/16"), pfx("10.1.0.0/16")},
		{pfx("10.1.2.3/16"), pfx("10.1.0.0/16")},
		{pfx("::ffff:10.1.0.0/112"), pfx("10.1.0.0/16")},
		{pfx("fd00::/64", "fd00::/48", "10.0.0.0/8"), pfx("10.0.0.0/8", "fd00::/48")},
	}
	for _, tc := range tests {
		if got := Normalize(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("Normalize(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestElements(t *testing.T) {
	tests := []struct {
		prefix string
		keys   []string // "a" start, "a!" interval end
	}{
		{"10.1.0.0/16", []string{"10.1.0.0", "10.2.0.0!"}},
		{"198.51.100.7/32", []string{"198.51.100.7", "198.51.100.8!"}},
		{"255.0.0.0/8", []string{"255.0.0.0"}}, // reaches the top: no end element
		{"fd00:1::/64", []string{"fd00:1::", "fd00:1:0:1::!"}},
	}
	for _, tc := range tests {
		var got []string
		for _, e := range Elements(pfx(tc.prefix)) {
			a, _ := netip.AddrFromSlice(e.Key)
			s := a.String()
			if e.IntervalEnd {
				s += "!"
			}
			got = append(got, s)
		}
		if !slices.Equal(got, tc.keys) {
			t.Errorf("%s: elements %v, want %v", tc.prefix, got, tc.keys)
		}
	}
}

// The rule count is constant: it does not grow with the number of CIDRs.
func TestRulesConstant(t *testing.T) {
	count := func(n int) int {
		d := Desired{Interface: "tmesh0", Local: pfx("10.1.0.0/16", "10.101.0.0/16"), SNAT4: netip.MustParseAddr("100.64.0.1")}
		for i := 0; i < n; i++ {
			d.Remote = append(d.Remote, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16))
			d.Nodes = append(d.Nodes, netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 30, byte(i / 256), byte(i)}), 32))
		}
		total := 0
		for _, rs := range rules(d, map[string]*nftables.Set{}) {
			total += len(rs)
		}
		return total
	}
	// The ingress filter (one per family), the MSS clamp, the IPv4 SNAT.
	if a, b := count(1), count(1000); a != b || a != 4 {
		t.Errorf("rules for 1 remote CIDR and node: %d, for 1000: %d; want 4 and 4", a, b)
	}
}

func listTable(t *testing.T) string {
	t.Helper()
	out, err := testbed.Exec(context.Background(), testbed.SelfNS(), "nft", "-a", "list", "table", "inet", TableName)
	if err != nil {
		t.Fatalf("list table: %v", err)
	}
	return out
}

func handles(s string) []string {
	var hs []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "# handle") && (strings.Contains(l, "snat") || strings.Contains(l, "maxseg")) {
			hs = append(hs, l[strings.LastIndex(l, "# handle"):])
		}
	}
	return hs
}

// gwNet is the network around this test's namespace, the gateway: a
// "tunnel" veth (tun) to a remote cluster holding 10.2.0.5, a node on the
// host network (172.30.0.2) and a pod (10.1.0.2), each routed through the
// gateway, whose tunnel IP is 100.64.0.1; the remote cluster runs the echo
// helper.
type gwNet struct {
	self, tun, remote, node, pod, podIf string
}

func newGWNet(t *testing.T, bed *testbed.Bed) gwNet {
	t.Helper()
	n := gwNet{self: testbed.SelfNS(), tun: testbed.UniqueName("tmt"), remote: bed.NS("remote"), node: bed.NS("node"), pod: bed.NS("pod")}
	bed.Veth(n.self, n.tun, n.remote, "eth0")
	bed.MustIP(n.self, "addr", "add", "192.168.77.1/30", "dev", n.tun)
	bed.MustIP(n.remote, "addr", "add", "192.168.77.2/30", "dev", "eth0")
	bed.MustIP(n.remote, "addr", "add", "10.2.0.5/32", "dev", "lo")
	bed.MustIP(n.remote, "route", "add", "default", "via", "192.168.77.1", "src", "10.2.0.5")
	bed.MustIP(n.self, "route", "add", "10.2.0.0/16", "via", "192.168.77.2", "dev", n.tun)
	bed.MustIP(n.self, "addr", "replace", "100.64.0.1/32", "dev", "lo") // the cluster's tunnel IP
	nodeIf := testbed.UniqueName("tmn")
	n.podIf = testbed.UniqueName("tmp")
	bed.Veth(n.self, nodeIf, n.node, "eth0")
	bed.MustIP(n.self, "addr", "add", "172.30.0.1/24", "dev", nodeIf)
	bed.MustIP(n.node, "addr", "add", "172.30.0.2/24", "dev", "eth0")
	bed.MustIP(n.node, "route", "add", "default", "via", "172.30.0.1")
	bed.Veth(n.self, n.podIf, n.pod, "eth0")
	bed.MustIP(n.self, "addr", "add", "10.1.0.1/24", "dev", n.podIf)
	bed.MustIP(n.pod, "addr", "add", "10.1.0.2/24", "dev", "eth0")
	bed.MustIP(n.pod, "route", "add", "default", "via", "10.1.0.1")
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	bed.StartHelper(n.remote, "echo", "echo")
	return n
}

// TestTable applies, updates and tears down a real table: CIDR changes only
// touch set elements (rule handles stay), a deleted table comes back, and
// host traffic leaving the tunnel interface is SNATed while pod traffic
// keeps its source.
func TestTable(t *testing.T) {
	testbed.RequireNetns(t)
	bed := testbed.New(t)
	gn := newGWNet(t, bed)
	self, tun, node, pod := gn.self, gn.tun, gn.node, gn.pod

	tb := NewTable(nil)
	t.Cleanup(func() { _ = tb.Teardown() })
	d := Desired{Interface: tun, Local: pfx("10.1.0.0/16", "10.101.0.0/16", "fd00:1::/64"), Remote: pfx("10.2.0.0/16", "10.102.0.0/16", "fd00:2::/64"),
		Nodes: pfx("172.30.0.2/32"), SNAT4: netip.MustParseAddr("100.64.0.1")}
	if err := tb.Set(d); err != nil {
		t.Fatal(err)
	}
	from := func(ns string) string {
		t.Helper()
		var out string
		err := testkit.Poll(10*time.Second, 200*time.Millisecond, func() error {
			var err error
			out, err = bed.Helper(ns, "udp", "10.2.0.5", "100")
			return err
		})
		if err != nil {
			out, _ := testbed.Exec(context.Background(), self, "nft", "list", "ruleset")
			t.Fatalf("UDP from %s: %v\n%s", ns, err, out)
		}
		return out
	}
	if got := from(node); got != "FROM 100.64.0.1" {
		t.Errorf("host traffic of a node reached the remote cluster as %q, want SNAT to the tunnel IP", got)
	}
	if got := from(pod); got != "FROM 10.1.0.2" {
		t.Errorf("pod traffic reached the remote cluster as %q, want its pod IP", got)
	}
	// A host that is not a node of the cluster does not get in (it would be
	// SNATed and answered: a relay into the tunnel).
	bed.MustIP(node, "addr", "add", "172.30.0.9/24", "dev", "eth0")
	bed.MustIP(node, "route", "replace", "default", "via", "172.30.0.1", "src", "172.30.0.9")
	if out, err := bed.Helper(node, "udp", "10.2.0.5", "100"); err == nil {
		t.Errorf("a non-node's traffic went through the tunnel: %q", out)
	}
	bed.MustIP(node, "route", "replace", "default", "via", "172.30.0.1", "src", "172.30.0.2")
	if ok, err := intact(d); err != nil || !ok {
		t.Fatalf("freshly applied table not seen as intact (%v): Run would rebuild it forever", err)
	}
	before := listTable(t)
	if !strings.Contains(before, "maxseg size set rt mtu") || !strings.Contains(before, "@remote4") {
		t.Fatalf("table lacks the MSS clamp or the set lookups:\n%s", before)
	}

	// Change CIDRs: elements change, rules are untouched.
	d.Remote = pfx("10.102.0.0/16", "10.3.0.0/16")
	if err := tb.Set(d); err != nil {
		t.Fatal(err)
	}
	after := listTable(t)
	if hb, ha := handles(before), handles(after); len(hb) != 2 || !slices.Equal(hb, ha) {
		t.Errorf("rules rewritten on a CIDR change: handles %v → %v", hb, ha)
	}
	if !strings.Contains(after, "10.3.0.0/16") || strings.Contains(after, "10.2.0.0/16") {
		t.Errorf("remote set not updated:\n%s", after)
	}
	// 10.2.0.0/16 is no longer remote: no SNAT for it.
	if got := from(node); got != "FROM 172.30.0.2" {
		t.Errorf("after 10.2.0.0/16 left the remote set, node traffic arrived as %q", got)
	}

	// Self-heal.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = tb.Run(ctx, 100*time.Millisecond) }()
	t.Cleanup(func() { cancel(); <-done })
	bed.MustExec(self, "nft", "delete", "table", "inet", TableName)
	if err := testkit.Poll(5*time.Second, 100*time.Millisecond, func() error {
		out, err := testbed.Exec(context.Background(), self, "nft", "list", "table", "inet", TableName)
		if err != nil || !strings.Contains(out, "10.3.0.0/16") {
			return fmt.Errorf("table not restored: %v", err)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	bed.MustExec(self, "nft", "delete", "element", "inet", TableName, SetRemote4, "{ 10.3.0.0/16 }")
	if err := testkit.Poll(5*time.Second, 100*time.Millisecond, func() error {
		out, _ := testbed.Exec(context.Background(), self, "nft", "list", "set", "inet", TableName, SetRemote4)
		if !strings.Contains(out, "10.3.0.0/16") {
			return fmt.Errorf("deleted element not restored:\n%s", out)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	if ok, err := intact(d); err != nil || !ok {
		t.Errorf("restored table not seen as intact (%v)", err)
	}

	// A wider prefix replacing a narrower one, and an empty desired state.
	d.Remote = pfx("10.0.0.0/14", "240.0.0.0/4") // the latter reaches the top of the space: no end element
	d.Local = pfx("10.100.0.0/16")
	if err := tb.Set(d); err != nil {
		t.Fatalf("widen remote prefix: %v", err)
	}
	if ok, err := intact(d); err != nil || !ok {
		t.Errorf("table after widening not seen as intact (%v)", err)
	}
	if out := listTable(t); !strings.Contains(out, "240.0.0.0/4") || strings.Contains(out, "fd00:") {
		t.Errorf("sets after widening:\n%s", out)
	}
	if err := tb.Set(Desired{}); err != nil {
		t.Fatal(err)
	}
	if ok, err := Exists(); err != nil || ok {
		t.Errorf("empty desired state left the table (exists %v, %v)", ok, err)
	}
	if err := tb.Set(d); err != nil {
		t.Fatal(err)
	}
	bed.MustExec(self, "nft", "add", "table", "inet", "someoneelse")
	if err := tb.Teardown(); err != nil {
		t.Fatal(err)
	}
	out := bed.MustExec(self, "nft", "list", "tables")
	if strings.Contains(out, TableName) || !strings.Contains(out, "someoneelse") {
		t.Errorf("teardown: want our table gone and the other kept:\n%s", out)
	}
	bed.MustExec(self, "nft", "delete", "table", "inet", "someoneelse")
}

// TestAdjacentPrefixes: CIDRs that touch (one ends where the next starts)
// are separate intervals the kernel takes as they are; the route agent's
// exemption sets rely on it too.
func TestAdjacentPrefixes(t *testing.T) {
	tb := NewTable(nil)
	t.Cleanup(func() { _ = tb.Teardown() })
	d := Desired{Interface: "tmesh-adj", Local: pfx("10.1.0.0/16", "10.0.0.0/16"), Remote: pfx("10.2.0.0/16", "10.3.0.0/16", "fd00:2::/64", "fd00:3::/64")}
	if err := tb.Set(d); err != nil {
		t.Fatalf("adjacent prefixes: %v", err)
	}
	if ok, err := intact(d); err != nil || !ok {
		t.Fatalf("table with adjacent prefixes not intact (%v)", err)
	}
}

// TestTranslation: a translated cluster's gateway rewrites its pods'
// addresses one to one, both ways, with TCP and UDP: the remote cluster
// sees the mapped address of the very pod that called, and reaches that
// pod at it; host traffic is still SNATed to the tunnel IP; a table without
// the translation sends real addresses again.
func TestTranslation(t *testing.T) {
	testbed.RequireNetns(t)
	bed := testbed.New(t)
	gn := newGWNet(t, bed)
	self, tun, remote, node, pod, podIf := gn.self, gn.tun, gn.remote, gn.node, gn.pod, gn.podIf
	bed.MustIP(self, "addr", "add", "fd00:77::1/64", "dev", tun, "nodad")
	bed.MustIP(remote, "addr", "add", "fd00:77::2/64", "dev", "eth0", "nodad")
	bed.MustIP(remote, "addr", "add", "fd00:2::5/128", "dev", "lo")
	bed.MustIP(remote, "-6", "route", "add", "default", "via", "fd00:77::1", "src", "fd00:2::5")
	bed.MustIP(self, "-6", "route", "add", "fd00:2::/64", "via", "fd00:77::2", "dev", tun)
	bed.MustIP(self, "addr", "add", "fd00:1:0:7::1/64", "dev", podIf, "nodad")
	bed.MustIP(pod, "addr", "add", "fd00:1:0:7::2/64", "dev", "eth0", "nodad")
	bed.MustIP(pod, "-6", "route", "add", "default", "via", "fd00:1:0:7::1")
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	bed.StartHelper(pod, "echo", "echo")

	tb := NewTable(nil)
	t.Cleanup(func() { _ = tb.Teardown() })
	d := Desired{Interface: tun, Local: pfx("10.1.0.0/16", "10.101.0.0/16", "fd00:1::/48"), Remote: pfx("10.2.0.0/16", "fd00:2::/64"),
		Nodes: pfx("172.30.0.2/32"), SNAT4: netip.MustParseAddr("100.64.0.1"),
		Translate: []Translation{{Real: netip.MustParsePrefix("10.1.0.0/16"), Mapped: netip.MustParsePrefix("240.1.0.0/16")},
			{Real: netip.MustParsePrefix("10.101.0.0/16"), Mapped: netip.MustParsePrefix("240.2.0.0/16")},
			{Real: netip.MustParsePrefix("fd00:1::/48"), Mapped: netip.MustParsePrefix("fc00:1::/48")}}}
	if err := tb.Set(d); err != nil {
		t.Fatal(err)
	}
	call := func(ns, proto, dst, size string) string {
		t.Helper()
		var out string
		if err := testkit.Poll(10*time.Second, 200*time.Millisecond, func() error {
			var err error
			out, err = bed.Helper(ns, proto, dst, size)
			return err
		}); err != nil {
			rs, _ := testbed.Exec(context.Background(), self, "nft", "list", "ruleset")
			t.Fatalf("%s from %s to %s: %v\n%s", proto, ns, dst, err, rs)
		}
		return out
	}
	for _, proto := range []string{"tcp", "udp"} {
		if got := call(pod, proto, "10.2.0.5", "1400"); got != "FROM 240.1.0.2" {
			t.Errorf("%s: the remote cluster saw the pod as %q, want its mapped address 240.1.0.2", proto, got)
		}
		if got := call(remote, proto, "240.1.0.2", "2000"); got != "FROM 10.2.0.5" {
			t.Errorf("%s: the pod's mapped address answered %q, want the pod seeing the remote caller 10.2.0.5", proto, got)
		}
	}
	for _, proto := range []string{"tcp", "udp"} {
		if got := call(pod, proto, "fd00:2::5", "1200"); got != "FROM fc00:1:0:7::2" {
			t.Errorf("IPv6 %s: the remote cluster saw the pod as %q, want its mapped address fc00:1:0:7::2", proto, got)
		}
		if got := call(remote, proto, "fc00:1:0:7::2", "1200"); got != "FROM fd00:2::5" {
			t.Errorf("IPv6 %s: the pod's mapped address answered %q, want the pod seeing fd00:2::5", proto, got)
		}
	}
	if got := call(node, "udp", "10.2.0.5", "100"); got != "FROM 100.64.0.1" {
		t.Errorf("host traffic reached the remote cluster as %q, want SNAT to the tunnel IP", got)
	}
	if ok, err := intact(d); err != nil || !ok {
		t.Fatalf("table with a translation not seen as intact (%v)", err)
	}

	// The translation leaves: real addresses again, the rest unchanged.
	d.Translate = nil
	if err := tb.Set(d); err != nil {
		t.Fatal(err)
	}
	if got := call(pod, "tcp", "10.2.0.5", "1000"); got != "FROM 10.1.0.2" {
		t.Errorf("without the translation the remote cluster saw the pod as %q, want 10.1.0.2", got)
	}
	if out := listTable(t); strings.Contains(out, chainXlatIn) {
		t.Errorf("translation chains left behind:\n%s", out)
	}
}

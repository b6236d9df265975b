package testbed_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/testbed"
	"github.com/tunnelmesh/tunnelmesh/pkg/wg"
)

// BenchmarkDataplane measures, on the same namespaces and in one run,
// pod-to-pod TCP throughput (1 and 4 streams) and ping RTT over these
// paths: tunnelmesh on embedded wireguard-go (userspace), the same between
// two clusters with identical CIDRs, so both translated (each gateway
// rewrites every packet both ways: the worst case of translation), tunnelmesh on
// kernel WireGuard (its own pair of clusters; the row says why it is
// skipped where the module is absent), plain veth routing with no tunnel
// (the ceiling), and the standalone wireguard-go program of the same
// version configured by hand with wg(8) (the reference). It prints a table;
// it never fails on a figure. Run with:
// go test -run '^$' -bench Dataplane -benchtime 1x ./pkg/testbed
func BenchmarkDataplane(b *testing.B) {
	for _, c := range []string{"iperf3", "wg", "ping", "nft"} {
		if _, err := exec(c); err != nil {
			if os.Getenv("CI") == "true" {
				b.Fatalf("%s missing (make deps)", c)
			}
			b.Skipf("%s missing (make deps)", c)
		}
	}
	secs := 10
	if s, err := strconv.Atoi(os.Getenv("BENCH_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	m := newMesh(b, wg.ModeUserspace)
	wgRef := testbed.Build(b, "golang.zx2c4.com/wireguard")
	c1, c2 := m.addCluster(1), m.addCluster(2)
	m.startGateway(c1)
	m.startGateway(c2)
	m.reachAll(b, []int{1, 2}, 45*time.Second)
	bed := m.bed
	// Translated: two clusters joined with the same CIDRs (kind's defaults,
	// as TestTranslatedMesh), same WireGuard mode and settings as c1 and c2.
	t1, t2 := m.addClusterCIDRs(5, 244, "10.96.0.0/12"), m.addClusterCIDRs(6, 244, "10.96.0.0/12")
	m.startGateway(t1)
	m.startGateway(t2)
	m.setMeshIPs()
	if t1.meshIP == t1.podIP || t2.meshIP == t2.podIP {
		b.Fatalf("clusters with identical CIDRs not translated: %s is %s, %s is %s", t1.podIP, t1.meshIP, t2.podIP, t2.meshIP)
	}
	m.reachAll(b, []int{5, 6}, 45*time.Second)
	bed.Start(t2.podNS, "iperf3-server-translated", nil, "iperf3", "-s")
	kernelErr := wg.KernelAvailable()
	if kernelErr == nil {
		for _, i := range []int{3, 4} {
			c := m.addCluster(i)
			c.mode = wg.ModeKernel
			m.startGateway(c)
		}
		m.reachAll(b, []int{3, 4}, 45*time.Second)
		bed.Start(m.clusters[4].podNS, "iperf3-server-kernel", nil, "iperf3", "-s")
	}

	// Second and third addresses on the same pods for the ceiling and reference paths.
	for _, c := range []*cluster{c1, c2} {
		for _, n := range []int{1, 2} {
			bed.MustIP(c.gwNS, "addr", "add", fmt.Sprintf("10.%d.%d.1/24", c.i, n), "dev", "pods")
			bed.MustIP(c.podNS, "addr", "add", fmt.Sprintf("10.%d.%d.2/24", c.i, n), "dev", "eth0")
		}
	}
	// Ceiling: route 10.X.1.0/24 across the underlay, no tunnel.
	bed.MustIP(c1.gwNS, "route", "add", "10.2.1.0/24", "via", "192.0.2.12")
	bed.MustIP(c2.gwNS, "route", "add", "10.1.1.0/24", "via", "192.0.2.11")

	// Reference: wireguard-go run by hand, configured with wg(8), same MTU
	// as tmesh0 and the same MSS clamp; 10.X.2.0/24 over it.
	mtu := strings.Fields(bed.MustIP(c1.gwNS, "-o", "link", "show", "tmesh0"))
	tmeshMTU := "1420"
	for i, f := range mtu {
		if f == "mtu" && i+1 < len(mtu) {
			tmeshMTU = mtu[i+1]
		}
	}
	keys := map[int][2]string{}
	for _, c := range []*cluster{c1, c2} {
		priv := strings.TrimSpace(bed.MustExec(c.gwNS, "wg", "genkey"))
		f := fmt.Sprintf("%s/ref%d.key", bed.Dir, c.i)
		if err := os.WriteFile(f, []byte(priv+"\n"), 0o600); err != nil {
			b.Fatal(err)
		}
		pub := strings.TrimSpace(bed.MustExec(c.gwNS, "sh", "-c", "wg pubkey < "+f))
		keys[c.i] = [2]string{f, pub}
	}
	for _, c := range []*cluster{c1, c2} {
		other := 3 - c.i
		dev := fmt.Sprintf("wgref%s%d", bed.Prefix(), c.i) // UAPI sockets share /var/run/wireguard: unique names
		p := bed.Start(c.gwNS, "wireguard-go-"+c.id, []string{"WG_PROCESS_FOREGROUND=1", "LOG_LEVEL=error"}, wgRef, "-f", dev)
		if err := testkit.Poll(10*time.Second, 100*time.Millisecond, func() error {
			_, err := bed.IP(c.gwNS, "link", "show", dev)
			return err
		}); err != nil {
			b.Fatalf("wireguard-go did not start: %v\n%s", err, p.Tail(1000))
		}
		bed.MustExec(c.gwNS, "wg", "set", dev, "private-key", keys[c.i][0], "listen-port", "51821",
			"peer", keys[other][1], "endpoint", fmt.Sprintf("192.0.2.%d:51821", 10+other),
			"allowed-ips", fmt.Sprintf("10.%d.2.0/24,10.%d.1.0/24", other, other), "persistent-keepalive", "10")
		bed.MustIP(c.gwNS, "link", "set", dev, "mtu", tmeshMTU, "up")
		bed.MustIP(c.gwNS, "route", "add", fmt.Sprintf("10.%d.2.0/24", other), "dev", dev)
		bed.MustExec(c.gwNS, "nft", "add table inet benchref; add chain inet benchref refclamp { type filter hook forward priority 0; policy accept; }; "+
			"add rule inet benchref refclamp oifname "+dev+" tcp flags syn / syn,rst tcp option maxseg size set rt mtu")
	}
	b.Cleanup(func() {
		for _, c := range []*cluster{c1, c2} {
			_, _ = bed.Exec(c.gwNS, "nft", "delete", "table", "inet", "benchref")
		}
	})

	srv := bed.Start(c2.podNS, "iperf3-server", nil, "iperf3", "-s")
	_ = srv
	time.Sleep(300 * time.Millisecond)

	type path struct{ name, dst, src, ns string }
	const tmesh, translated, ceiling, reference = 0, 1, 2, 3 // rows of paths
	paths := []path{
		tmesh:      {"tunnelmesh (tmesh0, userspace wireguard-go)", "10.2.0.2", "10.1.0.2", c1.podNS},
		translated: {"tunnelmesh, both translated (userspace)", t2.meshIP, t1.podIP, t1.podNS},
		ceiling:    {"veth, no tunnel (ceiling)", "10.2.1.2", "10.1.1.2", c1.podNS},
		reference:  {"standalone wireguard-go + wg (reference)", "10.2.2.2", "10.1.2.2", c1.podNS},
	}
	const kernelRow = "tunnelmesh (tmesh0, kernel WireGuard)"
	if kernelErr == nil {
		paths = append(paths, path{kernelRow, "10.4.0.2", "10.3.0.2", m.clusters[3].podNS})
	}
	for _, p := range paths {
		if err := testkit.Poll(20*time.Second, 500*time.Millisecond, func() error {
			_, err := bed.Exec(p.ns, "ping", "-c", "1", "-W", "1", "-I", p.src, p.dst)
			return err
		}); err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
	}
	load := func() string {
		s, _ := os.ReadFile("/proc/loadavg")
		return strings.Join(strings.Fields(string(s))[:3], " ")
	}
	if os.Getenv("BENCH_DEBUG") != "" {
		time.Sleep(5 * time.Second)
		out, _ := osexec.Command("ps", "-o", "pid,pcpu,rss,args", "-p", fmt.Sprintf("%d,%d", c1.gw.Pid(), c2.gw.Pid())).CombinedOutput()
		b.Logf("idle gateways:\n%s\n%s", out, c1.gw.Tail(3000))
		for k := 0; k < 2; k++ {
			for _, p := range []struct{ src, dst string }{{"10.1.0.2", "10.2.0.2"}, {"10.1.2.2", "10.2.2.2"}} {
				po, _ := bed.Exec(c1.podNS, "ping", "-q", "-c", "100", "-i", "0.02", "-I", p.src, p.dst)
				b.Logf("%s", po)
			}
		}
	}
	loadBefore := load()
	rounds := 3
	if r, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS")); err == nil && r > 0 {
		rounds = r
	}
	res := make([]benchRow, len(paths))
	for n := 0; n < b.N; n++ {
		// Rounds interleaved across paths so a burst of load from elsewhere
		// hits all of them alike: each round, RTT on idle paths, then
		// throughput.
		for _, p := range paths { // warm-up, discarded: the first pings after setup pay one-off costs
			_, _ = pingRTT(bed, p.ns, p.dst, p.src)
		}
		for r := 0; r < rounds; r++ {
			for k := range paths {
				i := (k + r) % len(paths)
				res[i].rtt.add(pingRTT(bed, paths[i].ns, paths[i].dst, paths[i].src))
			}
			for k := range paths { // rotate the order every round
				i := (k + r) % len(paths)
				res[i].one.add(iperf(bed, paths[i].ns, paths[i].dst, paths[i].src, 1, secs))
			}
			for k := range paths {
				i := (k + r) % len(paths)
				res[i].four.add(iperf(bed, paths[i].ns, paths[i].dst, paths[i].src, 4, secs))
			}
		}
	}
	loadAfter := load()
	var sb strings.Builder
	fmt.Fprintf(&sb, "\ndataplane benchmark: pod→pod TCP, iperf3 %d s per run, ping 50 × 20 ms, median of %d interleaved rounds (order rotated), %s; load avg before %s, after %s\n",
		secs, rounds, time.Now().UTC().Format("2006-01-02 15:04 UTC"), loadBefore, loadAfter)
	fmt.Fprintf(&sb, "tunnel MTU %s (tmesh0 and reference), underlay veth MTU 1500\n", tmeshMTU)
	fmt.Fprintf(&sb, "translated row: pod %s of %s (known as %s) → pod %s of %s at %s; both clusters joined with pod CIDR %s, service CIDR %s\n\n",
		t1.podIP, t1.id, t1.meshIP, t2.podIP, t2.id, t2.meshIP, t1.pod, t1.svc)
	fmt.Fprintf(&sb, "| %-44s | %13s | %13s | %13s |\n", "path", "1 stream Gb/s", "4 streams Gb/s", "ping avg ms")
	fmt.Fprintf(&sb, "|%s|%s|%s|%s|\n", strings.Repeat("-", 46), strings.Repeat("-", 15), strings.Repeat("-", 16), strings.Repeat("-", 15))
	one, four := make([]float64, len(paths)), make([]float64, len(paths))
	for i, p := range paths {
		one[i], four[i] = res[i].one.median(), res[i].four.median()
		fmt.Fprintf(&sb, "| %-44s | %13s | %14s | %13s |\n", p.name, res[i].one.cell("%.2f"), res[i].four.cell("%.2f"), res[i].rtt.cell("%.3f"))
	}
	if kernelErr != nil {
		fmt.Fprintf(&sb, "| %-44s | %13s | %14s | %13s |\n", kernelRow, "skipped", "skipped", "skipped")
		fmt.Fprintf(&sb, "  kernel row skipped: %v\n", kernelErr)
	}
	ratio := func(a, b float64) string {
		if a == 0 || b == 0 {
			return "n/a (no successful run)"
		}
		return fmt.Sprintf("%.2f×", a/b)
	}
	fmt.Fprintf(&sb, "\ntunnelmesh / reference: 1 stream %s, 4 streams %s\n", ratio(one[tmesh], one[reference]), ratio(four[tmesh], four[reference]))
	fmt.Fprintf(&sb, "tunnelmesh / ceiling:   1 stream %s, 4 streams %s\n", ratio(one[tmesh], one[ceiling]), ratio(four[tmesh], four[ceiling]))
	fmt.Fprintf(&sb, "translated / untranslated tunnelmesh: 1 stream %s, 4 streams %s (target ≥ 0.95×)\n",
		ratio(one[translated], one[tmesh]), ratio(four[translated], four[tmesh]))
	fmt.Fprintf(&sb, "  paired by round (the two rows of one round meet the same load): median of the per-round ratios: 1 stream %s, 4 streams %s\n",
		paired(res[translated].one, res[tmesh].one), paired(res[translated].four, res[tmesh].four))
	var failed []string
	for i, p := range paths {
		fmt.Fprintf(&sb, "  runs %-44s 1 stream %v, 4 streams %v, ping %v\n", p.name, fmtRuns(res[i].one.ok), fmtRuns(res[i].four.ok), fmtRuns(res[i].rtt.ok))
		for _, f := range [][]string{res[i].rtt.failed, res[i].one.failed, res[i].four.failed} {
			for _, e := range f {
				failed = append(failed, p.name+": "+e)
			}
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(&sb, "\nFAILED runs (left out of the medians above, which are over the successful runs only):\n")
		for _, f := range failed {
			fmt.Fprintf(&sb, "  %s\n", f)
		}
	}
	fmt.Print(sb.String())
	if f := os.Getenv("BENCH_OUT"); f != "" {
		_ = os.WriteFile(f, []byte(sb.String()), 0o644)
	}
	if len(failed) > 0 {
		b.Errorf("%d iperf3 or ping runs failed (listed with the table)", len(failed))
	}
}

// paired is the median of a's and b's per-round ratios, with the ratios:
// rounds rotate the order of the paths, so the two runs of one round meet
// the same burst of load from elsewhere far more often than two medians do.
func paired(a, b runs) string {
	if len(a.failed)+len(b.failed) > 0 || len(a.ok) != len(b.ok) || len(a.ok) == 0 {
		return "n/a (a run failed)"
	}
	r := make([]float64, len(a.ok))
	for i := range r {
		r[i] = a.ok[i] / b.ok[i]
	}
	return fmt.Sprintf("%.2f× %v", median(r), fmtRuns(r))
}

// benchRow is one path's measurements.
type benchRow struct{ one, four, rtt runs }

// runs are the values of the successful runs of one measurement and why
// the others failed: a failed run is a failure, never a 0 in the median.
type runs struct {
	ok     []float64
	failed []string
}

func (r *runs) add(v float64, err error) {
	if err != nil {
		r.failed = append(r.failed, err.Error())
		return
	}
	r.ok = append(r.ok, v)
}

func (r runs) median() float64 { return median(r.ok) }

// cell is the median, or FAILED with how many runs failed.
func (r runs) cell(f string) string {
	switch {
	case len(r.failed) == 0:
		return fmt.Sprintf(f, r.median())
	case len(r.ok) == 0:
		return "FAILED"
	}
	return fmt.Sprintf(f+" (%d FAILED)", r.median(), len(r.failed))
}

func iperf(bed *testbed.Bed, ns, dst, src string, streams, secs int) (float64, error) {
	what := fmt.Sprintf("iperf3 -P %d to %s", streams, dst)
	out, err := bed.Exec(ns, "iperf3", "-c", dst, "-B", src, "-P", strconv.Itoa(streams), "-t", strconv.Itoa(secs), "-O", "1", "-J")
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	var r struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return 0, fmt.Errorf("%s: unreadable output: %w", what, err)
	}
	if r.Error != "" || r.End.SumReceived.BitsPerSecond <= 0 {
		return 0, fmt.Errorf("%s: no data received (%s)", what, r.Error)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}

var rttRE = regexp.MustCompile(`= [\d.]+/([\d.]+)/`)

func pingRTT(bed *testbed.Bed, ns, dst, src string) (float64, error) {
	out, err := bed.Exec(ns, "ping", "-q", "-c", "50", "-i", "0.02", "-I", src, dst)
	if err != nil {
		return 0, fmt.Errorf("ping %s: %w", dst, err)
	}
	m := rttRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("ping %s: no round-trip summary in %q", dst, out)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("ping %s: %w", dst, err)
	}
	return v, nil
}

func exec(name string) (string, error) { return osexec.LookPath(name) }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtRuns(v []float64) string {
	var parts []string
	for _, x := range v {
		parts = append(parts, fmt.Sprintf("%.2f", x))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// TestBenchRunsReportFailures: a failed run is listed as a failure and left
// out of the median, never counted as 0.
func TestBenchRunsReportFailures(t *testing.T) {
	var r runs
	r.add(2.0, nil)
	r.add(0, errors.New("iperf3 -P 1 to 10.2.0.2: exit status 1"))
	r.add(3.0, nil)
	if m := r.median(); m != 2.5 {
		t.Errorf("median %v over runs 2.0, failed, 3.0; want 2.5 (the failure left out)", m)
	}
	if c := r.cell("%.2f"); c != "2.50 (1 FAILED)" {
		t.Errorf("cell %q; want the median with the failure shown", c)
	}
	var none runs
	none.add(0, errors.New("ping 10.2.0.2: exit status 1"))
	if c := none.cell("%.3f"); c != "FAILED" {
		t.Errorf("cell %q with every run failed; want FAILED", c)
	}
}

// TestBenchPaired: the paired ratio is taken round by round, and a failed
// run breaks the pairing instead of shifting it.
func TestBenchPaired(t *testing.T) {
	a := runs{ok: []float64{2, 4, 3}}
	b := runs{ok: []float64{2, 2, 3}}
	if got := paired(a, b); got != "1.00× [1.00 2.00 1.00]" {
		t.Errorf("paired %q; want the median of the per-round ratios 1, 2, 1", got)
	}
	var c runs
	c.add(2, nil)
	c.add(0, errors.New("iperf3: exit status 1"))
	c.add(3, nil)
	if got := paired(a, c); got != "n/a (a run failed)" {
		t.Errorf("paired with a failed run: %q", got)
	}
}

package failover

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkFailover measures failovers of cluster A's active gateway under
// a live cross-cluster flow between pods on non-gateway nodes of both
// clusters (both in Kubernetes), and prints per way of stopping it (the
// crash kinds: kill -9 of the gateway, the node killed and gone from the
// network, the node frozen then thawed, the election traffic cut; and a
// graceful stop, each also with the broker down) the median, p90 and max
// over FAILOVER_KILLS (default 10) failovers of: (a) the time to a new Lease
// holder, (b) the time until the TCP flow moves again (and the UDP stream,
// which has no retransmission backoff), (c) datagrams lost of a 100/s
// stream, and what was lost after the old active came back. Run it once
// (-benchtime 1x); `make bench-failover` does. The election runs at the
// shipped settings (the gateway's defaults). The table also goes to
// $BENCH_OUT when set.
func BenchmarkFailover(b *testing.B) {
	kills := 10
	if s := os.Getenv("FAILOVER_KILLS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("FAILOVER_KILLS=%q: want a positive number", s)
		}
		kills = n
	}
	for i := 0; i < b.N; i++ {
		m, f := upBoth(b)
		type row struct {
			kind       stopKind
			brokerDown bool
			res        []result
		}
		rows := []*row{{kind: kill9}, {kind: nodeKill}, {kind: freeze}, {kind: partition}, {kind: graceful},
			{kind: kill9, brokerDown: true}, {kind: graceful, brokerDown: true}}
		for k := 0; k < kills; k++ {
			for _, r := range rows {
				res := m.failover(f, r.kind, r.brokerDown)
				r.res = append(r.res, res)
				b.Logf("%-18s broker down=%-5v #%d %s -> %s: new active %v, TCP %v, UDP %v, lost %d, lost after return %d, retaken %d", r.kind, r.brokerDown, k+1,
					res.from, res.to, ms(res.newActive), ms(res.tcpResumed), ms(res.udpResumed), res.lost, res.lostReturn, res.retaken)
			}
		}
		out := io.Writer(os.Stdout)
		if p := os.Getenv("BENCH_OUT"); p != "" {
			fh, err := os.Create(p)
			if err != nil {
				b.Fatal(err)
			}
			defer fh.Close()
			out = io.MultiWriter(os.Stdout, fh)
		}
		fmt.Fprintf(out, "\nFailover of cluster A's active gateway, %d failovers per row (median / p90 / max); flow: pod on A's plain worker -> pod on B's plain worker (TCP byte and UDP datagram every 10 ms)\n", kills)
		fmt.Fprintf(out, "settings (shipped defaults): Lease %v, renew every %v, renew deadline %v, memberlist probe %v / timeout %v / suspicion x%d, MaxHold %v; node frozen %v, election cut %v\n",
			3*time.Second, 200*time.Millisecond, 650*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond, 4, 30*time.Second, freezeFor, partitionFor)
		fmt.Fprintf(out, "%-19s %-7s %-26s %-26s %-26s %-20s %-18s %s\n", "stop", "broker", "(a) new active", "(b) TCP moving again", "UDP arriving again", "(c) lost of 100/s", "lost after return", "self step-downs")
		worst := 0.0
		for _, r := range rows {
			broker := "up"
			if r.brokerDown {
				broker = "down"
			}
			var a, t, u, l, lr []float64
			retaken := 0
			for _, x := range r.res {
				a = append(a, x.newActive.Seconds())
				t = append(t, x.tcpResumed.Seconds())
				u = append(u, x.udpResumed.Seconds())
				l = append(l, float64(x.lost))
				lr = append(lr, float64(x.lostReturn))
				retaken += x.retaken
			}
			na := stats(a, "%.2fs")
			if r.kind == partition {
				na = "none (as wanted)" // (b): the flow's longest silence
			}
			fmt.Fprintf(out, "%-19s %-7s %-26s %-26s %-26s %-20s %-18s %d\n", r.kind, broker, na, stats(t, "%.2fs"), stats(u, "%.2fs"), stats(l, "%.0f"), stats(lr, "%.0f"), retaken)
			if r.kind.crash() {
				worst = max(worst, slices.Max(t))
			}
		}
		fmt.Fprintf(out, "election cut: nothing fails over, (b) is the flow's longest silence\n")
		fmt.Fprintf(out, "target: (b) <= 2 s in every crash row (worst crash-row max %.2fs); load average at the end: %s\n", worst, loadavg())
	}
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// stats is "median / p90 / max" (p90 nearest-rank).
func stats(xs []float64, f string) string {
	s := slices.Clone(xs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	p90 := s[(len(s)*9+9)/10-1]
	return fmt.Sprintf(f+" / "+f+" / "+f, med, p90, s[len(s)-1])
}

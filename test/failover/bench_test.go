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
// a live cross-cluster flow and prints, per way of stopping it and with the
// broker up and down, the median and max over FAILOVER_KILLS (default 5)
// failovers of: (a) the time to a new Lease holder, (b) the time until the
// TCP flow moves again (and the UDP stream, which has no retransmission
// backoff), (c) datagrams lost of a 100/s stream. Run it once (-benchtime 1x);
// `make bench-failover` does. The table also goes to $BENCH_OUT when set.
func BenchmarkFailover(b *testing.B) {
	kills := 5
	if s := os.Getenv("FAILOVER_KILLS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("FAILOVER_KILLS=%q: want a positive number", s)
		}
		kills = n
	}
	for i := 0; i < b.N; i++ {
		m, f := up(b)
		type row struct {
			kind       stopKind
			brokerDown bool
			res        []result
		}
		rows := []*row{{kind: kill9}, {kind: graceful}, {kind: kill9, brokerDown: true}, {kind: graceful, brokerDown: true}}
		for k := 0; k < kills; k++ {
			for _, r := range rows {
				res := m.failover(f, r.kind, r.brokerDown)
				r.res = append(r.res, res)
				b.Logf("%-18s broker down=%-5v #%d %s -> %s: new active %v, TCP %v, UDP %v, lost %d, retaken %d", r.kind, r.brokerDown, k+1,
					res.from, res.to, ms(res.newActive), ms(res.tcpResumed), ms(res.udpResumed), res.lost, res.retaken)
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
		fmt.Fprintf(out, "\nFailover of cluster A's active gateway, %d failovers per row (median / max); flow: pod on a worker -> pod in cluster B\n", kills)
		fmt.Fprintf(out, "%-19s %-7s %-19s %-21s %-21s %-17s %s\n", "stop", "broker", "(a) new active", "(b) TCP moving again", "UDP arriving again", "(c) lost of 100/s", "self step-downs")
		for _, r := range rows {
			broker := "up"
			if r.brokerDown {
				broker = "down"
			}
			var a, t, u, l []float64
			retaken := 0
			for _, x := range r.res {
				a = append(a, x.newActive.Seconds())
				t = append(t, x.tcpResumed.Seconds())
				u = append(u, x.udpResumed.Seconds())
				l = append(l, float64(x.lost))
				retaken += x.retaken
			}
			fmt.Fprintf(out, "%-19s %-7s %-19s %-21s %-21s %-17s %d\n", r.kind, broker, medMax(a, "%.2fs"), medMax(t, "%.2fs"), medMax(u, "%.2fs"), medMax(l, "%.0f"), retaken)
		}
		fmt.Fprintf(out, "target: (b) <= 3 s in every row; load average at the end: %s\n", loadavg())
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

func medMax(xs []float64, f string) string {
	s := slices.Clone(xs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return fmt.Sprintf(f+" / "+f, med, s[len(s)-1])
}

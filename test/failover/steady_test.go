package failover

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestSteadyFlow: with nothing failing, the flow between pods on plain
// workers of two clusters (both in Kubernetes, every gateway at its shipped
// intervals) loses nothing and never stands still. What the active gateway
// and the route agents do periodically — health probes and the full-size
// path-MTU probe, heartbeats, status writes, resyncs, WireGuard keepalives
// — must not disturb the data plane. STEADY_FOR sets how long it watches
// (default 45 s: four heartbeats and resyncs, nine status writes, eighteen
// full-size probes).
func TestSteadyFlow(t *testing.T) {
	watch := 45 * time.Second
	if s := os.Getenv("STEADY_FOR"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("STEADY_FOR=%q: %v", s, err)
		}
		watch = d
	}
	m := newMeshWith(t, options{bInK8s: true, shipped: true})
	for _, n := range []string{"a-gw1", "a-gw2", "a-worker", "b-gw1", "b-gw2", "b-worker"} {
		m.start(n)
	}
	m.waitHolder(60*time.Second, "")
	leaseHolderWait(t, m.clientB, 60*time.Second, "")
	f := m.startFlows()
	f.waitFlowing(t, 30*time.Second)
	// Past the start: both actives converged, the first status written and
	// the first full-size probe answered.
	time.Sleep(10 * time.Second)
	from, fromSeq := time.Now(), f.udpSeq.Load()
	time.Sleep(watch)
	toSeq := f.udpSeq.Load()
	time.Sleep(300 * time.Millisecond) // datagrams in flight
	lost := f.udp.lostBetween(fromSeq+1, toSeq)
	udpGaps, tcpGaps := f.udp.gapsAfter(from, 50*time.Millisecond), f.tcp.gapsAfter(from, 50*time.Millisecond)
	t.Logf("steady flow for %s (shipped intervals, load %s): %d of %d UDP datagrams lost; UDP silences over 50 ms: %s; TCP: %s",
		watch, loadavg(), lost, toSeq-fromSeq-1, udpGaps, tcpGaps)
	if lost > 0 {
		t.Errorf("%d datagrams lost with nothing failing (silences from the start of the watch: %s)", lost, udpGaps)
		for _, n := range []string{"a-gw1", "a-gw2", "a-worker", "b-gw1", "b-worker"} {
			h, _, _ := m.holder(context.Background())
			t.Logf("---- %s (active in A: %s), log during the watch:\n%s", n, h, logBetween(readFile(m.procs[n].Log), from, time.Now()))
		}
	}
}

// logBetween is the lines of a logfmt log whose time= lies in [from, to].
func logBetween(log string, from, to time.Time) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		ts, ok := strings.CutPrefix(l, "time=")
		if !ok {
			continue
		}
		ts, _, _ = strings.Cut(ts, " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || at.Before(from) || at.After(to) {
			continue
		}
		out = append(out, l)
	}
	return fmt.Sprintf("%d lines\n%s", len(out), strings.Join(out, "\n"))
}

package netprobe

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func serve(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// Over loopback: the server counts what the client sent, the rate is
// positive and consistent with bytes and time.
func TestThroughputOverLoopback(t *testing.T) {
	addr := serve(t)
	r, err := MeasureThroughput(t.Context(), addr, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.Bytes < 128<<10 || r.Seconds < 0.3 || r.Gbps <= 0 || r.Kind != "throughput" {
		t.Fatalf("implausible result %+v", r)
	}
	if got := Gbps(r.Bytes, r.Seconds); got != r.Gbps {
		t.Fatalf("Gbps %v, recomputed %v", r.Gbps, got)
	}
	t.Logf("loopback: %.2f Gb/s (%d bytes in %.2fs)", r.Gbps, r.Bytes, r.Seconds)
}

func TestLatencyOverLoopback(t *testing.T) {
	addr := serve(t)
	r, err := MeasureLatency(t.Context(), addr, 200)
	if err != nil {
		t.Fatal(err)
	}
	if r.Samples != 200 || r.MinMicros <= 0 || r.P50Micros < r.MinMicros || r.P99Micros < r.P50Micros || r.MaxMicros < r.P99Micros {
		t.Fatalf("implausible result %+v", r)
	}
	t.Logf("loopback: p50 %.0fµs p99 %.0fµs", r.P50Micros, r.P99Micros)
	if _, err := MeasureLatency(t.Context(), addr, 0); err == nil {
		t.Error("0 samples accepted")
	}
}

func TestBenchmarkServerDown(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	if _, err := MeasureThroughput(t.Context(), addr, 100*time.Millisecond); err == nil {
		t.Error("throughput to a closed port succeeded")
	}
	if _, err := MeasureLatency(t.Context(), addr, 3); err == nil {
		t.Error("latency to a closed port succeeded")
	}
}

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0, time.Millisecond}, {1, time.Millisecond}} {
		if got := Percentile(s, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if Percentile(nil, 50) != 0 {
		t.Error("empty")
	}
	l := Summarize([]time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond})
	if l.Samples != 3 || l.P50Micros != 2000 || l.P99Micros != 3000 || l.MinMicros != 1000 || l.MaxMicros != 3000 {
		t.Errorf("Summarize: %+v", l)
	}
}

func TestParseStep(t *testing.T) {
	s, err := ParseStep("by-name=http:http://web.ns.svc.clusterset.local:8080/")
	if err != nil || s.Name != "by-name" || s.Kind != "http" || s.Target != "http://web.ns.svc.clusterset.local:8080/" {
		t.Fatalf("%+v %v", s, err)
	}
	if back, _ := ParseStep(s.String()); back != s {
		t.Errorf("round trip: %+v", back)
	}
	if s, err := ParseStep("b=bulk:10.1.0.7:5201"); err != nil || s.Kind != "bulk" || s.Target != "10.1.0.7:5201" {
		t.Errorf("bulk: %+v %v", s, err)
	}
	for _, bad := range []string{"", "x", "=http:u", "x=ftp:u", "x=http:", "x=http"} {
		if _, err := ParseStep(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRunStep(t *testing.T) {
	// HTTP that fails twice, then answers: OK after 3 attempts, time counted.
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls++
		if calls < 3 {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"podIP": "10.1.0.5"})
	}))
	t.Cleanup(srv.Close)
	r := RunStep(t.Context(), Step{Name: "pod-ip", Kind: "http", Target: srv.URL}, 5*time.Second, time.Second)
	if !r.OK || r.Attempts != 3 || r.Millis < 900 || !strings.Contains(r.Answer, "10.1.0.5") {
		t.Fatalf("http: %+v", r)
	}
	// A name that never resolves: not OK after the wait, the error kept.
	r = RunStep(t.Context(), Step{Name: "dns", Kind: "dns", Target: "no-such-name.invalid"}, 600*time.Millisecond, 300*time.Millisecond)
	if r.OK || r.Error == "" || r.Attempts < 2 {
		t.Fatalf("dns of an invalid name: %+v", r)
	}
	r = RunStep(t.Context(), Step{Name: "dns", Kind: "dns", Target: "localhost"}, time.Second, time.Second)
	if !r.OK || !strings.Contains(r.Answer, "127.0.0.1") {
		t.Fatalf("dns localhost: %+v", r)
	}
	// Bulk: a second of TCP to a benchmark server.
	addr := serve(t)
	r = RunStep(t.Context(), Step{Name: "bulk", Kind: "bulk", Target: addr}, time.Second, 5*time.Second)
	var tp Throughput
	if !r.OK || json.Unmarshal([]byte(r.Answer), &tp) != nil || tp.Bytes <= 0 || tp.Seconds < 1 {
		t.Fatalf("bulk: %+v", r)
	}
	// UDP: an echo answers; a closed port does not.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(append([]byte("echo "), buf[:n]...), from)
		}
	}()
	r = RunStep(t.Context(), Step{Name: "udp", Kind: "udp", Target: pc.LocalAddr().String()}, time.Second, time.Second)
	if !r.OK || !strings.HasPrefix(r.Answer, "echo tunnelmesh verify") {
		t.Fatalf("udp: %+v", r)
	}
	closed, _ := net.ListenPacket("udp", "127.0.0.1:0")
	addr = closed.LocalAddr().String()
	closed.Close()
	if r = RunStep(t.Context(), Step{Name: "udp", Kind: "udp", Target: addr}, 200*time.Millisecond, 200*time.Millisecond); r.OK {
		t.Fatalf("udp to a closed port: %+v", r)
	}
}

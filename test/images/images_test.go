// Package images_test runs the e2e test programs for real on loopback: echoserver
// serving, netclient checking it over HTTP, TCP, UDP and DNS.
package images_test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
)

func build(t *testing.T, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func TestEchoserverAndNetclient(t *testing.T) {
	echo := build(t, "github.com/tunnelmesh/tunnelmesh/test/images/echoserver")
	nc := build(t, "github.com/tunnelmesh/tunnelmesh/test/images/netclient")
	addr := fmt.Sprintf("127.0.0.1:%d", testkit.Ports(t, 1)[0])
	srv := exec.Command(echo, "-listen", addr)
	srv.Env = []string{"POD_IP=192.0.2.10", "CLUSTER_NAME=east", "NODE_NAME=east-worker"}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })

	run := func(args ...string) (string, error) {
		out, err := exec.Command(nc, args...).Output()
		return string(out), err
	}
	out, err := run("-wait", "10s", "http", "http://"+addr+"/who")
	if err != nil {
		t.Fatalf("netclient http: %v", err)
	}
	var rep struct{ PodIP, Cluster, Node, Client, Path, Proto string }
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("reply is not JSON: %v: %q", err, out)
	}
	if rep.PodIP != "192.0.2.10" || rep.Cluster != "east" || rep.Node != "east-worker" || rep.Path != "/who" || rep.Proto != "http" || !strings.HasPrefix(rep.Client, "127.0.0.1:") {
		t.Fatalf("unexpected reply %+v", rep)
	}
	if out, err := run("-count", "3", "http", "http://"+addr+"/"); err != nil || strings.Count(out, `"cluster":"east"`) != 3 {
		t.Fatalf("netclient -count 3: %v %q", err, out)
	}
	if out, err := run("udp", addr); err != nil || !strings.Contains(out, `"proto":"udp"`) || !strings.Contains(out, `"cluster":"east"`) {
		t.Fatalf("netclient udp: %v %q", err, out)
	}
	if out, err := run("tcp", addr, "GET /healthz HTTP/1.0\r\n\r\n"); err != nil || !strings.Contains(out, "200 OK") {
		t.Fatalf("netclient tcp: %v %q", err, out)
	}
	if out, err := run("dns", "-type", "A", "localhost"); err != nil || !strings.Contains(out, "127.0.0.1") {
		t.Fatalf("netclient dns: %v %q", err, out)
	}
	// Payloads larger than any MTU: 64 KiB over HTTP come back intact; a
	// 4000-byte datagram arrives whole (the reply says how much came).
	if out, err := run("post", "http://"+addr+"/echo", "65536"); err != nil || !strings.Contains(out, `"size":65536`) {
		t.Fatalf("netclient post 64 KiB: %v %q", err, out)
	}
	if out, err := run("-size", "4000", "udp", addr); err != nil || !strings.Contains(out, `"size":4000`) {
		t.Fatalf("netclient -size 4000 udp: %v %q", err, out)
	}
	before := time.Now().UnixMilli()
	out, err = run("-stamp", "udp", addr)
	var at int64
	if _, serr := fmt.Sscanf(out, "at %d\n", &at); err != nil || serr != nil || at < before || at > time.Now().UnixMilli() {
		t.Fatalf("netclient -stamp udp: %v %v %q", err, serr, out)
	}
	// A probe waits at most one interval for its answer: 250 ms, so that a
	// loaded machine's scheduling delay is not taken for a lost probe.
	out, err = run("-timeout", "1s", "flow", addr, "2s", "250ms")
	if err != nil {
		t.Fatalf("netclient flow: %v %q", err, out)
	}
	var fl struct {
		Sent, OK int
		Gaps     []any
		Answers  []struct{ Cluster string }
		LostMs   []int64
	}
	if err := json.Unmarshal([]byte(out), &fl); err != nil || fl.Sent < 5 || fl.OK != fl.Sent || len(fl.Gaps) != 0 ||
		len(fl.Answers) != 1 || fl.Answers[0].Cluster != "east" || len(fl.LostMs) != 0 {
		t.Fatalf("flow to a live server: %v %q", err, out)
	}
	// Failures must fail: closed ports, a bad DNS type.
	closed := fmt.Sprintf("127.0.0.1:%d", testkit.Ports(t, 1)[0])
	start := time.Now()
	if _, err := run("-timeout", "1s", "udp", closed); err == nil {
		t.Fatal("udp to a closed port succeeded")
	}
	if _, err := run("-wait", "2s", "-timeout", "1s", "tcp", closed); err == nil {
		t.Fatal("tcp to a closed port succeeded")
	}
	if time.Since(start) < 2*time.Second {
		t.Fatal("-wait did not retry")
	}
	if _, err := run("-timeout", "1s", "http", "http://"+closed+"/"); err == nil {
		t.Fatal("http to a closed port succeeded")
	}
	if _, err := run("-timeout", "100ms", "flow", closed, "500ms", "100ms"); err == nil {
		t.Fatal("flow to a closed port succeeded")
	}
	if _, err := run("dns", "-type", "MX", "localhost"); err == nil {
		t.Fatal("unsupported DNS type accepted")
	}
}

// netclient's meshctl subcommands: bench-server and bench (one JSON line
// each), steps (one JSON line per step, exit 1 when one fails).
func TestNetclientBenchAndSteps(t *testing.T) {
	nc := build(t, "github.com/tunnelmesh/tunnelmesh/test/images/netclient")
	addr := fmt.Sprintf("127.0.0.1:%d", testkit.Ports(t, 1)[0])
	srv := exec.Command(nc, "bench-server", "-listen", addr)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })

	out, err := exec.Command(nc, "bench", "throughput", "-duration", "300ms", "-wait", "10s", addr).Output()
	var tp struct {
		Kind  string
		Bytes int64
		Gbps  float64
	}
	if err != nil || json.Unmarshal(out, &tp) != nil || tp.Kind != "throughput" || tp.Bytes <= 0 || tp.Gbps <= 0 {
		t.Fatalf("bench throughput: %v %q", err, out)
	}
	out, err = exec.Command(nc, "bench", "latency", "-samples", "50", addr).Output()
	var lat struct {
		Kind      string
		Samples   int
		P99Micros float64
	}
	if err != nil || json.Unmarshal(out, &lat) != nil || lat.Samples != 50 || lat.P99Micros <= 0 {
		t.Fatalf("bench latency: %v %q", err, out)
	}

	cmd := exec.Command(nc, "-wait", "1s", "-timeout", "500ms", "steps", "name=dns:localhost", "closed=http:http://127.0.0.1:1/")
	out, err = cmd.Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if cmd.ProcessState.ExitCode() != 1 || len(lines) != 2 {
		t.Fatalf("steps: exit %d, %v\n%s", cmd.ProcessState.ExitCode(), err, out)
	}
	var first, second struct {
		Step string
		OK   bool
	}
	_ = json.Unmarshal([]byte(lines[0]), &first)
	_ = json.Unmarshal([]byte(lines[1]), &second)
	if first.Step != "name" || !first.OK || second.Step != "closed" || second.OK {
		t.Fatalf("steps results:\n%s", out)
	}
}

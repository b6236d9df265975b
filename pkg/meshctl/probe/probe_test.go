package probe

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/internal/golden"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/netprobe"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/output"
)

func TestSpecs(t *testing.T) {
	r := Run{ID: "abc123", Kind: "verify"}
	if r.Namespace() != "tmesh-verify-abc123" || r.Selector() != RunLabel+"=abc123" {
		t.Fatalf("names: %s %s", r.Namespace(), r.Selector())
	}
	srv := r.EchoServer("east-worker", EchoImage, ClientImage, "east")
	steps := r.VerifySteps("10.1.0.7")
	cl := r.VerifyClient("west-worker", ClientImage, steps, "2m0s")
	bs := r.BenchServer("east-worker", ClientImage)
	bc := r.BenchClient(1, "west-worker", ClientImage, Latency, "fd00::7", "10s", 500)
	for _, p := range []*corev1.Pod{srv, cl, bs, bc} {
		if p.Namespace != r.Namespace() || p.Labels[RunLabel] != "abc123" || p.Labels[kube.PartOfLabel] != kube.PartOf {
			t.Errorf("%s: namespace %q labels %v", p.Name, p.Namespace, p.Labels)
		}
		sc := p.Spec.Containers[0].SecurityContext
		if sc == nil || !*sc.RunAsNonRoot || *sc.AllowPrivilegeEscalation || len(sc.Capabilities.Drop) != 1 {
			t.Errorf("%s: security context %+v", p.Name, sc)
		}
		if p.Spec.Containers[0].ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("%s: pull policy", p.Name)
		}
	}
	if srv.Spec.NodeName != "east-worker" || srv.Spec.RestartPolicy != corev1.RestartPolicyAlways || srv.Spec.Containers[0].Image != EchoImage ||
		len(srv.Spec.Containers) != 2 || srv.Spec.Containers[1].Image != ClientImage || strings.Join(srv.Spec.Containers[1].Args, " ") != "bench-server -listen=:5201" {
		t.Errorf("server: %+v", srv.Spec)
	}
	if cl.Spec.RestartPolicy != corev1.RestartPolicyNever || cl.Spec.NodeName != "west-worker" {
		t.Errorf("client: %+v", cl.Spec)
	}
	args := strings.Join(cl.Spec.Containers[0].Args, " ")
	for _, want := range []string{"-wait 2m0s", "steps", "pod-ip-tcp=http:http://10.1.0.7:8080/verify", "pod-ip-udp=udp:10.1.0.7:8080", "pod-ip-bulk=bulk:10.1.0.7:5201",
		"clusterset-dns=dns:echo.tmesh-verify-abc123.svc.clusterset.local", "clusterset-tcp=http:http://echo.tmesh-verify-abc123.svc.clusterset.local:8080/verify"} {
		if !strings.Contains(args, want) {
			t.Errorf("client args lack %q: %s", want, args)
		}
	}
	// The client's arguments parse back into the steps.
	var parsed []netprobe.Step
	for _, a := range cl.Spec.Containers[0].Args[5:] {
		s, err := netprobe.ParseStep(a)
		if err != nil {
			t.Fatal(err)
		}
		parsed = append(parsed, s)
	}
	if !slices.Equal(parsed, steps) {
		t.Errorf("steps round trip: %v vs %v", parsed, steps)
	}
	if got := strings.Join(bc.Spec.Containers[0].Args, " "); got != "bench latency -duration 10s -samples 500 -wait 60s [fd00::7]:5201" {
		t.Errorf("bench client args: %s", got)
	}
	svc := r.EchoService()
	if svc.Spec.Selector[appLabel] != srv.Labels[appLabel] || svc.Spec.Selector[RunLabel] != "abc123" || len(svc.Spec.Ports) != 2 {
		t.Errorf("service: %+v", svc.Spec)
	}
	se := r.ServiceExport()
	if se.GetName() != ServiceName || se.GetNamespace() != r.Namespace() || se.GetLabels()[RunLabel] != "abc123" {
		t.Errorf("export: %v", se.Object)
	}
	if id := NewRunID(); len(id) != 6 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz0123456789") != "" || id == NewRunID() {
		t.Errorf("run ID %q", id)
	}
}

func TestPick(t *testing.T) {
	nodes := []NodeInfo{
		{Name: "cp", Ready: true, Role: RoleWorker, Missing: []string{ClientImage}},
		{Name: "gw", Ready: true, Role: RoleActive},
		{Name: "gw2", Ready: true, Role: RoleStandby},
		{Name: "w1", Ready: false, Role: RoleWorker},
		{Name: "w2", Ready: true, Role: RoleWorker},
	}
	p, err := Pick(nodes, "west", "", RoleWorker, RoleActive)
	// cp comes first and lacks the image: refused with the load hint.
	if cli.ExitCode(err) != cli.ExitRefused || !strings.Contains(err.(*cli.Error).Fix, "kind load docker-image "+ClientImage) {
		t.Fatalf("cp without the image: %v %v", p, err)
	}
	nodes[0].Missing = nil
	if p, err = Pick(nodes, "west", "", RoleWorker); err != nil || p.Node != "cp" {
		t.Fatalf("first Ready worker: %v %v", p, err)
	}
	if p, err = Pick(nodes, "west", "gw2"); err != nil || p.Role != RoleStandby {
		t.Fatalf("named: %v %v", p, err)
	}
	if _, err = Pick(nodes, "west", "w1"); cli.ExitCode(err) != cli.ExitRefused {
		t.Fatalf("named, not Ready: %v", err)
	}
	if _, err = Pick(nodes, "west", "nope"); cli.ExitCode(err) != cli.ExitUsage {
		t.Fatalf("unknown node: %v", err)
	}
	pl, err := ClientPlacements(nodes, "west", "")
	if err != nil || len(pl) != 2 || pl[0].Node != "gw" || pl[1].Node != "cp" {
		t.Fatalf("placements: %v %v", pl, err)
	}
	only := []NodeInfo{{Name: "solo", Ready: true, Role: RoleActive}}
	if pl, err = ClientPlacements(only, "west", ""); err != nil || len(pl) != 1 || pl[0].Node != "solo" {
		t.Fatalf("one node: %v %v", pl, err)
	}
	if _, err = ClientPlacements([]NodeInfo{{Name: "x"}}, "west", ""); cli.ExitCode(err) != cli.ExitRefused {
		t.Fatalf("no Ready node: %v", err)
	}
}

func TestParseAndJudge(t *testing.T) {
	r := Run{ID: "abc123", Kind: "verify"}
	steps := r.VerifySteps("10.1.0.7")
	logs := `netclient: something on stderr
{"step":"pod-ip-tcp","ok":true,"millis":12.5,"attempts":1,"answer":"{\"podIP\":\"10.1.0.7\",\"cluster\":\"east\",\"node\":\"east-worker\",\"client\":\"10.2.1.9:40312\",\"proto\":\"http\"}"}
{"step":"pod-ip-udp","ok":true,"millis":3.1,"attempts":1,"answer":"{\"podIP\":\"10.1.0.7\",\"cluster\":\"east\",\"node\":\"east-worker\",\"client\":\"10.2.1.9:5555\",\"proto\":\"udp\"}"}
{"step":"pod-ip-bulk","ok":true,"millis":1004,"attempts":1,"answer":"{\"kind\":\"throughput\",\"bytes\":157286400,\"seconds\":1.004,\"gbps\":1.253}"}
{"step":"clusterset-dns","ok":true,"millis":3200,"attempts":7,"answer":"10.96.1.200"}
{"step":"clusterset-tcp","ok":false,"millis":60000,"attempts":99,"error":"dial tcp 10.96.1.200:8080: i/o timeout"}
`
	res, err := ParseSteps(logs)
	if err != nil || len(res) != 5 {
		t.Fatalf("ParseSteps: %v %v", res, err)
	}
	if _, err := ParseSteps("exec format error\n"); err == nil || !strings.Contains(err.Error(), "exec format error") {
		t.Fatalf("no results: %v", err)
	}
	rep := &VerifyReport{Run: r.ID, Server: Placement{"east", "east-worker", RoleWorker}, Client: Placement{"west", "west-worker", RoleWorker}}
	rep.Steps = append(rep.Steps, StepReport{Step: "server-ready", Result: StepPass, Millis: 2100, Detail: "echo server 10.1.0.7"})
	rep.Steps = append(rep.Steps, Judge(steps, res, "10.2.1.9", nil, "east")...)
	if rep.Failed() != 1 {
		t.Errorf("failed = %d", rep.Failed())
	}
	var b bytes.Buffer
	if err := output.PrintTable(&b, rep.Grid()); err != nil {
		t.Fatal(err)
	}
	golden.Assert(t, "verify.table", b.Bytes())

	// The server saw another address: the source-ip step fails, naming both.
	natted := Judge(steps[:1], res[:1], "10.2.3.3", nil, "east")
	if len(natted) != 2 || natted[1].Result != StepFail || !strings.Contains(natted[1].Detail, "saw 10.2.1.9, not the client's pod IP 10.2.3.3") {
		t.Errorf("masqueraded: %+v", natted)
	}
	// The client's IP unknown: the source step is skipped, not failed.
	if unknown := Judge(steps[:1], res[:1], "", nil, "east"); unknown[1].Result != StepSkip || (&VerifyReport{Steps: unknown}).Failed() != 0 {
		t.Errorf("unknown client IP: %+v", unknown)
	}
	// The client's cluster translated (10.2.0.0/16 known as 240.1.0.0/16):
	// the server must see the client's mapped address, and its real one is
	// a failure.
	tr := []api.Translation{{Real: "10.2.0.0/16", Mapped: "240.1.0.0/16"}}
	mapped := Judge(steps[:1], []netprobe.StepResult{{Step: StepPodIPTCP, OK: true, Attempts: 1,
		Answer: `{"podIP":"10.1.0.7","cluster":"east","node":"east-worker","client":"240.1.1.9:40312","proto":"http"}`}}, "10.2.1.9", tr, "east")
	if len(mapped) != 2 || mapped[1].Result != StepPass || mapped[1].Detail != "east saw the client's mapped address 240.1.1.9 (pod IP 10.2.1.9)" {
		t.Errorf("translated client seen at its mapped address: %+v", mapped)
	}
	if real := Judge(steps[:1], res[:1], "10.2.1.9", tr, "east"); len(real) != 2 || real[1].Result != StepFail ||
		!strings.Contains(real[1].Detail, "saw 10.2.1.9, not the client's mapped address 240.1.1.9") {
		t.Errorf("translated client seen at its real address: %+v", real)
	}
	// A step the client never printed fails as not run.
	if missing := Judge(steps, res[:2], "10.2.1.9", nil, "east"); missing[4].Result != StepFail || !strings.Contains(missing[4].Detail, "not run") {
		t.Errorf("missing step: %+v", missing)
	}
}

// TestMeshIP: a pod is reached at its mapped address where its cluster is
// translated (the host part kept), at its own elsewhere.
func TestMeshIP(t *testing.T) {
	tr := []api.Translation{{Real: "10.244.0.0/16", Mapped: "240.0.0.0/16"}, {Real: "fd00:1::/64", Mapped: "fc00::/64"}}
	for _, c := range []struct {
		ts       []api.Translation
		ip, want string
	}{
		{tr, "10.244.3.7", "240.0.3.7"},
		{tr, "fd00:1::5", "fc00::5"},
		{tr, "10.245.3.7", "10.245.3.7"}, // not a translated CIDR
		{nil, "10.244.3.7", "10.244.3.7"},
		{tr, "not an IP", "not an IP"},
	} {
		if got := MeshIP(c.ts, c.ip); got != c.want {
			t.Errorf("MeshIP(%v, %s) = %s, want %s", c.ts, c.ip, got, c.want)
		}
	}
}

func TestBenchReport(t *testing.T) {
	srv := Placement{"east", "east-worker2", RoleWorker}
	tp, err := ParseResult(Throughput, "netclient: x\n{\"kind\":\"throughput\",\"bytes\":3000000000,\"seconds\":10.02,\"gbps\":2.395}\n")
	if err != nil || tp.Throughput == nil || tp.Throughput.Gbps != 2.395 {
		t.Fatalf("ParseResult throughput: %+v %v", tp, err)
	}
	if _, err := ParseResult(Latency, "{\"kind\":\"throughput\",\"bytes\":1}\n"); err == nil {
		t.Fatal("a throughput line read as latency")
	}
	lat, err := ParseResult(Latency, "{\"kind\":\"latency\",\"samples\":1000,\"p50Micros\":412.5,\"p99Micros\":1830,\"minMicros\":301,\"maxMicros\":5020}\n")
	if err != nil || lat.Latency == nil || lat.Latency.Samples != 1000 {
		t.Fatalf("ParseResult latency: %+v %v", lat, err)
	}
	for name, rep := range map[string]*BenchReport{
		"throughput": {Kind: Throughput, Rows: []BenchRow{
			{Client: Placement{"west", "west-worker", RoleActive}, Server: srv, Throughput: tp.Throughput},
			{Client: Placement{"west", "west-worker2", RoleWorker}, Server: srv, Error: "pod ... timed out"}}},
		"latency": {Kind: Latency, Rows: []BenchRow{{Client: Placement{"west", "west-worker", RoleActive}, Server: srv, Latency: lat.Latency}}},
	} {
		var b bytes.Buffer
		if err := output.PrintTable(&b, rep.Grid()); err != nil {
			t.Fatal(err)
		}
		golden.Assert(t, "bench-"+name+".table", b.Bytes())
	}
}

func TestStepWait(t *testing.T) {
	for _, c := range []struct {
		left time.Duration
		want time.Duration
	}{{3 * time.Minute, 40 * time.Second}, {time.Hour, time.Minute}, {25 * time.Second, 10 * time.Second}} {
		ctx, cancel := context.WithTimeout(context.Background(), c.left)
		got := StepWait(ctx, 4)
		cancel()
		if got < c.want-time.Second || got > c.want {
			t.Errorf("%s left: %s, want %s", c.left, got, c.want)
		}
	}
	if got := StepWait(context.Background(), 4); got != time.Minute {
		t.Errorf("no deadline: %s", got)
	}
}

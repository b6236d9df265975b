//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/kindbed"
)

// gathered is set once a failed test has gathered logs, so that its
// parent (TestMesh, which fails with it) does not gather them again after
// later subtests have changed the clusters.
var gathered atomic.Bool

// held collects the figures the issue holds the mesh to; TestMesh prints
// them at its end, passed or failed.
var held struct {
	sync.Mutex
	lines []string
}

func hold(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	logf("%s", line)
	held.Lock()
	held.lines = append(held.lines, line)
	held.Unlock()
}

func printHeld() {
	held.Lock()
	defer held.Unlock()
	if len(held.lines) == 0 {
		return
	}
	fmt.Fprintln(os.Stderr, "\ne2e: held numbers")
	for _, l := range held.lines {
		fmt.Fprintln(os.Stderr, "  "+l)
	}
}

// docker runs the docker CLI (kind nodes are its containers).
func docker(ctx context.Context, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// gatherOnFailure writes, when t has failed, every tunnelmesh pod's logs
// (the previous container's too), `meshctl show all -o yaml` and
// `meshctl diagnose`, the
// MeshGateways and the node containers' own logs under e2e/logs/<test>/.
// kind's full node collection (journal, kubelet, containerd) is gathered
// by TestMain when the run fails.
func gatherOnFailure(t *testing.T, clusters ...meshCluster) {
	t.Cleanup(func() {
		if !t.Failed() || gathered.Load() {
			return
		}
		gathered.Store(true)
		dir := filepath.Join(logRoot(), unsafeName.ReplaceAllString(t.Name(), "_"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Logf("gather: %v", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		for _, c := range clusters {
			gatherCluster(ctx, t, c, filepath.Join(dir, c.Spec.Name))
		}
		t.Logf("logs of the failure in %s", dir)
	})
}

func logRoot() string {
	if d := os.Getenv("E2E_LOG_DIR"); d != "" {
		return d
	}
	d, _ := filepath.Abs("logs")
	return d
}

func gatherCluster(ctx context.Context, t *testing.T, c meshCluster, dir string) {
	_ = os.MkdirAll(dir, 0o755)
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Logf("gather %s: %v", name, err)
		}
	}
	pods, err := c.Client.CoreV1().Pods(defaults.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		write("pods.err", []byte(err.Error()))
	}
	if pods != nil {
		b, _ := json.MarshalIndent(pods.Items, "", "  ")
		write("pods.json", b)
		for _, p := range pods.Items {
			for _, ctr := range p.Spec.Containers {
				for _, prev := range []bool{false, true} {
					out, err := c.Client.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: ctr.Name, Previous: prev}).DoRaw(ctx)
					if err != nil && prev {
						continue
					}
					if err != nil {
						out = []byte(err.Error())
					}
					name := p.Name + "_" + ctr.Name
					if prev {
						name += ".previous"
					}
					write(name+".log", out)
				}
			}
		}
	}
	if out, err := meshctlQuiet(ctx, c.Cluster, "show", "all", "-o", "yaml"); err == nil || out != "" {
		write("meshctl-show-all.yaml", []byte(out))
	}
	if out, err := meshctlQuiet(ctx, c.Cluster, "diagnose"); err == nil || out != "" {
		write("meshctl-diagnose.txt", []byte(out))
	}
	if m, err := activeGateway(ctx, c); err == nil {
		b, _ := json.MarshalIndent(m, "", "  ")
		write("meshgateway.json", b)
	}
	nodes, _ := env.Provider.ListNodes(c.Spec.Name)
	for _, n := range nodes {
		if out, err := docker(ctx, "logs", "--tail", "2000", n.String()); err == nil || out != "" {
			write("node-"+n.String()+".log", []byte(out))
		}
	}
}

// meshctlQuiet runs meshctl without logging (for gathering).
func meshctlQuiet(ctx context.Context, c *kindbed.Cluster, args ...string) (string, error) {
	bin := os.Getenv("MESHCTL")
	if bin == "" {
		bin = "../bin/meshctl"
	}
	cmd := exec.CommandContext(ctx, bin, append(args, "--kubeconfig", c.Kubeconfig)...)
	cmd.Dir = env.WorkDir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// flowReport is what `netclient flow` prints.
type flowReport struct {
	StartMs, EndMs int64
	Sent, OK       int
	Gaps           []struct{ FromMs, ToMs int64 }
	// Answers: from AtMs on, probes were answered by Cluster (the
	// echoserver's kind cluster name); LostMs: when each lost probe was sent.
	Answers []struct {
		AtMs    int64
		Cluster string
	}
	LostMs []int64
}

// flow is a UDP probe stream from a pod of from on node to addr, running
// in the background until its duration has passed.
type flow struct {
	done chan struct{}
	rep  flowReport
	out  string
	err  error
}

// startFlow probes addr (HOST:PORT of an echoserver) every interval for
// duration from a pod on node of c.
func startFlow(ctx context.Context, c *kindbed.Cluster, node, addr string, duration, interval time.Duration) *flow {
	f := &flow{done: make(chan struct{})}
	go func() {
		defer close(f.done)
		r, err := c.RunClient(ctx, kindbed.Namespace, node, "-timeout", "300ms", "flow", addr, duration.String(), interval.String())
		f.out, f.err = r.Output, err
		// A flow that failed (no answer at the end) still reports its gaps.
		if perr := json.Unmarshal([]byte(strings.TrimSpace(r.Output)), &f.rep); err == nil {
			f.err = perr
		}
	}()
	return f
}

// wait returns the flow's report once it has ended.
func (f *flow) wait() (flowReport, error) {
	<-f.done
	if f.err != nil {
		return f.rep, fmt.Errorf("flow: %w (output %q)", f.err, f.out)
	}
	return f.rep, nil
}

// atEvent: a gap from fromMs to toMs is the one an event at at caused (it
// began within 3 s after at, or spans it).
func atEvent(fromMs, toMs int64, at time.Time) bool {
	return inWindow(fromMs, toMs, at, at)
}

// inWindow: a gap from fromMs to toMs had not ended by at and began by the
// later of until and 3 s after at.
func inWindow(fromMs, toMs int64, at, until time.Time) bool {
	return toMs >= at.UnixMilli() && fromMs <= max(until.UnixMilli(), at.UnixMilli()+3000)
}

// failoverGap measures the flow's outage around an event at at whose
// failover was seen done at until: of the gaps that span at or began by
// the later of until and 3 s after at, the longest, their sum, how many,
// and when (from at) the last of them ended — the flow moving again for
// good. A killed process may answer a moment longer, so the outage can be
// two gaps; the first alone would understate it.
func (r flowReport) failoverGap(at, until time.Time) (longest, total, resumed time.Duration, n int) {
	for _, g := range r.Gaps {
		if !inWindow(g.FromMs, g.ToMs, at, until) {
			continue
		}
		d := time.Duration(g.ToMs-g.FromMs) * time.Millisecond
		longest, total, n = max(longest, d), total+d, n+1
		resumed = max(resumed, time.Duration(g.ToMs-at.UnixMilli())*time.Millisecond)
	}
	return longest, total, resumed, n
}

// gapsSince describes every gap of the flow that had not ended by at,
// relative to at, e.g.
// "+0.1s…+0.4s (300ms)".
func (r flowReport) gapsSince(at time.Time) string {
	var parts []string
	for _, g := range r.Gaps {
		from, to := time.UnixMilli(g.FromMs).Sub(at), time.UnixMilli(g.ToMs).Sub(at)
		if to < 0 {
			continue // over before at (a crash report printed the failover's gap again, at -20.0s…-18.8s from the return)
		}
		parts = append(parts, fmt.Sprintf("%+.1fs…%+.1fs (%s)", from.Seconds(), to.Seconds(), (to-from).Round(time.Millisecond)))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// waitFlowRunning waits until the flow's pod is probing (its first answers
// are in), so the event it is to measure happens during the flow.
func waitFlowRunning(ctx context.Context, c *kindbed.Cluster, f *flow) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-f.done:
			_, err := f.wait()
			return fmt.Errorf("flow ended before the event: %v", err)
		default:
		}
		pods, err := c.Client.CoreV1().Pods(kindbed.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=check"})
		if err == nil {
			for _, p := range pods.Items {
				if p.Status.Phase == corev1.PodRunning && len(p.Spec.Containers[0].Args) > 2 && p.Spec.Containers[0].Args[2] == "flow" {
					time.Sleep(2 * time.Second) // its first probes answered
					return nil
				}
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	return fmt.Errorf("flow pod not running after 2 minutes")
}

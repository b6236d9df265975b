package probe

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/netprobe"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/output"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/progress"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/svcexport"
)

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// ServerNode and ClientNode pin the pods; default: a non-gateway node
	// (the path through the route agent, where most meshes break), else a
	// gateway node.
	ServerNode, ClientNode string
	EchoImage, ClientImage string
	// Timeout bounds the whole run, cleanup aside (default 3 min).
	Timeout  time.Duration
	Progress *progress.Printer
	// OnCreate is called with the run once its first object exists.
	OnCreate func(Run)
}

// Step results.
const (
	StepPass = "pass"
	StepFail = "fail"
	// StepSkip: the step could not be judged (not a failure).
	StepSkip = "skip"
)

// StepReport is one line of verify's report.
type StepReport struct {
	Step   string  `json:"step"`
	Result string  `json:"result"`
	Millis float64 `json:"millis"`
	Detail string  `json:"detail"`
}

// VerifyReport is what verify found.
type VerifyReport struct {
	Run    string       `json:"run"`
	Server Placement    `json:"server"`
	Client Placement    `json:"client"`
	Steps  []StepReport `json:"steps"`
}

// Failed counts failed steps.
func (r *VerifyReport) Failed() int {
	n := 0
	for _, s := range r.Steps {
		if s.Result == StepFail {
			n++
		}
	}
	return n
}

// Grid is the report as a table.
func (r *VerifyReport) Grid() output.Grid {
	g := output.Grid{Headers: []string{"STEP", "RESULT", "TIME", "DETAIL"}}
	for _, s := range r.Steps {
		g.Rows = append(g.Rows, []string{s.Step, strings.ToUpper(s.Result), millis(s.Millis), s.Detail})
	}
	return g
}

func millis(ms float64) string {
	if ms <= 0 {
		return "-"
	}
	return progress.Duration(time.Duration(ms * float64(time.Millisecond)))
}

func (r *VerifyReport) add(step, result string, took time.Duration, format string, a ...any) {
	r.Steps = append(r.Steps, StepReport{Step: step, Result: result, Millis: float64(took.Microseconds()) / 1000, Detail: fmt.Sprintf(format, a...)})
}

// Verify runs the cross-cluster check: an echo server, its Service and a
// ServiceExport in the server cluster, a client in the other reaching it by
// pod IP (TCP, UDP, source address kept) and by its clusterset.local name
// (DNS, TCP). Every object it made is deleted before it returns.
func Verify(ctx context.Context, pair Pair, o VerifyOptions) (rep *VerifyReport, err error) {
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	if o.EchoImage == "" {
		o.EchoImage = EchoImage
	}
	if o.ClientImage == "" {
		o.ClientImage = ClientImage
	}
	if o.Progress == nil {
		o.Progress = progress.Discard()
	}
	p := o.Progress
	run := Run{ID: NewRunID(), Kind: "verify"}
	rep = &VerifyReport{Run: run.ID}

	snodes, err := Nodes(ctx, pair.Server, pair.ServerID, o.EchoImage, o.ClientImage)
	if err != nil {
		return nil, err
	}
	cnodes, err := Nodes(ctx, pair.Client, pair.ClientID, o.ClientImage)
	if err != nil {
		return nil, err
	}
	if rep.Server, err = Pick(snodes, pair.ServerID, o.ServerNode, RoleWorker, RoleStandby, RoleActive); err != nil {
		return nil, err
	}
	if rep.Client, err = Pick(cnodes, pair.ClientID, o.ClientNode, RoleWorker, RoleStandby, RoleActive); err != nil {
		return nil, err
	}
	p.Info("Verifying %s → %s: server on %s, client on %s (namespace %s in both)", pair.ClientID, pair.ServerID, rep.Server, rep.Client, run.Namespace())

	rctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	defer func() {
		cerr := p.Run("Cleaning up", func(s *progress.Step) error { return Cleanup(ctx, run, pair.Server, pair.Client) })
		if cerr != nil && err == nil {
			err = cli.Failed(cerr, "delete the namespace "+run.Namespace()+" in both clusters (kubectl delete namespace "+run.Namespace()+")", "verify could not clean up")
		}
	}()
	// timedOut turns a wait that ran out of time (or was interrupted) into the report's last step.
	stop := func(step string, began time.Time, werr error) (*VerifyReport, error) {
		rep.add(step, StepFail, time.Since(began), "%v", werr)
		if ctx.Err() != nil {
			return rep, cli.Failed(ctx.Err(), "", "verify interrupted at %q; its objects are cleaned up", step)
		}
		if rctx.Err() != nil {
			return rep, &cli.Error{Code: cli.ExitTimeout, What: fmt.Sprintf("verify timed out at %q after %s", step, o.Timeout), Cause: werr,
				Fix: "see the step's detail; `meshctl diagnose` in both clusters tells what is wrong; --timeout gives more time"}
		}
		return rep, werr
	}

	// 1. The server.
	began := time.Now()
	var server *corev1.Pod
	err = p.Run("Starting the echo server in "+pair.ServerID, func(s *progress.Step) error {
		for _, c := range []*kube.Cluster{pair.Server, pair.Client} {
			if err := Create(rctx, c, run); err != nil {
				return err
			}
		}
		if o.OnCreate != nil {
			o.OnCreate(run)
		}
		ns := run.Namespace()
		if _, err := pair.Server.Client.CoreV1().Pods(ns).Create(rctx, run.EchoServer(rep.Server.Node, o.EchoImage, o.ClientImage, pair.ServerID), metav1.CreateOptions{FieldManager: kube.FieldManager}); err != nil {
			return fmt.Errorf("create the echo server: %w", err)
		}
		if _, err := pair.Server.Client.CoreV1().Services(ns).Create(rctx, run.EchoService(), metav1.CreateOptions{FieldManager: kube.FieldManager}); err != nil {
			return fmt.Errorf("create the echo Service: %w", err)
		}
		if err := pair.Server.Apply(rctx, []*unstructured.Unstructured{run.ServiceExport()}); err != nil {
			return fmt.Errorf("create the ServiceExport: %w", err)
		}
		var err error
		server, err = WaitPod(rctx, pair.Server, ns, "echo-server", Ready)
		if err == nil {
			s.Done(fmt.Sprintf("pod IP %s", server.Status.PodIP))
		}
		return err
	})
	if err != nil {
		return stop("server-ready", began, err)
	}
	rep.add("server-ready", StepPass, time.Since(began), "echo server %s on %s", server.Status.PodIP, rep.Server)

	// 2. The export.
	began = time.Now()
	err = p.Run("Waiting for the ServiceExport to be Ready", func(s *progress.Step) error {
		return waitExportReady(rctx, pair.Server, run)
	})
	if err != nil {
		return stop("export-ready", began, err)
	}
	rep.add("export-ready", StepPass, time.Since(began), "ServiceExport %s/%s Ready", run.Namespace(), ServiceName)

	// 3. The client in the other cluster.
	began = time.Now()
	steps := run.VerifySteps(MeshIP(pair.ServerTranslations, server.Status.PodIP))
	wait := StepWait(rctx, len(steps))
	var client *corev1.Pod
	clientIP := "" // kept from while it ran: a finished pod may lose it
	err = p.Run("Running the client in "+pair.ClientID, func(s *progress.Step) error {
		pod := run.VerifyClient(rep.Client.Node, o.ClientImage, steps, wait.Round(time.Second).String())
		if _, err := pair.Client.Client.CoreV1().Pods(run.Namespace()).Create(rctx, pod, metav1.CreateOptions{FieldManager: kube.FieldManager}); err != nil {
			return fmt.Errorf("create the client: %w", err)
		}
		var err error
		client, err = WaitPod(rctx, pair.Client, run.Namespace(), pod.Name, func(p *corev1.Pod) bool {
			if p.Status.PodIP != "" {
				clientIP = p.Status.PodIP
			}
			return Finished(p)
		})
		return err
	})
	if err != nil {
		return stop("client", began, err)
	}
	logs, err := Logs(rctx, pair.Client, run.Namespace(), client.Name)
	if err != nil {
		return stop("client", began, err)
	}
	results, err := ParseSteps(logs)
	if err != nil {
		return stop("client", began, err)
	}
	rep.Steps = append(rep.Steps, Judge(steps, results, clientIP, pair.ClientTranslations, pair.ServerID)...)
	return rep, nil
}

// StepWait is how long the client retries each step: the time left, less
// room for the pod to start and report, shared by the steps, between 10 s
// and 1 min (a clusterset.local name takes a few seconds to appear).
func StepWait(ctx context.Context, steps int) time.Duration {
	left := time.Minute * time.Duration(steps)
	if dl, ok := ctx.Deadline(); ok {
		left = time.Until(dl) - 20*time.Second
	}
	w := left / time.Duration(max(steps, 1))
	return min(max(w, 10*time.Second), time.Minute).Round(time.Second)
}

func waitExportReady(ctx context.Context, c *kube.Cluster, run Run) error {
	se := run.ServiceExport()
	ri, err := c.Resource(se)
	if err != nil {
		return err
	}
	var conds []svcexport.Condition
	for {
		if u, err := ri.Get(ctx, ServiceName, metav1.GetOptions{}); err == nil {
			conds = svcexport.Conditions(u)
			for _, cd := range conds {
				if cd.Type == "Ready" && cd.Status == "True" {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			var parts []string
			for _, cd := range conds {
				parts = append(parts, fmt.Sprintf("%s=%s %s", cd.Type, cd.Status, cd.Reason))
			}
			if len(parts) == 0 {
				parts = []string{"no conditions (is the export controller running?)"}
			}
			return fmt.Errorf("ServiceExport not Ready: %s: %w", strings.Join(parts, ", "), ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// ParseSteps reads the client's JSON lines (other lines are ignored).
func ParseSteps(logs string) ([]netprobe.StepResult, error) {
	var out []netprobe.StepResult
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r netprobe.StepResult
		if err := json.Unmarshal([]byte(line), &r); err != nil || r.Step == "" {
			continue
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, errors.New("the client printed no step results: " + firstLine(logs))
	}
	return out, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}

// echoReply is the part of the echoserver's answer verify reads.
type echoReply struct {
	PodIP   string `json:"podIP"`
	Cluster string `json:"cluster"`
	Node    string `json:"node"`
	Client  string `json:"client"`
}

// Judge turns the client's results into report steps; the source-address
// step compares what the server saw with the client pod's IP, or its
// mapped address where clientTr (the client cluster's translations)
// translates it. Pure.
func Judge(steps []netprobe.Step, results []netprobe.StepResult, clientIP string, clientTr []api.Translation, serverCluster string) []StepReport {
	byName := map[string]netprobe.StepResult{}
	for _, r := range results {
		byName[r.Step] = r
	}
	var out []StepReport
	for _, s := range steps {
		r, ok := byName[s.Name]
		if !ok {
			out = append(out, StepReport{Step: s.Name, Result: StepFail, Detail: "not run (the client stopped before it)"})
			continue
		}
		if !r.OK {
			out = append(out, StepReport{Step: s.Name, Result: StepFail, Millis: r.Millis,
				Detail: fmt.Sprintf("%s %s: %s (%d attempts)", s.Kind, s.Target, r.Error, r.Attempts)})
			continue
		}
		detail := fmt.Sprintf("%s %s", s.Kind, s.Target)
		var rep echoReply
		var tp netprobe.Throughput
		switch {
		case s.Kind == "dns":
			detail += " → " + r.Answer
		case s.Kind == "bulk" && json.Unmarshal([]byte(r.Answer), &tp) == nil:
			detail += fmt.Sprintf(": %.1f MiB in %.1fs (%.2f Gb/s), full-size TCP segments through the tunnel", float64(tp.Bytes)/(1<<20), tp.Seconds, tp.Gbps)
		case json.Unmarshal([]byte(r.Answer), &rep) == nil && rep.PodIP != "":
			detail += fmt.Sprintf(": answered by %s on %s/%s", rep.PodIP, rep.Cluster, rep.Node)
		}
		if r.Attempts > 1 {
			detail += fmt.Sprintf(" (after %d attempts)", r.Attempts)
		}
		out = append(out, StepReport{Step: s.Name, Result: StepPass, Millis: r.Millis, Detail: detail})
		if s.Name == StepPodIPTCP && rep.Client != "" {
			seen, _, err := net.SplitHostPort(rep.Client)
			if err != nil {
				seen = rep.Client
			}
			want, what := clientIP, "the client's pod IP "+clientIP
			if m := MeshIP(clientTr, clientIP); clientIP != "" && m != clientIP {
				want, what = m, fmt.Sprintf("the client's mapped address %s (pod IP %s)", m, clientIP)
			}
			switch {
			case clientIP == "":
				out = append(out, StepReport{Step: "source-ip-kept", Result: StepSkip, Detail: fmt.Sprintf("%s saw %s; the client pod's IP is not known to compare", serverCluster, seen)})
			case seen == want:
				out = append(out, StepReport{Step: "source-ip-kept", Result: StepPass, Detail: fmt.Sprintf("%s saw %s", serverCluster, what)})
			default:
				out = append(out, StepReport{Step: "source-ip-kept", Result: StepFail,
					Detail: fmt.Sprintf("%s saw %s, not %s: something masquerades pod traffic on the way (the CNI? run `meshctl diagnose`)", serverCluster, seen, what)})
			}
		}
	}
	return out
}

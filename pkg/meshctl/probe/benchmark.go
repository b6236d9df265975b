package probe

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/netprobe"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/output"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/progress"
)

// Benchmark kinds.
const (
	Throughput = "throughput"
	Latency    = "latency"
)

// BenchOptions configure Benchmark.
type BenchOptions struct {
	Kind string // Throughput or Latency
	// ServerNode pins the server (default: a non-gateway node, else a
	// gateway); ClientNode pins one client, else one runs on the client
	// cluster's active gateway node and one on a non-gateway node.
	ServerNode, ClientNode string
	Image                  string
	Duration               time.Duration // throughput (default 10 s)
	Samples                int           // latency (default 1000)
	Timeout                time.Duration // whole run (default 5 min)
	Progress               *progress.Printer
	OnCreate               func(Run)
}

// BenchRow is one client placement's measurement.
type BenchRow struct {
	Client     Placement            `json:"client"`
	Server     Placement            `json:"server"`
	Throughput *netprobe.Throughput `json:"throughput,omitempty"`
	Latency    *netprobe.Latency    `json:"latency,omitempty"`
	Error      string               `json:"error,omitempty"`
}

// BenchReport is what Benchmark measured.
type BenchReport struct {
	Run  string     `json:"run"`
	Kind string     `json:"kind"`
	Rows []BenchRow `json:"rows"`
}

// Grid is the report as a table.
func (r *BenchReport) Grid() output.Grid {
	h := []string{"CLIENT", "CLIENT NODE", "SERVER", "SERVER NODE"}
	if r.Kind == Throughput {
		h = append(h, "THROUGHPUT", "BYTES", "SECONDS")
	} else {
		h = append(h, "RTT P50", "RTT P99", "MIN", "MAX", "SAMPLES")
	}
	g := output.Grid{Headers: h}
	for _, row := range r.Rows {
		cells := []string{row.Client.Cluster, row.Client.Node + " (" + row.Client.Role + ")", row.Server.Cluster, row.Server.Node + " (" + row.Server.Role + ")"}
		switch {
		case row.Error != "":
			cells = append(cells, "error: "+row.Error)
		case row.Throughput != nil:
			t := row.Throughput
			cells = append(cells, fmt.Sprintf("%.2f Gb/s", t.Gbps), fmt.Sprintf("%d", t.Bytes), fmt.Sprintf("%.1f", t.Seconds))
		case row.Latency != nil:
			l := row.Latency
			cells = append(cells, micros(l.P50Micros), micros(l.P99Micros), micros(l.MinMicros), micros(l.MaxMicros), fmt.Sprintf("%d", l.Samples))
		}
		g.Rows = append(g.Rows, cells)
	}
	return g
}

func micros(us float64) string {
	if us >= 1000 {
		return fmt.Sprintf("%.2fms", us/1000)
	}
	return fmt.Sprintf("%.0fµs", us)
}

// Failed counts rows without a measurement.
func (r *BenchReport) Failed() int {
	n := 0
	for _, row := range r.Rows {
		if row.Error != "" {
			n++
		}
	}
	return n
}

// ClientPlacements picks where benchmark clients run: the named node, else
// the active gateway node and a non-gateway node (each when there is one). Pure.
func ClientPlacements(nodes []NodeInfo, clusterID, name string) ([]Placement, error) {
	if name != "" {
		p, err := Pick(nodes, clusterID, name)
		return []Placement{p}, err
	}
	var out []Placement
	for _, roles := range [][]string{{RoleActive, RoleStandby}, {RoleWorker}} {
		if !hasReady(nodes, roles...) {
			continue
		}
		p, err := Pick(nodes, clusterID, "", roles...)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, cli.Refused(nil, "wait until its nodes are Ready", "cluster %q has no Ready node", clusterID)
	}
	return out, nil
}

func hasReady(nodes []NodeInfo, roles ...string) bool {
	for _, n := range nodes {
		for _, r := range roles {
			if n.Ready && n.Role == r {
				return true
			}
		}
	}
	return false
}

// ParseResult reads a benchmark client's JSON line.
func ParseResult(kind, logs string) (BenchRow, error) {
	var row BenchRow
	for _, line := range strings.Split(logs, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var probe struct {
			Kind string `json:"kind"`
		}
		if json.Unmarshal([]byte(line), &probe) != nil || probe.Kind != kind {
			continue
		}
		switch kind {
		case Throughput:
			var t netprobe.Throughput
			if err := json.Unmarshal([]byte(line), &t); err != nil {
				return row, err
			}
			row.Throughput = &t
		case Latency:
			var l netprobe.Latency
			if err := json.Unmarshal([]byte(line), &l); err != nil {
				return row, err
			}
			row.Latency = &l
		}
		return row, nil
	}
	return row, fmt.Errorf("no %s result in the client's output: %s", kind, firstLine(logs))
}

// Benchmark measures throughput or latency from client pods in the client
// cluster to a server pod in the server cluster, by pod IP, one placement
// after the other. Every object it made is deleted before it returns.
func Benchmark(ctx context.Context, pair Pair, o BenchOptions) (rep *BenchReport, err error) {
	if o.Kind != Throughput && o.Kind != Latency {
		return nil, cli.Usage("use `meshctl benchmark throughput` or `meshctl benchmark latency`", "unknown benchmark %q", o.Kind)
	}
	if o.Image == "" {
		o.Image = ClientImage
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.Samples == 0 {
		o.Samples = 1000
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Progress == nil {
		o.Progress = progress.Discard()
	}
	p := o.Progress
	run := Run{ID: NewRunID(), Kind: "benchmark"}
	rep = &BenchReport{Run: run.ID, Kind: o.Kind}

	snodes, err := Nodes(ctx, pair.Server, pair.ServerID, o.Image)
	if err != nil {
		return nil, err
	}
	cnodes, err := Nodes(ctx, pair.Client, pair.ClientID, o.Image)
	if err != nil {
		return nil, err
	}
	server, err := Pick(snodes, pair.ServerID, o.ServerNode, RoleWorker, RoleStandby, RoleActive)
	if err != nil {
		return nil, err
	}
	clients, err := ClientPlacements(cnodes, pair.ClientID, o.ClientNode)
	if err != nil {
		return nil, err
	}

	rctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	defer func() {
		cerr := p.Run("Cleaning up", func(s *progress.Step) error { return Cleanup(ctx, run, pair.Server, pair.Client) })
		if cerr != nil && err == nil {
			err = cli.Failed(cerr, "kubectl delete namespace "+run.Namespace()+" (in both clusters)", "benchmark could not clean up")
		}
	}()
	interrupted := func(what string, werr error) error {
		if ctx.Err() != nil {
			return cli.Failed(ctx.Err(), "", "benchmark interrupted (%s); its objects are cleaned up", what)
		}
		if rctx.Err() != nil {
			return &cli.Error{Code: cli.ExitTimeout, What: fmt.Sprintf("benchmark timed out (%s) after %s", what, o.Timeout), Cause: werr,
				Fix: "run `meshctl verify` first; --timeout gives more time"}
		}
		return werr
	}

	var srv *corev1.Pod
	err = p.Run(fmt.Sprintf("Starting the benchmark server on %s", server), func(s *progress.Step) error {
		for _, c := range []*kube.Cluster{pair.Server, pair.Client} {
			if err := Create(rctx, c, run); err != nil {
				return err
			}
		}
		if o.OnCreate != nil {
			o.OnCreate(run)
		}
		if _, err := pair.Server.Client.CoreV1().Pods(run.Namespace()).Create(rctx, run.BenchServer(server.Node, o.Image), metav1.CreateOptions{FieldManager: kube.FieldManager}); err != nil {
			return fmt.Errorf("create the benchmark server: %w", err)
		}
		var err error
		if srv, err = WaitPod(rctx, pair.Server, run.Namespace(), "bench-server", Ready); err == nil {
			s.Done("pod IP " + srv.Status.PodIP)
		}
		return err
	})
	if err != nil {
		return nil, interrupted("server", err)
	}
	for i, cl := range clients {
		row := BenchRow{Client: cl, Server: server}
		err := p.Run(fmt.Sprintf("Measuring %s from %s", o.Kind, cl), func(s *progress.Step) error {
			pod := run.BenchClient(i, cl.Node, o.Image, o.Kind, MeshIP(pair.ServerTranslations, srv.Status.PodIP), o.Duration.String(), o.Samples)
			if _, err := pair.Client.Client.CoreV1().Pods(run.Namespace()).Create(rctx, pod, metav1.CreateOptions{FieldManager: kube.FieldManager}); err != nil {
				return fmt.Errorf("create the benchmark client: %w", err)
			}
			done, err := WaitPod(rctx, pair.Client, run.Namespace(), pod.Name, Finished)
			if err != nil {
				return err
			}
			logs, err := Logs(rctx, pair.Client, run.Namespace(), pod.Name)
			if err != nil {
				return err
			}
			got, err := ParseResult(o.Kind, logs)
			if err != nil {
				if done.Status.Phase == corev1.PodFailed {
					return fmt.Errorf("the client failed: %s", firstLine(logs))
				}
				return err
			}
			row.Throughput, row.Latency = got.Throughput, got.Latency
			return nil
		})
		if err != nil {
			if ctx.Err() != nil || rctx.Err() != nil {
				return rep, interrupted(cl.String(), err)
			}
			row.Error = err.Error()
		}
		rep.Rows = append(rep.Rows, row)
	}
	return rep, nil
}

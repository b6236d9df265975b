// Command demo is `make demo`: tunnelmesh linking two kind clusters exactly as
// README's walkthrough does it with meshctl, then a request from a pod of one
// cluster to a Service exported by the other under its clusterset.local name.
//
//	go run ./e2e/demo        build what is missing, create kind clusters east and west, link them, show traffic
//	go run ./e2e/demo down   delete the demo's clusters (make demo-down)
//
// It runs from the repository root (the Makefile does that). Every phase is
// timed; the table at the end says whether this was a cold run (Kubernetes
// or the node image had to be built) or a warm one, beside the last run of
// the other kind recorded on this machine.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/kindbed"
)

// The demo's clusters: small (a control plane and one gateway worker each)
// so they come up quickly; CIDRs must not overlap.
var clusters = []kindbed.ClusterSpec{
	{
		Name: "east", PodSubnet: "10.244.0.0/16", ServiceSubnet: "10.96.0.0/16",
		Nodes: []map[string]string{nil, {kindbed.GatewayLabel: "true"}},
	},
	{
		Name: "west", PodSubnet: "10.245.0.0/16", ServiceSubnet: "10.97.0.0/16",
		Nodes: []map[string]string{nil, {kindbed.GatewayLabel: "true"}},
	},
}

const (
	appNS   = "demo"
	appName = "echo"
	outDir  = "_output/demo"
)

func main() {
	var err error
	if len(os.Args) > 1 && os.Args[1] == "down" {
		err = down()
	} else {
		err = run()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "\ndemo: FAILED:", err)
		os.Exit(1)
	}
}

func down() error {
	names, err := kindbed.Existing(clusters)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		fmt.Println("demo-down: no demo clusters (east, west) to delete")
	}
	for _, n := range names {
		fmt.Printf("demo-down: deleting kind cluster %s (and its context kind-%s)\n", n, n)
	}
	if err := kindbed.Delete(names...); err != nil {
		return err
	}
	// broker-info.json holds a join token for clusters that are gone; the
	// timings stay (they are what the next run prints beside its own).
	_ = os.Remove(filepath.Join(outDir, "broker-info.json"))
	return nil
}

// phase is one timed step of the demo.
type phase struct {
	Name string        `json:"name"`
	D    time.Duration `json:"d"`
}

type demo struct {
	phases  []phase
	meshctl string
	env     *kindbed.Env
}

func (d *demo) step(name string, f func() error) error {
	fmt.Printf("\n\033[1m== %s\033[0m\n", name)
	start := time.Now()
	err := f()
	d.phases = append(d.phases, phase{name, time.Since(start)})
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	fmt.Printf("   (%s)\n", time.Since(start).Round(100*time.Millisecond))
	return nil
}

func run() error {
	start := time.Now()
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return errors.New("run me from the repository root (make demo does)")
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	os.Setenv("NODE_IMAGE_FILE", filepath.Join(root, "_output/node-image.txt"))
	os.Setenv("PROJECT_IMAGE_DIR", filepath.Join(root, "_output/project-images"))
	kindbed.Logf = func(format string, args ...any) { fmt.Printf("   "+format+"\n", args...) }
	d := &demo{meshctl: filepath.Join(root, "bin/meshctl")}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Minute)
	defer cancel()

	var built []string
	if err := d.step("build what is missing (Kubernetes, the kind node image, our images, meshctl)", func() error {
		var err error
		built, err = build(ctx)
		return err
	}); err != nil {
		return err
	}
	cold := len(built) > 0 && (contains(built, "Kubernetes binaries") || contains(built, "kind node image"))

	if err := d.step("two kind clusters, east and west (a control plane and a gateway worker each)", func() error {
		return d.clusters(ctx)
	}); err != nil {
		return err
	}
	east, west := d.env.Cluster("east"), d.env.Cluster("west")
	info := filepath.Join(outDir, "broker-info.json")

	if err := d.step("deploy the broker into east", func() error {
		return d.run(ctx, "deploy-broker", "--context", "kind-east", "-f", info)
	}); err != nil {
		return err
	}
	for _, c := range []string{"east", "west"} {
		if err := d.step("join "+c, func() error {
			return d.run(ctx, "join", info, "--context", "kind-"+c, "--cluster-id", c)
		}); err != nil {
			return err
		}
	}
	var servers map[string]string
	if err := d.step("a sample app in west: Deployment and Service "+appNS+"/"+appName+" (tunnelmesh/echoserver, 2 pods)", func() error {
		pods, err := west.EnsureEchoApp(ctx, appNS, appName, 2)
		if err != nil {
			return err
		}
		servers = map[string]string{}
		for _, p := range pods {
			servers[p.Status.PodIP] = p.Name
			fmt.Printf("   pod %s  %s  on %s\n", p.Name, p.Status.PodIP, p.Spec.NodeName)
		}
		// The import lands in the same namespace of every cluster (namespace
		// sameness); the client below runs there too.
		return east.CreateNamespace(ctx, appNS)
	}); err != nil {
		return err
	}
	if err := d.step("export it from west", func() error {
		return d.run(ctx, "export", "service", appName, "-n", appNS, "--context", "kind-west")
	}); err != nil {
		return err
	}
	name := fmt.Sprintf("%s.%s.svc.clusterset.local", appName, appNS)
	if err := d.step("a pod in east calls http://"+name+":8080/", func() error {
		return request(ctx, east, name, servers)
	}); err != nil {
		return err
	}
	if err := d.step("meshctl show connections, show graph", func() error {
		if err := d.run(ctx, "show", "connections", "--context", "kind-east"); err != nil {
			return err
		}
		return d.run(ctx, "show", "graph", "--context", "kind-east")
	}); err != nil {
		return err
	}
	total := time.Since(start)
	d.summary(cold, built, total)
	return nil
}

// build runs the make targets the demo needs, streaming their output, and
// says what had to be (re)built, judged by what changed on disk.
func build(ctx context.Context) ([]string, error) {
	if exec.Command("make", "-q", "k8s-binaries").Run() != nil {
		fmt.Println("   Kubernetes v1.36.0 is built from source first (10–16 minutes on 2 cores), then etcd, CoreDNS, the kind node image")
		fmt.Println("   and the images: this first run takes about 20–25 minutes; later runs reuse all of it and take about 2.5 minutes.")
	}
	before := snapshot()
	cmd := exec.CommandContext(ctx, "make", "--no-print-directory", "node-image", "project-images", "build")
	cmd.Stdout, cmd.Stderr = prefixed(os.Stdout), prefixed(os.Stderr)
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("make node-image project-images build: %w", err)
	}
	return changed(before, snapshot()), nil
}

// snapshot records what identifies each build output: file sizes and times
// of the Kubernetes binaries and image archives, the node image's name.
func snapshot() map[string]string {
	s := map[string]string{}
	add := func(label, glob string) {
		files, _ := filepath.Glob(glob)
		for _, f := range files {
			if st, err := os.Stat(f); err == nil {
				s[label+"\x00"+f] = fmt.Sprint(st.Size(), st.ModTime().UnixNano())
			}
		}
	}
	add("Kubernetes binaries", "_output/k8s/bin/kube*")
	add("component images", "_output/images/*.tar")
	add("project images", "_output/project-images/*.tar")
	if b, err := os.ReadFile("_output/node-image.txt"); err == nil {
		name := strings.TrimSpace(string(b))
		if exec.Command("docker", "image", "inspect", name).Run() == nil {
			s["kind node image\x00"] = name
		}
	}
	return s
}

func changed(before, after map[string]string) []string {
	seen := map[string]bool{}
	for k, v := range after {
		if before[k] != v {
			seen[strings.SplitN(k, "\x00", 2)[0]] = true
		}
	}
	var out []string
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (d *demo) clusters(ctx context.Context) error {
	existing, err := kindbed.Existing(clusters)
	if err != nil {
		return err
	}
	if len(existing) > 0 {
		fmt.Printf("   deleting the clusters of an earlier demo: %s\n", strings.Join(existing, ", "))
		if err := kindbed.Delete(existing...); err != nil {
			return err
		}
	}
	nodeImage, reason := kindbed.Prerequisites()
	if reason != "" {
		return errors.New(reason)
	}
	work, err := filepath.Abs(outDir)
	if err != nil {
		return err
	}
	d.env, err = kindbed.SetupClusters(ctx, clusters, nodeImage, work, false)
	if err != nil {
		return err
	}
	// contexts kind-east and kind-west in the default kubeconfig, for
	// meshctl and kubectl alike
	return d.env.ExportDefaultKubeconfig()
}

// run runs meshctl as a user would, printing the command and its output.
func (d *demo) run(ctx context.Context, args ...string) error {
	fmt.Printf("   $ meshctl %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, d.meshctl, args...)
	cmd.Stdout, cmd.Stderr = prefixed(os.Stdout), prefixed(os.Stdout)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("meshctl %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// request runs a client pod in east that fetches the exported Service by
// its clusterset.local name, and prints both pods' addresses.
func request(ctx context.Context, east *kindbed.Cluster, name string, servers map[string]string) error {
	url := fmt.Sprintf("http://%s:%d/", name, kindbed.EchoPort)
	fmt.Println("   (the first answer waits for CoreDNS to reload the Corefile join edited: up to ~45 s)")
	start := time.Now()
	r, err := east.RunClient(ctx, appNS, "", "-wait", "120s", "http", url)
	if err != nil {
		return err
	}
	reply, err := kindbed.ParseEcho(r.Output)
	if err != nil {
		return err
	}
	seen := reply.Client
	if i := strings.LastIndex(seen, ":"); i > 0 {
		seen = seen[:i]
	}
	fmt.Printf("   client: pod %s  %-12s in cluster east (node %s)\n", r.Pod, r.PodIP, r.Node)
	fmt.Printf("   server: pod %s  %-12s in cluster %s (node %s)\n", reply.Hostname, reply.PodIP, reply.Cluster, reply.Node)
	fmt.Printf("   the server saw the request come from %s", reply.Client)
	if seen == r.PodIP {
		fmt.Println(" — the client pod's own address: no NAT on the way")
	} else {
		fmt.Println(" — NOT the client pod's address: something translated it")
	}
	fmt.Printf("   (answered %s after the export; DNS, routing and tunnel included)\n", time.Since(start).Round(100*time.Millisecond))
	if reply.Cluster != "west" {
		return fmt.Errorf("answered by cluster %q, want west", reply.Cluster)
	}
	if _, ok := servers[reply.PodIP]; !ok {
		return fmt.Errorf("answered by %s, not one of the echo pods %v", reply.PodIP, servers)
	}
	return nil
}

// record is the last demo of one kind (cold or warm) on this machine.
type record struct {
	At     time.Time     `json:"at"`
	Total  time.Duration `json:"total"`
	Phases []phase       `json:"phases"`
	Built  []string      `json:"built,omitempty"`
}

func (d *demo) summary(cold bool, built []string, total time.Duration) {
	kind, other := "warm", "cold"
	if cold {
		kind, other = "cold", "warm"
	}
	path := filepath.Join(outDir, "timings.json")
	records := map[string]record{}
	if b, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(b, &records)
	}
	records[kind] = record{At: time.Now().UTC(), Total: total, Phases: d.phases, Built: built}
	if b, err := json.MarshalIndent(records, "", "  "); err == nil {
		_ = os.WriteFile(path, b, 0o644)
	}

	fmt.Printf("\n\033[1m== done\033[0m\n")
	fmt.Println("A pod in east reached a Service that exists only in west by its clusterset.local name,")
	fmt.Println("through a WireGuard tunnel between the clusters' gateways, keeping its own pod IP.")
	fmt.Println("\nTry next (meshctl is bin/meshctl):")
	fmt.Println("  meshctl show all --context kind-west                      # clusters, gateways, connections, exports")
	fmt.Println("  meshctl diagnose --context kind-east                      # every check of the member, with the fix")
	fmt.Println("  meshctl verify --context kind-west --to-context kind-east # its own server and client, TCP/UDP/DNS across")
	fmt.Println("  kubectl --context kind-east -n demo run c --rm -it --restart=Never --image=tunnelmesh/netclient:dev \\")
	fmt.Println("      --image-pull-policy=Never -- -count 5 http http://echo.demo.svc.clusterset.local:8080/")
	fmt.Println("  kubectl --context kind-east -n tunnelmesh-system get meshgateways   # active gateway, epoch, tunnels")
	fmt.Println("  meshctl unexport service echo -n demo --context kind-west  # and watch the name go away in east")
	fmt.Println("  meshctl show graph --context kind-east --svg mesh.svg     # a picture (needs graphviz)")
	fmt.Println("Clean up: make demo-down   (deletes the kind clusters east and west)")

	fmt.Printf("\nPhase timings (%s run", kind)
	if len(built) > 0 {
		fmt.Printf(": built %s", strings.Join(built, ", "))
	} else {
		fmt.Print(": nothing had to be built")
	}
	fmt.Println(")")
	for _, p := range d.phases {
		fmt.Printf("  %-90s %7.1f s\n", p.Name, p.D.Seconds())
	}
	fmt.Printf("  %-90s %7.1f s\n", "total", total.Seconds())
	fmt.Printf("\n%s demo: %.0f s (this run)\n", kind, total.Seconds())
	if r, ok := records[other]; ok {
		fmt.Printf("%s demo: %.0f s (last one on this machine, %s)\n", other, r.Total.Seconds(), r.At.Format(time.RFC3339))
	} else if kind == "warm" {
		fmt.Println("cold demo: none recorded on this machine (estimate: this run plus the Kubernetes build, 10–16 min on 2 cores,")
		fmt.Println("           and a few minutes for etcd, CoreDNS, the node image and the images)")
	} else {
		fmt.Println("warm demo: none recorded yet; run `make demo-down && make demo` to see one")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// prefixed indents every line written to w, so nested tool output stands
// apart from the demo's own lines.
func prefixed(w *os.File) *lineWriter { return &lineWriter{w: w, prefix: "   | "} }

type lineWriter struct {
	w       *os.File
	prefix  string
	midLine bool
}

func (l *lineWriter) Write(p []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(p), "\n") {
		if line == "" {
			continue
		}
		if !l.midLine {
			if _, err := l.w.WriteString(l.prefix); err != nil {
				return 0, err
			}
		}
		if _, err := l.w.WriteString(line); err != nil {
			return 0, err
		}
		l.midLine = !strings.HasSuffix(line, "\n")
	}
	return len(p), nil
}

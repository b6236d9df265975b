// Package kindbed is tunnelmesh's kind test bed as a Go API: two kind
// clusters built from the node image made here (no registry), the project
// images loaded into every node, readiness waits, workloads to send traffic
// with, log gathering, as a Go API the e2e tests (and later a kind demo) use.
package kindbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/kind/pkg/cluster"
	"sigs.k8s.io/kind/pkg/cluster/nodes"
	"sigs.k8s.io/kind/pkg/cluster/nodeutils"
	kindcmd "sigs.k8s.io/kind/pkg/cmd"
)

// GatewayLabel marks the nodes that may run a tunnelmesh gateway.
const GatewayLabel = "tunnelmesh.io/gateway"

// ClusterSpec describes one kind cluster of the test bed.
type ClusterSpec struct {
	Name          string
	PodSubnet     string
	ServiceSubnet string
	// Nodes lists the labels of each node; the first is the control plane.
	Nodes []map[string]string
}

// TestBed is the two-cluster topology: east has two gateway-candidate
// workers and a plain worker, west a gateway-candidate worker; CIDRs do not
// overlap.
var TestBed = []ClusterSpec{
	{
		Name: "tm-east", PodSubnet: "10.244.0.0/16", ServiceSubnet: "10.96.0.0/16",
		Nodes: []map[string]string{nil, {GatewayLabel: "true"}, {GatewayLabel: "true"}, nil},
	},
	{
		Name: "tm-west", PodSubnet: "10.245.0.0/16", ServiceSubnet: "10.97.0.0/16",
		Nodes: []map[string]string{nil, {GatewayLabel: "true"}},
	},
}

// Cluster is a running kind cluster of the test bed.
type Cluster struct {
	Spec       ClusterSpec
	Kubeconfig string
	Config     *rest.Config
	Client     kubernetes.Interface
}

// Env is the state every test shares.
type Env struct {
	Provider  *cluster.Provider
	NodeImage string
	WorkDir   string
	Clusters  []*Cluster
}

// Cluster returns the test-bed cluster with this name.
func (e *Env) Cluster(name string) *Cluster {
	for _, c := range e.Clusters {
		if c.Spec.Name == name {
			return c
		}
	}
	panic("no cluster " + name)
}

// kindConfig renders a ClusterSpec as kind's v1alpha4 configuration. The
// kubelet patch lets kubelet v1.36 run on hosts with cgroup v1.
func kindConfig(s ClusterSpec) *v1alpha4.Cluster {
	cfg := &v1alpha4.Cluster{
		TypeMeta: v1alpha4.TypeMeta{Kind: "Cluster", APIVersion: "kind.x-k8s.io/v1alpha4"},
		Networking: v1alpha4.Networking{
			PodSubnet:     s.PodSubnet,
			ServiceSubnet: s.ServiceSubnet,
		},
		KubeadmConfigPatches: []string{"kind: KubeletConfiguration\nfailCgroupV1: false\n"},
	}
	for i, labels := range s.Nodes {
		role := v1alpha4.WorkerRole
		if i == 0 {
			role = v1alpha4.ControlPlaneRole
		}
		cfg.Nodes = append(cfg.Nodes, v1alpha4.Node{Role: role, Labels: labels})
	}
	return cfg
}

// Prerequisites returns the node image to use, or why the test bed cannot run here.
// The image is $KIND_NODE_IMAGE, else the name in $NODE_IMAGE_FILE (default
// ../_output/node-image.txt) written by `make node-image`.
func Prerequisites() (nodeImage, reason string) {
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		return "", fmt.Sprintf("no Docker engine answers (docker info: %v: %s); run `make docker-engine`", err, strings.TrimSpace(string(out)))
	}
	nodeImage = os.Getenv("KIND_NODE_IMAGE")
	if nodeImage == "" {
		f := os.Getenv("NODE_IMAGE_FILE")
		if f == "" {
			f = "../_output/node-image.txt"
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Sprintf("no node image: set KIND_NODE_IMAGE or run `make node-image` (%v)", err)
		}
		nodeImage = strings.TrimSpace(string(b))
	}
	if err := exec.Command("docker", "image", "inspect", nodeImage).Run(); err != nil {
		return "", fmt.Sprintf("node image %s is not in the local engine (build it with `make node-image`)", nodeImage)
	}
	return nodeImage, ""
}

// Setup creates (in parallel) the test bed's clusters, waits until every
// node and the cluster DNS are ready, and loads the project images.
// With reuse, clusters of the test bed that already exist (kept by an earlier
// run with E2E_KEEP=1) are used as they are, and only the images are loaded.
func Setup(ctx context.Context, nodeImage, workDir string, reuse bool) (*Env, error) {
	return SetupClusters(ctx, TestBed, nodeImage, workDir, reuse)
}

// SetupClusters is Setup for any set of clusters (the kind demo runs a
// smaller pair than the test bed).
func SetupClusters(ctx context.Context, specs []ClusterSpec, nodeImage, workDir string, reuse bool) (*Env, error) {
	e := &Env{
		Provider:  cluster.NewProvider(cluster.ProviderWithDocker(), cluster.ProviderWithLogger(kindcmd.NewLogger())),
		NodeImage: nodeImage,
		WorkDir:   workDir,
	}
	for _, s := range specs {
		e.Clusters = append(e.Clusters, &Cluster{Spec: s, Kubeconfig: filepath.Join(workDir, s.Name+".kubeconfig")})
	}
	// leftovers of an earlier run kept with E2E_KEEP=1 or interrupted
	existing, err := e.Provider.List()
	if err != nil {
		return e, fmt.Errorf("list kind clusters: %w", err)
	}
	if reuse && e.reusable(existing) {
		if err := fenceKindNetwork(ctx); err != nil {
			return e, err
		}
		for _, c := range e.Clusters {
			if err := e.attach(ctx, c); err != nil {
				return e, err
			}
		}
		if err := e.loadProjectImages(e.Clusters...); err != nil {
			return e, err
		}
		return e, e.waitImagesReported(time.Now())
	}
	for _, c := range e.Clusters {
		if err := e.deleteLeftover(existing, c.Spec.Name); err != nil {
			return e, err
		}
	}
	start := time.Now()
	fenced := make(chan error, 1)
	fctx, stopFence := context.WithCancel(ctx)
	defer stopFence()
	go func() { fenced <- fenceWhenNetworkExists(fctx) }()
	errs := make([]error, len(e.Clusters))
	var wg sync.WaitGroup
	for i, c := range e.Clusters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.create(ctx, c)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return e, err
	}
	if err := <-fenced; err != nil {
		return e, err
	}
	return e, e.waitImagesReported(start)
}

// AddCluster creates one more cluster beside the running ones, as Setup
// creates them (project images loaded, every node ready and reporting the
// images), and adds it to e.Clusters so GatherLogs and Teardown include it.
// A leftover cluster of that name is deleted first.
func (e *Env) AddCluster(ctx context.Context, s ClusterSpec) (*Cluster, error) {
	existing, err := e.Provider.List()
	if err != nil {
		return nil, fmt.Errorf("list kind clusters: %w", err)
	}
	if err := e.deleteLeftover(existing, s.Name); err != nil {
		return nil, err
	}
	if err := fenceKindNetwork(ctx); err != nil {
		return nil, err
	}
	c := &Cluster{Spec: s, Kubeconfig: filepath.Join(e.WorkDir, s.Name+".kubeconfig")}
	e.Clusters = append(e.Clusters, c)
	start := time.Now()
	if err := e.create(ctx, c); err != nil {
		return c, err
	}
	return c, e.waitImagesReported(start)
}

// deleteLeftover deletes cluster name if it is among existing (kept by an
// earlier run with E2E_KEEP=1, or left by an interrupted one).
func (e *Env) deleteLeftover(existing []string, name string) error {
	if !slices.Contains(existing, name) {
		return nil
	}
	logf("deleting leftover cluster %s", name)
	if err := e.Provider.Delete(name, ""); err != nil {
		return fmt.Errorf("delete leftover cluster %s: %w", name, err)
	}
	return nil
}

// RemoveCluster deletes a cluster AddCluster made and drops it from e.Clusters.
func (e *Env) RemoveCluster(c *Cluster) error {
	e.Clusters = slices.DeleteFunc(e.Clusters, func(x *Cluster) bool { return x == c })
	if err := e.Provider.Delete(c.Spec.Name, c.Kubeconfig); err != nil {
		return fmt.Errorf("delete cluster %s: %w", c.Spec.Name, err)
	}
	return nil
}

// Existing returns the names of the given clusters that exist in kind.
func Existing(specs []ClusterSpec) ([]string, error) {
	p := cluster.NewProvider(cluster.ProviderWithDocker(), cluster.ProviderWithLogger(kindcmd.NewLogger()))
	all, err := p.List()
	if err != nil {
		return nil, fmt.Errorf("list kind clusters: %w", err)
	}
	var found []string
	for _, s := range specs {
		for _, name := range all {
			if name == s.Name {
				found = append(found, name)
			}
		}
	}
	return found, nil
}

// Delete deletes the named kind clusters, removing their contexts from
// the default kubeconfig ($KUBECONFIG or ~/.kube/config) too, and the kind
// network's fence with the last kind cluster.
func Delete(names ...string) error {
	p := cluster.NewProvider(cluster.ProviderWithDocker(), cluster.ProviderWithLogger(kindcmd.NewLogger()))
	var errs []error
	for _, n := range names {
		if err := p.Delete(n, ""); err != nil {
			errs = append(errs, fmt.Errorf("delete cluster %s: %w", n, err))
		}
	}
	removeFence(p)
	return errors.Join(errs...)
}

// ExportDefaultKubeconfig merges every cluster's context (kind-<name>) into
// the default kubeconfig so kubectl and meshctl reach it with --context.
func (e *Env) ExportDefaultKubeconfig() error {
	for _, c := range e.Clusters {
		if err := e.Provider.ExportKubeConfig(c.Spec.Name, "", false); err != nil {
			return fmt.Errorf("export kubeconfig of %s: %w", c.Spec.Name, err)
		}
	}
	return nil
}

// reusable reports whether every cluster of the test bed exists.
func (e *Env) reusable(existing []string) bool {
	for _, c := range e.Clusters {
		found := false
		for _, name := range existing {
			found = found || name == c.Spec.Name
		}
		if !found {
			return false
		}
	}
	return true
}

// attach connects to an existing cluster of the test bed.
func (e *Env) attach(ctx context.Context, c *Cluster) error {
	if err := e.Provider.ExportKubeConfig(c.Spec.Name, c.Kubeconfig, false); err != nil {
		return fmt.Errorf("kubeconfig of existing cluster %s: %w", c.Spec.Name, err)
	}
	if err := c.connect(); err != nil {
		return err
	}
	if err := c.WaitReady(ctx); err != nil {
		return fmt.Errorf("existing cluster %s: %w", c.Spec.Name, err)
	}
	logf("reusing cluster %s", c.Spec.Name)
	return nil
}

func (c *Cluster) connect() error {
	var err error
	c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return fmt.Errorf("cluster %s kubeconfig: %w", c.Spec.Name, err)
	}
	c.Config.QPS, c.Config.Burst = 50, 100
	c.Client, err = kubernetes.NewForConfig(c.Config)
	if err != nil {
		return fmt.Errorf("cluster %s client: %w", c.Spec.Name, err)
	}
	return nil
}

func (e *Env) create(ctx context.Context, c *Cluster) error {
	start := time.Now()
	err := e.Provider.Create(c.Spec.Name,
		cluster.CreateWithV1Alpha4Config(kindConfig(c.Spec)),
		cluster.CreateWithNodeImage(e.NodeImage),
		cluster.CreateWithKubeconfigPath(c.Kubeconfig),
		cluster.CreateWithRetain(true), // keep failed nodes for log gathering
		cluster.CreateWithWaitForReady(0),
		cluster.CreateWithDisplayUsage(false),
		cluster.CreateWithDisplaySalutation(false),
	)
	if err != nil {
		return fmt.Errorf("create cluster %s: %w", c.Spec.Name, err)
	}
	logf("cluster %s created in %s", c.Spec.Name, time.Since(start).Round(time.Second))
	if err := c.connect(); err != nil {
		return err
	}
	// Loaded while the nodes become ready: kubelet reports new images only
	// on its next image-list refresh, which then overlaps the wait.
	if err := e.loadProjectImages(c); err != nil {
		return err
	}
	if err := c.WaitReady(ctx); err != nil {
		return fmt.Errorf("cluster %s: %w", c.Spec.Name, err)
	}
	logf("cluster %s ready after %s", c.Spec.Name, time.Since(start).Round(time.Second))
	return nil
}

// WaitReady waits until every node is Ready and every kube-system
// Deployment and DaemonSet has all its pods available.
func (c *Cluster) WaitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 8*time.Minute)
	defer cancel()
	var last string
	start, said := time.Now(), time.Now()
	err := wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
		msg := c.NotReady(ctx)
		if ctx.Err() == nil || last == "" { // keep what was not ready, not the deadline's error
			last = msg
		}
		if msg != "" && time.Since(said) > 30*time.Second {
			logf("cluster %s not ready %s after the wait began: %s", c.Spec.Name, time.Since(start).Round(time.Second), msg)
			said = time.Now()
		}
		return msg == "", nil
	})
	if err != nil {
		return fmt.Errorf("not ready after %s: %s", time.Since(start).Round(time.Second), last)
	}
	return nil
}

// NotReady describes what is not ready yet, or returns "".
func (c *Cluster) NotReady(ctx context.Context) string {
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "list nodes: " + err.Error()
	}
	if len(nodes.Items) != len(c.Spec.Nodes) {
		return fmt.Sprintf("%d of %d nodes registered", len(nodes.Items), len(c.Spec.Nodes))
	}
	for _, n := range nodes.Items {
		if !nodeReady(&n) {
			return "node " + n.Name + " not Ready"
		}
	}
	deps, err := c.Client.AppsV1().Deployments("kube-system").List(ctx, metav1.ListOptions{})
	if err != nil {
		return "list deployments: " + err.Error()
	}
	for _, d := range deps.Items {
		if d.Spec.Replicas != nil && d.Status.AvailableReplicas < *d.Spec.Replicas {
			return fmt.Sprintf("deployment %s: %d/%d available", d.Name, d.Status.AvailableReplicas, *d.Spec.Replicas)
		}
	}
	dss, err := c.Client.AppsV1().DaemonSets("kube-system").List(ctx, metav1.ListOptions{})
	if err != nil {
		return "list daemonsets: " + err.Error()
	}
	for _, d := range dss.Items {
		if d.Status.DesiredNumberScheduled == 0 || d.Status.NumberAvailable < d.Status.DesiredNumberScheduled {
			return fmt.Sprintf("daemonset %s: %d/%d available", d.Name, d.Status.NumberAvailable, d.Status.DesiredNumberScheduled)
		}
	}
	return ""
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// projectArchives lists the docker-save tarballs to load into every node.
func projectArchives() ([]string, error) {
	dir := os.Getenv("PROJECT_IMAGE_DIR")
	if dir == "" {
		dir = "../_output/project-images"
	}
	tars, err := filepath.Glob(filepath.Join(dir, "*.tar"))
	if err != nil {
		return nil, err
	}
	sort.Strings(tars)
	return tars, nil
}

// loadProjectImages loads every project image archive into every node of
// the clusters with kind's nodeutils.LoadImageArchive.
func (e *Env) loadProjectImages(clusters ...*Cluster) error {
	tars, err := projectArchives()
	if err != nil {
		return err
	}
	if len(tars) == 0 {
		logf("no project image archives to load")
		return nil
	}
	start := time.Now()
	var all []nodes.Node
	for _, c := range clusters {
		ns, err := e.Provider.ListNodes(c.Spec.Name)
		if err != nil {
			return fmt.Errorf("list nodes of %s: %w", c.Spec.Name, err)
		}
		all = append(all, ns...)
	}
	errs := make([]error, len(all))
	var wg sync.WaitGroup
	for i, n := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, t := range tars {
				if err := loadArchive(n, t); err != nil {
					errs[i] = fmt.Errorf("load %s into %s: %w", filepath.Base(t), n.String(), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	logf("loaded %d image archives into %d nodes in %s", len(tars), len(all), time.Since(start).Round(time.Second))
	return nil
}

// waitImagesReported waits until every node's status lists every loaded
// project image: kubelet refreshes that list only every ~30 s, and meshctl
// join refuses a cluster whose nodes do not report the images it installs.
func (e *Env) waitImagesReported(start time.Time) error {
	var want []string
	for _, repo := range []string{"tunnelmesh/broker", "tunnelmesh/gateway", "tunnelmesh/echoserver", "tunnelmesh/netclient"} {
		if ref, err := Image(repo); err == nil {
			want = append(want, ref)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var last string
	err := wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
		last = ""
		for _, c := range e.Clusters {
			list, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err != nil {
				last = err.Error()
				return false, nil
			}
			for _, n := range list.Items {
				if m := missingImages(&n, want); len(m) > 0 {
					last = fmt.Sprintf("node %s does not report %v yet", n.Name, m)
					return false, nil
				}
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("loaded images not reported by kubelet: %s", last)
	}
	logf("every node reports the project images %s after loading began", time.Since(start).Round(time.Second))
	return nil
}

func missingImages(n *corev1.Node, want []string) []string {
	have := map[string]bool{}
	for _, img := range n.Status.Images {
		for _, name := range img.Names {
			have[strings.TrimPrefix(name, "docker.io/")] = true
		}
	}
	var missing []string
	for _, w := range want {
		if !have[strings.TrimPrefix(w, "docker.io/")] {
			missing = append(missing, w)
		}
	}
	return missing
}

func loadArchive(n nodes.Node, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return nodeutils.LoadImageArchive(n, f)
}

// GatherLogs writes every cluster's node logs (kind's collection: journal,
// containerd, kubelet, pod logs, docker inspect) to dir/<cluster>.
func (e *Env) GatherLogs(dir string) {
	for _, c := range e.Clusters {
		d := filepath.Join(dir, c.Spec.Name)
		if err := e.Provider.CollectLogs(c.Spec.Name, d); err != nil {
			logf("collect logs of %s: %v", c.Spec.Name, err)
			continue
		}
		logf("logs of %s in %s", c.Spec.Name, d)
	}
}

// Teardown deletes the test bed's clusters.
func (e *Env) Teardown() {
	for _, c := range e.Clusters {
		if err := e.Provider.Delete(c.Spec.Name, c.Kubeconfig); err != nil {
			logf("delete cluster %s: %v", c.Spec.Name, err)
		}
	}
	removeFence(e.Provider)
}

// Logf prints the test bed's progress lines.
var Logf = func(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kindbed: "+format+"\n", args...)
}

func logf(format string, args ...any) { Logf(format, args...) }

// Lock takes the machine-wide test-bed lock (flock on a file in the temp
// directory), waiting while another run holds it: runs share cluster names,
// so a second run waits instead of deleting the first one's clusters.
func Lock() (unlock func(), err error) {
	path := filepath.Join(os.TempDir(), "tunnelmesh-e2e.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		logf("another run holds %s; waiting for it", path)
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
	}
	return func() { f.Close() }, nil
}

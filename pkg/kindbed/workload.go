package kindbed

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/probe"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Namespace holds every workload object the test bed creates.
const Namespace = "tm-e2e"

var (
	imagesOnce sync.Once
	imageRefs  map[string]string
	imagesErr  error
)

// Image returns the full reference (repository:tag) of the loaded project
// image whose repository is repo, e.g. "tunnelmesh/netclient", reading the
// RepoTags of the docker-save archives that were loaded into the nodes.
func Image(repo string) (string, error) {
	imagesOnce.Do(func() {
		imageRefs = map[string]string{}
		tars, err := projectArchives()
		if err != nil {
			imagesErr = err
			return
		}
		for _, t := range tars {
			tags, err := archiveTags(t)
			if err != nil {
				imagesErr = fmt.Errorf("%s: %w", t, err)
				return
			}
			for _, tag := range tags {
				if i := strings.LastIndex(tag, ":"); i > 0 && !strings.Contains(tag[i:], "/") {
					imageRefs[tag[:i]] = tag
				}
			}
		}
	})
	if imagesErr != nil {
		return "", imagesErr
	}
	ref, ok := imageRefs[repo]
	if !ok && !strings.Contains(repo, "/") {
		ref, ok = imageRefs["docker.io/"+repo]
	}
	if !ok {
		known := make([]string, 0, len(imageRefs))
		for k := range imageRefs {
			known = append(known, k)
		}
		return "", fmt.Errorf("no loaded project image %q (loaded: %v); run `make project-images`", repo, known)
	}
	return ref, nil
}

// archiveTags reads the RepoTags of a docker-save archive's manifest.json.
func archiveTags(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("no manifest.json")
		}
		if err != nil {
			return nil, err
		}
		if h.Name != "manifest.json" {
			continue
		}
		var m []struct{ RepoTags []string }
		if err := json.NewDecoder(tr).Decode(&m); err != nil {
			return nil, fmt.Errorf("manifest.json: %w", err)
		}
		var tags []string
		for _, e := range m {
			tags = append(tags, e.RepoTags...)
		}
		return tags, nil
	}
}

// EnsureNamespace creates the e2e namespace if it does not exist.
func (c *Cluster) EnsureNamespace(ctx context.Context) error {
	return c.ensureNamespace(ctx, Namespace)
}

// CreateNamespace creates namespace ns if it does not exist.
func (c *Cluster) CreateNamespace(ctx context.Context, ns string) error {
	return c.ensureNamespace(ctx, ns)
}

func (c *Cluster) ensureNamespace(ctx context.Context, ns string) error {
	_, err := c.Client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("%s: create namespace %s: %w", c.Spec.Name, ns, err)
	}
	return nil
}

// tolerateAll lets a pod run on every node, control plane included.
var tolerateAll = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}

// EchoPort is the echoserver's HTTP (and UDP) port.
const EchoPort = probe.EchoPort

var echoMu sync.Mutex

// EnsureEcho runs the echoserver as a DaemonSet (a pod on every node) behind
// the ClusterIP Service "echo", and waits until every pod is ready. It
// returns the ready pods.
func (c *Cluster) EnsureEcho(ctx context.Context) ([]corev1.Pod, error) {
	echoMu.Lock()
	defer echoMu.Unlock()
	img, err := Image("tunnelmesh/echoserver")
	if err != nil {
		return nil, err
	}
	if err := c.EnsureNamespace(ctx); err != nil {
		return nil, err
	}
	labels := map[string]string{"app": "echo"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: Namespace},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Tolerations: tolerateAll,
					Containers:  []corev1.Container{echoContainer(img, c.Spec.Name)},
				},
			},
		},
	}
	if _, err := c.Client.AppsV1().DaemonSets(Namespace).Create(ctx, ds, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("%s: create echo daemonset: %w", c.Spec.Name, err)
	}
	if err := c.ensureEchoService(ctx, Namespace, "echo", labels); err != nil {
		return nil, err
	}
	return c.waitPods(ctx, Namespace, "app=echo", len(c.Spec.Nodes))
}

// EnsureEchoApp runs the echoserver as a Deployment of replicas pods named
// name in namespace ns (created if missing), behind a ClusterIP Service of
// the same name (TCP and UDP on EchoPort), and waits until every pod is
// ready. It returns the ready pods. The kind demo's sample app.
func (c *Cluster) EnsureEchoApp(ctx context.Context, ns, name string, replicas int32) ([]corev1.Pod, error) {
	img, err := Image("tunnelmesh/echoserver")
	if err != nil {
		return nil, err
	}
	if err := c.ensureNamespace(ctx, ns); err != nil {
		return nil, err
	}
	labels := map[string]string{"app": name}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{echoContainer(img, c.Spec.Name)}},
			},
		},
	}
	if _, err := c.Client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("%s: create deployment %s/%s: %w", c.Spec.Name, ns, name, err)
	}
	if err := c.ensureEchoService(ctx, ns, name, labels); err != nil {
		return nil, err
	}
	return c.waitPods(ctx, ns, "app="+name, int(replicas))
}

// EnsureEchoHeadless runs the echoserver as a StatefulSet of replicas pods
// named name in the e2e namespace behind the headless Service of the same
// name, so that every pod has a DNS hostname (name-0, name-1, …), and waits
// until every pod is ready. It returns the ready pods.
func (c *Cluster) EnsureEchoHeadless(ctx context.Context, name string, replicas int32) ([]corev1.Pod, error) {
	img, err := Image("tunnelmesh/echoserver")
	if err != nil {
		return nil, err
	}
	if err := c.EnsureNamespace(ctx); err != nil {
		return nil, err
	}
	labels := map[string]string{"app": name}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace},
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Selector:  labels,
			Ports:     []corev1.ServicePort{{Name: "http", Port: EchoPort, TargetPort: intstr.FromInt32(EchoPort), Protocol: corev1.ProtocolTCP}},
		},
	}
	if _, err := c.Client.CoreV1().Services(Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("%s: create headless service %s: %w", c.Spec.Name, name, err)
	}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            &replicas,
			ServiceName:         name,
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{echoContainer(img, c.Spec.Name)}},
			},
		},
	}
	if _, err := c.Client.AppsV1().StatefulSets(Namespace).Create(ctx, sts, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("%s: create statefulset %s: %w", c.Spec.Name, name, err)
	}
	return c.waitPods(ctx, Namespace, "app="+name, int(replicas))
}

func echoContainer(img, cluster string) corev1.Container {
	c := probe.EchoContainer("echo", img, cluster)
	c.ImagePullPolicy = corev1.PullNever
	return c
}

func (c *Cluster) ensureEchoService(ctx context.Context, ns, name string, selector map[string]string) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: selector,
			Ports: []corev1.ServicePort{
				{Name: "http", Port: EchoPort, TargetPort: intstr.FromInt32(EchoPort), Protocol: corev1.ProtocolTCP},
				{Name: "udp", Port: EchoPort, TargetPort: intstr.FromInt32(EchoPort), Protocol: corev1.ProtocolUDP},
			},
		},
	}
	if _, err := c.Client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("%s: create service %s/%s: %w", c.Spec.Name, ns, name, err)
	}
	return nil
}

// waitPods waits until want pods matching selector in ns are ready.
func (c *Cluster) waitPods(ctx context.Context, ns, selector string, want int) ([]corev1.Pod, error) {
	var pods []corev1.Pod
	var last string
	err := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		pods = pods[:0]
		for _, p := range list.Items {
			if podReady(&p) && p.DeletionTimestamp == nil {
				pods = append(pods, p)
			}
		}
		last = fmt.Sprintf("%d of %d pods %s ready in %s", len(pods), want, selector, ns)
		return len(pods) == want, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %s", c.Spec.Name, last)
	}
	return pods, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// RunCheck runs the netclient image once on node with args (e.g. "-wait",
// "30s", "http", URL), waits for it to finish, deletes the pod and returns
// its output; an error carries the output of a failed check.
func (c *Cluster) RunCheck(ctx context.Context, node string, args ...string) (string, error) {
	r, err := c.RunClient(ctx, Namespace, node, args...)
	return r.Output, err
}

// ClientRun is what a finished netclient pod left: its output and address.
type ClientRun struct {
	Pod, PodIP, Node, Output string
}

// RunClient runs the netclient image once in namespace ns (created if
// missing) on node (any node when empty) with args, waits for it to finish,
// deletes the pod and returns its output and pod IP; an error carries the
// output of a failed check.
func (c *Cluster) RunClient(ctx context.Context, ns, node string, args ...string) (ClientRun, error) {
	var r ClientRun
	img, err := Image("tunnelmesh/netclient")
	if err != nil {
		return r, err
	}
	if err := c.ensureNamespace(ctx, ns); err != nil {
		return r, err
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "check-", Namespace: ns, Labels: map[string]string{"app": "check"}},
		Spec: corev1.PodSpec{
			NodeName:      node,
			RestartPolicy: corev1.RestartPolicyNever,
			Tolerations:   tolerateAll,
			Containers: []corev1.Container{{
				Name: "check", Image: img, ImagePullPolicy: corev1.PullNever, Args: args,
			}},
		},
	}
	pod, err = c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return r, fmt.Errorf("%s: create check pod: %w", c.Spec.Name, err)
	}
	r.Pod = pod.Name
	defer func() {
		_ = c.Client.CoreV1().Pods(ns).Delete(context.WithoutCancel(ctx), pod.Name, metav1.DeleteOptions{})
	}()
	var phase corev1.PodPhase
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		phase, r.PodIP, r.Node = p.Status.Phase, p.Status.PodIP, p.Spec.NodeName
		return phase == corev1.PodSucceeded || phase == corev1.PodFailed, nil
	})
	out, lerr := c.Client.CoreV1().Pods(ns).GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
	if lerr != nil {
		out = []byte("(logs: " + lerr.Error() + ")")
	}
	r.Output = string(out)
	switch {
	case err != nil:
		return r, fmt.Errorf("%s: check pod %s on %s %v did not finish (phase %q): %s", c.Spec.Name, pod.Name, node, args, phase, out)
	case phase == corev1.PodFailed:
		return r, fmt.Errorf("%s: check on %s %v failed: %s", c.Spec.Name, node, args, strings.TrimSpace(string(out)))
	}
	return r, nil
}

// GetEcho fetches url from a check pod on node and decodes the echo server's reply.
func (c *Cluster) GetEcho(ctx context.Context, node, url string) (EchoReply, error) {
	out, err := c.RunCheck(ctx, node, "-wait", "30s", "http", url)
	if err != nil {
		return EchoReply{}, err
	}
	return parseEcho(out)
}

// EchoReply is the JSON the echoserver answers with.
type EchoReply struct {
	PodIP    string `json:"podIP"`
	Hostname string `json:"hostname"`
	Cluster  string `json:"cluster"`
	Node     string `json:"node"`
	Client   string `json:"client"`
}

// ParseEcho decodes one echoserver reply.
func ParseEcho(out string) (EchoReply, error) { return parseEcho(out) }

func parseEcho(out string) (EchoReply, error) {
	var r EchoReply
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &r); err != nil {
		return r, fmt.Errorf("echo reply %q: %w", out, err)
	}
	return r, nil
}

// NodeNames returns the names of the cluster's nodes.
func (c *Cluster) NodeNames(ctx context.Context) ([]string, error) {
	list, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, n := range list.Items {
		names = append(names, n.Name)
	}
	return names, nil
}

// NodeIP returns a node's InternalIP (its address on kind's docker network).
func (c *Cluster) NodeIP(ctx context.Context, node string) (string, error) {
	n, err := c.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP && !strings.Contains(a.Address, ":") {
			return a.Address, nil
		}
	}
	return "", fmt.Errorf("node %s has no IPv4 InternalIP", node)
}

// GatewayNodes returns the names of the cluster's gateway-candidate nodes
// (labelled GatewayLabel=true), sorted.
func (c *Cluster) GatewayNodes(ctx context.Context) ([]string, error) {
	list, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: GatewayLabel + "=true"})
	if err != nil {
		return nil, fmt.Errorf("%s: list gateway nodes: %w", c.Spec.Name, err)
	}
	names := make([]string, 0, len(list.Items))
	for _, n := range list.Items {
		names = append(names, n.Name)
	}
	sort.Strings(names)
	return names, nil
}

// NodeName returns the kind name of the i-th node of spec s: the control
// plane first, then worker, worker2, ...
func NodeName(s ClusterSpec, i int) string {
	switch i {
	case 0:
		return s.Name + "-control-plane"
	case 1:
		return s.Name + "-worker"
	}
	return fmt.Sprintf("%s-worker%d", s.Name, i)
}

// RestoreLabels puts the labels of the cluster's spec back on its nodes
// (meshctl leave and uninstall remove the gateway label).
func (c *Cluster) RestoreLabels(ctx context.Context) error {
	for i, labels := range c.Spec.Nodes {
		if len(labels) == 0 {
			continue
		}
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
		if _, err := c.Client.CoreV1().Nodes().Patch(ctx, NodeName(c.Spec, i), types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("%s: label node %s: %w", c.Spec.Name, NodeName(c.Spec, i), err)
		}
	}
	return nil
}

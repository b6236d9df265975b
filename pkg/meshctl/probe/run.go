package probe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/access"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
)

// Pair is the two member clusters of a run: the server runs in Server
// (--context), the clients in Client (--to-context).
type Pair struct {
	Server, Client     *kube.Cluster
	ServerID, ClientID string
	// ServerTranslations and ClientTranslations are what each cluster's
	// active gateway translates (its MeshGateway status; none when it has
	// none): a translated cluster's pods are reached, and seen, at their
	// mapped addresses.
	ServerTranslations, ClientTranslations []api.Translation
}

// MeshIP is ip as the rest of the mesh reaches and sees it: its mapped
// address where ts translates it, ip itself otherwise. Pure.
func MeshIP(ts []api.Translation, ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	return api.Cluster{Translations: ts}.ToMesh(a).String()
}

// Members checks that both clusters joined the same clusterset as
// different members, and names them.
func Members(ctx context.Context, server, client *kube.Cluster) (Pair, error) {
	p := Pair{Server: server, Client: client}
	var urls [2]string
	for i, c := range []*kube.Cluster{server, client} {
		m, err := access.ReadMember(ctx, c)
		if err != nil {
			return p, cli.Refused(err, "check your access to Secrets in "+defaults.Namespace, "cannot read the membership of %s", c.Describe())
		}
		if m == nil {
			return p, cli.Refused(nil, "run `meshctl join` in it first", "%s has not joined a clusterset", c.Describe())
		}
		urls[i] = m.URL
		var ts []api.Translation
		if mg, err := status.Get(ctx, c.Dynamic, defaults.Namespace, m.ClusterID); err == nil {
			ts = mg.Status.Translations
		}
		if i == 0 {
			p.ServerID, p.ServerTranslations = m.ClusterID, ts
		} else {
			p.ClientID, p.ClientTranslations = m.ClusterID, ts
		}
	}
	if p.ServerID == p.ClientID {
		return p, cli.Usage("pass --to-context (or --to-kubeconfig) naming another member cluster",
			"both contexts are cluster %q: a cross-cluster check needs two clusters", p.ServerID)
	}
	if urls[0] != urls[1] {
		return p, cli.Refused(nil, "join both clusters to the same broker", "%q and %q belong to different clustersets (%s, %s)", p.ServerID, p.ClientID, urls[0], urls[1])
	}
	return p, nil
}

// Node roles as printed.
const (
	RoleActive  = "active gateway"
	RoleStandby = "standby gateway"
	RoleWorker  = "non-gateway"
)

// Placement is where a test pod runs.
type Placement struct {
	Cluster string `json:"cluster"`
	Node    string `json:"node"`
	Role    string `json:"role"`
}

func (p Placement) String() string { return fmt.Sprintf("%s/%s (%s)", p.Cluster, p.Node, p.Role) }

// NodeInfo is what placing a pod needs to know of a node.
type NodeInfo struct {
	Name    string
	Ready   bool
	Role    string
	Missing []string // images the node reports lacking
}

// Nodes reads c's nodes with their roles (the active one from the
// cluster's MeshGateway) and which of images they lack.
func Nodes(ctx context.Context, c *kube.Cluster, clusterID string, images ...string) ([]NodeInfo, error) {
	list, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, cli.Refused(err, "check your access to nodes", "cannot list the nodes of %s", c.Describe())
	}
	active := ""
	if m, err := status.Get(ctx, c.Dynamic, defaults.Namespace, clusterID); err == nil {
		active = m.Status.ActiveNode
	}
	var out []NodeInfo
	for i := range list.Items {
		n := &list.Items[i]
		role := RoleWorker
		switch {
		case n.Name == active:
			role = RoleActive
		case n.Labels[kube.GatewayLabel] == "true":
			role = RoleStandby
		}
		out = append(out, NodeInfo{Name: n.Name, Ready: kube.NodeReady(n), Role: role, Missing: kube.MissingImages(n, images)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Pick chooses a node: the named one, else the first Ready node with one
// of the roles, tried in order. Pure.
func Pick(nodes []NodeInfo, clusterID, name string, roles ...string) (Placement, error) {
	if name != "" {
		for _, n := range nodes {
			if n.Name == name {
				if !n.Ready {
					return Placement{}, cli.Refused(nil, "pick a Ready node (`kubectl get nodes`)", "node %s of %q is not Ready", name, clusterID)
				}
				return Placement{Cluster: clusterID, Node: n.Name, Role: n.Role}, checkImages(n, clusterID)
			}
		}
		return Placement{}, cli.Usage("pass a node name from `kubectl get nodes`", "cluster %q has no node %q", clusterID, name)
	}
	for _, role := range roles {
		for _, n := range nodes {
			if n.Ready && n.Role == role {
				return Placement{Cluster: clusterID, Node: n.Name, Role: n.Role}, checkImages(n, clusterID)
			}
		}
	}
	return Placement{}, cli.Refused(nil, "wait until its nodes are Ready", "cluster %q has no Ready node (%s)", clusterID, strings.Join(roles, " or "))
}

func checkImages(n NodeInfo, clusterID string) error {
	if len(n.Missing) == 0 {
		return nil
	}
	var load []string
	for _, img := range n.Missing {
		load = append(load, "kind load docker-image "+img+" --name CLUSTER")
	}
	return cli.Refused(nil, "build them with `make project-images` and load them into the cluster, for kind:\n"+strings.Join(load, "\n"),
		"node %s of %q lacks the test image(s) %s", n.Name, clusterID, strings.Join(n.Missing, ", "))
}

// Create makes the run's namespace in c (idempotent).
func Create(ctx context.Context, c *kube.Cluster, r Run) error {
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, r.NamespaceObject(), metav1.CreateOptions{FieldManager: kube.FieldManager})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s in %s: %w", r.Namespace(), c.Describe(), err)
	}
	return nil
}

// Cleanup deletes every object of the run in each cluster, its namespace
// last. It runs on its own context so that Ctrl-C or a timeout of the run
// does not stop it.
func Cleanup(ctx context.Context, r Run, clusters ...*kube.Cluster) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	var errs []error
	for _, c := range clusters {
		found, err := c.Find(ctx, r.Selector(), r.Namespace())
		if err == nil {
			err = c.DeleteFound(ctx, found)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("clean up %s in %s: %w", r.Namespace(), c.Describe(), err))
		}
	}
	return errors.Join(errs...)
}

// Leftovers lists what of the run is still in c and not being deleted
// (objects with a deletionTimestamp are on their way out: pods wait for
// their kubelet, namespaces for the namespace controller).
func Leftovers(ctx context.Context, c *kube.Cluster, r Run) ([]string, error) {
	found, err := c.Find(ctx, r.Selector(), r.Namespace())
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range found {
		ri := c.Dynamic.Resource(f.GVR)
		var u *unstructured.Unstructured
		if f.Namespace != "" {
			u, err = ri.Namespace(f.Namespace).Get(ctx, f.Name, metav1.GetOptions{})
		} else {
			u, err = ri.Get(ctx, f.Name, metav1.GetOptions{})
		}
		if apierrors.IsNotFound(err) || (err == nil && u.GetDeletionTimestamp() != nil) {
			continue
		}
		out = append(out, f.String())
	}
	sort.Strings(out)
	return out, nil
}

// WaitPod waits until the pod is Ready (done(pod) decides) or fails fast
// when it cannot start (image missing, crash). It returns the last pod seen.
func WaitPod(ctx context.Context, c *kube.Cluster, ns, name string, done func(*corev1.Pod) bool) (*corev1.Pod, error) {
	var last *corev1.Pod
	for {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = p
			if done(p) {
				return p, nil
			}
			if why := kube.Diagnose([]corev1.Pod{*p}); why.ImageMissing != "" {
				return p, cli.Refused(nil, "load the image into the cluster (kind: `kind load docker-image "+why.ImageMissing+" --name CLUSTER`)",
					"node %s cannot get the image %s", why.Node, why.ImageMissing)
			}
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("pod %s/%s in %s: %s: %w", ns, name, c.Describe(), podState(last), ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Ready: the pod runs and is ready.
func Ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return p.Status.PodIP != ""
		}
	}
	return false
}

// Finished: the pod's containers have exited.
func Finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func podState(p *corev1.Pod) string {
	if p == nil {
		return "not created"
	}
	if why := kube.Diagnose([]corev1.Pod{*p}); why.Text != "" {
		return why.Text
	}
	s := string(p.Status.Phase)
	if s == "" {
		s = "Pending"
	}
	if p.Spec.NodeName != "" {
		s += " on " + p.Spec.NodeName
	}
	return s
}

// Logs reads a finished pod's output.
func Logs(ctx context.Context, c *kube.Cluster, ns, name string) (string, error) {
	b, err := c.Client.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		return "", fmt.Errorf("read the logs of pod %s/%s: %w", ns, name, err)
	}
	return string(b), nil
}

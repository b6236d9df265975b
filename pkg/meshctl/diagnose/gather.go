package diagnose

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/access"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
)

// Where the cluster keeps what the checks read.
const (
	systemNS        = "kube-system"
	nodeLeaseNS     = "kube-node-lease"
	gatewayDS       = "tunnelmesh-gateway"
	gatewayLease    = "tunnelmesh-gateway" // pkg/k8s/election.DefaultLeaseName
	gatewayCtr      = "gateway"
	componentLabel  = "app.kubernetes.io/component"
	kubeProxyName   = "kube-proxy"
	kubeProxyKey    = "config.conf"
	corednsName     = "coredns"
	corefileKey     = "Corefile"
	nodeLocalDNS    = "node-local-dns"
	brokerReadLimit = 10 * time.Second
)

// Gather reads the facts of the member cluster c and of its broker (with the
// cluster's own credential). A broker that does not answer is a fact, not an
// error: most checks still run.
func Gather(ctx context.Context, c *kube.Cluster) (Facts, error) {
	var f Facts
	now, err := serverTime(ctx, c.Config)
	if err != nil {
		return f, cli.Refused(err, "check --kubeconfig/--context and that the cluster runs", "cannot reach the API server of %s", c.Describe())
	}
	f.Now = now
	m, err := access.ReadMember(ctx, c)
	if err != nil {
		return f, cli.Failed(err, "check your access to Secrets in "+defaults.Namespace, "cannot read this cluster's membership")
	}
	if m == nil {
		return f, cli.Refused(nil, "run it against a member cluster (--context), or `meshctl join` this one first",
			"%s has not joined a clusterset (no Secret %s/%s)", c.Describe(), defaults.Namespace, kube.BrokerSecret)
	}
	f.ClusterID = m.ClusterID
	gatherBroker(ctx, m, &f)

	cs := c.Client
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return f, fmt.Errorf("list nodes: %w", err)
	}
	for _, n := range nodes.Items {
		nd := Node{Name: n.Name, Ready: kube.NodeReady(&n), Gateway: n.Labels[kube.GatewayLabel] == "true"}
		if nd.Gateway {
			nd.ClockOffset = leaseOffset(ctx, c, n.Name)
		}
		f.Nodes = append(f.Nodes, nd)
	}

	pods, err := cs.CoreV1().Pods(defaults.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return f, fmt.Errorf("list pods of %s: %w", defaults.Namespace, err)
	}
	for _, p := range pods.Items {
		f.Pods = append(f.Pods, podFacts(p))
	}
	dss, err := cs.AppsV1().DaemonSets(defaults.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return f, fmt.Errorf("list DaemonSets of %s: %w", defaults.Namespace, err)
	}
	for _, d := range dss.Items {
		f.Workloads = append(f.Workloads, Workload{Kind: "DaemonSet", Name: d.Name, Desired: d.Status.DesiredNumberScheduled, Ready: d.Status.NumberReady})
		if d.Name == gatewayDS {
			for _, ctr := range d.Spec.Template.Spec.Containers {
				if ctr.Name == gatewayCtr {
					f.GatewayArgs = ctr.Args
				}
			}
		}
	}
	deps, err := cs.AppsV1().Deployments(defaults.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return f, fmt.Errorf("list Deployments of %s: %w", defaults.Namespace, err)
	}
	for _, d := range deps.Items {
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		f.Workloads = append(f.Workloads, Workload{Kind: "Deployment", Name: d.Name, Desired: want, Ready: d.Status.ReadyReplicas})
	}
	evs, err := cs.CoreV1().Events(defaults.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "type=Warning"})
	if err != nil {
		return f, fmt.Errorf("list events of %s: %w", defaults.Namespace, err)
	}
	for _, e := range evs.Items {
		f.Events = append(f.Events, Event{Object: strings.ToLower(e.InvolvedObject.Kind) + "/" + e.InvolvedObject.Name, Reason: e.Reason, Message: e.Message})
	}

	mg, err := status.Get(ctx, c.Dynamic, defaults.Namespace, f.ClusterID)
	switch {
	case err == nil:
		f.MeshGateway = mg
		f.StatusWrittenAt = writtenAt(mg.ManagedFields, "status")
	case !apierrors.IsNotFound(err):
		return f, err
	}

	switch l, err := cs.CoordinationV1().Leases(defaults.Namespace).Get(ctx, gatewayLease, metav1.GetOptions{}); {
	case err == nil:
		f.Lease = &Lease{RenewedAt: writtenAt(l.ManagedFields, "")}
		if l.Spec.HolderIdentity != nil {
			f.Lease.Holder = *l.Spec.HolderIdentity
		}
		if l.Spec.LeaseDurationSeconds != nil {
			f.Lease.Duration = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
		}
	case !apierrors.IsNotFound(err):
		return f, fmt.Errorf("read the gateway Lease: %w", err)
	}
	if cm, err := cs.CoreV1().ConfigMaps(systemNS).Get(ctx, kubeProxyName, metav1.GetOptions{}); err == nil {
		f.KubeProxy.ConfigFound = true
		f.KubeProxy.Mode = ProxyMode(cm.Data[kubeProxyKey])
	}
	if _, err := cs.AppsV1().DaemonSets(systemNS).Get(ctx, kubeProxyName, metav1.GetOptions{}); err == nil {
		f.KubeProxy.DaemonSet = true
	}
	if cm, err := cs.CoreV1().ConfigMaps(systemNS).Get(ctx, corednsName, metav1.GetOptions{}); err == nil {
		f.DNS.CorefileFound, f.DNS.Corefile = true, cm.Data[corefileKey]
	}
	if _, err := cs.AppsV1().DaemonSets(systemNS).Get(ctx, nodeLocalDNS, metav1.GetOptions{}); err == nil {
		f.DNS.NodeLocal = true
		if cm, err := cs.CoreV1().ConfigMaps(systemNS).Get(ctx, nodeLocalDNS, metav1.GetOptions{}); err == nil {
			f.DNS.NodeLocalCorefile = cm.Data[corefileKey]
		}
	}
	return f, nil
}

func gatherBroker(ctx context.Context, m *access.Member, f *Facts) {
	bc, err := m.Client()
	if err != nil {
		f.BrokerErr = err.Error()
		return
	}
	ctx, cancel := context.WithTimeout(ctx, brokerReadLimit)
	defer cancel()
	snap, err := bc.Snapshot(ctx)
	if err != nil {
		err = access.Explain(err, m.URL)
		f.BrokerErr = err.Error()
		var ce *cli.Error
		if errors.As(err, &ce) {
			f.BrokerErr = ce.What
		}
		return
	}
	f.Members, f.Gateways = snap.Clusters, snap.Gateways
}

// serverTime is the API server's clock, from its Date header (1 s resolution).
func serverTime(ctx context.Context, cfg *rest.Config) (time.Time, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return time.Time{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(cfg.Host, "/")+"/version", nil)
	if err != nil {
		return time.Time{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return time.Time{}, err
	}
	resp.Body.Close()
	t, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return time.Now(), nil // no Date header: fall back to this host's clock
	}
	// The header is truncated to the second; the middle of it is closer.
	return t.Add(500 * time.Millisecond), nil
}

// leaseOffset estimates node's clock minus the API server's from its
// kubelet's Lease: spec.renewTime is written on the node's clock (µs), the
// managedFields time by the API server at the same write (truncated to the
// second, hence the half second). Nil when there is no such Lease.
func leaseOffset(ctx context.Context, c *kube.Cluster, node string) *time.Duration {
	l, err := c.Client.CoordinationV1().Leases(nodeLeaseNS).Get(ctx, node, metav1.GetOptions{})
	if err != nil || l.Spec.RenewTime == nil {
		return nil
	}
	at := writtenAt(l.ManagedFields, "")
	if at.IsZero() {
		return nil
	}
	d := l.Spec.RenewTime.Sub(at.Add(500 * time.Millisecond))
	return &d
}

// writtenAt is the latest managedFields time of the given subresource.
func writtenAt(mf []metav1.ManagedFieldsEntry, subresource string) time.Time {
	var t time.Time
	for _, e := range mf {
		if e.Subresource == subresource && e.Time != nil && e.Time.After(t) {
			t = e.Time.Time
		}
	}
	return t
}

func podFacts(p corev1.Pod) Pod {
	out := Pod{Name: p.Name, Node: p.Spec.NodeName, Component: p.Labels[componentLabel]}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			out.Ready = true
		}
	}
	for _, cs := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		out.Restarts += cs.RestartCount
		if w := cs.State.Waiting; w != nil && out.Waiting == "" {
			out.Waiting = strings.TrimSuffix(w.Reason+": "+w.Message, ": ")
		}
		if t := cs.LastTerminationState.Terminated; t != nil && out.LastError == "" {
			out.LastError = strings.TrimSuffix(fmt.Sprintf("%s (exit %d): %s", t.Reason, t.ExitCode, t.Message), ": ")
		}
	}
	return out
}

// ProxyMode reads the mode of a KubeProxyConfiguration ("" when unset).
func ProxyMode(config string) string {
	var c struct {
		Mode string `json:"mode"`
	}
	if err := yaml.Unmarshal([]byte(config), &c); err != nil {
		return ""
	}
	return c.Mode
}

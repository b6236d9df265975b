// Package testenv gives meshctl's tests a real API server (internal/kubeapi)
// reached through a kubeconfig file, nodes as a kubelet would report them,
// and the real broker binary run the way its Deployment runs it.
package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/tunnelmesh/tunnelmesh/internal/kubeapi"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
)

// Cluster is a running API server with a kubeconfig for it.
type Cluster struct {
	Env        *kubeapi.Env
	Kube       *kube.Cluster
	Client     kubernetes.Interface
	Kubeconfig string
	Context    string
}

// Start runs an API server and writes a kubeconfig whose context is name.
func Start(t *testing.T, name string) *Cluster {
	t.Helper()
	env := kubeapi.Start(t)
	path := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: env.URL, InsecureSkipTLSVerify: true}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: kubeapi.Token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	cfg.CurrentContext = name
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	k, err := kube.Flags{Kubeconfig: path}.Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// The API server makes the default/kubernetes Service and the system
	// namespaces shortly after it starts; snapshots must not see them appear.
	err = wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, e1 := k.Client.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		_, e2 := k.Client.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
		return e1 == nil && e2 == nil, nil
	})
	if err != nil {
		t.Fatalf("API server did not settle: %v", err)
	}
	return &Cluster{Env: env, Kube: k, Client: k.Client, Kubeconfig: path, Context: name}
}

// AddNode creates a node as a kubelet would report it.
func (c *Cluster) AddNode(t *testing.T, name string, ready bool, ip string, images ...string) *corev1.Node {
	t.Helper()
	ctx := context.Background()
	n, err := c.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name,
		Labels: map[string]string{"kubernetes.io/hostname": name}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st, LastHeartbeatTime: metav1.Now()}}
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}}
	}
	for _, img := range images {
		n.Status.Images = append(n.Status.Images, corev1.ContainerImage{Names: []string{"docker.io/" + img}, SizeBytes: 1 << 20})
	}
	n.Status.Images = append(n.Status.Images, corev1.ContainerImage{Names: []string{"registry.k8s.io/pause:3.10"}})
	n, err = c.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// MarkDeploymentReady sets the status a controller-manager and kubelet
// would once its pods run.
func (c *Cluster) MarkDeploymentReady(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 1, ReadyReplicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1}
	if _, err := c.Client.AppsV1().Deployments(d.Namespace).UpdateStatus(context.Background(), d, metav1.UpdateOptions{}); err != nil {
		t.Errorf("mark deployment ready: %v", err)
	}
}

var (
	buildOnce sync.Once
	brokerBin string
	buildErr  error
)

// BrokerBinary builds cmd/broker once per test process.
func BrokerBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "meshctl-test-broker-")
		if err != nil {
			buildErr = err
			return
		}
		brokerBin = filepath.Join(dir, "broker")
		out, err := exec.Command("go", "build", "-o", brokerBin, "github.com/tunnelmesh/tunnelmesh/cmd/broker").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build cmd/broker: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return brokerBin
}

// FreeAddr returns a free loopback address.
func FreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// RunPod runs the first container of d's pod template as a process, as a
// kubelet would: each volume is a directory (Secrets projected with their
// items; hostPath dirs under hostRoot so that they outlive the "pod"),
// mount paths in the arguments rewritten to those directories, and
// --listen pointed at listen. It returns a stop function.
func (c *Cluster) RunPod(t *testing.T, d *appsv1.Deployment, bin, hostRoot, listen string) (stop func()) {
	t.Helper()
	ctx := context.Background()
	spec := d.Spec.Template.Spec
	paths := map[string]string{}
	for _, v := range spec.Volumes {
		switch {
		case v.Secret != nil:
			dir := t.TempDir()
			sec, err := c.Client.CoreV1().Secrets(d.Namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("pod volume %s: %v", v.Name, err)
			}
			for _, it := range v.Secret.Items {
				if err := os.WriteFile(filepath.Join(dir, it.Path), sec.Data[it.Key], 0o400); err != nil {
					t.Fatal(err)
				}
			}
			paths[v.Name] = dir
		case v.HostPath != nil:
			dir := filepath.Join(hostRoot, v.HostPath.Path)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			paths[v.Name] = dir
		default:
			paths[v.Name] = t.TempDir()
		}
	}
	ctr := spec.Containers[0]
	args := append([]string(nil), ctr.Args...)
	for i, a := range args {
		for _, m := range ctr.VolumeMounts {
			a = strings.ReplaceAll(a, m.MountPath, paths[m.Name])
		}
		if strings.HasPrefix(a, "--listen=") {
			a = "--listen=" + listen
		}
		args[i] = a
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

// WaitDeployment polls until the Deployment exists.
func (c *Cluster) WaitDeployment(t *testing.T, ns, name string) *appsv1.Deployment {
	t.Helper()
	var d *appsv1.Deployment
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		d, err = c.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("deployment %s/%s never appeared: %v", ns, name, err)
	}
	return d
}

// StandInGateway plays kubelet and gateway for a joined cluster that has no
// nodes running pods: every DaemonSet of the namespace is marked ready as it
// appears (one pod each: the gateway's, and leave's node cleanup) and the
// cluster's MeshGateway names node as the active gateway, which is what join
// waits for. It stops with the test.
func (c *Cluster) StandInGateway(t *testing.T, clusterID, node string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		wrote := false
		for ctx.Err() == nil {
			// Every DaemonSet (the gateway's, and later leave's node cleanup) runs.
			list, err := c.Client.AppsV1().DaemonSets(defaults.Namespace).List(ctx, metav1.ListOptions{})
			if err == nil && len(list.Items) > 0 {
				for i := range list.Items {
					d := &list.Items[i]
					if d.Status.NumberReady == 1 && d.Status.ObservedGeneration == d.Generation {
						continue
					}
					d.Status = appsv1.DaemonSetStatus{ObservedGeneration: d.Generation, DesiredNumberScheduled: 1,
						CurrentNumberScheduled: 1, NumberReady: 1, UpdatedNumberScheduled: 1, NumberAvailable: 1}
					_, _ = c.Client.AppsV1().DaemonSets(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
				}
				if !wrote {
					w := status.Writer{Client: c.Kube.Dynamic, Namespace: defaults.Namespace, ClusterID: clusterID}
					wrote = w.Write(ctx, status.GatewayStatus{ActiveNode: node, Epoch: 1}) == nil
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
}

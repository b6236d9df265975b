//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tunnelmesh/tunnelmesh/pkg/kindbed"
)

// getEcho fetches url from a check pod on node of c; any failure ends the test.
func getEcho(ctx context.Context, t *testing.T, c *kindbed.Cluster, node, url string) kindbed.EchoReply {
	t.Helper()
	r, err := c.GetEcho(ctx, node, url)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestClustersReady: every node of both clusters is Ready, the system pods
// are available, the gateway candidates carry their label, and the host
// forwards nothing from kind's network to its own (kindbed's fence).
func TestClustersReady(t *testing.T) {
	ctx := testCtx(t, 5*time.Minute)
	if msg := kindbed.CheckFence(ctx); msg != "" {
		t.Error(msg)
	}
	for _, c := range env.Clusters {
		if msg := c.NotReady(ctx); msg != "" {
			t.Errorf("%s: %s", c.Spec.Name, msg)
		}
		want := 0
		for _, l := range c.Spec.Nodes {
			if l[kindbed.GatewayLabel] == "true" {
				want++
			}
		}
		gws, err := c.GatewayNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(gws) != want {
			t.Errorf("%s: gateway candidates %v, want %d nodes labelled %s=true", c.Spec.Name, gws, want, kindbed.GatewayLabel)
		}
	}
}

// TestCoreDNS: a pod of each cluster resolves kubernetes.default through
// CoreDNS to that cluster's kubernetes Service ClusterIP, and a name outside
// the cluster through CoreDNS's upstream.
func TestCoreDNS(t *testing.T) {
	for _, c := range env.Clusters {
		t.Run(c.Spec.Name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t, 4*time.Minute)
			svc, err := c.Client.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
			if err != nil {
				t.Fatalf("get kubernetes service: %v", err)
			}
			_, cidr, _ := net.ParseCIDR(c.Spec.ServiceSubnet)
			if ip := net.ParseIP(svc.Spec.ClusterIP); ip == nil || !cidr.Contains(ip) {
				t.Errorf("kubernetes ClusterIP %s not in the service subnet %s", svc.Spec.ClusterIP, c.Spec.ServiceSubnet)
			}
			nodes, err := c.NodeNames(ctx)
			if err != nil {
				t.Fatal(err)
			}
			out, err := c.RunCheck(ctx, nodes[len(nodes)-1], "-wait", "60s", "dns", "kubernetes.default.svc.cluster.local")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, svc.Spec.ClusterIP) {
				t.Errorf("kubernetes.default.svc.cluster.local answered %q, want %s", strings.TrimSpace(out), svc.Spec.ClusterIP)
			}
			// Names outside the cluster go to CoreDNS's upstream, the node's
			// resolver (Docker's DNS, reached on the node address): the
			// control-plane container's name resolves to its node IP.
			cp := c.Spec.Name + "-control-plane"
			cpIP, err := c.NodeIP(ctx, cp)
			if err != nil {
				t.Fatal(err)
			}
			out, err = c.RunCheck(ctx, nodes[0], "-wait", "30s", "dns", cp)
			if err != nil {
				t.Fatalf("upstream lookup through CoreDNS: %v", err)
			}
			if !strings.Contains(out, cpIP) {
				t.Errorf("%s answered %q, want %s", cp, strings.TrimSpace(out), cpIP)
			}
		})
	}
}

// TestPodConnectivity: in each cluster a pod on every node reaches the
// echoserver pod on every other node (pod IP to pod IP, through the CNI)
// and the echo Service ClusterIP (through kube-proxy).
func TestPodConnectivity(t *testing.T) {
	for _, c := range env.Clusters {
		t.Run(c.Spec.Name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t, 8*time.Minute)
			pods, err := c.EnsureEcho(ctx)
			if err != nil {
				t.Fatal(err)
			}
			svc, err := c.Client.CoreV1().Services(kindbed.Namespace).Get(ctx, "echo", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			echoIPs := map[string]bool{}
			for _, p := range pods {
				echoIPs[p.Status.PodIP] = true
			}
			for _, src := range pods {
				from := src.Spec.NodeName
				for _, dst := range pods {
					if dst.Spec.NodeName == from {
						continue
					}
					t.Run(fmt.Sprintf("%s->pod-on-%s", from, dst.Spec.NodeName), func(t *testing.T) {
						t.Parallel()
						url := "http://" + net.JoinHostPort(dst.Status.PodIP, strconv.Itoa(kindbed.EchoPort)) + "/"
						r := getEcho(ctx, t, c, from, url)
						if r.PodIP != dst.Status.PodIP || r.Cluster != c.Spec.Name || r.Node != dst.Spec.NodeName {
							t.Errorf("GET %s answered by %+v, want pod %s on %s in %s", url, r, dst.Status.PodIP, dst.Spec.NodeName, c.Spec.Name)
						}
					})
				}
				t.Run(fmt.Sprintf("%s->service", from), func(t *testing.T) {
					t.Parallel()
					url := "http://" + net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(kindbed.EchoPort)) + "/"
					r := getEcho(ctx, t, c, from, url)
					if !echoIPs[r.PodIP] || r.Cluster != c.Spec.Name {
						t.Errorf("GET %s answered by %+v, want one of the echo pods of %s", url, r, c.Spec.Name)
					}
				})
			}
		})
	}
}

// BrokerPort is the broker's HTTPS port.
const BrokerPort = 8443

// TestBrokerHealthzAcrossClusters: the broker image runs in tm-east behind a
// NodePort Service and its /healthz answers a pod of tm-west through the
// node network (kind's docker network), as gateways will reach it.
func TestBrokerHealthzAcrossClusters(t *testing.T) {
	ctx := testCtx(t, 8*time.Minute)
	east, west := env.Cluster("tm-east"), env.Cluster("tm-west")
	img, err := kindbed.Image("tunnelmesh/broker")
	if err != nil {
		t.Fatal(err)
	}
	if err := east.EnsureNamespace(ctx); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "broker"}
	data := []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "broker", Namespace: kindbed.Namespace},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
					InitContainers: []corev1.Container{{
						Name: "init", Image: img, ImagePullPolicy: corev1.PullNever,
						Args: []string{"init", "--data-dir", "/data/broker"}, VolumeMounts: data,
					}},
					Containers: []corev1.Container{{
						Name: "broker", Image: img, ImagePullPolicy: corev1.PullNever,
						Args:         []string{"serve", "--data-dir", "/data/broker", "--listen", fmt.Sprintf(":%d", BrokerPort)},
						VolumeMounts: data,
						Ports:        []corev1.ContainerPort{{ContainerPort: BrokerPort}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(BrokerPort)}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
	if _, err := east.Client.AppsV1().Deployments(kindbed.Namespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create broker deployment: %v", err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "broker", Namespace: kindbed.Namespace},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeNodePort,
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "https", Port: BrokerPort, TargetPort: intstr.FromInt32(BrokerPort)}},
		},
	}
	svc, err = east.Client.CoreV1().Services(kindbed.Namespace).Create(ctx, svc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		svc, err = east.Client.CoreV1().Services(kindbed.Namespace).Get(ctx, "broker", metav1.GetOptions{})
	}
	if err != nil {
		t.Fatalf("broker service: %v", err)
	}
	nodePort := svc.Spec.Ports[0].NodePort
	err = wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := east.Client.AppsV1().Deployments(kindbed.Namespace).Get(ctx, "broker", metav1.GetOptions{})
		return err == nil && d.Status.AvailableReplicas == 1, nil
	})
	if err != nil {
		t.Fatalf("broker deployment not available: %v", err)
	}
	eastNodes, err := east.NodeNames(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eastIP, err := east.NodeIP(ctx, eastNodes[0])
	if err != nil {
		t.Fatal(err)
	}
	westNodes, err := west.NodeNames(ctx)
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("https://%s/healthz", net.JoinHostPort(eastIP, strconv.Itoa(int(nodePort))))
	for _, n := range westNodes {
		out, err := west.RunCheck(ctx, n, "-wait", "60s", "-insecure", "http", url)
		if err != nil {
			t.Fatalf("from a pod on %s: %v", n, err)
		}
		t.Logf("GET %s from a pod on tm-west/%s: %s", url, n, strings.TrimSpace(out))
	}
}

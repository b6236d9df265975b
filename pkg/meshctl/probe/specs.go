// Package probe runs meshctl's cross-cluster test pods: verify (a server
// pod, a Service and its ServiceExport in one cluster, a client pod in the
// other reaching it by pod IP and by its clusterset.local name) and
// benchmark (throughput and latency between pods of two clusters). The pod
// specs are plain data built here; every object a run creates carries the
// run's label and lives in the run's own namespace, and Cleanup deletes them
// in both clusters, also after a timeout or Ctrl-C.
package probe

import (
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/netprobe"
)

// The project's own test images (`make project-images`; for kind,
// `kind load docker-image` them into both clusters).
const (
	EchoImage   = "tunnelmesh/echoserver:dev"
	ClientImage = "tunnelmesh/netclient:dev"
)

// Labels and names of the objects a run creates.
const (
	RunLabel       = "tunnelmesh.io/probe-run"
	componentLabel = "app.kubernetes.io/component"
	appLabel       = "app.kubernetes.io/name"
	// ServiceName is the exported Service of verify.
	ServiceName = "echo"
	// EchoPort serves HTTP and UDP (the echoserver's default :8080).
	EchoPort = 8080
	// BenchPort is the benchmark server's.
	BenchPort = 5201
)

// NewRunID returns a short random ID (lower-case letters and digits).
func NewRunID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// Run names one verify or benchmark run.
type Run struct {
	ID string
	// Kind is "verify" or "benchmark" (the component label).
	Kind string
}

// Namespace is the run's namespace, created in both clusters (the importing
// cluster needs it too: a ServiceImport lands only in namespaces that exist).
func (r Run) Namespace() string { return "tmesh-" + r.Kind + "-" + r.ID }

// Labels are on every object of the run; part-of makes `meshctl uninstall`
// find leftovers of an interrupted run.
func (r Run) Labels() map[string]string {
	return map[string]string{RunLabel: r.ID, componentLabel: r.Kind, kube.PartOfLabel: kube.PartOf}
}

// Selector selects every object of the run.
func (r Run) Selector() string { return RunLabel + "=" + r.ID }

func (r Run) meta(name string, extra map[string]string) metav1.ObjectMeta {
	l := r.Labels()
	for k, v := range extra {
		l[k] = v
	}
	return metav1.ObjectMeta{Name: name, Namespace: r.Namespace(), Labels: l}
}

// NamespaceObject is the run's namespace.
func (r Run) NamespaceObject() *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: r.Namespace(), Labels: r.Labels()}}
}

var (
	noPrivileges = &corev1.SecurityContext{
		RunAsNonRoot: ptr(true), RunAsUser: ptr(int64(65534)), AllowPrivilegeEscalation: ptr(false),
		ReadOnlyRootFilesystem: ptr(true), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	// Test pods run on any node the run picks, control plane included.
	tolerateAll = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
)

func ptr[T any](v T) *T { return &v }

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

// EchoContainer is the echoserver as verify and the test beds run it: HTTP
// and UDP on EchoPort, answering with the pod, node and cluster that
// answered (from the downward API and clusterID), ready once it serves.
func EchoContainer(name, image, clusterID string) corev1.Container {
	return corev1.Container{
		Name: name, Image: image, Args: []string{"-listen=:" + strconv.Itoa(EchoPort)},
		Env: []corev1.EnvVar{
			{Name: "CLUSTER_NAME", Value: clusterID},
			fieldEnv("POD_IP", "status.podIP"),
			fieldEnv("NODE_NAME", "spec.nodeName"),
			fieldEnv("POD_NAMESPACE", "metadata.namespace"),
		},
		Ports: []corev1.ContainerPort{{ContainerPort: EchoPort}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(EchoPort)}},
			PeriodSeconds: 1,
		},
	}
}

// pod is a test pod pinned to node (the run chose it: gateway or not).
func (r Run) pod(name, role, node, image string, args []string, restart corev1.RestartPolicy, env []corev1.EnvVar) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: r.meta(name, map[string]string{appLabel: name, "tunnelmesh.io/probe-role": role}),
		Spec: corev1.PodSpec{
			NodeName:                      node,
			RestartPolicy:                 restart,
			Tolerations:                   tolerateAll,
			TerminationGracePeriodSeconds: ptr(int64(2)),
			AutomountServiceAccountToken:  ptr(false),
			EnableServiceLinks:            ptr(false),
			Containers: []corev1.Container{{
				Name: role, Image: image, ImagePullPolicy: corev1.PullIfNotPresent, Args: args, Env: env,
				SecurityContext: noPrivileges,
			}},
		},
	}
}

// EchoServer is verify's server pod: the echoserver answering HTTP and UDP
// with who answered and the client address it saw, and beside it a
// benchmark server (benchImage) for the bulk-transfer step.
func (r Run) EchoServer(node, image, benchImage, clusterID string) *corev1.Pod {
	p := r.pod("echo-server", "server", node, image, nil, corev1.RestartPolicyAlways, nil)
	echo := EchoContainer("server", image, clusterID)
	echo.ImagePullPolicy, echo.SecurityContext = p.Spec.Containers[0].ImagePullPolicy, noPrivileges
	p.Spec.Containers[0] = echo
	bench := r.BenchServer(node, benchImage).Spec.Containers[0]
	bench.Name = "bench"
	p.Spec.Containers = append(p.Spec.Containers, bench)
	return p
}

// EchoService selects the echo server, TCP and UDP on EchoPort.
func (r Run) EchoService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: r.meta(ServiceName, nil),
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{appLabel: "echo-server", RunLabel: r.ID},
			Ports: []corev1.ServicePort{
				{Name: "http", Protocol: corev1.ProtocolTCP, Port: EchoPort, TargetPort: intstr.FromInt32(EchoPort)},
				{Name: "udp", Protocol: corev1.ProtocolUDP, Port: EchoPort, TargetPort: intstr.FromInt32(EchoPort)},
			},
		},
	}
}

// ServiceExport exports the echo Service.
func (r Run) ServiceExport() *unstructured.Unstructured {
	labels := map[string]any{}
	for k, v := range r.Labels() {
		labels[k] = v
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
		"metadata": map[string]any{"name": ServiceName, "namespace": r.Namespace(), "labels": labels}}}
}

// ClusterSetName is the echo Service's name in the clusterset.
func (r Run) ClusterSetName() string {
	return fmt.Sprintf("%s.%s.svc.clusterset.local", ServiceName, r.Namespace())
}

// VerifySteps are what verify's client pod checks, in order.
func (r Run) VerifySteps(serverIP string) []netprobe.Step {
	hp := func(h string) string { return fmt.Sprintf("%s:%d", h, EchoPort) }
	if ip := serverIP; len(ip) > 0 && ip[0] != '[' && strings.Contains(ip, ":") {
		serverIP = "[" + ip + "]"
	}
	return []netprobe.Step{
		{Name: StepPodIPTCP, Kind: "http", Target: "http://" + hp(serverIP) + "/verify"},
		{Name: StepPodIPUDP, Kind: "udp", Target: hp(serverIP)},
		{Name: StepPodIPBulk, Kind: "bulk", Target: fmt.Sprintf("%s:%d", serverIP, BenchPort)},
		{Name: StepDNS, Kind: "dns", Target: r.ClusterSetName()},
		{Name: StepServiceTCP, Kind: "http", Target: "http://" + hp(r.ClusterSetName()) + "/verify"},
	}
}

// Step names of verify's client.
const (
	StepPodIPTCP   = "pod-ip-tcp"
	StepPodIPUDP   = "pod-ip-udp"
	StepPodIPBulk  = "pod-ip-bulk"
	StepDNS        = "clusterset-dns"
	StepServiceTCP = "clusterset-tcp"
)

// VerifyClient runs the steps once (each retried for up to wait) and exits.
func (r Run) VerifyClient(node, image string, steps []netprobe.Step, wait string) *corev1.Pod {
	args := []string{"-wait", wait, "-timeout", "5s", "steps"}
	for _, s := range steps {
		args = append(args, s.String())
	}
	return r.pod("verify-client", "client", node, image, args, corev1.RestartPolicyNever, nil)
}

// BenchServer is benchmark's server pod (netclient bench-server).
func (r Run) BenchServer(node, image string) *corev1.Pod {
	return r.pod("bench-server", "server", node, image, []string{"bench-server", "-listen=:" + strconv.Itoa(BenchPort)}, corev1.RestartPolicyAlways, nil)
}

// BenchClient measures kind ("throughput" or "latency") against the server
// at serverIP from node; index tells apart the placements of one run.
func (r Run) BenchClient(index int, node, image, kind, serverIP string, duration string, samples int) *corev1.Pod {
	host := serverIP
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	args := []string{"bench", kind, "-duration", duration, "-samples", strconv.Itoa(samples), "-wait", "60s",
		fmt.Sprintf("%s:%d", host, BenchPort)}
	return r.pod(fmt.Sprintf("bench-client-%d", index), "client", node, image, args, corev1.RestartPolicyNever, nil)
}

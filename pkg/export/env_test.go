package export_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/mcs-api/config/crd"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"
	"sigs.k8s.io/yaml"

	"github.com/tunnelmesh/tunnelmesh/deploy"
	"github.com/tunnelmesh/tunnelmesh/internal/kubeapi"
	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/export"
)

// cluster is one real kube-apiserver with the MCS CRDs, and the controller
// that runs for it.
type cluster struct {
	t       testing.TB
	id      string
	podCIDR string
	env     *kubeapi.Env
	kube    kubernetes.Interface
	mcs     mcsclient.Interface
	dyn     dynamic.Interface
	// Clients of the controller: its ServiceAccount, impersonated.
	ctrlKube kubernetes.Interface
	ctrlMCS  mcsclient.Interface
	ctrlDyn  dynamic.Interface
	broker   *brokerclient.Client
	// via, when set, is the broker the controller talks to instead of broker.
	via     export.Broker
	tunnels *export.Tunnels
	stop    func()
	runs    int
	workers int // 0: the shipped default
	// shippedElection: see clusterOptions.
	shippedElection bool
	electionKube    kubernetes.Interface
}

func startCluster(t testing.TB, b *brokertest.Broker, id, podCIDR, svcCIDR string) *cluster {
	t.Helper()
	return startClusterWith(t, b, id, podCIDR, svcCIDR, clusterOptions{})
}

// clusterOptions tune startClusterWith; zero values: a test apiserver and
// the controller's shipped settings.
type clusterOptions struct {
	api     kubeapi.Options
	qps     float32 // the controller's clients
	burst   int
	workers int
	// shippedElection: the Lease timings the controller ships with, not
	// the short ones tests use.
	shippedElection bool
}

func startClusterWith(t testing.TB, b *brokertest.Broker, id, podCIDR, svcCIDR string, o clusterOptions) *cluster {
	t.Helper()
	if o.qps == 0 {
		o.qps, o.burst = export.DefaultQPS, export.DefaultBurst
	}
	o.api.ServiceCIDR = svcCIDR // the broker takes only ClusterIPs inside the cluster's service CIDRs
	env := kubeapi.StartWith(t, o.api)
	cfg := *env.Config
	cfg.QPS, cfg.Burst = 500, 1000
	c := &cluster{t: t, id: id, podCIDR: podCIDR, env: env, tunnels: export.NewTunnels(), workers: o.workers, shippedElection: o.shippedElection}
	var err error
	if c.kube, err = kubernetes.NewForConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	if c.mcs, err = mcsclient.NewForConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	if c.dyn, err = dynamic.NewForConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	cp, err := deploy.FS.ReadFile("mcs/clusterproperty-crd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	InstallCRDs(t, c.dyn, crd.ServiceExportCRD, crd.ServiceImportCRD, cp)
	c.broker, _ = b.Join(id, podCIDR, svcCIDR)

	// The controller runs with exactly the rights deploy/mcs grants it.
	c.namespace(defaults.Namespace)
	rbac, err := deploy.FS.ReadFile("mcs/controller-rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	applyYAML(t, c.dyn, rbac)
	// ... and the client settings it ships with.
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + defaults.Namespace + ":tunnelmesh-controller"}
	cfg.QPS, cfg.Burst = o.qps, o.burst
	if c.ctrlKube, err = kubernetes.NewForConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	if c.ctrlMCS, err = mcsclient.NewForConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	if c.ctrlDyn, err = dynamic.NewForConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	if c.electionKube, err = kubernetes.NewForConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	return c
}

// applyYAML creates the objects of a multi-document YAML file.
func applyYAML(t testing.TB, dc dynamic.Interface, doc []byte) {
	t.Helper()
	gvr := map[string]schema.GroupVersionResource{
		"ServiceAccount":     {Version: "v1", Resource: "serviceaccounts"},
		"ClusterRole":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
		"ClusterRoleBinding": {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
		"Role":               {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
		"RoleBinding":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
	}
	for _, part := range strings.Split(string(doc), "\n---\n") {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(part), &obj); err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: obj}
		r, ok := gvr[u.GetKind()]
		if !ok {
			t.Fatalf("applyYAML: kind %q not known", u.GetKind())
		}
		var err error
		if u.GetNamespace() != "" {
			_, err = dc.Resource(r).Namespace(u.GetNamespace()).Create(context.Background(), u, metav1.CreateOptions{})
		} else {
			_, err = dc.Resource(r).Create(context.Background(), u, metav1.CreateOptions{})
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// InstallCRDs creates CRDs from YAML and waits until they are served.
func InstallCRDs(t testing.TB, dc dynamic.Interface, docs ...[]byte) {
	t.Helper()
	ctx := context.Background()
	for _, d := range docs {
		var obj map[string]any
		if err := yaml.Unmarshal(d, &obj); err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: obj}
		if _, err := dc.Resource(crdGVR).Create(ctx, u, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create CRD %s: %v", u.GetName(), err)
		}
		testkit.Eventually(t, 30*time.Second, func() error {
			got, err := dc.Resource(crdGVR).Get(ctx, u.GetName(), metav1.GetOptions{})
			if err != nil {
				return err
			}
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, c := range conds {
				m := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
			return fmt.Errorf("CRD %s not established", u.GetName())
		})
	}
}

// run starts the cluster's controller; stop (also at cleanup) ends it and
// waits for it.
func (c *cluster) run() {
	c.t.Helper()
	var br export.Broker = c.broker
	if c.via != nil {
		br = c.via
	}
	cfg := export.Config{ClusterID: c.id, ClusterSetID: "test-set", Kube: c.ctrlKube, MCS: c.ctrlMCS, Dynamic: c.ctrlDyn,
		Broker: br, Reachability: c.tunnels, Workers: c.workers,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	// Elected as in production, with short timings (the lease is released
	// on a clean stop, so a restart does not wait for it anyway).
	c.runs++
	el := export.Election{Identity: fmt.Sprintf("%s-%d", c.id, c.runs), Client: c.electionKube,
		LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 200 * time.Millisecond}
	if c.shippedElection {
		el.LeaseDuration, el.RenewDeadline, el.RetryPeriod = 0, 0, 0
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- export.Run(ctx, cfg, el) }()
	stopped := false
	c.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				c.t.Errorf("controller %s: %v", c.id, err)
			}
		case <-time.After(20 * time.Second):
			c.t.Errorf("controller %s did not stop", c.id)
		}
	}
	c.t.Cleanup(c.stop)
}

func (c *cluster) namespace(name string) {
	c.t.Helper()
	_, err := c.kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		c.t.Fatal(err)
	}
}

// service creates a Service (ClusterIP unless headless) with the given ports
// (name:port→target) and an EndpointSlice of the given pods as the
// EndpointSlice controller would (none runs with the test apiserver).
func (c *cluster) service(ns, name string, headless bool, ports []corev1.ServicePort, pods ...pod) *corev1.Service {
	c.t.Helper()
	s, err := c.createService(ns, name, headless, ports, pods...)
	if err != nil {
		c.t.Fatal(err)
	}
	return s
}

// serviceErr is service for other goroutines than the test's.
func (c *cluster) serviceErr(ns, name string, headless bool, ports []corev1.ServicePort, pods ...pod) error {
	_, err := c.createService(ns, name, headless, ports, pods...)
	return err
}

func (c *cluster) createService(ns, name string, headless bool, ports []corev1.ServicePort, pods ...pod) (*corev1.Service, error) {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Ports: ports}}
	if headless {
		s.Spec.ClusterIP = corev1.ClusterIPNone
	}
	s, err := c.kube.CoreV1().Services(ns).Create(context.Background(), s, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	return s, c.putEndpoints(ns, name, ports, pods...)
}

// podIP is address i of the cluster's pod CIDR (10.<n>.0.i).
func (c *cluster) podIP(i int) string {
	return strings.Replace(c.podCIDR, "0.0/16", fmt.Sprintf("0.%d", i), 1)
}

type pod struct {
	ip, hostname string
	notReady     bool
}

func (c *cluster) endpoints(ns, name string, ports []corev1.ServicePort, pods ...pod) {
	c.t.Helper()
	if err := c.putEndpoints(ns, name, ports, pods...); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) putEndpoints(ns, name string, ports []corev1.ServicePort, pods ...pod) error {
	ctx := context.Background()
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-pods",
		Labels: map[string]string{discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"}},
		AddressType: discoveryv1.AddressTypeIPv4}
	for _, p := range ports {
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr(p.Name), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(p.TargetPort.IntVal)})
	}
	for _, p := range pods {
		e := discoveryv1.Endpoint{Addresses: []string{p.ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(!p.notReady)}}
		if p.hostname != "" {
			e.Hostname = ptr(p.hostname)
		}
		es.Endpoints = append(es.Endpoints, e)
	}
	cur, err := c.kube.DiscoveryV1().EndpointSlices(ns).Get(ctx, es.Name, metav1.GetOptions{})
	if err == nil {
		cur.Endpoints, cur.Ports = es.Endpoints, es.Ports
		_, err = c.kube.DiscoveryV1().EndpointSlices(ns).Update(ctx, cur, metav1.UpdateOptions{})
	} else {
		_, err = c.kube.DiscoveryV1().EndpointSlices(ns).Create(ctx, es, metav1.CreateOptions{})
	}
	return err
}

func (c *cluster) export(ns, name string) {
	c.t.Helper()
	_, err := c.mcs.MulticlusterV1beta1().ServiceExports(ns).Create(context.Background(),
		&mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
}

// updateExport changes the ServiceExport's spec.
func (c *cluster) updateExport(ns, name string, fn func(*mcsv1beta1.ServiceExport)) {
	c.t.Helper()
	ses := c.mcs.MulticlusterV1beta1().ServiceExports(ns)
	// The controller writes the status meanwhile: again on a conflict.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		se, err := ses.Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		fn(se)
		_, err = ses.Update(context.Background(), se, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		c.t.Fatal(err)
	}
}

// wantConditionMessage waits until the ServiceExport's condition of type
// typ has a message naming every one of words.
func (c *cluster) wantConditionMessage(ns, name, typ string, words ...string) {
	c.t.Helper()
	testkit.Eventually(c.t, 20*time.Second, func() error {
		se, err := c.mcs.MulticlusterV1beta1().ServiceExports(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cd := apimeta.FindStatusCondition(se.Status.Conditions, typ)
		if cd == nil {
			return fmt.Errorf("%s: ServiceExport %s/%s has no %s condition", c.id, ns, name, typ)
		}
		for _, w := range words {
			if !strings.Contains(cd.Message, w) {
				return fmt.Errorf("%s: %s message %q does not name %q", c.id, typ, cd.Message, w)
			}
		}
		return nil
	})
}

func (c *cluster) unexport(ns, name string) {
	c.t.Helper()
	if err := c.mcs.MulticlusterV1beta1().ServiceExports(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		c.t.Fatal(err)
	}
}

// conditions returns the ServiceExport's conditions as "Type=Status/Reason"
// sorted, checking that each observed the current generation.
func (c *cluster) conditions(ns, name string) (string, error) {
	se, err := c.mcs.MulticlusterV1beta1().ServiceExports(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	var out []string
	for _, cd := range se.Status.Conditions {
		if cd.ObservedGeneration != se.Generation {
			return "", fmt.Errorf("condition %s observed generation %d of %d", cd.Type, cd.ObservedGeneration, se.Generation)
		}
		out = append(out, fmt.Sprintf("%s=%s/%s", cd.Type, cd.Status, cd.Reason))
	}
	sort.Strings(out)
	return strings.Join(out, " "), nil
}

func (c *cluster) wantConditions(ns, name, want string) {
	c.t.Helper()
	testkit.Eventually(c.t, 20*time.Second, func() error {
		got, err := c.conditions(ns, name)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s: ServiceExport %s/%s conditions %q, want %q", c.id, ns, name, got, want)
		}
		return nil
	})
}

// imported is what a cluster holds for one import, summarised for comparison.
type imported struct {
	SI      *mcsv1beta1.ServiceImport
	Derived *corev1.Service
	// Endpoints per source cluster: "ip[/hostname][!]" sorted, "!" marking not ready.
	Endpoints map[string][]string
	// Withheld per source cluster: the reason its slices carry, if any.
	Withheld map[string]string
	Slices   []discoveryv1.EndpointSlice
}

func (c *cluster) imported(ns, name string) (*imported, error) {
	ctx := context.Background()
	si, err := c.mcs.MulticlusterV1beta1().ServiceImports(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	im := &imported{SI: si, Endpoints: map[string][]string{}, Withheld: map[string]string{}}
	im.Derived, err = c.kube.CoreV1().Services(ns).Get(ctx, export.DerivedName(name), metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("derived Service: %w", err)
	}
	sl, err := c.kube.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: labels.Set{mcsv1beta1.LabelServiceName: name}.String()})
	if err != nil {
		return nil, err
	}
	im.Slices = sl.Items
	for _, s := range sl.Items {
		src := s.Labels[mcsv1beta1.LabelSourceCluster]
		if r := s.Labels[export.LabelWithheld]; r != "" {
			im.Withheld[src] = r
		}
		for _, e := range s.Endpoints {
			v := e.Addresses[0]
			if e.Hostname != nil {
				v += "/" + *e.Hostname
			}
			if e.Conditions.Ready == nil || !*e.Conditions.Ready {
				v += "!"
			}
			im.Endpoints[src] = append(im.Endpoints[src], v)
		}
	}
	for _, v := range im.Endpoints {
		slices.Sort(v)
	}
	return im, nil
}

// gone reports nil when no ServiceImport, derived Service or slice of name is left.
func (c *cluster) gone(ns, name string) error {
	ctx := context.Background()
	if _, err := c.mcs.MulticlusterV1beta1().ServiceImports(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		return fmt.Errorf("%s: ServiceImport %s/%s still there (%v)", c.id, ns, name, err)
	}
	if _, err := c.kube.CoreV1().Services(ns).Get(ctx, export.DerivedName(name), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		return fmt.Errorf("%s: derived Service of %s/%s still there (%v)", c.id, ns, name, err)
	}
	sl, err := c.kube.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: labels.Set{mcsv1beta1.LabelServiceName: name}.String()})
	if err != nil || len(sl.Items) > 0 {
		return fmt.Errorf("%s: slices of %s/%s still there (%v)", c.id, ns, name, err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

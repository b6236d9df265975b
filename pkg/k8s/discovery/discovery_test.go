package discovery

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tunnelmesh/tunnelmesh/internal/kubeapi"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestMerge(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{nil, nil},
		{[]string{"10.244.1.0/24", "10.244.0.0/24"}, []string{"10.244.0.0/23"}},
		{[]string{"10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"}, []string{"10.244.0.0/22"}},
		{[]string{"10.244.0.0/24", "10.244.2.0/24"}, []string{"10.244.0.0/24", "10.244.2.0/24"}},
		{[]string{"10.244.0.0/16", "10.244.7.0/24"}, []string{"10.244.0.0/16"}},
		{[]string{"10.244.1.0/24", "10.244.2.0/24"}, []string{"10.244.1.0/24", "10.244.2.0/24"}}, // not siblings
		{[]string{"fd00:10:244:1::/64", "fd00:10:244::/64", "10.0.0.0/24"}, []string{"10.0.0.0/24", "fd00:10:244::/63"}},
	} {
		got := Merge(pfx(tc.in...))
		if !reflect.DeepEqual(got, pfx(tc.want...)) {
			t.Errorf("Merge(%v) = %v; want %v", tc.in, got, tc.want)
		}
	}
}

func TestDecide(t *testing.T) {
	nodes := map[string][]netip.Prefix{"a": pfx("10.244.0.0/24"), "b": pfx("10.244.1.0/24")}
	for _, tc := range []struct {
		name             string
		f                Facts
		ov               Overrides
		pod, svc         string
		podFrom, svcFrom string
		warn, err        string
	}{
		{name: "nodes and ServiceCIDRs", f: Facts{NodePodCIDRs: nodes, ServiceCIDRs: pfx("10.96.0.0/12"), KubeadmSvc: pfx("10.97.0.0/16")},
			pod: "10.244.0.0/23", podFrom: sourceNodes, svc: "10.96.0.0/12", svcFrom: sourceServiceCIDRs},
		{name: "kubeadm beats nodes; kubeadm service when ServiceCIDR is not served", f: Facts{NodePodCIDRs: nodes, KubeadmPod: pfx("10.244.0.0/16"), KubeadmSvc: pfx("10.96.0.0/12"), APIServerSvc: pfx("10.1.0.0/16")},
			pod: "10.244.0.0/16", podFrom: sourceKubeadm, svc: "10.96.0.0/12", svcFrom: sourceKubeadm},
		{name: "apiserver flag last", f: Facts{NodePodCIDRs: nodes, ServiceCIDRs: []netip.Prefix{}, APIServerSvc: pfx("10.1.0.0/16")},
			pod: "10.244.0.0/23", podFrom: sourceNodes, svc: "10.1.0.0/16", svcFrom: sourceAPIServer},
		{name: "flags override everything", f: Facts{NodePodCIDRs: nodes, KubeadmPod: pfx("10.244.0.0/16"), ServiceCIDRs: pfx("10.96.0.0/12")},
			ov:  Overrides{Pod: pfx("10.244.0.0/16", "10.245.0.0/16"), Service: pfx("10.100.0.0/16")},
			pod: "10.244.0.0/15", podFrom: sourceFlag, svc: "10.100.0.0/16", svcFrom: sourceFlag},
		{name: "node outside a flag's range is warned about", f: Facts{NodePodCIDRs: nodes, ServiceCIDRs: pfx("10.96.0.0/12")},
			ov:  Overrides{Pod: pfx("10.244.0.0/24")},
			pod: "10.244.0.0/24", podFrom: sourceFlag, svc: "10.96.0.0/12", svcFrom: sourceServiceCIDRs, warn: "node b has podCIDR 10.244.1.0/24 outside"},
		{name: "no pod source", f: Facts{ServiceCIDRs: pfx("10.96.0.0/12")}, err: "cannot find the cluster's pod CIDRs"},
		{name: "no service source", f: Facts{NodePodCIDRs: nodes}, err: "cannot find the cluster's service CIDRs"},
	} {
		got, err := Decide(tc.f, tc.ov)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "pass them as a flag") {
				t.Errorf("%s: err %v; want %q with advice", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if Join(got.Pod) != tc.pod || Join(got.Service) != tc.svc || got.PodFrom != tc.podFrom || got.ServiceFrom != tc.svcFrom {
			t.Errorf("%s: got pod %s (%s) service %s (%s); want %s (%s) %s (%s)", tc.name, Join(got.Pod), got.PodFrom, Join(got.Service), got.ServiceFrom, tc.pod, tc.podFrom, tc.svc, tc.svcFrom)
		}
		if w := strings.Join(got.Warnings, "\n"); (tc.warn == "") != (w == "") || !strings.Contains(w, tc.warn) {
			t.Errorf("%s: warnings %q; want %q", tc.name, w, tc.warn)
		}
	}
}

func TestParseKubeadm(t *testing.T) {
	doc := "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nnetworking:\n  dnsDomain: cluster.local\n  podSubnet: 10.244.0.0/16,fd00:10:244::/56\n  serviceSubnet: 10.96.0.0/12\n"
	pod, svc, err := ParseKubeadm(doc)
	if err != nil || Join(pod) != "10.244.0.0/16,fd00:10:244::/56" || Join(svc) != "10.96.0.0/12" {
		t.Fatalf("got %v %v %v", pod, svc, err)
	}
	if _, _, err := ParseKubeadm("networking:\n  podSubnet: 10.244.0.1/16\n"); err == nil || !strings.Contains(err.Error(), "did you mean 10.244.0.0/16") {
		t.Fatalf("host bits: %v", err)
	}
}

func TestCompareReportsEveryMismatch(t *testing.T) {
	local := CIDRs{Pod: pfx("10.244.0.0/16"), PodFrom: sourceKubeadm, Service: pfx("10.96.0.0/12"), ServiceFrom: sourceServiceCIDRs}
	if err := Compare(local, api.Cluster{ID: "east", PodCIDRs: []string{"10.244.0.0/17", "10.244.128.0/17"}, ServiceCIDRs: []string{"10.96.0.0/12"}}); err != nil {
		t.Fatalf("equal sets spelled differently: %v", err)
	}
	err := Compare(local, api.Cluster{ID: "east", PodCIDRs: []string{"10.245.0.0/16"}})
	var me *MismatchError
	if !errors.As(err, &me) || len(me.Mismatches) != 2 {
		t.Fatalf("got %v; want two mismatches", err)
	}
	for _, want := range []string{`cluster "east"`, "pod CIDRs are 10.244.0.0/16 here (from kubeadm-config ConfigMap) but 10.245.0.0/16 at the broker", "service CIDRs are 10.96.0.0/12 here", "but none at the broker", "re-join"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestDiscoverFromARealAPIServer(t *testing.T) {
	env := kubeapi.Start(t)
	c := env.Client(t)
	ctx := t.Context()
	for name, cidrs := range map[string][]string{"n1": {"10.244.0.0/24", "fd00:10:244::/64"}, "n2": {"10.244.1.0/24", "fd00:10:244:1::/64"}, "n3": nil} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDRs: cidrs}}
		if len(cidrs) > 0 {
			n.Spec.PodCIDR = cidrs[0]
		}
		if _, err := c.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The apiserver made the default ServiceCIDR from --service-cluster-ip-range
	// (10.0.0.0/24); an extension is added as an operator would.
	sc := &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "extra"}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.0.1.0/24"}}}
	if _, err := c.NetworkingV1().ServiceCIDRs().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got CIDRs
	kubeapiEventually(t, func() (bool, string) {
		var err error
		got, err = Discover(ctx, c, Overrides{})
		return err == nil && Join(got.Service) == "10.0.0.0/23", Join(got.Service) + " " + errString(err)
	})
	if Join(got.Pod) != "10.244.0.0/23,fd00:10:244::/63" || got.PodFrom != sourceNodes || got.ServiceFrom != sourceServiceCIDRs {
		t.Fatalf("nodes + ServiceCIDRs: %+v", got)
	}

	// kubeadm's configuration covers nodes to come.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: KubeadmConfigMap, Namespace: KubeadmNamespace},
		Data: map[string]string{KubeadmClusterKey: "networking:\n  podSubnet: 10.244.0.0/16,fd00:10:244::/56\n  serviceSubnet: 10.0.0.0/24\n"}}
	if _, err := c.CoreV1().ConfigMaps(KubeadmNamespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := Discover(ctx, c, Overrides{})
	if err != nil || Join(got.Pod) != "10.244.0.0/16,fd00:10:244::/56" || got.PodFrom != sourceKubeadm || Join(got.Service) != "10.0.0.0/23" || len(got.Warnings) != 0 {
		t.Fatalf("with kubeadm-config: %+v %v", got, err)
	}

	// The static pod's flag is read when nothing better says.
	f, err := Read(ctx, c, Overrides{})
	if err != nil || len(f.APIServerSvc) != 0 {
		t.Fatalf("apiserver pod read although ServiceCIDRs answered: %+v %v", f, err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "kube-apiserver-n1", Namespace: KubeadmNamespace, Labels: map[string]string{"component": "kube-apiserver"}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "kube-apiserver", Image: "registry.k8s.io/kube-apiserver:v1.36.0",
			Command: []string{"kube-apiserver", "--advertise-address=10.1.0.5", "--service-cluster-ip-range=10.0.0.0/24,fd00:10:96::/112"}}}}}
	if _, err := c.CoreV1().Pods(KubeadmNamespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.CoreV1().ConfigMaps(KubeadmNamespace).Delete(ctx, KubeadmConfigMap, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"kubernetes", "extra"} {
		if err := c.NetworkingV1().ServiceCIDRs().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// ServiceCIDRs being deleted (finalizers without a controller) are skipped.
	f, err = Read(ctx, c, Overrides{})
	if err != nil || Join(f.APIServerSvc) != "10.0.0.0/24,fd00:10:96::/112" {
		t.Fatalf("apiserver flag: %+v %v", f, err)
	}
	got, err = Decide(f, Overrides{})
	if err != nil || got.ServiceFrom != sourceAPIServer {
		t.Fatalf("decide from the apiserver flag: %+v %v", got, err)
	}

	// Flags win and skip the reads they make needless.
	got, err = Discover(ctx, c, Overrides{Pod: pfx("10.250.0.0/16"), Service: pfx("10.251.0.0/16")})
	if err != nil || got.PodFrom != sourceFlag || got.ServiceFrom != sourceFlag || len(got.Warnings) != 4 {
		t.Fatalf("flags: %+v %v; want flag sources and a warning for each of the 4 node podCIDRs outside", got, err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

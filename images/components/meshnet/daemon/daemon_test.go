package daemon

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/images/components/meshnet/plan"
	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// recorder stands in for the kernel appliers (those are tested against real
// namespaces in package apply); it keeps the last state it was given.
type recorder struct {
	mu     sync.Mutex
	routes []plan.Route
	masq   *plan.Masquerade
}

func (r *recorder) Apply(rs []plan.Route) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.routes = rs
	return nil
}

type masqRecorder struct{ r *recorder }

func (m masqRecorder) Apply(p plan.Masquerade) error {
	m.r.mu.Lock()
	defer m.r.mu.Unlock()
	m.r.masq = &p
	return nil
}

func node(name, ip, cidr string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}}
	if cidr != "" {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = cidr, []string{cidr}
	}
	return n
}

func TestDaemonReconciles(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	client := fake.NewClientset(node("w1", "172.18.0.3", ""), node("cp", "172.18.0.2", "10.244.0.0/24"))
	dir := t.TempDir()
	rec := &recorder{}
	d := New(Config{
		NodeName: "w1", Client: client, CNIConfDir: dir,
		StaticSkip:  []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")},
		ConfigMapNS: "kube-system", ConfigMap: "tunnelmesh-cni",
		Resync: time.Hour, MTU: func([]netip.Addr) int { return 1400 },
		Routes: rec, Masquerade: masqRecorder{rec},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	conf := filepath.Join(dir, "10-tunnelmesh.conflist")

	// No pod CIDR yet: nothing is written.
	time.Sleep(300 * time.Millisecond)
	if _, err := os.Stat(conf); err == nil {
		t.Fatal("CNI config written before the node had a pod CIDR")
	}
	// The controller-manager allocates w1's CIDR; a third node joins.
	nodes := client.CoreV1().Nodes()
	if _, err := nodes.Update(ctx, node("w1", "172.18.0.3", "10.244.1.0/24"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes.Create(ctx, node("w2", "172.18.0.4", "10.244.2.0/24"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wantRoutes := []plan.Route{
		{Dst: netip.MustParsePrefix("10.244.0.0/24"), Via: netip.MustParseAddr("172.18.0.2")},
		{Dst: netip.MustParsePrefix("10.244.2.0/24"), Via: netip.MustParseAddr("172.18.0.4")},
	}
	testkit.Until(t, 10*time.Second, "routes to cp and w2", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return slices.Equal(rec.routes, wantRoutes)
	})
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := plan.CNIConfig([]netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, 1400); string(b) != string(want) {
		t.Fatalf("CNI config:\n%s\nwant:\n%s", b, want)
	}
	skipHas := func(first string) bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if rec.masq == nil {
			return false
		}
		for _, r := range rec.masq.Skip4 {
			if r.First == netip.MustParseAddr(first) {
				return true
			}
		}
		return false
	}
	testkit.Until(t, 10*time.Second, "service CIDR on the skip list", func() bool { return skipHas("10.96.0.0") })

	// tunnelmesh adds a remote cluster's CIDR to the ConfigMap: applied live.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "tunnelmesh-cni", Namespace: "kube-system"},
		Data: map[string]string{ConfigMapKey: "10.245.0.0/16"}}
	cms := client.CoreV1().ConfigMaps("kube-system")
	if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.Until(t, 10*time.Second, "remote CIDR from the ConfigMap", func() bool { return skipHas("10.245.0.0") })

	// A bad edit is reported and loses nothing.
	cm.Data[ConfigMapKey] = "10.245.0.0/16,not-a-cidr"
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := nodes.Delete(ctx, "cp", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.Until(t, 10*time.Second, "route to removed node dropped", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.routes) == 1
	})
	if !skipHas("10.245.0.0") {
		t.Fatal("a bad ConfigMap edit dropped the previous remote CIDR")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

package node

import (
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/kubeapi"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// failFirst fails the first n requests as a connection to the wrong
// endpoint would (a restarted node whose kube-proxy has not programmed
// the apiserver's Service address yet), then lets them through.
type failFirst struct {
	n    atomic.Int32
	next http.RoundTripper
}

func (f *failFirst) RoundTrip(r *http.Request) (*http.Response, error) {
	if f.n.Add(-1) >= 0 {
		return nil, errors.New("tls: failed to verify certificate: x509: cannot validate certificate for 10.96.0.1 because it doesn't contain any IP SANs")
	}
	return f.next.RoundTrip(r)
}

// Start-up on a freshly restarted node: the first reads of its Node fail
// (before, the process exited at once and the node kept no mesh routes
// for the kubelet's back-off); a Node that does not exist ends it at once.
func TestReadNodeRidesOutAnUnreachableAPIServer(t *testing.T) {
	env := kubeapi.Start(t)
	admin := env.Client(t)
	if _, err := admin.CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(env.Config)
	ff := &failFirst{}
	ff.n.Store(3)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { ff.next = rt; return ff }
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{cfg: Config{Client: c, NodeName: "n1"}, log: slog.Default()}
	n, err := r.readNode(t.Context())
	if err != nil || n == nil || n.Name != "n1" {
		t.Fatalf("readNode after 3 failed requests: %v, %v; want node n1", n, err)
	}
	r.cfg.NodeName = "missing"
	start := time.Now()
	if _, err := r.readNode(t.Context()); !apierrors.IsNotFound(err) || time.Since(start) > 5*time.Second {
		t.Fatalf("readNode of a missing Node: %v after %v; want NotFound at once", err, time.Since(start))
	}
}

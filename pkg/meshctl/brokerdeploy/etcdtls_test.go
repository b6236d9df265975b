package brokerdeploy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/tunnelmesh/tunnelmesh/deploy"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store/etcdtest"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/internal/testenv"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
)

// TestBundledEtcdRefusesStrangers runs a real etcd with the security flags
// of deploy/broker-etcd's StatefulSet and the PKI deploy-broker makes, and
// is the attack from an ordinary pod: plain HTTP, TLS without a client
// certificate, and a certificate of another CA are refused; the broker's
// client certificate gets in.
func TestBundledEtcdRefusesStrangers(t *testing.T) {
	bin := etcdtest.Binary(t)
	members, broker, err := etcdPKI()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range members {
		if err := os.WriteFile(filepath.Join(tlsDir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The manifest's flags, its paths moved here, its URLs to loopback.
	args := manifestEtcdFlags(t)
	ports := freeTCPPorts(t, 3)
	client, peer, metrics := fmt.Sprintf("https://127.0.0.1:%d", ports[0]), fmt.Sprintf("https://127.0.0.1:%d", ports[1]), fmt.Sprintf("http://127.0.0.1:%d", ports[2])
	var run []string
	secure := 0
	for _, a := range args {
		name, _, _ := strings.Cut(a, "=")
		switch name {
		case "--client-cert-auth", "--peer-client-cert-auth", "--trusted-ca-file", "--cert-file", "--key-file",
			"--peer-trusted-ca-file", "--peer-cert-file", "--peer-key-file":
			run = append(run, strings.ReplaceAll(a, "/etc/etcd/tls", tlsDir))
			secure++
		}
	}
	if secure != 8 {
		t.Fatalf("deploy/broker-etcd's etcd has %d of the 8 TLS and client-certificate flags: %v", secure, args)
	}
	run = append(run, "--name=m0", "--data-dir="+filepath.Join(dir, "data"), "--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer, "--initial-cluster=m0="+peer, "--listen-metrics-urls="+metrics,
		"--log-level=error", "--unsafe-no-fsync")
	cmd := exec.Command(bin, run...)
	out, _ := os.Create(filepath.Join(dir, "etcd.log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if r, err := http.Get(metrics + "/readyz"); err == nil && r.StatusCode == 200 {
			r.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "etcd.log"))
			t.Fatalf("etcd not ready:\n%s", b)
		}
	}

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(members["ca.crt"])
	put := func(cfg *tls.Config, endpoint string) error {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: cfg, DialTimeout: 2 * time.Second})
		if err != nil {
			return err
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err = c.Put(ctx, "/tunnelmesh/credentials/admin", "stolen")
		return err
	}
	_, other, err := etcdPKI() // a client certificate of another CA
	if err != nil {
		t.Fatal(err)
	}
	otherCert, err := tls.X509KeyPair(other["client.crt"], other["client.key"])
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct {
		what     string
		cfg      *tls.Config
		endpoint string
	}{
		{"plain HTTP", nil, strings.Replace(client, "https://", "http://", 1)},
		{"TLS without a client certificate", &tls.Config{RootCAs: pool}, client},
		{"a client certificate of another CA", &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{otherCert}}, client},
	} {
		if err := put(a.cfg, a.endpoint); err == nil {
			t.Errorf("%s: etcd took a write", a.what)
		} else {
			t.Logf("%s: refused (%v)", a.what, err)
		}
	}
	brokerCert, err := tls.X509KeyPair(broker["client.crt"], broker["client.key"])
	if err != nil {
		t.Fatal(err)
	}
	if err := put(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{brokerCert}}, client); err != nil {
		t.Errorf("the broker's client certificate: %v", err)
	}
}

// manifestEtcdFlags returns the etcd command of deploy/broker-etcd.
func manifestEtcdFlags(t *testing.T) []string {
	b, err := deploy.FS.ReadFile("broker-etcd/etcd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kube.Decode(b, "broker-etcd/etcd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() != "StatefulSet" {
			continue
		}
		var ss appsv1.StatefulSet
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &ss); err != nil {
			t.Fatal(err)
		}
		return ss.Spec.Template.Spec.Containers[0].Command
	}
	t.Fatal("no StatefulSet in broker-etcd/etcd.yaml")
	return nil
}

func freeTCPPorts(t *testing.T, n int) []int {
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out
}

// TestInClusterBundledEtcd: `deploy-broker --replicas 2` with no etcd flags
// installs the bundled etcd secured (its PKI in two Secrets, kept on a
// re-run), its NetworkPolicy, and brokers that reach it over TLS with their
// client certificate. (No broker answers here: the wait times out, after
// the install.)
func TestInClusterBundledEtcd(t *testing.T) {
	c := testenv.Start(t, "broker-bundled")
	c.AddNode(t, "n1", true, "127.0.0.1", "tunnelmesh/broker:dev", "registry.k8s.io/etcd:3.6.8-0")
	ctx := t.Context()
	deployBroker := func() {
		t.Helper()
		_, err := InCluster(ctx, c.Kube, Options{BrokerURL: "https://127.0.0.1:1", InfoFile: filepath.Join(t.TempDir(), "info.json"),
			Replicas: 2, Timeout: 2 * time.Second})
		if err == nil {
			t.Fatal("deploy-broker succeeded with no broker answering")
		}
	}
	deployBroker()
	secrets := c.Client.CoreV1().Secrets(defaults.Namespace)
	members, err := secrets.Get(ctx, EtcdTLSSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	broker, err := secrets.Get(ctx, etcdSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(members.Data["ca.crt"])
	verify := func(crtPEM []byte, usage x509.ExtKeyUsage, name string) error {
		blk, _ := pem.Decode(crtPEM)
		if blk == nil {
			return fmt.Errorf("no certificate")
		}
		crt, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return err
		}
		_, err = crt.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}, DNSName: name})
		return err
	}
	if err := verify(members.Data[etcdMemberCrtFile], x509.ExtKeyUsageServerAuth, "tunnelmesh-etcd-1.tunnelmesh-etcd.tunnelmesh-system.svc"); err != nil {
		t.Errorf("member certificate: %v", err)
	}
	if err := verify(broker.Data["client.crt"], x509.ExtKeyUsageClientAuth, ""); err != nil {
		t.Errorf("the broker's client certificate is not of the members' CA: %v", err)
	}
	if _, err := c.Client.AppsV1().StatefulSets(defaults.Namespace).Get(ctx, "tunnelmesh-etcd", metav1.GetOptions{}); err != nil {
		t.Errorf("etcd StatefulSet: %v", err)
	}
	if _, err := c.Client.NetworkingV1().NetworkPolicies(defaults.Namespace).Get(ctx, "tunnelmesh-etcd", metav1.GetOptions{}); err != nil {
		t.Errorf("etcd NetworkPolicy: %v", err)
	}
	d := c.WaitDeployment(t, defaults.Namespace, "tunnelmesh-broker")
	args := strings.Join(d.Spec.Template.Spec.Containers[0].Args, " ")
	for _, want := range []string{"--store=etcd", "--etcd-endpoints=https://tunnelmesh-etcd-0.tunnelmesh-etcd.tunnelmesh-system.svc:2379,",
		"--etcd-ca=" + etcdMountPath + "/ca.crt", "--etcd-cert=" + etcdMountPath + "/client.crt", "--etcd-key=" + etcdMountPath + "/client.key"} {
		if !strings.Contains(args, want) {
			t.Errorf("broker args %q lack %q", args, want)
		}
	}
	deployBroker() // again: the same PKI
	again, err := secrets.Get(ctx, EtcdTLSSecret, metav1.GetOptions{})
	if err != nil || string(again.Data["ca.crt"]) != string(members.Data["ca.crt"]) {
		t.Errorf("a re-run replaced the etcd CA (%v): the running members would refuse the broker", err)
	}
}

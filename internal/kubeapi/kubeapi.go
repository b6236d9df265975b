// Package kubeapi starts a real etcd and kube-apiserver v1.36.0 (from
// `make k8s-binaries etcd-binary`, i.e. _output/k8s/bin) on loopback for controller
// tests, and stops them when the test ends. No kubelet, scheduler or
// controller-manager runs: objects are stored and watched, nothing is reconciled.
package kubeapi

import (
	"cmp"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/testbed"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Token is the static bearer token of the admin user (group system:masters).
const Token = "tunnelmesh-test-admin"

// Env is a running API server.
type Env struct {
	Config *rest.Config // admin access
	URL    string       // https://127.0.0.1:PORT
	Dir    string       // data, keys and logs

	t         testing.TB
	apiserver *proc
	apiArgs   []string
}

// Client returns a typed clientset for the admin user.
func (e *Env) Client(t testing.TB) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		t.Fatalf("kubeapi: clientset: %v", err)
	}
	return c
}

// BinDir returns the directory holding etcd and kube-apiserver: $KUBE_BIN_DIR, or
// _output/k8s/bin of the repository containing the working directory.
func BinDir() (string, error) {
	if d := os.Getenv("KUBE_BIN_DIR"); d != "" {
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/tunnelmesh/tunnelmesh\n") {
			return filepath.Join(d, "_output", "k8s", "bin"), nil
		}
		if d == filepath.Dir(d) {
			return "", fmt.Errorf("no tunnelmesh repository above %s; set KUBE_BIN_DIR", wd)
		}
	}
}

// Options tune StartWith; the zero value is what Start runs.
type Options struct {
	// Fsync makes etcd sync every commit to disk, as a real cluster's does
	// (benchmarks); tests run without it for speed.
	Fsync bool
	// ServiceCIDR is the apiserver's --service-cluster-ip-range; default
	// 10.0.0.0/24. Clusters of one test that export to one broker need
	// their own, as real members do.
	ServiceCIDR string
}

// Start runs etcd and kube-apiserver for the test. When the binaries are missing the
// test is skipped (failed under CI=true) with how to build them.
func Start(t testing.TB) *Env {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, o Options) *Env {
	t.Helper()
	bin, err := BinDir()
	if err == nil {
		for _, b := range []string{"etcd", "kube-apiserver"} {
			if _, serr := os.Stat(filepath.Join(bin, b)); serr != nil {
				err = fmt.Errorf("%s missing in %s: run `make k8s-binaries etcd-binary`", b, bin)
				break
			}
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("kubeapi: %v", err)
		}
		t.Skipf("kubeapi: %v", err)
	}
	dir := t.TempDir()
	ports := testkit.Ports(t, 3)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	etcdArgs := []string{"--data-dir=" + filepath.Join(dir, "etcd"),
		"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=default=" + peerURL, "--log-level=warn"}
	if !o.Fsync {
		etcdArgs = append(etcdArgs, "--unsafe-no-fsync")
	}
	start(t, dir, "etcd", filepath.Join(bin, "etcd"), etcdArgs...)

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	saKey := filepath.Join(dir, "sa.key")
	tokens := filepath.Join(dir, "tokens.csv")
	write(t, saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	write(t, tokens, []byte(Token+",admin,admin,system:masters\n"))
	url := fmt.Sprintf("https://127.0.0.1:%d", ports[2])
	apiArgs := []string{filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers=" + etcdURL, "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", ports[2]), "--cert-dir=" + filepath.Join(dir, "certs"),
		"--service-cluster-ip-range=" + cmp.Or(o.ServiceCIDR, "10.0.0.0/24"), "--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + saKey, "--service-account-signing-key-file=" + saKey,
		"--token-auth-file=" + tokens, "--authorization-mode=RBAC",
		// Pods can be created without the controller-manager's service accounts.
		"--disable-admission-plugins=ServiceAccount",
		// As kubeadm and kind run it: the gateway's sysctl init container is privileged.
		"--allow-privileged=true"}

	cfg := &rest.Config{Host: url, BearerToken: Token, TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 100, Burst: 200}
	env := &Env{Config: cfg, URL: url, Dir: dir, t: t, apiArgs: apiArgs}
	env.StartAPIServer()
	return env
}

// StopAPIServer kills kube-apiserver (etcd keeps running): an apiserver
// outage. StartAPIServer brings it back on the same address.
func (e *Env) StopAPIServer() {
	e.t.Helper()
	if e.apiserver != nil {
		e.apiserver.kill()
		e.apiserver = nil
	}
}

// StartAPIServer starts kube-apiserver (again) and waits until it is ready.
func (e *Env) StartAPIServer() {
	t := e.t
	t.Helper()
	if e.apiserver != nil {
		return
	}
	e.apiserver = start(t, e.Dir, "kube-apiserver", e.apiArgs[0], e.apiArgs[1:]...)
	c := e.Client(t)
	deadline := time.Now().Add(60 * time.Second)
	for {
		body, err := c.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(t.Context())
		if err == nil && string(body) == "ok" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubeapi: kube-apiserver not ready after 60 s: %v %s\n%s", err, body, tail(filepath.Join(e.Dir, "kube-apiserver.log")))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// proc is a started etcd or kube-apiserver.
type proc struct {
	name, logPath string
	cmd           *exec.Cmd
	log           *os.File
	exited        chan struct{}
	once          sync.Once
}

// stop ends the process (SIGTERM, SIGKILL after 10 s); later calls do nothing.
func (p *proc) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		p.log.Close()
	})
}

// kill ends the process at once (SIGKILL).
func (p *proc) kill() {
	p.once.Do(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		p.log.Close()
	})
}

func start(t testing.TB, dir, name, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	// Appended to: a restarted apiserver keeps the earlier run's lines.
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// From testbed's forker thread: forked from an arbitrary thread, the
	// Pdeathsig could fire when that thread ends (see testbed.StartCmd).
	if err := testbed.StartCmd(cmd); err != nil {
		t.Fatalf("kubeapi: start %s: %v", name, err)
	}
	p := &proc{name: name, logPath: logPath, cmd: cmd, log: log, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("kubeapi: last lines of %s:\n%s", name, tail(logPath))
		}
	})
	return p
}

func write(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// Package etcdtest runs a real etcd cluster (the etcd binary the project
// builds, see `make etcd-binary`) on loopback for the broker's tests.
package etcdtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/kubeapi"
	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Binary returns the etcd binary ($KUBE_BIN_DIR/etcd or the repository's
// _output/k8s/bin/etcd). When it is missing the test is skipped, or fails
// under CI=true, saying how to build it.
func Binary(t testing.TB) string {
	t.Helper()
	dir, err := kubeapi.BinDir()
	bin := filepath.Join(dir, "etcd")
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		msg := fmt.Sprintf("etcd binary: %v; run `make etcd-binary` or set KUBE_BIN_DIR", err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

// MaxTxnOps is the --max-txn-ops the members run with.
const MaxTxnOps = 1024

// Cluster is a running etcd cluster; its members stop at cleanup.
type Cluster struct {
	t       testing.TB
	bin     string
	dir     string
	Members []*Member
}

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string
	peerURL   string
	args      []string
	mu        sync.Mutex
	cmd       *exec.Cmd
	exited    chan struct{}
	killed    bool // by the test: its exit is no failure
}

// Start runs an n-member cluster and waits until it has a leader.
func Start(t testing.TB, n int) *Cluster { t.Helper(); return start(t, n, MaxTxnOps) }

// StartShipped is Start with etcd's own transaction limit (--max-txn-ops
// 128), as etcd and deploy/broker-etcd ship.
func StartShipped(t testing.TB, n int) *Cluster { t.Helper(); return start(t, n, 0) }

func start(t testing.TB, n, maxTxnOps int) *Cluster {
	t.Helper()
	c := &Cluster{t: t, bin: Binary(t), dir: t.TempDir()}
	var initial []string
	for i := range n {
		ports := testkit.Ports(t, 2)
		m := &Member{Name: fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
			peerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[1])}
		initial = append(initial, m.Name+"="+m.peerURL)
		c.Members = append(c.Members, m)
	}
	for _, m := range c.Members {
		m.args = []string{"--name=" + m.Name, "--data-dir=" + filepath.Join(c.dir, m.Name),
			"--listen-client-urls=" + m.ClientURL, "--advertise-client-urls=" + m.ClientURL,
			"--listen-peer-urls=" + m.peerURL, "--initial-advertise-peer-urls=" + m.peerURL,
			"--initial-cluster=" + strings.Join(initial, ","), "--initial-cluster-state=new",
			"--initial-cluster-token=tunnelmesh-test",
			// warn: a failure's message carries etcd's own account of slow
			// heartbeats and applies (see logTails).
			"--log-level=warn",
			// etcd's own timings: shorter ones make a loaded test machine
			// hold elections over and over.
			"--heartbeat-interval=100", "--election-timeout=1000",
			// A killed process loses nothing the kernel already has; tests
			// kill processes, not the machine.
			"--unsafe-no-fsync"}
		if maxTxnOps > 0 {
			m.args = append(m.args, fmt.Sprintf("--max-txn-ops=%d", maxTxnOps))
		}
		c.start(m)
	}
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.stop()
		}
	})
	c.WaitHealthy(120 * time.Second)
	return c
}

func (c *Cluster) start(m *Member) {
	c.t.Helper()
	log, err := os.OpenFile(filepath.Join(c.dir, m.Name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(c.bin, m.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("etcdtest: start %s: %v", m.Name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); log.Close(); close(exited) }()
	m.mu.Lock()
	m.cmd, m.exited, m.killed = cmd, exited, false
	m.mu.Unlock()
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

// Kill ends member i with SIGKILL.
func (c *Cluster) Kill(i int) { c.Members[i].kill(syscall.SIGKILL) }

// Restart starts a killed member again on its data directory.
func (c *Cluster) Restart(i int) { c.start(c.Members[i]) }

// Pause stops member i (SIGSTOP): a member whose disk or CPU stalls.
// Resume continues it.
func (c *Cluster) Pause(i int) { c.Members[i].signal(syscall.SIGSTOP) }

// Resume continues a paused member.
func (c *Cluster) Resume(i int) { c.Members[i].signal(syscall.SIGCONT) }

func (m *Member) signal(sig syscall.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		_ = m.cmd.Process.Signal(sig)
	}
}

// Leader returns the index of the member that leads, or -1.
func (c *Cluster) Leader() int {
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return -1
	}
	defer cli.Close()
	for i, m := range c.Members {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := cli.Status(ctx, m.ClientURL)
		cancel()
		if err == nil && st.Leader == st.Header.MemberId {
			return i
		}
	}
	return -1
}

func (m *Member) kill(sig syscall.Signal) {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.killed = true
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

func (m *Member) stop() { m.kill(syscall.SIGTERM) }

// WaitHealthy waits until a store can be opened (a leader answers reads).
func (c *Cluster) WaitHealthy(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		// Each try may take its time: on a machine slow enough that a first
		// write takes over 2 s, tries cut off at 2 s would never succeed.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := store.OpenEtcd(ctx, store.EtcdConfig{Endpoints: c.Endpoints(), Prefix: "/etcdtest-health", DialTimeout: 5 * time.Second}, true)
		cancel()
		if err == nil {
			s.Close()
			return
		}
		if dead := c.exited(); dead != "" {
			c.t.Fatalf("etcdtest: cluster not healthy: %s", dead)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("etcdtest: cluster not healthy after %s: %v%s", timeout, err, c.logTails())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// exited names a member whose process has ended, with its log's end
// (a port taken, a data directory refused), or is "".
func (c *Cluster) exited() string {
	for _, m := range c.Members {
		m.mu.Lock()
		exited, killed := m.exited, m.killed
		m.mu.Unlock()
		if killed {
			continue
		}
		select {
		case <-exited:
			return fmt.Sprintf("member %s exited; its log ends:\n%s", m.Name, c.logTail(m))
		default:
		}
	}
	return ""
}

// logTails is every member's log end, for a failure's message.
func (c *Cluster) logTails() string {
	var b strings.Builder
	for _, m := range c.Members {
		fmt.Fprintf(&b, "\nmember %s's log ends:\n%s", m.Name, c.logTail(m))
	}
	return b.String()
}

func (c *Cluster) logTail(m *Member) string {
	b, err := os.ReadFile(filepath.Join(c.dir, m.Name+".log"))
	if err != nil {
		return err.Error()
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Open opens (creating) a store under prefix, closed at cleanup.
func (c *Cluster) Open(t testing.TB, prefix string) *store.Etcd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := store.OpenEtcd(ctx, store.EtcdConfig{Endpoints: c.Endpoints(), Prefix: prefix, MaxTxnOps: MaxTxnOps}, true)
	if err != nil {
		t.Fatalf("etcdtest: open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

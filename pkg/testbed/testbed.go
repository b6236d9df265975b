// Package testbed builds throw-away network topologies out of network
// namespaces for tests and benchmarks: an underlay bridge that lives in its
// own namespace, nodes attached to it, veth links, and processes run inside
// namespaces. Nothing is created in, or routed through, the caller's own
// namespace; everything is removed on cleanup.
package testbed

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Require skips the test unless it runs as root with ip(8) available;
// under CI=true it fails instead.
func Require(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, c := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "network-namespace test bed needs " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Bed is a set of namespaces and processes that vanish at test cleanup.
type Bed struct {
	t      testing.TB
	prefix string
	Dir    string // scratch directory for logs and files

	mu    sync.Mutex
	nss   []string
	procs []*Proc
}

// New returns an empty Bed whose namespaces are all removed at cleanup.
func New(t testing.TB) *Bed {
	t.Helper()
	Require(t)
	var r [2]byte
	_, _ = rand.Read(r[:])
	b := &Bed{t: t, prefix: "tm" + hex.EncodeToString(r[:]), Dir: t.TempDir()}
	t.Cleanup(b.Close)
	return b
}

// Prefix is the bed's unique namespace-name prefix (short, for interface names too).
func (b *Bed) Prefix() string { return b.prefix }

// Close stops every process and deletes every namespace of the bed.
func (b *Bed) Close() {
	b.mu.Lock()
	procs, nss := b.procs, b.nss
	b.procs, b.nss = nil, nil
	b.mu.Unlock()
	for _, p := range procs {
		p.Kill()
	}
	for i := len(nss) - 1; i >= 0; i-- {
		if out, err := exec.Command("ip", "netns", "del", nss[i]).CombinedOutput(); err != nil {
			b.t.Logf("delete netns %s: %v %s", nss[i], err, out)
		}
	}
}

// NS creates a namespace (loopback up) and returns its full name.
func (b *Bed) NS(name string) string {
	b.t.Helper()
	full := b.prefix + "-" + name
	if out, err := exec.Command("ip", "netns", "add", full).CombinedOutput(); err != nil {
		b.t.Fatalf("create netns %s: %v %s", full, err, out)
	}
	b.mu.Lock()
	b.nss = append(b.nss, full)
	b.mu.Unlock()
	b.MustIP(full, "link", "set", "lo", "up")
	return full
}

// IP runs `ip -n ns args...`.
func (b *Bed) IP(ns string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip -n %s %s: %v: %s", ns, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// MustIP is IP that fails the test on error.
func (b *Bed) MustIP(ns string, args ...string) string {
	b.t.Helper()
	out, err := b.IP(ns, args...)
	if err != nil {
		b.t.Fatal(err)
	}
	return out
}

// Exec runs a command inside ns and returns its combined output.
func (b *Bed) Exec(ns string, args ...string) (string, error) {
	return Exec(context.Background(), ns, args...)
}

// Exec runs a command inside ns and returns its combined output.
func Exec(ctx context.Context, ns string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %v: %s", ns, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// MustExec is Exec that fails the test on error.
func (b *Bed) MustExec(ns string, args ...string) string {
	b.t.Helper()
	out, err := b.Exec(ns, args...)
	if err != nil {
		b.t.Fatal(err)
	}
	return out
}

// Veth links nsA/ifA with nsB/ifB, both up, created directly in their namespaces.
func (b *Bed) Veth(nsA, ifA, nsB, ifB string) {
	b.t.Helper()
	b.MustIP(nsA, "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", nsB)
	b.MustIP(nsA, "link", "set", ifA, "up")
	b.MustIP(nsB, "link", "set", ifB, "up")
}

// Underlay is a bridge in a namespace of its own that nodes attach to.
type Underlay struct {
	b     *Bed
	NS    string
	n     int
	ports map[string]string // attached namespace -> its bridge port
}

// Underlay creates the bridge namespace.
func (b *Bed) Underlay() *Underlay {
	ns := b.NS("ul")
	b.MustIP(ns, "link", "add", "br0", "type", "bridge")
	b.MustIP(ns, "link", "set", "br0", "up")
	return &Underlay{b: b, NS: ns, ports: map[string]string{}}
}

// Unplug takes ns off the bridge (its bridge port down: as a node that is
// gone, nothing reaches it and it reaches nothing), or puts it back.
func (u *Underlay) Unplug(ns string, off bool) {
	u.b.t.Helper()
	state := "up"
	if off {
		state = "down"
	}
	u.b.MustIP(u.NS, "link", "set", u.ports[ns], state)
}

// Attach gives ns an eth0 with addr (CIDR notation) on the bridge.
func (u *Underlay) Attach(ns, addr string) {
	u.b.t.Helper()
	u.n++
	port := fmt.Sprintf("p%d", u.n)
	u.b.Veth(u.NS, port, ns, "eth0")
	u.b.MustIP(u.NS, "link", "set", port, "master", "br0")
	u.b.MustIP(ns, "addr", "add", addr, "dev", "eth0")
	u.ports[ns] = port
}

// Proc is a process running inside a namespace.
type Proc struct {
	Name string
	NS   string
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start runs bin with args inside ns; output goes to a log file in the bed's
// directory. The process is killed at cleanup if still running.
func (b *Bed) Start(ns, name string, env []string, bin string, args ...string) *Proc {
	b.t.Helper()
	logPath := filepath.Join(b.Dir, name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		b.t.Fatal(err)
	}
	fmt.Fprintf(lf, "=== start %s %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := StartCmd(cmd); err != nil {
		lf.Close()
		b.t.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{Name: name, NS: ns, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	b.mu.Lock()
	b.procs = append(b.procs, p)
	b.mu.Unlock()
	return p
}

// Pid is the process ID (`ip netns exec` execs the program, so it is the program's).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the exit error, valid after Done.
func (p *Proc) Err() error { return p.err }

// Kill sends SIGKILL and waits for the exit.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Stop sends SIGTERM and waits up to timeout, then kills.
func (p *Proc) Stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s did not stop within %s", p.Name, timeout)
	}
}

// Tail returns the last n bytes of the process's log.
func (p *Proc) Tail(n int) string {
	b, _ := os.ReadFile(p.Log)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

var (
	buildMu   sync.Mutex
	built     = map[string]string{}
	buildDirs []string
)

// RemoveBuilds deletes the binaries Build made; call it from TestMain after m.Run.
func RemoveBuilds() {
	buildMu.Lock()
	defer buildMu.Unlock()
	for _, d := range buildDirs {
		os.RemoveAll(d)
	}
	buildDirs, built = nil, map[string]string{}
}

// Build compiles a main package of this module once per test process and
// returns the binary's path.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[pkg]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "tmbuild-")
	if err != nil {
		t.Fatal(err)
	}
	buildDirs = append(buildDirs, dir)
	out := filepath.Join(dir, filepath.Base(pkg))
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH (needed to build the binaries under test): %v", err)
	}
	cmd := exec.Command(gobin, "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	built[pkg] = out
	return out
}

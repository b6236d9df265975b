// Package nstest creates network namespaces for tests and removes them at cleanup.
package nstest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// Need skips the test (fails it under CI=true) unless it can create namespaces.
func Need(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root to create network namespaces")
	}
	t.Skip("needs root to create network namespaces")
}

// NS is a named network namespace.
type NS struct {
	Name   string
	Handle netns.NsHandle
}

// New creates a namespace named after role with loopback up, deleted at cleanup.
func New(t testing.TB, role string) NS {
	t.Helper()
	name := fmt.Sprintf("tmt-%s-%d", role, rand.IntN(1_000_000))
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() { h.Close() })
	Run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return NS{Name: name, Handle: h}
}

// IP runs `ip -n NS args...`, failing the test on error, and returns its output.
func (n NS) IP(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, append([]string{"ip", "-n", n.Name}, args...)...)
}

// Exec runs a command inside the namespace, failing the test on error.
func (n NS) Exec(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, append([]string{"ip", "netns", "exec", n.Name}, args...)...)
}

// Run runs a command, failing the test with its output on error.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

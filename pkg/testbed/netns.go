package testbed

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// inNetnsEnv marks a test binary already re-executed inside its namespace.
const inNetnsEnv = "TESTBED_IN_NETNS"

// MainInNetns runs m's tests inside a network namespace of their own when
// the process is root: the test binary re-executes itself with `ip netns
// exec` in a fresh namespace (loopback up) that is deleted afterwards. Tests
// may then create devices, routes and nftables tables in-process without
// touching the host's namespace. Without root it runs m directly (tests that
// need root skip through Require). Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testbed.MainInNetns(m)) }
func MainInNetns(m *testing.M) int {
	if os.Getenv(inNetnsEnv) != "" || os.Geteuid() != 0 {
		return m.Run()
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return m.Run()
	}
	var r [3]byte
	_, _ = rand.Read(r[:])
	ns := "tmu" + hex.EncodeToString(r[:])
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "create netns %s: %v %s\n", ns, err, out)
		return 1
	}
	defer func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "delete netns %s: %v %s\n", ns, err, out)
		}
	}()
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "loopback up in %s: %v %s\n", ns, err, out)
		return 1
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "find test binary:", err)
		return 1
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, exe}, os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), inNetnsEnv+"="+ns)
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "run tests in netns:", err)
		return 1
	}
	return 0
}

// RequireNetns skips (or under CI=true fails) a test that changes the
// network unless it runs inside the namespace MainInNetns made.
func RequireNetns(t testing.TB) {
	t.Helper()
	Require(t)
	if os.Getenv(inNetnsEnv) == "" {
		msg := "test must run in its own network namespace (TestMain must call testbed.MainInNetns)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// UniqueName returns prefix plus random hex, at most 15 bytes: a device name
// that cannot collide with another test's (wireguard-go's UAPI sockets in
// /var/run/wireguard are shared by every namespace).
func UniqueName(prefix string) string {
	var r [3]byte
	_, _ = rand.Read(r[:])
	s := prefix + hex.EncodeToString(r[:])
	if len(s) > 15 {
		s = s[:15]
	}
	return s
}

// SelfNS is the name of the namespace MainInNetns runs the tests in ("" outside one).
func SelfNS() string { return os.Getenv(inNetnsEnv) }

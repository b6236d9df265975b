// Package testkit holds what the tests of several packages share: waiting
// for a condition, and free loopback ports. It imports nothing of the
// project, so any package's tests (and test beds in pkg/) can use it.
package testkit

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

// DefaultInterval is how often Eventually and Until look again.
const DefaultInterval = 20 * time.Millisecond

// Poll calls f every interval until it returns nil or timeout has passed,
// and returns f's last error (nil on success).
func Poll(timeout, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}

// Eventually fails t unless f returns nil within timeout; the failure
// carries f's last error. It returns how long it took.
func Eventually(t testing.TB, timeout time.Duration, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	if err := Poll(timeout, DefaultInterval, f); err != nil {
		t.Fatalf("after %v: %v", timeout, err)
	}
	return time.Since(start)
}

// Until fails t unless cond holds within timeout; what names the condition
// in the failure. It returns how long it took.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return Eventually(t, timeout, func() error {
		if !cond() {
			return errors.New("still waiting for " + what)
		}
		return nil
	})
}

// FreePorts returns n distinct loopback TCP ports that were free a moment
// ago (all held open together while chosen, so they differ).
func FreePorts(n int) ([]int, error) {
	var out []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free loopback port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// Ports is FreePorts for a test: it fails t when none can be had.
func Ports(t testing.TB, n int) []int {
	t.Helper()
	p, err := FreePorts(n)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// DualPort returns a loopback port free for both TCP and UDP (a DNS server
// serves both).
func DualPort(t testing.TB) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no loopback port free for both TCP and UDP")
	return 0
}

// Check is nil when ok, else the error format names: the shape of a
// condition that Eventually waits for.
func Check(ok bool, format string, args ...any) error {
	if ok {
		return nil
	}
	return fmt.Errorf(format, args...)
}

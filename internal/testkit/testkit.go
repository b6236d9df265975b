// Package testkit holds what the tests of several packages share: waiting
// for a condition, free loopback ports, a buffer a logger and a test share.
// It imports nothing of the project, so any package's tests (and test beds
// in pkg/) can use it.
package testkit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
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
// ago (all held open together while chosen, so they differ). They are
// picked below the kernel's ephemeral range (net.ipv4.ip_local_port_range):
// a port the kernel handed out for ":0" is one it may hand out again, as
// the source port of any process's outgoing connection, between the choice
// and the bind of the child (etcd, kube-apiserver) that is given it, and
// that bind then fails with "address already in use" (reproduced with a
// live loopback connection's source port).
func FreePorts(n int) ([]int, error) {
	return freePorts(n, false)
}

// ephemeralLow is where the kernel's ephemeral port range begins.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768 // Linux's default
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil {
		return 32768
	}
	return lo
}

// lowestPort is the first port FreePorts considers: above the ports
// services are commonly given.
const lowestPort = 10000

func freePorts(n int, udpToo bool) ([]int, error) {
	hi := ephemeralLow()
	if hi-lowestPort < 1000 {
		return nil, fmt.Errorf("free loopback port: the ephemeral range begins at %d, leaving too few ports below it above %d", hi, lowestPort)
	}
	var out []int
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	seen := map[int]bool{}
	for tries := 0; len(out) < n; tries++ {
		if tries > 100*n {
			return nil, fmt.Errorf("free loopback port: none of %d ports tried in [%d, %d) was free", tries, lowestPort, hi)
		}
		port := lowestPort + rand.IntN(hi-lowestPort)
		if seen[port] {
			continue
		}
		seen[port] = true
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		closers = append(closers, l)
		if udpToo {
			u, err := net.ListenPacket("udp", addr)
			if err != nil {
				continue
			}
			closers = append(closers, u)
		}
		out = append(out, port)
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
// serves both), chosen as FreePorts chooses.
func DualPort(t testing.TB) int {
	t.Helper()
	p, err := freePorts(1, true)
	if err != nil {
		t.Fatal(err)
	}
	return p[0]
}

// Check is nil when ok, else the error format names: the shape of a
// condition that Eventually waits for.
func Check(ok bool, format string, args ...any) error {
	if ok {
		return nil
	}
	return fmt.Errorf(format, args...)
}

// Buffer is a bytes.Buffer that a logger and a test can share.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

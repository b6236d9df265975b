package testkit

import (
	"errors"
	"testing"
	"time"
)

func TestPollReturnsTheLastErrorAfterTimeout(t *testing.T) {
	calls := 0
	err := Poll(50*time.Millisecond, 5*time.Millisecond, func() error { calls++; return errors.New("not yet") })
	if err == nil || err.Error() != "not yet" || calls < 2 {
		t.Fatalf("err %v after %d calls; want the last error after several calls", err, calls)
	}
	n := 0
	if err := Poll(time.Second, time.Millisecond, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n != 3 {
		t.Fatalf("err %v after %d calls; want nil after 3", err, n)
	}
}

func TestFreePortsAreDistinct(t *testing.T) {
	p := Ports(t, 20)
	seen := map[int]bool{}
	for _, x := range p {
		if x <= 0 || seen[x] {
			t.Fatalf("ports %v: want 20 distinct", p)
		}
		seen[x] = true
	}
}

// TestFreePortsAreNotEphemeral: a port the kernel hands out for ":0" may
// be handed out again as some process's outgoing source port before the
// child the test gave it binds it ("address already in use"). FreePorts
// stays below that range.
func TestFreePortsAreNotEphemeral(t *testing.T) {
	low := ephemeralLow()
	ports := append(Ports(t, 50), DualPort(t))
	for _, p := range ports {
		if p < lowestPort || p >= low {
			t.Fatalf("port %d: want one in [%d, %d), below the ephemeral range", p, lowestPort, low)
		}
	}
}

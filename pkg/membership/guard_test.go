package membership

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

var testKey = bytes.Repeat([]byte{7}, 32)

// start runs a member on 127.0.0.1 that lets only allowed sources in.
func start(t *testing.T, name string, allowed ...string) *memberlist.Memberlist {
	t.Helper()
	var src Sources
	var addrs []netip.Addr
	for _, a := range allowed {
		addrs = append(addrs, netip.MustParseAddr(a))
	}
	src.Set(addrs)
	ml, err := Start(Config{Name: name, BindAddr: "127.0.0.1", SecretKey: testKey, Allow: src.Allow,
		Profile: Profile{ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond, SuspicionMult: 4,
			GossipInterval: 50 * time.Millisecond, PushPullInterval: time.Second, TCPTimeout: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	return ml
}

// idle opens n TCP connections to ml from source and sends nothing, as
// the attacker that exhausted a gateway's memory did (~550/s); it returns
// how many the member still holds open once at most atMost are (or after
// 5 s, when it holds more).
func idle(t *testing.T, ml *memberlist.Memberlist, source string, n, atMost int) int {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}, Timeout: time.Second}
	var conns []net.Conn
	for i := 0; i < n; i++ {
		c, err := d.Dial("tcp", Addr(ml.LocalNode()))
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	// The member closes them as its accept loop gets to them: count the
	// open ones until few enough are, dropping those found closed.
	open := conns
	for end := time.Now().Add(5 * time.Second); ; {
		time.Sleep(100 * time.Millisecond)
		var still []net.Conn
		for _, c := range open {
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
				still = append(still, c)
			}
		}
		open = still
		if len(open) <= atMost || time.Now().After(end) {
			return len(open)
		}
	}
}

// A pod (any source that is not a member) opening idle connections to the
// memberlist port: every one is closed at once.
func TestStrangersIdleConnectionsAreClosed(t *testing.T) {
	ml := start(t, "m1", "127.0.0.1")
	if open := idle(t, ml, "127.0.0.2", 200, 0); open != 0 {
		t.Fatalf("a stranger (127.0.0.2) holds %d of 200 idle connections open; want 0", open)
	}
}

// A member's own address opening idle connections: at most the bound stays open.
func TestIdleConnectionsAreBounded(t *testing.T) {
	ml := start(t, "m1", "127.0.0.1")
	if open := idle(t, ml, "127.0.0.1", 200, DefaultMaxStreamsPerSource); open > DefaultMaxStreamsPerSource {
		t.Fatalf("one source holds %d of 200 idle connections open; want at most %d", open, DefaultMaxStreamsPerSource)
	}
}

// Allowed members still find each other.
func TestAllowedMembersJoin(t *testing.T) {
	a := start(t, "a", "127.0.0.1")
	b := start(t, "b", "127.0.0.1")
	if _, err := b.Join([]string{Addr(a.LocalNode())}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for a.NumMembers() != 2 || b.NumMembers() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("members: a sees %d, b sees %d; want 2", a.NumMembers(), b.NumMembers())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A stranger cannot join.
	c, err := Start(Config{Name: "c", BindAddr: "127.0.0.3", SecretKey: testKey, Allow: func(netip.Addr) bool { return true },
		Profile: Profile{ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond, SuspicionMult: 4,
			GossipInterval: 50 * time.Millisecond, PushPullInterval: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	if _, err := c.Join([]string{Addr(a.LocalNode())}); err == nil {
		t.Fatal("a member at a source not allowed joined")
	}
}

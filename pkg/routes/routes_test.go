package routes

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/testbed"
	"github.com/vishvananda/netlink"
)

// Route tests run in a network namespace of their own (root only).
func TestMain(m *testing.M) { os.Exit(testbed.MainInNetns(m)) }

// link makes a veth pair (up) and returns the name of one end.
func link(t *testing.T) string {
	t.Helper()
	name := testbed.UniqueName("tmr")
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	for _, n := range []string{name, name + "p"} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	return name
}

func routeShow(t *testing.T, dst string) string {
	t.Helper()
	out, err := testbed.Exec(context.Background(), testbed.SelfNS(), "ip", "route", "show", dst)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// restored checks that the route to dst via dev is in the table.
func restored(t *testing.T, dst netip.Prefix, dev string) func() error {
	return func() error {
		if got := routeShow(t, dst.String()); !strings.Contains(got, "dev "+dev) {
			return fmt.Errorf("route not restored: %q", got)
		}
		return nil
	}
}

// TestForeignRouteNotTakenOver: a route of another owner to a destination
// we want is left alone, reported as a problem, and survives Teardown.
func TestForeignRouteNotTakenOver(t *testing.T) {
	testbed.RequireNetns(t)
	ours, theirs := link(t), link(t)
	testbed.Exec(context.Background(), testbed.SelfNS(), "ip", "route", "add", "10.9.0.0/16", "dev", theirs)
	tb := newTable(t)
	err := tb.Set(State{Routes: []Route{
		{Dst: netip.MustParsePrefix("10.9.0.0/16"), Dev: ours},
		{Dst: netip.MustParsePrefix("10.8.0.0/16"), Dev: ours},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := routeShow(t, "10.9.0.0/16"); !strings.Contains(got, "dev "+theirs) || strings.Contains(got, "proto 77") {
		t.Errorf("someone else's route was taken over: %q", got)
	}
	if got := routeShow(t, "10.8.0.0/16"); !strings.Contains(got, "dev "+ours) {
		t.Errorf("our other route missing: %q", got)
	}
	if p := tb.Problems(); len(p) != 1 || !strings.Contains(p[0], "10.9.0.0/16 belongs to someone else") {
		t.Errorf("problems %q, want the refused route reported", p)
	}
	if err := tb.Teardown(); err != nil {
		t.Fatal(err)
	}
	if got := routeShow(t, "10.9.0.0/16"); !strings.Contains(got, "dev "+theirs) {
		t.Errorf("teardown removed someone else's route: %q", got)
	}
	if got := routeShow(t, "10.8.0.0/16"); got != "" {
		t.Errorf("teardown left our route: %q", got)
	}
}

// TestRouteDeletedBeforeRunIsRestored: a route deleted after Set and
// before Run subscribed raises no event Run can see; Run puts it back when
// it starts, not at the next resync (an hour here).
func TestRouteDeletedBeforeRunIsRestored(t *testing.T) {
	testbed.RequireNetns(t)
	dev := link(t)
	tb := newTable(t)
	dst := netip.MustParsePrefix("10.6.0.0/16")
	if err := tb.Set(State{Routes: []Route{{Dst: dst, Dev: dev}}}); err != nil {
		t.Fatal(err)
	}
	testbed.Exec(context.Background(), testbed.SelfNS(), "ip", "route", "del", dst.String())
	if got := routeShow(t, dst.String()); got != "" {
		t.Fatalf("route still there after the delete: %q", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- tb.Run(ctx, time.Hour) }()
	t.Cleanup(func() { cancel(); <-stopped })
	if err := testkit.Poll(3*time.Second, 20*time.Millisecond, restored(t, dst, dev)); err != nil {
		t.Fatal(err)
	}
}

// TestSubscriptionRestarts: when the route event subscription ends (as the
// kernel ends it with ENOBUFS), Run subscribes again, so a route deleted
// afterwards comes back at once, not at the next resync (an hour here).
func TestSubscriptionRestarts(t *testing.T) {
	testbed.RequireNetns(t)
	dev := link(t)
	tb := newTable(t)
	real := tb.subscribe
	var subs atomic.Int32
	end := make(chan struct{})
	var once sync.Once
	tb.subscribe = func(ch chan<- netlink.RouteUpdate, done <-chan struct{}) error {
		if subs.Add(1) > 1 {
			return real(ch, done)
		}
		inner := make(chan netlink.RouteUpdate, 256)
		if err := real(inner, done); err != nil {
			return err
		}
		go func() { // the first subscription ends when the test says so
			defer close(ch)
			for {
				select {
				case u, ok := <-inner:
					if !ok {
						return
					}
					ch <- u
				case <-end:
					return
				}
			}
		}()
		return nil
	}
	dst := netip.MustParsePrefix("10.7.0.0/16")
	setAndRun(t, tb, dst, dev)
	// Working subscription first.
	if err := testkit.Poll(3*time.Second, 5*time.Millisecond, subscribed(&subs, 1)); err != nil {
		t.Fatal(err)
	}
	testbed.Exec(context.Background(), testbed.SelfNS(), "ip", "route", "del", dst.String())
	if err := testkit.Poll(3*time.Second, 20*time.Millisecond, restored(t, dst, dev)); err != nil {
		t.Fatal(err)
	}
	once.Do(func() { close(end) })
	if err := testkit.Poll(3*time.Second, 10*time.Millisecond, subscribed(&subs, 2)); err != nil {
		t.Fatal(err)
	}
	testbed.Exec(context.Background(), testbed.SelfNS(), "ip", "route", "del", dst.String())
	start := time.Now()
	if err := testkit.Poll(3*time.Second, 20*time.Millisecond, restored(t, dst, dev)); err != nil {
		t.Fatal(err)
	}
	t.Logf("route deleted after the subscription ended came back in %s", time.Since(start).Round(time.Millisecond))
}

// TestSubscriptionOverflow: a real ENOBUFS. The first subscription gets a
// tiny receive buffer and a burst of route events overflows it; the kernel
// ends it, Run subscribes again, and a route deleted afterwards comes back.
func TestSubscriptionOverflow(t *testing.T) {
	testbed.RequireNetns(t)
	dev, other := link(t), link(t)
	tb := newTable(t)
	var subs atomic.Int32
	var overflowed atomic.Bool
	tb.subscribe = func(ch chan<- netlink.RouteUpdate, done <-chan struct{}) error {
		o := netlink.RouteSubscribeOptions{}
		if subs.Add(1) == 1 {
			o.ReceiveBufferSize, o.ReceiveBufferForceSize = 1, true // the kernel's minimum
			o.ErrorCallback = func(err error) {
				if strings.Contains(err.Error(), "no buffer space") {
					overflowed.Store(true)
				}
			}
		}
		return netlink.RouteSubscribeWithOptions(ch, done, o)
	}
	dst := netip.MustParsePrefix("10.7.0.0/16")
	setAndRun(t, tb, dst, dev)
	if err := testkit.Poll(3*time.Second, 5*time.Millisecond, subscribed(&subs, 1)); err != nil {
		t.Fatal(err)
	}
	batch := filepath.Join(t.TempDir(), "routes")
	var sb strings.Builder
	for i := 0; i < 4000; i++ {
		fmt.Fprintf(&sb, "route add 172.%d.%d.0/24 dev %s\n", 16+i/256, i%256, other)
	}
	if err := os.WriteFile(batch, []byte(sb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := testbed.Exec(context.Background(), testbed.SelfNS(), "ip", "-batch", batch); err != nil {
		t.Fatalf("route burst: %v %s", err, out)
	}
	if err := testkit.Poll(5*time.Second, 10*time.Millisecond, subscribed(&subs, 2)); err != nil {
		t.Fatalf("%v (ENOBUFS seen: %v)", err, overflowed.Load())
	}
	if !overflowed.Load() {
		t.Error("the first subscription ended, but not with ENOBUFS")
	}
	testbed.Exec(context.Background(), testbed.SelfNS(), "ip", "route", "del", dst.String())
	if err := testkit.Poll(3*time.Second, 20*time.Millisecond, restored(t, dst, dev)); err != nil {
		t.Fatal(err)
	}
}

// TestFirstSubscriptionRetried: a route event subscription that fails to
// start is tried again, not given up: Run used to return the error, and the
// gateway's routes were then never put back until it restarted.
func TestFirstSubscriptionRetried(t *testing.T) {
	testbed.RequireNetns(t)
	dev := link(t)
	tb := newTable(t)
	real := tb.subscribe
	var subs atomic.Int32
	tb.subscribe = func(ch chan<- netlink.RouteUpdate, done <-chan struct{}) error {
		if subs.Add(1) <= 2 {
			return errors.New("no buffer space available (injected)")
		}
		return real(ch, done)
	}
	dst := netip.MustParsePrefix("10.8.0.0/16")
	stopped := setAndRun(t, tb, dst, dev)
	if err := testkit.Poll(5*time.Second, 10*time.Millisecond, subscribed(&subs, 3)); err != nil {
		select {
		case err := <-stopped:
			stopped <- err // for the cleanup
			t.Fatalf("Run returned before its context ended (%v), after %d subscription attempts", err, subs.Load())
		default:
		}
		t.Fatal(err)
	}
	testbed.Exec(context.Background(), testbed.SelfNS(), "ip", "route", "del", dst.String())
	if err := testkit.Poll(3*time.Second, 20*time.Millisecond, restored(t, dst, dev)); err != nil {
		t.Fatal(err)
	}
}

// setAndRun sets a route to dst out of dev and runs tb until the test ends,
// with an hour's resync: only route events put a deleted route back. Run's
// result arrives on the channel.
func setAndRun(t *testing.T, tb *Table, dst netip.Prefix, dev string) chan error {
	t.Helper()
	if err := tb.Set(State{Routes: []Route{{Dst: dst, Dev: dev}}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- tb.Run(ctx, time.Hour) }()
	t.Cleanup(func() { cancel(); <-stopped })
	return stopped
}

// subscribed checks that Run has tried to subscribe to route events n times.
func subscribed(subs *atomic.Int32, n int32) func() error {
	return func() error {
		if got := subs.Load(); got < n {
			return fmt.Errorf("%d route subscription attempts, want %d", got, n)
		}
		return nil
	}
}

// newTable returns a Table whose routes are torn down when the test ends.
func newTable(t *testing.T) *Table {
	tb := NewTable(nil)
	t.Cleanup(func() { _ = tb.Teardown() })
	return tb
}

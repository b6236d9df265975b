package election

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type call struct {
	kind   string // "activate" | "deactivate"
	epoch  int64
	holder string // Lease holder while Deactivate ran
	at     time.Time
}

// recorder is a Handler that records its calls; Deactivate reads the Lease
// as it runs, to see it still names this node.
type recorder struct {
	c       *cluster
	t       *testing.T
	fail    error
	mu      sync.Mutex
	calls   []call
	current int64
}

func (r *recorder) Activate(_ context.Context, s State) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call{kind: "activate", epoch: s.Epoch, at: time.Now()})
	r.current = s.Epoch
	return r.fail
}

func (r *recorder) Deactivate(ctx context.Context) error {
	l, err := r.c.env.Client(r.t).CoordinationV1().Leases(DefaultNamespace).Get(ctx, DefaultLeaseName, metav1.GetOptions{})
	holder := ""
	if err == nil {
		holder, _ = LeaseHolder(l)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call{kind: "deactivate", epoch: r.current, holder: holder, at: time.Now()})
	return nil
}

func (r *recorder) snapshot() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

func (r *recorder) isActive() (bool, int64) {
	cs := r.snapshot()
	if len(cs) == 0 || cs[len(cs)-1].kind != "activate" {
		return false, 0
	}
	return true, cs[len(cs)-1].epoch
}

type driven struct {
	name   string
	h      *recorder
	cancel context.CancelFunc
	done   chan error
}

func (c *cluster) drive(t *testing.T, name string, fail error) *driven {
	cand := &candidate{name: name}
	e, err := New(Config{Client: c.env.Client(t), Identity: name,
		Gossip: GossipConfig{BindAddr: "127.0.0.1", Peers: c.peers(name), SecretKey: c.key(name)},
		Logger: logger.With("candidate", name)})
	if err != nil {
		t.Fatal(err)
	}
	cand.e = e
	c.mu.Lock()
	c.cs[name] = cand
	c.mu.Unlock()
	d := &driven{name: name, h: &recorder{c: c, t: t, fail: fail}, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { d.done <- Drive(ctx, e, d.h) }()
	t.Cleanup(func() { cancel(); <-e.Done() })
	return d
}

func TestDriveStopsGracefullyInOrder(t *testing.T) {
	c := newCluster(t)
	a, b := c.drive(t, "node-a", nil), c.drive(t, "node-b", nil)
	var act, other *driven
	eventually(t, 10*time.Second, "one handler active", func() bool {
		aa, _ := a.h.isActive()
		ba, _ := b.h.isActive()
		if aa == ba {
			return false
		}
		act, other = a, b
		if ba {
			act, other = b, a
		}
		return true
	})
	_, epoch := act.h.isActive()
	act.cancel() // SIGTERM
	select {
	case err := <-act.done:
		if err != nil {
			t.Fatalf("graceful stop: %v", err)
		}
	case <-time.After(StopTimeout):
		t.Fatal("Drive did not return after its context ended")
	}
	cs := act.h.snapshot()
	last := cs[len(cs)-1]
	if last.kind != "deactivate" || last.holder != act.name {
		t.Fatalf("stopping node's calls %+v; want a last Deactivate while the Lease still named it", cs)
	}
	eventually(t, 2*time.Second, "the other handler activates with a newer epoch", func() bool {
		on, ep := other.h.isActive()
		return on && ep > epoch
	})
	if oc := other.h.snapshot(); !oc[len(oc)-1].at.After(last.at) {
		t.Fatalf("successor activated at %v, before the stopping node deactivated at %v", oc[len(oc)-1].at, last.at)
	}
}

func TestDriveFailedActivateGivesTheRoleAway(t *testing.T) {
	c := newCluster(t)
	broken := c.drive(t, "node-broken", errors.New("no TUN device"))
	var err error
	select {
	case err = <-broken.done:
	case <-time.After(10 * time.Second):
		t.Fatal("Drive kept going after Activate failed")
	}
	if err == nil || !strings.Contains(err.Error(), "no TUN device") || !strings.Contains(err.Error(), "activate the gateway at epoch 1") {
		t.Fatalf("Drive returned %v; want the Activate error with its epoch", err)
	}
	if cs := broken.h.snapshot(); len(cs) != 2 || cs[1].kind != "deactivate" {
		t.Fatalf("calls %+v; want activate then deactivate (tear down what half came up)", cs)
	}
	l, gerr := c.env.Client(t).CoordinationV1().Leases(DefaultNamespace).Get(t.Context(), DefaultLeaseName, metav1.GetOptions{})
	if h, _ := LeaseHolder(l); gerr != nil || h != "" {
		t.Fatalf("Lease holder %q (%v) after the failed activation; want it released", h, gerr)
	}
	healthy := c.drive(t, "node-ok", nil)
	eventually(t, 5*time.Second, "a healthy candidate takes over", func() bool { on, ep := healthy.h.isActive(); return on && ep == 2 })
}

func TestDriveDeactivatesAtOnceWhenAnotherHolderAppears(t *testing.T) {
	c := newCluster(t)
	a := c.drive(t, "node-a", nil)
	eventually(t, 10*time.Second, "node-a active", func() bool { on, _ := a.h.isActive(); return on })
	// Someone else takes the Lease (as a preempting standby would).
	leases := c.env.Client(t).CoordinationV1().Leases(DefaultNamespace)
	l, err := leases.Get(t.Context(), DefaultLeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x, next := "node-x", *l.Spec.LeaseTransitions+1
	l.Spec.HolderIdentity, l.Spec.LeaseTransitions = &x, &next
	taken := time.Now()
	if _, err := leases.Update(t.Context(), l, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "node-a deactivates", func() bool { on, _ := a.h.isActive(); return !on })
	cs := a.h.snapshot()
	t.Logf("deactivated %v after the Lease was taken", cs[len(cs)-1].at.Sub(taken).Round(time.Millisecond))
	if cs[len(cs)-1].holder != "node-x" {
		t.Fatalf("deactivated while the Lease named %q; want node-x", cs[len(cs)-1].holder)
	}
	// node-x never renews: after the Lease's expiry node-a comes back with a newer epoch.
	eventually(t, 6*time.Second, "node-a active again after node-x's Lease expired", func() bool {
		on, ep := a.h.isActive()
		return on && ep == int64(next)+1
	})
}

package election

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
)

// TestHolderCutOffWithACandidateItCannotGossipWith: the holder's apiserver
// requests fail after it took the Lease, and the other labelled candidate
// uses another gossip key (the key Secret re-created, 7947 blocked: the two
// never see each other in memberlist). The holder must not count itself
// lone and hold on: the other candidate reaches the apiserver and takes the
// Lease once it expires, and the two would be active with one WireGuard key.
func TestHolderCutOffWithACandidateItCannotGossipWith(t *testing.T) {
	c := newCluster(t)
	a := c.start("node-a")
	act, epoch := c.waitOneActive(t, 10*time.Second, "", 0)
	b := c.start("intruder-b") // another gossip key
	testkit.Until(t, 5*time.Second, "the holder lists both labelled candidates", func() bool {
		names, _ := act.e.labelled.get()
		return len(names) == 2
	})
	if n := len(act.e.members.alive()); n != 1 {
		t.Fatalf("the holder sees %d members in memberlist; the test needs candidates that cannot gossip", n)
	}
	// The standby it cannot hear from shows as not ready (status, metric).
	if cs := act.e.Candidates(); len(cs) != 2 || cs[0] != (Candidate{Name: "intruder-b", Labelled: true}) || !cs[1].Ready {
		t.Errorf("the holder's view of the candidates: %+v", cs)
	}
	if v := metric(t, act.e, "tunnelmesh_gateway_election_candidates_not_ready", ""); v != 1 {
		t.Errorf("candidates_not_ready %v; want 1", v)
	}
	act.cut.Store(true)
	time.Sleep(6 * time.Second)
	actives := c.actives()
	if len(actives) != 1 {
		var names []string
		for _, x := range actives {
			s, _ := x.latest()
			names = append(names, x.name+"@"+strconv.FormatInt(s.Epoch, 10))
		}
		t.Fatalf("6 s after the holder was cut off from the apiserver, %d candidates are active: %v", len(actives), names)
	}
	if actives[0] != b {
		t.Fatalf("%s is active; want the candidate that reaches the apiserver, %s", actives[0].name, b.name)
	}
	if s, _ := b.latest(); s.Epoch <= epoch {
		t.Errorf("new active's epoch %d is not above %d", s.Epoch, epoch)
	}
	noSplitBrain(t, a, b)
}

// TestHoldingWithoutRenewalIsBounded: a lone labelled candidate cut off from
// the apiserver holds through what looks like an outage, but only for
// MaxHold: a candidate labelled meanwhile that it cannot hear from could
// have taken the expired Lease.
func TestHoldingWithoutRenewalIsBounded(t *testing.T) {
	c := newCluster(t)
	const maxHold = 4 * time.Second
	a := c.startLone(t, func(cfg *Config) { cfg.MaxHold = maxHold })
	cut := time.Now()
	a.cut.Store(true)
	time.Sleep(2 * time.Second)
	if s, _ := a.latest(); s.Role != Active {
		t.Fatalf("a lone candidate gave up its role 2 s into an apiserver outage (before MaxHold %v): %+v", maxHold, s)
	}
	testkit.Until(t, maxHold+2*time.Second, "the holder steps down once it held MaxHold without renewal", func() bool {
		s, _ := a.latest()
		return s.Role == Standby
	})
	took := time.Since(cut)
	t.Logf("lone holder cut off: stepped down after %v (MaxHold %v)", took.Round(time.Millisecond), maxHold)
	if took < maxHold {
		t.Errorf("stepped down after %v, before MaxHold %v", took, maxHold)
	}
}

// TestLeaseDeletedOrRolledBackKeepsHolderAndEpochGrows: the Lease is deleted
// (a recreated namespace) and later rolled back to an old epoch (an etcd
// restored from a backup) under a running holder. The holder rewrites it
// with a higher epoch than any seen and keeps the role; no standby takes
// over, and the epoch never goes back (the broker, the MeshGateway status
// and other clusters' gossip all refuse a lower one).
func TestLeaseDeletedOrRolledBackKeepsHolderAndEpochGrows(t *testing.T) {
	c := newCluster(t)
	a, b := c.start("node-a"), c.start("node-b")
	act, epoch := c.waitOneActive(t, 10*time.Second, "", 0)
	testkit.Until(t, 5*time.Second, "memberlist of 2", func() bool { return len(a.e.members.alive()) == 2 && len(b.e.members.alive()) == 2 })
	leases := c.env.Client(t).CoordinationV1().Leases(defaults.Namespace)

	if err := leases.Delete(t.Context(), DefaultLeaseName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	now, ep := c.waitOneActive(t, 3*time.Second, "", epoch)
	t.Logf("Lease deleted: %s active at epoch %d (was %s at %d) %v later", now.name, ep, act.name, epoch, time.Since(deleted).Round(time.Millisecond))
	if now != act {
		t.Errorf("the Lease's deletion moved the role from %s to %s", act.name, now.name)
	}
	l, err := leases.Get(t.Context(), DefaultLeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the Lease was not recreated: %v", err)
	}
	if h, e := LeaseHolder(l); h != act.name || e != ep {
		t.Errorf("recreated Lease names %s at %d; want %s at %d", h, e, act.name, ep)
	}

	// Rolled back: the holder and epoch of before, as a restored backup has them.
	epoch = ep
	l.Spec.LeaseTransitions = ptr(int32(1))
	if _, err := leases.Update(t.Context(), l, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	now, ep = c.waitOneActive(t, 3*time.Second, "", epoch)
	if now != act {
		t.Errorf("the Lease's rollback moved the role from %s to %s", act.name, now.name)
	}
	t.Logf("Lease rolled back to epoch 1: %s active at epoch %d", now.name, ep)
	for _, x := range []*candidate{a, b} {
		for _, s := range x.historyCopy() {
			if x != act && s.Role == Active {
				t.Errorf("%s was active at epoch %d", x.name, s.Epoch)
			}
			if x == act && s.Role == Standby && s.Holder != "" && s.Holder != act.name {
				t.Errorf("the holder stood by for %s at epoch %d", s.Holder, s.Epoch)
			}
		}
	}
	if v := metric(t, act.e, "tunnelmesh_gateway_election_stepdowns_total", reasonLost); v != 0 {
		t.Errorf("the holder stepped down %v times for a lost Lease", v)
	}
	noSplitBrain(t, a, b)
}

// TestEpochAboveTheRecordedFloor: the epochs recorded outside the Lease
// (broker, status, stored view) bound every new epoch from below, at
// acquisition and, when a higher one turns up later, at the holder's next
// renewal — without a step-down.
func TestEpochAboveTheRecordedFloor(t *testing.T) {
	c := newCluster(t)
	var floor atomic.Int64
	floor.Store(7)
	a := c.startWith("node-a", func(cfg *Config) { cfg.EpochFloor = floor.Load })
	_, epoch := c.waitOneActive(t, 10*time.Second, "", 0)
	if epoch != 8 {
		t.Fatalf("first epoch %d with the recorded floor at 7; want 8", epoch)
	}
	floor.Store(20)
	_, epoch = c.waitOneActive(t, 2*time.Second, "", 20)
	if epoch != 21 {
		t.Fatalf("epoch %d after the floor rose to 20; want 21", epoch)
	}
	l, err := c.env.Client(t).CoordinationV1().Leases(defaults.Namespace).Get(context.Background(), DefaultLeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h, e := LeaseHolder(l); h != "node-a" || e != 21 {
		t.Fatalf("Lease names %s at %d; want node-a at 21 (written back)", h, e)
	}
	was := false
	for _, s := range a.historyCopy() {
		if was && s.Role != Active {
			t.Fatalf("the holder left the active role on the way: %+v", s)
		}
		was = was || s.Role == Active
	}
}

// TestGossipCutBetweenCandidatesNoFlap: the candidates' election traffic is
// cut between the active and the standby (the holder's memberlist goes
// silent) while both still reach the apiserver. The standby's memberlist
// declares the holder dead, but the holder keeps renewing: the standby must
// not preempt it (each verdict would move the role, and back).
func TestGossipCutBetweenCandidatesNoFlap(t *testing.T) {
	c := newCluster(t)
	act, other, epoch := c.startPair(t)
	_ = act.e.members.ml.Shutdown() // silent on 7947; its loop and renewals run on
	testkit.Until(t, 3*time.Second, "the standby's memberlist declares the holder dead", func() bool {
		_, dead := other.e.members.deadSince(act.name)
		return dead
	})
	time.Sleep(5 * time.Second)
	if now, ep := c.waitOneActive(t, time.Second, "", 0); now != act || ep != epoch {
		t.Fatalf("with gossip cut but the holder renewing, the role moved from %s@%d to %s@%d", act.name, epoch, now.name, ep)
	}
	for _, s := range other.historyCopy() {
		if s.Role == Active {
			t.Fatalf("%s was active at epoch %d while the holder renewed", other.name, s.Epoch)
		}
	}
	noSplitBrain(t, act, other)
}

// TestEntitlementFollowsTheRole: Entitled is told a near future while the
// candidate holds the Lease and renews, never while it stands by, and the
// zero time when it steps down; a partitioned holder's last entitlement
// runs out before a standby can take over (memberlist's verdict).
func TestEntitlementFollowsTheRole(t *testing.T) {
	c := newCluster(t)
	type told struct {
		at, until time.Time
	}
	var mu sync.Mutex
	calls := map[string][]told{}
	tune := func(name string) func(*Config) {
		return func(cfg *Config) {
			cfg.Entitled = func(until time.Time) {
				mu.Lock()
				calls[name] = append(calls[name], told{time.Now(), until})
				mu.Unlock()
			}
		}
	}
	last := func(name string) (told, int) {
		mu.Lock()
		defer mu.Unlock()
		cs := calls[name]
		if len(cs) == 0 {
			return told{}, 0
		}
		return cs[len(cs)-1], len(cs)
	}
	a := c.startWith("node-a", tune("node-a"))
	c.waitOneActive(t, 10*time.Second, "", 0)
	b := c.startWith("node-b", tune("node-b"))
	testkit.Until(t, 5*time.Second, "memberlist of 2", func() bool { return len(b.e.members.alive()) == 2 })
	time.Sleep(time.Second)
	l, n := last("node-a")
	if n < 3 || time.Until(l.until) <= 0 || time.Until(l.until) > time.Second {
		t.Fatalf("the holder was told %d times, last until %v from now; want renewed entitlements under a second ahead", n, time.Until(l.until))
	}
	if _, n := last("node-b"); n != 0 {
		t.Fatalf("the standby was entitled %d times", n)
	}
	cut := time.Now()
	a.cut.Store(true)
	_ = a.e.members.ml.Shutdown()
	testkit.Until(t, 2*time.Second, "the partitioned holder steps down", func() bool { s, _ := a.latest(); return s.Role == Standby })
	l, _ = last("node-a")
	if !l.until.IsZero() {
		t.Errorf("after stepping down the holder was last told %v, not the zero time", l.until)
	}
	// What the fence allowed after the cut: the last entitlement told
	// before it, and any told after (each replaces the one before).
	mu.Lock()
	var lastUntil time.Time
	for _, x := range calls["node-a"] {
		if x.at.Before(cut) {
			lastUntil = x.until
		} else if x.until.After(lastUntil) {
			lastUntil = x.until
		}
	}
	mu.Unlock()
	if d := a.e.cfg.Gossip.minDetection(); lastUntil.Sub(cut) >= d {
		mu.Lock()
		for _, x := range calls["node-a"] {
			t.Logf("told at %+v: until %+v", x.at.Sub(cut), x.until.Sub(cut))
		}
		mu.Unlock()
		t.Errorf("the partitioned holder stayed entitled until %v after the cut, not before memberlist's quickest verdict %v", lastUntil.Sub(cut), d)
	}
	testkit.Until(t, 4*time.Second, "node-b takes over", func() bool { s, _ := b.latest(); return s.Role == Active })
	if l, n := last("node-b"); n == 0 || time.Until(l.until) <= 0 {
		t.Errorf("the new active is not entitled: %+v (%d calls)", l, n)
	}
}

// TestStartingCandidateTakesALongDeadHoldersLease: the active's node died
// while the only standby's gateway was itself restarting; when the standby
// comes up, the Lease's holder stopped renewing long ago. The standby takes
// it at once rather than a whole LeaseDuration after its own start, so the
// failover costs no more than the standby's restart.
func TestStartingCandidateTakesALongDeadHoldersLease(t *testing.T) {
	c := newCluster(t)
	c.label("node-dead")
	past := metav1.NewMicroTime(time.Now().Add(-10 * time.Second))
	holder, dur := "node-dead", int32(3)
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: DefaultLeaseName, Namespace: defaults.Namespace},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, AcquireTime: &past, RenewTime: &past, LeaseTransitions: ptr(int32(4))}}
	if _, err := c.env.Client(t).CoordinationV1().Leases(defaults.Namespace).Create(t.Context(), l, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b := c.start("node-b")
	_, epoch := c.waitOneActive(t, 5*time.Second, "", 4)
	took := time.Since(start)
	t.Logf("a starting candidate took a Lease unrenewed for 10 s after %v (epoch %d)", took.Round(time.Millisecond), epoch)
	if took >= 3*time.Second {
		t.Errorf("took %v: a whole LeaseDuration after its start", took)
	}
	if s, _ := b.latest(); s.Epoch != 5 {
		t.Errorf("epoch %d; want 5", s.Epoch)
	}
	// A holder that renewed a moment ago is not taken from on start.
	c2 := newCluster(t)
	c2.label("node-live")
	now := metav1.NewMicroTime(time.Now())
	live := "node-live"
	l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: DefaultLeaseName, Namespace: defaults.Namespace},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &live, LeaseDurationSeconds: &dur, AcquireTime: &now, RenewTime: &now, LeaseTransitions: ptr(int32(4))}}
	if _, err := c2.env.Client(t).CoordinationV1().Leases(defaults.Namespace).Create(t.Context(), l, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	x := c2.start("node-x")
	time.Sleep(2 * time.Second)
	if s, _ := x.latest(); s.Role == Active {
		t.Fatalf("took a Lease renewed 2 s before, before it could expire: %+v", s)
	}
}

// TestSlowApiserverAfterACrashKeepsTheTenure: the active crashes and the
// standby takes over; the apiserver, loaded by what the crash set off, then
// answers the new holder's requests 900 ms late for 5 s (kind after a
// crash). Nobody can take over from it — the only other candidate was gone
// before its tenure began, and one that comes back either rejoins
// memberlist or waits for the Lease to expire — so it keeps its tenure:
// stepping down would tear its data plane down and take the Lease again a
// moment later (a new epoch, seconds without traffic), for nothing.
func TestSlowApiserverAfterACrashKeepsTheTenure(t *testing.T) {
	c := newCluster(t)
	act, other, epoch := c.startPair(t)
	c.crash(act)
	_, ep := c.waitOneActive(t, 4*time.Second, act.name, epoch)
	took := time.Now()
	other.slow.Store(int64(900 * time.Millisecond))
	time.Sleep(5 * time.Second)
	other.slow.Store(0)
	time.Sleep(time.Second)
	for _, s := range other.historyCopy() {
		if s.at.After(took) && (s.Role != Active || s.Epoch != ep) {
			t.Errorf("%+.1fs after it took over, with the apiserver slow: %s %s at epoch %d (took the role at %d)", s.at.Sub(took).Seconds(), other.name, s.Role, s.Epoch, ep)
		}
	}
	if v := metric(t, other.e, "tunnelmesh_gateway_election_stepdowns_total", reasonRenewDeadline); v != 0 {
		t.Errorf("the new holder stepped down %v times on a slow apiserver", v)
	}
}

// TestLoneHolderStaysEntitledThroughAnOutage: the only labelled candidate
// (a cluster with one gateway node) holds its role through an apiserver
// outage, and its WireGuard fence stays open all along: nobody else could
// take over, so closing it only drops the cluster's traffic (seen in kind:
// west's lone gateway dropping its own packets, "sendmmsg: operation not
// permitted", whenever its renewals timed out on the loaded apiserver).
func TestLoneHolderStaysEntitledThroughAnOutage(t *testing.T) {
	c := newCluster(t)
	var (
		mu    sync.Mutex
		until time.Time
	)
	a := c.startLone(t, func(cfg *Config) {
		cfg.Entitled = func(u time.Time) { mu.Lock(); until = u; mu.Unlock() }
	})
	cut := time.Now()
	a.cut.Store(true)
	var closed []string
	for time.Since(cut) < 4*time.Second {
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		u := until
		mu.Unlock()
		if now := time.Now(); !u.After(now) {
			closed = append(closed, fmt.Sprintf("%+.2fs", now.Sub(cut).Seconds()))
		}
	}
	a.cut.Store(false)
	if s, _ := a.latest(); s.Role != Active {
		t.Fatalf("the lone holder gave up its role 4 s into an apiserver outage: %+v", s)
	}
	if len(closed) > 0 {
		t.Errorf("the lone holder's entitlement (its WireGuard fence) had run out, holding through the outage, at %d checks (every 50 ms): %s",
			len(closed), strings.Join(closed, " "))
	}
}

// startLone starts node-a as the only labelled candidate and waits until it
// is active and knows it is alone.
func (c *cluster) startLone(t *testing.T, tune func(*Config)) *candidate {
	t.Helper()
	a := c.startWith("node-a", tune)
	c.waitOneActive(t, 10*time.Second, "", 0)
	testkit.Until(t, 5*time.Second, "the holder lists itself as the only labelled candidate", func() bool {
		_, known := a.e.labelled.get()
		return known
	})
	return a
}

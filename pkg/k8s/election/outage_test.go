package election

import (
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
)

// TestActiveHoldsThroughAnApiserverOutage: the apiserver process stops for
// longer than the Lease. The active keeps its role (every other candidate
// answers its pings, none claims the role, none reaches the apiserver), no
// standby takes over, and when the apiserver returns the active renews the
// same tenure: same holder, same epoch, no flap. Then a second outage during
// which a standby crashes: the active can no longer prove that nobody else
// can take over, and steps down.
func TestActiveHoldsThroughAnApiserverOutage(t *testing.T) {
	c := newCluster(t)
	a, b, d := c.start("node-a"), c.start("node-b"), c.start("node-c")
	act, epoch := c.waitOneActive(t, 10*time.Second, "", 0)
	testkit.Until(t, 5*time.Second, "memberlist of 3 with fresh pings", func() bool {
		ok, _ := act.e.holdable(time.Now(), 0)
		return len(act.e.members.alive()) == 3 && ok
	})

	stopped := time.Now()
	c.env.StopAPIServer()
	// Twice the Lease duration and far past the renewal deadline.
	time.Sleep(6 * time.Second)
	if s, _ := act.latest(); s.Role != Active || s.Epoch != epoch {
		t.Fatalf("the active gave up its role %v into the apiserver outage: %+v", time.Since(stopped).Round(time.Millisecond), s)
	}
	if metric(t, act.e, "tunnelmesh_gateway_election_holding_without_apiserver", "") != 1 {
		t.Error("the holding gauge is not set during the outage")
	}
	for _, o := range []*candidate{a, b, d} {
		if s, _ := o.latest(); o != act && s.Role == Active {
			t.Fatalf("%s became active without an apiserver: %+v", o.name, s)
		}
	}
	c.env.StartAPIServer()
	testkit.Until(t, 10*time.Second, "the active renews once the apiserver is back", func() bool {
		return metric(t, act.e, "tunnelmesh_gateway_election_holding_without_apiserver", "") == 0
	})
	time.Sleep(2 * time.Second)
	if now, ep := c.waitOneActive(t, 5*time.Second, "", 0); now != act || ep != epoch {
		t.Fatalf("after the outage %s is active at epoch %d; want %s still at %d", now.name, ep, act.name, epoch)
	}
	for _, o := range []*candidate{a, b, d} {
		for _, s := range o.historyCopy() {
			if s.Role == Active && (o != act || s.Epoch != epoch) {
				t.Fatalf("%s was active at epoch %d during or after the outage", o.name, s.Epoch)
			}
		}
	}
	if v := metric(t, act.e, "tunnelmesh_gateway_election_stepdowns_total", reasonRenewDeadline); v != 0 {
		t.Errorf("renew-deadline step-downs: %v; want 0", v)
	}

	// Second outage; a standby crashes during it.
	var standby *candidate
	for _, o := range []*candidate{a, b, d} {
		if o != act {
			standby = o
		}
	}
	c.env.StopAPIServer()
	time.Sleep(time.Second)
	if s, _ := act.latest(); s.Role != Active {
		t.Fatalf("the active stepped down 1 s into the second outage: %+v", s)
	}
	crashed := time.Now()
	c.crash(standby)
	testkit.Until(t, 3*time.Second, "the active steps down once a candidate stops answering", func() bool {
		s, _ := act.latest()
		return s.Role == Standby
	})
	t.Logf("stepped down %v after a standby crashed during the outage", time.Since(crashed).Round(time.Millisecond))
	c.env.StartAPIServer()
	c.waitOneActive(t, 15*time.Second, "", epoch)
	noSplitBrain(t, a, b, d)
}

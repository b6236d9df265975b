package failover

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/election"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/keysecret"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	"github.com/tunnelmesh/tunnelmesh/pkg/testbed"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbed.RemoveBuilds()
	os.Exit(code)
}

// stopKind is how the active gateway goes away.
type stopKind string

const (
	kill9    stopKind = "kill -9"
	graceful stopKind = "graceful (SIGTERM)"
	// nodeKill: the node's whole process group killed -9 and the node
	// gone from the network (its underlay port down, its nftables state
	// lost) until it starts again, as `docker kill` of a kind node.
	nodeKill stopKind = "node killed"
	// freeze: the node's processes stopped (SIGSTOP) for freezeFor, then
	// thawed while the flow runs: the thawed old active must not disturb
	// the new one.
	freeze stopKind = "node frozen"
	// partition: the candidates' election traffic (7947) cut between the
	// active and the standby for partitionFor while both reach the
	// apiserver: nothing may move.
	partition stopKind = "election cut"
)

// crash reports whether k is a crash kind (the ≤ 2 s target's rows).
func (k stopKind) crash() bool { return k == kill9 || k == nodeKill || k == freeze }

const (
	freezeFor    = 5 * time.Second
	partitionFor = 5 * time.Second
)

// result is one measured failover.
type result struct {
	newActive   time.Duration // kill to a new Lease holder (0: none, as wanted for a partition)
	tcpResumed  time.Duration // kill to the TCP flow moving again
	udpResumed  time.Duration // kill to the UDP stream arriving again
	lost        int           // UDP datagrams lost (of 100/s)
	lostReturn  int           // UDP datagrams lost after the old active came back
	from, to    string
	epochBefore int64
	epochAfter  int64
	// retaken counts the times the new active stepped down (renewal late)
	// and took the Lease again while the old one came back.
	retaken int
}

// up brings the whole mesh up and waits until both flows deliver.
func up(t testing.TB) (*mesh, *flows) {
	m := newMesh(t)
	for _, n := range []string{"a-gw1", "a-gw2", "a-worker"} {
		m.start(n)
	}
	m.waitHolder(60*time.Second, "")
	f := m.startFlows()
	f.waitFlowing(t, 30*time.Second)
	return m, f
}

// upBoth is up with cluster B in Kubernetes too, so that both ends of the
// flow sit on non-gateway nodes (pod A on a-worker, pod B on b-worker).
func upBoth(t testing.TB) (*mesh, *flows) {
	m := newMeshWith(t, options{bInK8s: true})
	for _, n := range []string{"a-gw1", "a-gw2", "a-worker", "b-gw1", "b-worker"} {
		m.start(n)
	}
	m.waitHolder(60*time.Second, "")
	leaseHolderWait(t, m.clientB, 60*time.Second, "")
	f := m.startFlows()
	f.waitFlowing(t, 30*time.Second)
	return m, f
}

// failover stops the active gateway as kind says (the broker down meanwhile
// when brokerDown), measures, brings the old active back (restart, thaw,
// heal) and checks that it comes back as a standby without taking the
// Lease or disturbing the flow.
func (m *mesh) failover(f *flows, kind stopKind, brokerDown bool) result {
	t := m.t
	t.Helper()
	old, epoch, err := m.holder(context.Background())
	if err != nil || old == "" {
		t.Fatalf("no active gateway before the failover: %q %v", old, err)
	}
	standby := "a-gw1"
	if old == standby {
		standby = "a-gw2"
	}
	if brokerDown {
		m.broker.Stop()
	}
	startSeq := f.udpSeq.Load()
	killed := time.Now()
	p := m.procs[old]
	switch kind {
	case kill9:
		p.Kill()
	case nodeKill:
		p.Kill()
		m.isolate(old, true)
		for _, tb := range []string{"tunnelmesh", "tunnelmesh-fence"} {
			_, _ = m.bed.Exec(m.nsOf[old], "nft", "delete", "table", "inet", tb)
		}
	case freeze:
		must(t, syscall.Kill(p.Pid(), syscall.SIGSTOP))
	case partition:
		m.cutGossip(old, standby, true)
	case graceful:
		if err := p.Stop(15 * time.Second); err != nil {
			t.Fatalf("graceful stop of %s: %v\n%s", old, err, p.Tail(3000))
		}
	}
	stopped := time.Since(killed)
	r := result{from: old, to: old, epochBefore: epoch, epochAfter: epoch}
	if kind == partition {
		time.Sleep(partitionFor)
		if h, e, err := m.holder(context.Background()); err != nil || h != old || e != epoch {
			t.Errorf("the election traffic cut between %s and %s moved the role: holder %q epoch %d (was %s at %d), %v", old, standby, h, e, old, epoch, err)
		}
	} else {
		to, epochAfter, at := m.waitHolder(20*time.Second, old)
		r.newActive, r.to, r.epochAfter = at.Sub(killed), to, epochAfter
		// The flows must move again.
		if err := testkit.Poll(30*time.Second, 50*time.Millisecond, func() error {
			if time.Since(killed) < time.Second {
				return errNotYet
			}
			n := f.tcp.count()
			time.Sleep(300 * time.Millisecond)
			if f.tcp.count() == n {
				return errNotYet
			}
			return nil
		}); err != nil {
			t.Fatalf("the TCP flow did not resume after the %s of %s (new active %s)", kind, old, to)
		}
	}
	if kind == graceful && stopped > 5*time.Second {
		t.Errorf("graceful stop took %s", stopped)
	}
	time.Sleep(500 * time.Millisecond)
	endSeq := f.udpSeq.Load()
	time.Sleep(300 * time.Millisecond) // datagrams in flight
	r.tcpResumed = f.tcp.resumedAfter(killed, 50*time.Millisecond)
	r.udpResumed = f.udp.resumedAfter(killed, 50*time.Millisecond)
	if kind == partition {
		// Nothing failed over: what the flow saw is its longest silence.
		r.tcpResumed, r.udpResumed = f.tcp.longestGapAfter(killed), f.udp.longestGapAfter(killed)
	}
	r.lost = f.udp.lostBetween(startSeq+1, endSeq)
	if src, _ := f.tcp.from.Load().(string); src != podAIP {
		t.Errorf("pod B sees the flow from %q, want the pod's own address %s", src, podAIP)
	}

	// The old active comes back as a standby: no new holder, no new epoch,
	// nothing lost, while the broker is still down when it was.
	if kind == freeze {
		if d := freezeFor - time.Since(killed); d > 0 {
			time.Sleep(d)
		}
	}
	restartSeq, restarted := f.udpSeq.Load(), time.Now()
	logFrom := len(readFile(m.procs[old].Log))
	switch kind {
	case freeze:
		must(t, syscall.Kill(p.Pid(), syscall.SIGCONT))
	case partition:
		m.cutGossip(old, standby, false)
	case nodeKill:
		m.isolate(old, false)
		m.start(old)
		logFrom = 0
	default:
		m.start(old)
		logFrom = 0
	}
	if kind != partition {
		if err := testkit.Poll(30*time.Second, 100*time.Millisecond, func() error {
			if !strings.Contains(since(readFile(m.procs[old].Log), logFrom), "msg=standby") {
				return errNotYet
			}
			return nil
		}); err != nil {
			t.Fatalf("%s did not come back as a standby:\n%s", old, m.procs[old].Tail(3000))
		}
	}
	// A returning gateway once stalled the active's flow ~7 s after it came
	// back: watch long enough to see that.
	time.Sleep(returnWatch)
	h, e, err := m.holder(context.Background())
	if err != nil || h != r.to {
		t.Fatalf("the returning %s took the Lease back: holder %q epoch %d (want %q), %v", old, h, e, r.to, err)
	}
	if kind != partition {
		if log := since(readFile(m.procs[old].Log), logFrom); strings.Contains(lastRun(log), "msg=active ") {
			t.Fatalf("the returning %s was active for a while:\n%s", old, log)
		}
	}
	// The holder itself may have stepped down and taken the Lease again
	// when the apiserver answered a renewal too late (a loaded machine):
	// counted, not the returning node's doing.
	r.retaken = int(e - r.epochAfter)
	r.lostReturn = f.udp.lostBetween(restartSeq+1, f.udpSeq.Load()-30)
	if r.lostReturn > 0 {
		out, _ := m.bed.Exec(m.nsOf[r.to], "nft", "list", "table", "inet", "tunnelmesh-fence")
		t.Errorf("%d datagrams lost while %s came back as a standby (%s; gaps after its return: %s; the active %s's fence: %s)", r.lostReturn, old, kind,
			f.udp.gapsAfter(restarted, 50*time.Millisecond), r.to, strings.Join(strings.Fields(out), " "))
	}
	if brokerDown {
		m.broker = brokertest.Start(t, brokertest.Options{Dir: m.broker.Dir, Addr: m.broker.Addr})
	}
	return r
}

// since is log from byte offset from on.
func since(log string, from int) string {
	if from > len(log) {
		return ""
	}
	return log[from:]
}

// returnWatch is how long the flow is watched after the old active returns.
const returnWatch = 10 * time.Second

type notYet struct{}

func (notYet) Error() string { return "not yet" }

var errNotYet = notYet{}

// lastRun is the part of a process log written by its latest start.
func lastRun(log string) string {
	if i := strings.LastIndex(log, "=== start"); i >= 0 {
		return log[i:]
	}
	return log
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// TestFailover: pod A on a plain worker talks TCP and UDP to pod B in
// another cluster through the active gateway; the active is killed -9 (the
// flow resumes through the standby), stopped gracefully, killed again with
// the broker down; each time the old active returns as a standby without
// taking the Lease back. The remote CIDRs reach the worker from the
// MeshGateway status and the active from the Lease.
func TestFailover(t *testing.T) {
	m, f := up(t)
	// The active publishes its connection to B, with the Lease's epoch.
	var mg *status.MeshGateway
	if err := testkit.Poll(30*time.Second, 200*time.Millisecond, func() error {
		var err error
		if mg, err = m.meshGateway(); err != nil {
			return err
		}
		h, e, err := m.holder(context.Background())
		if err != nil {
			return err
		}
		st := mg.Status
		if st.ActiveNode != h || st.Epoch != e || len(st.Remotes) != 1 || st.Remotes[0].Cluster != clusterB ||
			st.Remotes[0].Status != api.StatusConnected || st.Remotes[0].RTTMillis <= 0 || st.Connections != "1/1" {
			return fmt.Errorf("MeshGateway status %+v (holder %s epoch %d)", st, h, e)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The key Secret was created once (create-or-conflict, no election needed), and
	// every candidate announces its key.
	key, err := keysecret.Store{Client: m.client, Namespace: ns}.Get(context.Background())
	if err != nil {
		t.Fatalf("the cluster's key Secret: %v", err)
	}
	if mg.Status.PublicKey != key.PublicKey().String() {
		t.Errorf("status public key %s, Secret's %s", mg.Status.PublicKey, key.PublicKey())
	}
	snap, err := m.broker.Admin().Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, g := range snap.Gateways {
		if g.ClusterID == clusterA {
			seen[g.Hostname] = true
			if g.PublicKey != key.PublicKey().String() {
				t.Errorf("gateway %s announces key %s, not the cluster's", g.Hostname, g.PublicKey)
			}
		}
	}
	if !seen["a-gw1"] || !seen["a-gw2"] {
		t.Errorf("broker records of cluster A's candidates: %v", seen)
	}
	for _, c := range mg.Status.Conditions {
		if c.Type == "CIDRsMatchBroker" && c.Status != "True" {
			t.Errorf("discovered CIDRs reported as differing from the broker: %s", c.Message)
		}
	}
	// The apiserver goes away for twice the Lease duration: the active holds
	// its role (the standby answers and cannot reach the apiserver either),
	// the flow does not notice, and the same tenure renews afterwards.
	holder, epoch, err := m.holder(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sent := f.udpSeq.Load()
	m.env.StopAPIServer()
	time.Sleep(6 * time.Second)
	m.env.StartAPIServer()
	if err := testkit.Poll(15*time.Second, 100*time.Millisecond, func() error {
		if !strings.Contains(readFile(m.procs[holder].Log), "the apiserver answers again") {
			return errNotYet
		}
		return nil
	}); err != nil {
		t.Fatalf("the active %s did not renew its tenure after the apiserver outage:\n%s", holder, m.procs[holder].Tail(3000))
	}
	if h, e, err := m.holder(context.Background()); err != nil || h != holder || e != epoch {
		t.Fatalf("after the apiserver outage the holder is %q at epoch %d (%v); want %q still at %d", h, e, err, holder, epoch)
	}
	lostOutage := f.udp.lostBetween(sent+1, f.udpSeq.Load()-30)
	t.Logf("apiserver down 6 s: %s kept the role at epoch %d, %d datagrams lost", holder, epoch, lostOutage)
	if lostOutage > 0 {
		t.Errorf("%d datagrams lost during the apiserver outage", lostOutage)
	}

	for _, tc := range []struct {
		kind       stopKind
		brokerDown bool
	}{{kill9, false}, {nodeKill, false}, {freeze, false}, {partition, false}, {graceful, false}, {kill9, true}, {graceful, true}} {
		r := m.failover(f, tc.kind, tc.brokerDown)
		t.Logf("%-18s broker down=%-5v %s -> %s epoch %d -> %d: new active %v, TCP moving again %v, UDP back %v, %d datagrams lost",
			tc.kind, tc.brokerDown, r.from, r.to, r.epochBefore, r.epochAfter, r.newActive.Round(time.Millisecond),
			r.tcpResumed.Round(time.Millisecond), r.udpResumed.Round(time.Millisecond), r.lost)
		if r.retaken > 0 {
			t.Logf("the new active %s stepped down and retook the Lease %d time(s) (renewals answered too late)", r.to, r.retaken)
		}
		if r.epochAfter <= r.epochBefore && tc.kind != partition {
			t.Errorf("epoch did not grow: %d -> %d", r.epochBefore, r.epochAfter)
		}
	}

	testLeaseDeleted(t, m, f)

	// A route agent that restarts (here killed) leaves its routes alone: the
	// flow from the worker's pod does not notice.
	before := f.udpSeq.Load()
	m.procs["a-worker"].Kill()
	m.start("a-worker")
	if err := testkit.Poll(30*time.Second, 100*time.Millisecond, func() error {
		if !strings.Contains(lastRun(readFile(m.procs["a-worker"].Log)), "routes point at the active gateway") {
			return errNotYet
		}
		return nil
	}); err != nil {
		t.Fatalf("the restarted route agent never set its routes:\n%s", m.procs["a-worker"].Tail(3000))
	}
	time.Sleep(time.Second)
	if lost := f.udp.lostBetween(before+1, f.udpSeq.Load()-30); lost > 0 {
		t.Errorf("%d datagrams lost while the worker's route agent restarted", lost)
	}
}

// testLeaseDeleted: the Lease is deleted mid-flow (its namespace recreated,
// an etcd restored from before it existed). The holder writes it again with
// a higher epoch and keeps the role: the flow does not notice, and the
// MeshGateway status and the broker's record follow the new epoch (an
// epoch restarting at 1 would be refused by both, and by the other
// clusters' gossip, for good).
func testLeaseDeleted(t *testing.T, m *mesh, f *flows) {
	holder, epoch, err := m.holder(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sent := f.udpSeq.Load()
	deleted := time.Now()
	if err := m.client.CoordinationV1().Leases(ns).Delete(context.Background(), election.DefaultLeaseName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var h string
	var e int64
	if err := testkit.Poll(5*time.Second, 20*time.Millisecond, func() error {
		if h, e, err = m.holder(context.Background()); err != nil || h == "" || e <= epoch {
			return fmt.Errorf("holder %q epoch %d (%v)", h, e, err)
		}
		return nil
	}); err != nil {
		t.Fatalf("no Lease above epoch %d after it was deleted: %v", epoch, err)
	}
	if h != holder {
		t.Errorf("deleting the Lease moved the role from %s to %s", holder, h)
	}
	if err := testkit.Poll(20*time.Second, 200*time.Millisecond, func() error {
		mg, err := m.meshGateway()
		if err != nil {
			return err
		}
		if st := mg.Status; st.Epoch != e || st.ActiveNode != h || st.UpdatedAt == nil || st.UpdatedAt.Time.Before(deleted.Truncate(time.Second)) {
			return fmt.Errorf("MeshGateway status at epoch %d by %s, updated %v", st.Epoch, st.ActiveNode, st.UpdatedAt)
		}
		snap, err := m.broker.Admin().Snapshot(context.Background())
		if err != nil {
			return err
		}
		for _, g := range snap.Gateways {
			if g.ClusterID == clusterA && g.Hostname == h && g.Active && g.Epoch == e {
				return nil
			}
		}
		return fmt.Errorf("the broker has no active record of %s at epoch %d: %+v", h, e, snap.Gateways)
	}); err != nil {
		t.Errorf("after the Lease was deleted (%s now at epoch %d): %v", h, e, err)
	}
	time.Sleep(time.Second)
	lost := f.udp.lostBetween(sent+1, f.udpSeq.Load()-30)
	t.Logf("Lease deleted: %s kept the role, epoch %d -> %d, status and broker record followed; %d datagrams lost", h, epoch, e, lost)
	if lost > 0 {
		t.Errorf("%d datagrams lost when the Lease was deleted (gaps: %s)", lost, f.udp.gapsAfter(deleted, 50*time.Millisecond))
	}
}

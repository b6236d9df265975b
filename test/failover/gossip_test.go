package failover

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/election"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/node"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// TestBrokerDownFailoverOfBothClusters: two Kubernetes clusters, each with
// an active gateway, a standby and a worker whose pod talks to the other
// cluster's pod. The broker is stopped; only then do the standbys start, so
// they never saw a broker snapshot (their state files are empty). Cluster A's
// active is killed -9: A's standby builds its tunnels from the view the
// active stored in the cluster, and B learns A's new endpoint through the
// clusterset gossip (its stored view carries A's new epoch). Then B's active
// is killed -9: B's standby starts from B's stored view, which must point at
// A's new active — without gossip it would name A's dead gateway while A
// keeps sending to B's dead one, and nothing would flow.
func TestBrokerDownFailoverOfBothClusters(t *testing.T) {
	m := newMeshWith(t, options{bInK8s: true, gossipKey: bytes.Repeat([]byte{0x5a}, 32)})
	for _, n := range []string{"a-gw1", "a-worker", "b-gw1", "b-worker"} {
		m.start(n)
	}
	leaseHolderWait(t, m.client, 60*time.Second, "")
	leaseHolderWait(t, m.clientB, 60*time.Second, "")
	f := m.startFlows()
	f.waitFlowing(t, 30*time.Second)
	// Both actives have stored a view naming both clusters' gateways.
	for _, c := range []struct {
		name   string
		client kubernetes.Interface
	}{{clusterA, m.client}, {clusterB, m.clientB}} {
		waitView(t, c.client, "cluster "+c.name+"'s stored view names both gateways", func(v api.Snapshot) bool {
			return gatewayOf(v, clusterA).Hostname == "a-gw1" && gatewayOf(v, clusterB).Hostname == "b-gw1"
		})
	}

	m.broker.Stop()
	for _, n := range []string{"a-gw2", "b-gw2"} {
		m.start(n)
	}
	for _, n := range []string{"a-gw2", "b-gw2"} {
		if err := testkit.Poll(30*time.Second, 100*time.Millisecond, func() error {
			if !strings.Contains(readFile(m.procs[n].Log), "msg=standby") {
				return errNotYet
			}
			return nil
		}); err != nil {
			t.Fatalf("%s did not start as a standby:\n%s", n, m.procs[n].Tail(3000))
		}
	}

	// Cluster A fails over with the broker down.
	_, epochA, _ := leaseHolderWait(t, m.client, time.Second, "")
	seq, killed := f.udpSeq.Load(), time.Now()
	m.procs["a-gw1"].Kill()
	_, newEpochA, at := leaseHolderWait(t, m.client, 20*time.Second, "a-gw1")
	tcp, udp, lost := m.resumed(f, killed, seq, "the kill -9 of a-gw1 (broker down)")
	t.Logf("A: a-gw1 -> a-gw2 epoch %d -> %d: new active %v, TCP moving again %v, UDP back %v, %d datagrams lost",
		epochA, newEpochA, at.Sub(killed).Round(time.Millisecond), tcp, udp, lost)

	// B learns A's new active through gossip alone (the broker is down).
	waitView(t, m.clientB, "cluster B's stored view has A's new active from gossip", func(v api.Snapshot) bool {
		g := gatewayOf(v, clusterA)
		return g.Hostname == "a-gw2" && g.Epoch == newEpochA && g.PublicIP == "172.30.0.12" && g.Active
	})
	t.Logf("B's view named a-gw2 %v after A's failover", time.Since(killed).Round(time.Millisecond))

	// Cluster B fails over, still with the broker down.
	seq, killed = f.udpSeq.Load(), time.Now()
	m.procs["b-gw1"].Kill()
	_, epochB, at := leaseHolderWait(t, m.clientB, 20*time.Second, "b-gw1")
	tcp, udp, lost = m.resumed(f, killed, seq, "the kill -9 of b-gw1 (broker down, after A's failover)")
	t.Logf("B: b-gw1 -> b-gw2 epoch %d: new active %v, TCP moving again %v, UDP back %v, %d datagrams lost",
		epochB, at.Sub(killed).Round(time.Millisecond), tcp, udp, lost)
	if src, _ := f.tcp.from.Load().(string); src != podAIP {
		t.Errorf("pod B sees the flow from %q, want the pod's own address %s", src, podAIP)
	}
}

// resumed waits until the TCP flow moves again after killed and measures.
func (m *mesh) resumed(f *flows, killed time.Time, startSeq uint64, what string) (tcp, udp time.Duration, lost int) {
	m.t.Helper()
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
		m.t.Fatalf("the TCP flow did not resume after %s", what)
	}
	time.Sleep(500 * time.Millisecond)
	endSeq := f.udpSeq.Load()
	time.Sleep(300 * time.Millisecond)
	return f.tcp.resumedAfter(killed, 50*time.Millisecond).Round(time.Millisecond),
		f.udp.resumedAfter(killed, 50*time.Millisecond).Round(time.Millisecond), f.udp.lostBetween(startSeq+1, endSeq)
}

// leaseHolderWait waits for a holder of c's Lease other than not.
func leaseHolderWait(t testing.TB, c kubernetes.Interface, timeout time.Duration, not string) (string, int64, time.Time) {
	t.Helper()
	var h string
	var e int64
	err := testkit.Poll(timeout, 10*time.Millisecond, func() error {
		l, err := c.CoordinationV1().Leases(ns).Get(context.Background(), election.DefaultLeaseName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if h, e = election.LeaseHolder(l); h == "" || h == not {
			return fmt.Errorf("holder %q", h)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("no Lease holder other than %q within %s: %v", not, timeout, err)
	}
	return h, e, time.Now()
}

// waitView waits until the cluster's stored gateway view satisfies ok.
func waitView(t testing.TB, c kubernetes.Interface, what string, ok func(api.Snapshot) bool) {
	t.Helper()
	var last api.Snapshot
	err := testkit.Poll(30*time.Second, 100*time.Millisecond, func() error {
		stored, _, found, err := node.ViewStore{Client: c, Namespace: ns}.Load(context.Background())
		if err != nil || !found {
			return fmt.Errorf("no view: %v", err)
		}
		// What a gateway adopting it uses: the broker's snapshot with the
		// stored gossip verified and laid over it.
		v := stored.View()
		if last = v; !ok(v) {
			return errNotYet
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v; last view's gateways: %+v", what, err, last.Gateways)
	}
}

// gatewayOf is the gateway record of cluster id the data plane would use
// (the active one of the highest epoch).
func gatewayOf(v api.Snapshot, id string) api.Gateway {
	var best api.Gateway
	for _, g := range v.Gateways {
		if g.ClusterID == id && g.Active && g.Epoch >= best.Epoch {
			best = g
		}
	}
	return best
}

package broker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store/etcdtest"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerpki"
)

// etcdClusterset is a 3-member etcd cluster holding an initialised store
// under /tm, with the PKI in dir.
func etcdClusterset(t *testing.T) (*etcdtest.Cluster, string) {
	ec := etcdtest.Start(t, 3)
	dir := t.TempDir()
	if _, err := broker.Init(broker.InitOptions{DataDir: dir, Store: ec.Open(t, "/tm")}); err != nil {
		t.Fatal(err)
	}
	return ec, dir
}

// startReplicaProc runs `broker serve --store etcd` as a process.
func startReplicaProc(t *testing.T, bin, dir, addr string, ec *etcdtest.Cluster) *brokerProc {
	t.Helper()
	p := &brokerProc{stderr: &bytes.Buffer{}}
	p.cmd = exec.Command(bin, "serve", "--data-dir", dir, "--listen", addr, "--store", "etcd",
		"--etcd-endpoints", strings.Join(ec.Endpoints(), ","), "--etcd-prefix", "/tm",
		"--etcd-max-txn-ops", fmt.Sprint(etcdtest.MaxTxnOps))
	p.cmd.Stderr = &lockedWriter{w: p.stderr}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})
	return p
}

// TestReplicasSurviveKilledMemberAndReplica runs two broker processes on
// a 3-member etcd cluster with writers on both. Midway one etcd member and
// one broker are killed with SIGKILL. Every acknowledged write is there
// afterwards, and a watcher that was on the killed broker resumes on the
// other one with every revision exactly once, in order.
func TestReplicasSurviveKilledMemberAndReplica(t *testing.T) {
	ec, dir := etcdClusterset(t)
	bin := buildBroker(t)
	addrA, addrB := freeAddr(t), freeAddr(t)
	pa := startReplicaProc(t, bin, dir, addrA, ec)
	pb := startReplicaProc(t, bin, dir, addrB, ec)
	ca, err := os.ReadFile(filepath.Join(dir, brokerpki.FileCACert))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := os.ReadFile(filepath.Join(dir, brokerpki.FileAdminToken))
	if err != nil {
		t.Fatal(err)
	}
	urlA, urlB := "https://"+addrA, "https://"+addrB
	client := func(cred string, urls ...string) *brokerclient.Client {
		c, err := brokerclient.New(strings.Join(urls, ","), ca, cred)
		if err != nil {
			t.Fatal(err)
		}
		c.WatchIdleTimeout = 3 * time.Second
		return c
	}
	waitReady(t, client("", urlA), pa)
	waitReady(t, client("", urlB), pb)
	ctx := ctxT(t)

	tok, err := client(string(admin), urlB).CreateToken(ctx, time.Hour, "replicas")
	if err != nil {
		t.Fatal(err)
	}
	jr, err := client("", urlA).Join(ctx, tok, api.JoinRequest{ClusterID: "east", PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.101.0.0/16"}})
	if err != nil {
		t.Fatal(err)
	}
	// B learns the new credential when it has applied the join (replicas
	// apply each other's commits within milliseconds, not at once).
	var start *api.Snapshot
	testkit.Eventually(t, 20*time.Second, func() error {
		start, err = client(jr.Credential, urlB).Snapshot(ctx)
		return err
	})

	// The watcher starts on A (the replica to be killed), B next.
	var seen []int64
	var seenMu sync.Mutex
	wctx, wcancel := context.WithCancel(context.Background())
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		_ = client(jr.Credential, urlA, urlB).Watch(wctx, start.Revision, func(ev api.Event) error {
			seenMu.Lock()
			defer seenMu.Unlock()
			if ev.Type == api.EventSnapshot {
				seen = append(seen, -ev.Revision) // marks a snapshot: a failure below
			} else {
				seen = append(seen, ev.Revision)
			}
			return nil
		})
	}()
	t.Cleanup(func() { wcancel(); <-wdone })

	const writers, perWriter = 4, 60
	var acked sync.Map // export name -> true
	var done atomic.Int64
	killed := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		urls := []string{urlA, urlB}
		if w%2 == 1 {
			urls = []string{urlB, urlA}
		}
		c := client(jr.Credential, urls...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; {
				name := fmt.Sprintf("w%d-%d", w, i)
				e := export("east", "ns", name)
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := c.PublishExport(cctx, e)
				cancel()
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					time.Sleep(50 * time.Millisecond) // a replica or member is down: retry
					continue
				}
				acked.Store(name, true)
				i++
				if done.Add(1) == writers*perWriter/3 {
					close(killed)
				}
			}
		}()
	}
	<-killed
	ec.Kill(0)
	if err := pa.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = pa.cmd.Wait()
	wg.Wait()

	final, err := client(jr.Credential, urlB).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replica B's log:\n%s", pb.stderr.String())
		}
	})
	have := map[string]bool{}
	for _, e := range final.Exports {
		have[e.Name] = true
	}
	n := 0
	acked.Range(func(k, _ any) bool {
		n++
		if !have[k.(string)] {
			t.Errorf("acknowledged export %s missing after the kills", k)
		}
		return true
	})
	if n != writers*perWriter {
		t.Fatalf("%d writes acknowledged, want %d", n, writers*perWriter)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		seenMu.Lock()
		got := append([]int64(nil), seen...)
		seenMu.Unlock()
		if len(got) > 0 && got[len(got)-1] >= final.Revision || time.Now().After(deadline) {
			for i, r := range got {
				if r != start.Revision+1+int64(i) {
					t.Fatalf("watcher saw revision %d at position %d, want %d (snapshot <0, gap or repeat); all: %v",
						r, i, start.Revision+1+int64(i), got)
				}
			}
			if int64(len(got)) != final.Revision-start.Revision {
				t.Fatalf("watcher saw %d revisions, want %d", len(got), final.Revision-start.Revision)
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReplicasRacingOverlappingJoins: joins with the same pod CIDR sent at
// once to two replicas: both win, one after the other (the later one sees
// the earlier and translates both: never two clusters in the same mesh
// addresses), and the winners of many racing joins get distinct tunnel IPs.
func TestReplicasRacingOverlappingJoins(t *testing.T) {
	ec, dir := etcdClusterset(t)
	a := brokertest.Start(t, brokertest.Options{Dir: dir, Store: ec.Open(t, "/tm")})
	b := brokertest.Start(t, brokertest.Options{Dir: dir, Store: ec.Open(t, "/tm")})
	ctx := ctxT(t)
	tok := a.JoinToken("race")
	const rounds = 15
	tunnelIPs := map[string]string{}
	for i := range rounds {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		resps := make([]*api.JoinResponse, 2)
		for j, tb := range []*brokertest.Broker{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resps[j], errs[j] = tb.Client("").Join(ctx, tok, api.JoinRequest{ClusterID: fmt.Sprintf("c%d-%d", i, j),
					PodCIDRs: []string{fmt.Sprintf("10.%d.0.0/16", i)}, ServiceCIDRs: []string{fmt.Sprintf("10.%d.0.0/16", 100+2*i+j)}})
			}()
		}
		wg.Wait()
		won := 0
		for j := range 2 {
			switch {
			case errs[j] == nil:
				won++
				if other, dup := tunnelIPs[resps[j].Cluster.TunnelIP]; dup {
					t.Fatalf("tunnel IP %s given to %s and %s", resps[j].Cluster.TunnelIP, other, resps[j].Cluster.ID)
				}
				tunnelIPs[resps[j].Cluster.TunnelIP] = resps[j].Cluster.ID
			default:
				t.Fatalf("round %d join %d: %v", i, j, errs[j])
			}
		}
		if won != 2 {
			t.Fatalf("round %d: %d of 2 overlapping joins won, want both (translated)", i, won)
		}
	}
	// Both replicas agree on the result, at the same revision.
	testkit.Eventually(t, 20*time.Second, func() error {
		sa, _ := a.Admin().Snapshot(ctx)
		sb, _ := b.Admin().Snapshot(ctx)
		if sa == nil || sb == nil || sa.Revision != sb.Revision || len(sa.Clusters) != 2*rounds || len(sb.Clusters) != 2*rounds {
			return fmt.Errorf("replicas differ: %+v / %+v", sa, sb)
		}
		if probs := api.CheckMesh(sa.Clusters); len(probs) > 0 {
			t.Fatalf("racing joins broke the clusterset's address rule: %q", probs)
		}
		return nil
	})
}

// TestReplicasShareGatewayLiveness: a gateway that heartbeats only to one
// replica is not marked stale by the other, whose status shows the
// heartbeat's time; once it stops, it is marked stale.
func TestReplicasShareGatewayLiveness(t *testing.T) {
	east, b, onB := heartbeatsToA(t, nil, 150*time.Millisecond, 8*time.Second)
	st, err := b.Client(east.Credential()).Status(ctxT(t))
	if err != nil || len(st) != 1 || time.Since(st[0].LastHeartbeat) > 2*time.Second {
		t.Fatalf("status on B: %+v, %v; want the heartbeat A took", st, err)
	}
	onB.until(t, "stale once heartbeats stop", 10*time.Second, func(ev api.Event) bool { return ev.Gateway != nil && ev.Gateway.Stale })
}

// slowPublish delays a replica's heartbeat summaries by d before they are
// written (a slow etcd), so the other replicas read them d older.
type slowPublish struct {
	*store.Etcd
	d time.Duration
}

func (s slowPublish) PutPresence(ctx context.Context, replica string, data []byte, ttl time.Duration) error {
	select {
	case <-time.After(s.d):
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Etcd.PutPresence(ctx, replica, data, ttl)
}

// TestReplicaSweepsOnlyWithAFreshView: a gateway heartbeating to replica A
// twice per TTL is never marked stale by replica B, also when A's summaries
// reach B late. B's view of A's heartbeats is as old as A's summary, not as
// B's reading of it: B used to trust a summary read up to StaleAfter/2 + 1 s
// after A wrote it, for as long again, so that a gateway that heartbeated
// StaleAfter/2 before A wrote could look older than the TTL.
func TestReplicaSweepsOnlyWithAFreshView(t *testing.T) {
	// A's exchange gives up after StaleAfter/2: 1.3 s keeps the write inside it.
	slowA := func(e *store.Etcd) store.Store { return slowPublish{e, 1300 * time.Millisecond} }
	_, _, onB := heartbeatsToA(t, slowA, 1400*time.Millisecond, 15*time.Second) // 1.4 s: within two per TTL
	onB.until(t, "stale once heartbeats stop", 10*time.Second, func(ev api.Event) bool { return ev.Gateway != nil && ev.Gateway.Stale })
}

// heartbeatsToA starts replicas A (its store wrapped by wrapA, when set) and
// B of one clusterset at StaleAfter 3 s, registers a gateway of east on A and
// heartbeats it to A alone every interval for d, failing if it is marked
// stale meanwhile. It returns east's client, B, and a watch on B.
func heartbeatsToA(t *testing.T, wrapA func(*store.Etcd) store.Store, interval, d time.Duration) (*brokerclient.Client, *brokertest.Broker, *collector) {
	t.Helper()
	ec, dir := etcdClusterset(t)
	// 3 s: B sweeps with A's published heartbeats while they are at most
	// StaleAfter/2 old (1.5 s here); A publishes every StaleAfter/4, which
	// leaves 750 ms for a loaded etcd.
	fast := func(c *broker.Config) { c.StaleAfter = 3 * time.Second }
	var storeA store.Store = ec.Open(t, "/tm")
	if wrapA != nil {
		storeA = wrapA(storeA.(*store.Etcd))
	}
	a := brokertest.Start(t, brokertest.Options{Dir: dir, Store: storeA, Tweak: fast})
	b := brokertest.Start(t, brokertest.Options{Dir: dir, Store: ec.Open(t, "/tm"), Tweak: fast})
	ctx := ctxT(t)
	east, _ := a.Join("east", "10.1.0.0/16", "10.101.0.0/16")
	if err := east.RegisterGateway(ctx, gateway("east", "gw", 1)); err != nil {
		t.Fatal(err)
	}
	onB := watchAll(t, b.Admin(), 0)
	end := time.Now().Add(d) // B sweeps from StaleAfter after its start
	for time.Now().Before(end) {
		if err := east.Heartbeat(ctx, "east", "gw", nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(interval)
	}
	for len(onB.ch) > 0 {
		if ev := <-onB.ch; ev.Gateway != nil && ev.Gateway.Stale {
			t.Fatalf("the gateway was marked stale while it heartbeated to A every %v: %+v", interval, ev)
		}
	}
	return east, b, onB
}

// slowFollow delays every commit another replica made by d, as a replica
// that lags behind would see them.
type slowFollow struct {
	*store.Etcd
	d time.Duration
}

func (s slowFollow) Follow(ctx context.Context, after int64) <-chan store.Batch {
	in := s.Etcd.Follow(ctx, after)
	out := make(chan store.Batch)
	go func() {
		defer close(out)
		for b := range in {
			time.Sleep(s.d)
			select {
			case out <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// TestWatchResumesOnALaggingReplica: a watcher moving to a replica that has
// not yet applied the watcher's revision gets the changes after it, not a
// snapshot, once the replica catches up.
func TestWatchResumesOnALaggingReplica(t *testing.T) {
	ec, dir := etcdClusterset(t)
	a := brokertest.Start(t, brokertest.Options{Dir: dir, Store: ec.Open(t, "/tm")})
	b := brokertest.Start(t, brokertest.Options{Dir: dir, Store: slowFollow{ec.Open(t, "/tm"), time.Second}})
	ctx := ctxT(t)
	east, _ := a.Join("east", "10.1.0.0/16", "10.101.0.0/16")
	if err := east.PublishExport(ctx, export("east", "ns", "one")); err != nil {
		t.Fatal(err)
	}
	at, err := east.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.Broker.Revision() >= at.Revision {
		t.Fatalf("replica B already at %d: the test needs it behind %d", b.Broker.Revision(), at.Revision)
	}
	col := watchAll(t, b.Admin(), at.Revision) // the admin credential: B need not know east's yet
	if err := east.PublishExport(ctx, export("east", "ns", "two")); err != nil {
		t.Fatal(err)
	}
	ev := col.until(t, "the next change on B", 20*time.Second, func(api.Event) bool { return true })
	if ev.Type != api.EventPut || ev.Revision != at.Revision+1 {
		t.Fatalf("first event on the lagging replica: %s at %d, want PUT at %d", ev.Type, ev.Revision, at.Revision+1)
	}
}

// TestReplicasRacingActiveRegistrations: two gateways of one cluster take
// "active" at once on two replicas, the one on B with the newer epoch:
// afterwards exactly one is active, the newer one, every round.
func TestReplicasRacingActiveRegistrations(t *testing.T) {
	ec, dir := etcdClusterset(t)
	a := brokertest.Start(t, brokertest.Options{Dir: dir, Store: ec.Open(t, "/tm")})
	b := brokertest.Start(t, brokertest.Options{Dir: dir, Store: ec.Open(t, "/tm")})
	ctx := ctxT(t)
	onA, jr := a.Join("east", "10.1.0.0/16", "10.101.0.0/16")
	onB := b.Client(jr.Credential)
	testkit.Eventually(t, 20*time.Second, func() error { _, err := onB.Snapshot(ctx); return err }) // B has applied the join
	for i := int64(1); i <= 15; i++ {
		ga, gb := gateway("east", "gw-a", 1), gateway("east", "gw-b", 1)
		ga.Epoch, gb.Epoch = 2*i, 2*i+1
		var wg sync.WaitGroup
		var errA, errB error
		wg.Add(2)
		go func() { defer wg.Done(); errA = onA.RegisterGateway(ctx, ga) }()
		go func() { defer wg.Done(); errB = onB.RegisterGateway(ctx, gb) }()
		wg.Wait()
		var ae *api.Error
		if errB != nil || errA != nil && !(errors.As(errA, &ae) && ae.Code == api.CodeConflict) {
			t.Fatalf("round %d: A %v, B %v", i, errA, errB)
		}
		snap, err := onB.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var active []string
		for _, g := range snap.Gateways {
			if g.Active {
				active = append(active, fmt.Sprintf("%s@%d", g.Hostname, g.Epoch))
			}
		}
		if len(active) != 1 || active[0] != fmt.Sprintf("gw-b@%d", 2*i+1) {
			t.Fatalf("round %d: active gateways %v, want only gw-b@%d", i, active, 2*i+1)
		}
	}
}

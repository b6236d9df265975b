package broker_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The broker under store faults (issue 21): every request answered, every
// acknowledged write kept, reads served while a commit hangs.

// etcdReplicas initialises a store under /tm in ec and serves n brokers
// on it in this process, each with its own store handle that carries at
// most maxOps operations per transaction (0: etcd's default, 128).
func etcdReplicas(t *testing.T, ec *etcdtest.Cluster, n, maxOps int, tweak func(*broker.Config)) []*brokertest.Broker {
	t.Helper()
	open := func() store.Store {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := store.OpenEtcd(ctx, store.EtcdConfig{Endpoints: ec.Endpoints(), Prefix: "/tm", MaxTxnOps: maxOps}, true)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	dir := t.TempDir()
	if _, err := broker.Init(broker.InitOptions{DataDir: dir, Store: open()}); err != nil {
		t.Fatal(err)
	}
	var out []*brokertest.Broker
	for range n {
		out = append(out, brokertest.Start(t, brokertest.Options{Dir: dir, Store: open(), Tweak: tweak}))
	}
	return out
}

// caClient trusts ca.
func caClient(t *testing.T, ca []byte) *http.Client {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("bad CA")
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// A batch larger than one transaction is split; when its first part lost
// the race to another replica, the parts split off were never committed
// nor answered (9 of 12 writes hung). Here replica B commits without pause
// while 12 writes at a time go to A, whose commits carry 4 changes at most.
func TestSplitBatchLosingARaceLosesNoWrite(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	rs := etcdReplicas(t, ec, 2, 7, nil) // 7 operations: 4 changes per commit
	a, b := rs[0], rs[1]
	ctx := ctxT(t)
	east, _ := a.Join("east", "10.1.0.0/16", "10.101.0.0/16")
	west, _ := b.Join("west", "10.2.0.0/16", "10.102.0.0/16")
	stop := make(chan struct{})
	var racer sync.WaitGroup
	racer.Add(1)
	go func() {
		defer racer.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			e := export("west", "ns", fmt.Sprintf("w%d", i%20))
			e.Labels = map[string]string{"n": fmt.Sprint(i)} // a change every time
			_ = west.PublishExport(ctx, e)
		}
	}()
	defer func() { close(stop); racer.Wait() }()
	var acked []string
	for round := range 5 {
		errs := make([]error, 12)
		var wg sync.WaitGroup
		for i := range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				errs[i] = east.PublishExport(wctx, export("east", "ns", fmt.Sprintf("r%d-%d", round, i)))
			}()
		}
		wg.Wait()
		var failed []string
		for i, err := range errs {
			if err != nil {
				failed = append(failed, fmt.Sprintf("r%d-%d: %v", round, i, err))
			} else {
				acked = append(acked, fmt.Sprintf("r%d-%d", round, i))
			}
		}
		if len(failed) > 0 {
			t.Fatalf("round %d: %d of 12 concurrent writes not answered in 20 s:\n%s", round, len(failed), strings.Join(failed, "\n"))
		}
	}
	// On both replicas (the other one applies A's commits within moments).
	for _, r := range rs {
		testkit.Eventually(t, 20*time.Second, func() error {
			have := map[string]bool{}
			for _, e := range r.Broker.Snapshot().Exports {
				have[e.Name] = true
			}
			for _, n := range acked {
				if !have[n] {
					return fmt.Errorf("acknowledged export %s missing on %s", n, r.URL)
				}
			}
			return nil
		})
	}
}

// One write with more changes than a transaction may carry failed every
// time: removing a cluster with more than ~120 exports on etcd's default
// limit (128 operations).
func TestRemoveClusterLargerThanOneTransaction(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	tb := etcdReplicas(t, ec, 1, 0, nil)[0]
	ctx := ctxT(t)
	east, _ := tb.Join("east", "10.1.0.0/16", "10.101.0.0/16")
	tb.Join("west", "10.2.0.0/16", "10.102.0.0/16")
	if err := east.RegisterGateway(ctx, gateway("east", "gw", 1)); err != nil {
		t.Fatal(err)
	}
	for i := range 130 {
		if err := east.PublishExport(ctx, export("east", "ns", fmt.Sprintf("s%03d", i))); err != nil {
			t.Fatal(err)
		}
	}
	col := watchAll(t, tb.Admin(), tb.Broker.Revision())
	if err := tb.Admin().RemoveCluster(ctx, "east"); err != nil {
		t.Fatalf("remove a cluster with 130 exports: %v", err)
	}
	snap := tb.Broker.Snapshot()
	for _, c := range snap.Clusters {
		if c.ID == "east" {
			t.Error("east is still a member")
		}
	}
	if len(snap.Exports) != 0 || len(snap.Gateways) != 0 {
		t.Errorf("after the removal %d exports and %d gateways are left", len(snap.Exports), len(snap.Gateways))
	}
	// Watchers see every record go, in order, the cluster last.
	deletes := 0
	col.until(t, "the cluster's deletion", 20*time.Second, func(ev api.Event) bool {
		if ev.Type == api.EventDelete {
			deletes++
		}
		return ev.Type == api.EventDelete && ev.Kind == api.KindCluster
	})
	if deletes != 132 {
		t.Errorf("watcher saw %d deletions, want 132 (130 exports, the gateway, the cluster)", deletes)
	}
	if _, err := east.Snapshot(ctx); apiCode(err) != api.CodeUnauthorized {
		t.Errorf("the removed cluster's credential still reads: %v", err)
	}
}

// The stale sweep marked every quiet gateway in one write: with more than
// 125 gateways quiet at once (a partition) it failed every time and
// staleness never propagated.
func TestStaleSweepLargerThanOneTransaction(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	tb := etcdReplicas(t, ec, 1, 0, func(c *broker.Config) {
		c.StaleAfter = 3 * time.Second
		c.MaxGatewaysPerCluster = 200 // the admin allows them: the sweep is what is tested
	})[0]
	ctx := ctxT(t)
	east, _ := tb.Join("east", "10.1.0.0/16", "10.101.0.0/16")
	hosts := make([]string, 130)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("gw%03d", i)
	}
	// All 130 heartbeat until the last is registered, then all go quiet
	// at once (a partition).
	heartbeat := func(hs []string) {
		var wg sync.WaitGroup
		for _, h := range hs {
			wg.Add(1)
			go func() { defer wg.Done(); _ = east.Heartbeat(ctx, "east", h, nil) }()
		}
		wg.Wait()
	}
	last := time.Now()
	for i, h := range hosts {
		g := gateway("east", h, 1)
		g.Active = false
		if err := east.RegisterGateway(ctx, g); err != nil {
			t.Fatal(err)
		}
		if time.Since(last) > time.Second {
			heartbeat(hosts[:i+1])
			last = time.Now()
		}
	}
	heartbeat(hosts)
	quiet := time.Now()
	deadline := quiet.Add(20 * time.Second)
	for {
		stale := 0
		for _, g := range tb.Broker.Snapshot().Gateways {
			if g.Stale {
				stale++
			}
		}
		if stale == len(hosts) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after 130 gateways went quiet together (stale after 3 s), %d are marked stale",
				time.Since(quiet).Round(time.Second), stale)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// With etcd's quorum lost a commit hangs until its timeout. Meanwhile the
// broker held its lock: snapshots, heartbeats, status, token lists all
// waited; readiness said ready; and the write was answered "storage write
// failed; retry" though etcd may still commit it.
func TestQuorumLoss(t *testing.T) {
	ec := etcdtest.Start(t, 3)
	tb := etcdReplicas(t, ec, 1, 0, nil)[0]
	ctx := ctxT(t)
	east, _ := tb.Join("east", "10.1.0.0/16", "10.101.0.0/16")
	if err := east.RegisterGateway(ctx, gateway("east", "gw", 1)); err != nil {
		t.Fatal(err)
	}
	hc := caClient(t, tb.CA)
	ready := func() int {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, tb.URL+"/readyz", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := ready(); c != http.StatusOK {
		t.Fatalf("readyz with a healthy store: %d", c)
	}
	ec.Kill(1)
	ec.Kill(2)
	restored := false
	restore := func() {
		if !restored {
			restored = true
			ec.Restart(1)
			ec.Restart(2)
		}
	}
	defer restore()

	// A write in flight: the store cannot commit it.
	key := "quorum-loss-export-0123456789abcdef"
	body, _ := json.Marshal(export("east", "ns", "during"))
	put := func() (int, []byte) {
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(wctx, http.MethodPut, tb.URL+"/v1/clusters/east/exports/ns/during", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+east.Credential())
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(api.HeaderIdempotencyKey, key)
		hc := caClient(t, tb.CA)
		hc.Timeout = 0
		resp, err := hc.Do(req)
		if err != nil {
			return 0, []byte(err.Error())
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	type answer struct {
		code int
		body []byte
	}
	inflight := make(chan answer, 1)
	go func() { c, b := put(); inflight <- answer{c, b} }()
	time.Sleep(500 * time.Millisecond)

	// Reads answer from the last committed state, at once.
	reads := map[string]func(context.Context) error{
		"snapshot": func(ctx context.Context) error { _, err := east.Snapshot(ctx); return err },
		"heartbeat": func(ctx context.Context) error {
			return east.Heartbeat(ctx, "east", "gw", []api.PeerHealth{{Cluster: "west", Status: api.StatusConnecting}})
		},
		"status":      func(ctx context.Context) error { _, err := east.Status(ctx); return err },
		"list tokens": func(ctx context.Context) error { _, err := tb.Admin().ListTokens(ctx); return err },
	}
	for name, read := range reads {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		start := time.Now()
		err := read(rctx)
		cancel()
		if err != nil {
			t.Errorf("%s while a commit hangs on a lost quorum: %v after %s", name, err, time.Since(start).Round(time.Millisecond))
		}
	}
	// Readiness: this replica cannot commit.
	notReady := false
	for range 10 {
		if ready() == http.StatusServiceUnavailable {
			notReady = true
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !notReady {
		t.Error("readyz does not turn 503 while the store has no quorum")
	}
	// The write's answer: not "not done", for etcd may still commit it.
	a := <-inflight
	var ae api.Error
	_ = json.Unmarshal(a.body, &ae)
	if a.code != http.StatusServiceUnavailable || ae.Code != api.CodeOutcomeUnknown {
		t.Errorf("a write the store did not confirm was answered %d %s; want 503 %s", a.code, a.body, api.CodeOutcomeUnknown)
	}

	restore()
	ec.WaitHealthy(60 * time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for ready() != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("readyz not 200 30 s after the quorum came back")
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Its retry, with the same key, makes it once.
	if c, b := put(); c != http.StatusNoContent {
		t.Fatalf("retry after the quorum came back: %d %s", c, b)
	}
	n := 0
	for _, e := range tb.Broker.Snapshot().Exports {
		if e.Name == "during" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d exports 'during', want 1", n)
	}
}

// A commit another replica made that cannot be read makes a replica reload
// its state from the store, and retry while that fails. It retried holding
// the broker's lock: every read hung until the store was repaired.
func TestReadsServedWhileStateCannotBeReloaded(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	tb := etcdReplicas(t, ec, 1, 0, nil)[0]
	ctx := ctxT(t)
	east, _ := tb.Join("east", "10.1.0.0/16", "10.101.0.0/16")
	cli, err := clientv3.New(clientv3.Config{Endpoints: ec.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, "/tm/revision")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("read revision: %v", err)
	}
	var rev int64
	fmt.Sscan(string(resp.Kvs[0].Value), &rev)
	// A damaged record committed as another replica would commit it.
	logKey := fmt.Sprintf("/tm/log/%020d", rev+1)
	bad, _ := json.Marshal([]store.Change{{Revision: rev + 1, Kind: store.KindGateway, Key: "east/bad", Value: []byte("{damaged")}})
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut("/tm/gateway/east/bad", "{damaged"), clientv3.OpPut(logKey, string(bad)),
		clientv3.OpPut("/tm/revision", fmt.Sprint(rev+1))).Commit(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // followed, and the reload failing
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	snap, err := east.Snapshot(rctx)
	cancel()
	if err != nil {
		t.Fatalf("snapshot while the state cannot be reloaded: %v", err)
	}
	if snap.Revision != rev {
		t.Errorf("snapshot at revision %d, want the last good one %d", snap.Revision, rev)
	}
	hc := caClient(t, tb.CA)
	r, err := hc.Get(tb.URL + "/readyz")
	if err != nil || r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("readyz while reloading fails: %v %v; want 503", r, err)
	}
	if r != nil {
		r.Body.Close()
	}
	// Repaired, the replica reloads and serves writes again.
	if _, err := cli.Txn(ctx).Then(clientv3.OpDelete("/tm/gateway/east/bad"), clientv3.OpDelete(logKey),
		clientv3.OpPut("/tm/revision", fmt.Sprint(rev+1))).Commit(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, func() error {
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		return east.PublishExport(wctx, export("east", "ns", "after-repair"))
	})
}

// rawWrite sends one write with an Idempotency-Key and returns the status
// and body.
func rawWrite(t *testing.T, tb *testBroker, method, path, cred, key string, body any) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(ctxT(t), method, tb.url+path, rd)
	req.Header.Set("Authorization", "Bearer "+cred)
	req.Header.Set(api.HeaderIdempotencyKey, key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient(t, tb).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A join whose answer was lost (a timeout, a replica gone) was retried and
// refused ("cluster exists"): the credential was lost and the cluster ID
// burned. Retried with the same Idempotency-Key it gets the same answer.
func TestRetriedJoinGetsTheSameCredential(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	tok, err := tb.adminClient().CreateToken(ctxT(t), time.Hour, "retry")
	if err != nil {
		t.Fatal(err)
	}
	req := api.JoinRequest{ClusterID: "east", PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.101.0.0/16"}}
	key := "join-east-2f1c9a7e5b3d4c6a8e0f"
	c1, b1 := rawWrite(t, tb, http.MethodPost, "/v1/join", tok, key, req)
	if c1 != http.StatusCreated {
		t.Fatalf("join: %d %s", c1, b1)
	}
	c2, b2 := rawWrite(t, tb, http.MethodPost, "/v1/join", tok, key, req)
	if c2 != c1 || b2 != b1 {
		t.Fatalf("the join's retry with the same key got %d %s; want the first answer %d %s", c2, b2, c1, b1)
	}
	var jr api.JoinResponse
	if err := json.Unmarshal([]byte(b1), &jr); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.client(jr.Credential).Snapshot(ctxT(t)); err != nil {
		t.Fatalf("the credential of the join: %v", err)
	}
	// Another key is another join: refused as before.
	if c, b := rawWrite(t, tb, http.MethodPost, "/v1/join", tok, "join-east-another-key-90817263", req); c != http.StatusConflict {
		t.Fatalf("a second join (another key): %d %s; want 409", c, b)
	}
	// The key is bound to who sent it: another token holder learns nothing.
	tok2, _ := tb.adminClient().CreateToken(ctxT(t), time.Hour, "other")
	if c, b := rawWrite(t, tb, http.MethodPost, "/v1/join", tok2, key, req); c == http.StatusCreated || strings.Contains(b, jr.Credential) {
		t.Fatalf("another token with the same key got %d %s", c, b)
	}
}

// A token creation or a cluster's removal retried after its answer was
// lost made a second token, or was refused (the removed cluster's
// credential is gone: 401). With the same key: the same answer, once.
func TestRetriedWritesGetTheSameAnswer(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	key := "token-create-5e8a1c3b7d9f2a4c6e8b"
	req := api.CreateTokenRequest{TTLSeconds: 600, Description: "retried"}
	c1, b1 := rawWrite(t, tb, http.MethodPost, "/v1/tokens", tb.admin, key, req)
	c2, b2 := rawWrite(t, tb, http.MethodPost, "/v1/tokens", tb.admin, key, req)
	if c1 != http.StatusCreated || c2 != c1 || b2 != b1 {
		t.Fatalf("token create and its retry: %d %s / %d %s", c1, b1, c2, b2)
	}
	if toks, err := tb.adminClient().ListTokens(ctxT(t)); err != nil || len(toks) != 1 {
		t.Fatalf("tokens after a retried create: %d (%v), want 1", len(toks), err)
	}
	east, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	key = "remove-east-3b5d7f9a1c2e4a6c8e0b"
	for i := range 2 {
		if c, b := rawWrite(t, tb, http.MethodDelete, "/v1/clusters/east", east.Credential(), key, nil); c != http.StatusNoContent {
			t.Fatalf("removal, attempt %d: %d %s; want 204", i+1, c, b)
		}
	}
	if c, _ := rawWrite(t, tb, http.MethodDelete, "/v1/clusters/east", east.Credential(), "remove-east-a-new-key-1234567", nil); c != http.StatusUnauthorized {
		t.Fatalf("a new removal with the removed cluster's credential: %d; want 401", c)
	}
}

// Writes whose changes together exceed etcd's request limit (1.5 MiB by
// default) went into one commit, which etcd refused: every write of the
// batch failed, every time it was tried. They are split by size too.
func TestLargeWritesSplitBySize(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	tb := etcdReplicas(t, ec, 1, 0, nil)[0]
	ctx := ctxT(t)
	east, _ := tb.Join("east", "10.1.0.0/16", "10.101.0.0/16")
	big := func(name string) api.Export {
		e := export("east", "big", name)
		e.Type, e.IPs, e.IPFamilies = api.TypeHeadless, nil, nil
		for j := range api.MaxEndpoints {
			e.Endpoints = append(e.Endpoints, api.Endpoint{Addresses: []string{fmt.Sprintf("10.1.%d.%d", j/250, j%250+1)},
				Hostname: fmt.Sprintf("a-pod-with-a-rather-long-generated-name-%04d", j), Ready: true,
				Ports: []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 8080}}})
		}
		return e
	}
	errs := make([]error, 6)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = east.PublishExport(ctx, big(fmt.Sprintf("svc-%d", i))) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("export %d of 6 large ones published together: %v", i, err)
		}
	}
	if n := len(tb.Broker.Snapshot().Exports); n != 6 {
		t.Errorf("%d exports stored, want 6", n)
	}
}

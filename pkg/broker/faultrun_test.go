package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store/etcdtest"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerpki"
)

// EnvFaultRun enables TestFaultInjection; `make test-broker-faults` (a
// part of `make test`) sets it and prints the table the run makes.
const EnvFaultRun = "TUNNELMESH_FAULT_RUN"

// TestFaultInjection runs the broker as shipped (2 replica processes on a
// 3-member etcd cluster with etcd's default limits) under writers of every
// kind, watchers on both replicas and heartbeating gateways, while in turn
// the etcd leader is SIGKILLed, the quorum is lost for 30 s, a broker
// replica is SIGKILLed mid-batch and the etcd leader is paused (a stalled
// disk). After each fault: every acknowledged write is in the store and
// seen once, in order, by every watcher; every request was answered; no
// handler is left hanging; heartbeats were answered throughout and no
// heartbeating gateway was marked stale.
func TestFaultInjection(t *testing.T) {
	if os.Getenv(EnvFaultRun) != "1" {
		t.Skipf("run by `make test-broker-faults` (part of `make test`), which prints its table; or set %s=1", EnvFaultRun)
	}
	ec := etcdtest.StartShipped(t, 3)
	dir := t.TempDir()
	ctx := ctxT(t)
	{
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		st, err := store.OpenEtcd(sctx, store.EtcdConfig{Endpoints: ec.Endpoints(), Prefix: "/tm"}, true)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := broker.Init(broker.InitOptions{DataDir: dir, Store: st}); err != nil {
			t.Fatal(err)
		}
		st.Close()
	}
	bin := buildBroker(t)
	reps := []*replica{newReplica(t, bin, dir, ec, "A"), newReplica(t, bin, dir, ec, "B")}
	for _, r := range reps {
		r.start()
	}
	ca, _ := os.ReadFile(filepath.Join(dir, brokerpki.FileCACert))
	adminTok, _ := os.ReadFile(filepath.Join(dir, brokerpki.FileAdminToken))
	client := func(cred string, urls ...string) *brokerclient.Client {
		c, err := brokerclient.New(strings.Join(urls, ","), ca, strings.TrimSpace(cred))
		if err != nil {
			t.Fatal(err)
		}
		c.Logger = quietLog
		c.WatchIdleTimeout = 15 * time.Second
		return c
	}
	both := []string{reps[0].url, reps[1].url}
	rboth := []string{reps[1].url, reps[0].url}
	for _, r := range reps {
		waitReady(t, client("", r.url), r.proc)
	}
	admin := client(string(adminTok), both...)
	join := func(id, pod, svc string) *brokerclient.Client {
		tok, err := admin.CreateToken(ctx, time.Hour, id)
		if err != nil {
			t.Fatal(err)
		}
		jr, err := client("", both...).Join(ctx, tok, api.JoinRequest{ClusterID: id, PodCIDRs: []string{pod}, ServiceCIDRs: []string{svc}})
		if err != nil {
			t.Fatal(err)
		}
		return client(jr.Credential, both...)
	}
	exp := join("exp", "172.16.0.0/16", "172.17.0.0/16")
	gwc := join("gwc", "172.18.0.0/16", "172.19.0.0/16")
	hb := join("hb", "172.20.0.0/16", "172.21.0.0/16")
	run := &faultRun{t: t}

	// Heartbeating gateways: 10, each heartbeating every 300 ms to its
	// replica first (half to A, half to B), failing over to the other.
	hbClients := []*brokerclient.Client{client(hb.Credential(), both...), client(hb.Credential(), rboth...)}
	for i := range 10 {
		g := gateway("hb", fmt.Sprintf("hb%02d", i), 3)
		g.Active = i == 0
		if err := hbClients[i%2].RegisterGateway(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	// Watchers, one on each replica, from the current revision on.
	start, err := admin.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stopAll, cancelAll := context.WithCancel(context.Background())
	stopWatch, cancelWatch := context.WithCancel(context.Background())
	var workers, watching sync.WaitGroup
	watchers := make([]*watcher, len(reps))
	for i, r := range reps {
		w := &watcher{name: r.name}
		watchers[i] = w
		watching.Add(1)
		go func() {
			defer watching.Done()
			_ = client(string(adminTok), r.url).Watch(stopWatch, start.Revision, w.add)
		}()
	}
	t.Cleanup(func() {
		cancelAll()
		cancelWatch()
		for _, r := range reps {
			if t.Failed() {
				t.Logf("replica %s log (tail):\n%s", r.name, tail(r.log.String(), 6000))
			}
			if d := os.Getenv("TUNNELMESH_FAULT_LOGS"); d != "" {
				_ = os.WriteFile(filepath.Join(d, "replica-"+r.name+".log"), []byte(r.log.String()), 0o644)
			}
		}
	})
	for i := range 10 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			c := hbClients[i%2]
			for stopAll.Err() == nil {
				hctx, cancel := context.WithTimeout(stopAll, answerTimeout)
				t0 := time.Now()
				err := c.Heartbeat(hctx, "hb", fmt.Sprintf("hb%02d", i), []api.PeerHealth{{Cluster: "exp", Status: api.StatusConnected}})
				cancel()
				if stopAll.Err() == nil {
					run.heartbeat(t0, time.Since(t0), err)
				}
				sleepCtx(stopAll, 300*time.Millisecond)
			}
		}()
	}

	// Writers of every kind: joins, removals of what was joined, gateway
	// registrations, exports; half start on A, half on B.
	joined := make(chan string, 10000)
	joiner, remover, burster := client("", rboth...), client(string(adminTok), rboth...), client(exp.Credential(), both...)
	writers := []func(ctx context.Context, n int) (write, error){
		func(ctx context.Context, n int) (write, error) { // joins
			id := fmt.Sprintf("j%04d", n)
			tok, err := admin.CreateToken(ctx, time.Hour, id)
			if err != nil {
				return write{}, err
			}
			_, err = joiner.Join(ctx, tok, api.JoinRequest{ClusterID: id,
				PodCIDRs: []string{fmt.Sprintf("10.%d.%d.0/24", 100+n/256, n%256)}, ServiceCIDRs: []string{fmt.Sprintf("10.%d.%d.0/24", 150+n/256, n%256)}})
			if err == nil {
				joined <- id
			}
			return write{kind: api.KindCluster, key: id}, err
		},
		func(ctx context.Context, _ int) (write, error) { // removals of joined clusters, the oldest first
			select {
			case id := <-joined:
				return write{kind: api.KindCluster, key: id, gone: true}, remover.RemoveCluster(ctx, id)
			default:
				return write{}, errNothing
			}
		},
		func(ctx context.Context, n int) (write, error) { // gateway registrations, new addresses of 12 hosts (the quota is 16)
			g := gateway("gwc", fmt.Sprintf("g%03d", n%(broker.DefaultGatewaysPerCluster-4)), 4)
			g.Active, g.PrivateIP = false, fmt.Sprintf("10.250.%d.%d", n/250%250, n%250+1)
			return write{kind: api.KindGateway, key: api.GatewayKey("gwc", g.Hostname), version: g.PrivateIP}, gwc.RegisterGateway(ctx, g)
		},
		func(ctx context.Context, n int) (write, error) { // exports
			e := export("exp", "ns", fmt.Sprintf("e%03d", n%100))
			e.Labels = map[string]string{"seq": strconv.Itoa(n)}
			return write{kind: api.KindExport, key: api.ExportKey("exp", "ns", e.Name), version: strconv.Itoa(n)}, exp.PublishExport(ctx, e)
		},
	}
	for wi, w := range writers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for n := 0; stopAll.Err() == nil; n++ {
				t0 := time.Now()
				wctx, cancel := context.WithTimeout(stopAll, answerTimeout)
				wr, err := w(wctx, n)
				cancel()
				if errors.Is(err, errNothing) {
					sleepCtx(stopAll, 200*time.Millisecond)
					continue
				}
				if stopAll.Err() != nil {
					// Sent, and maybe made, though the run's end cut its
					// answer off: the check must know of it (a removal or
					// a newer version of a key), the counts must not.
					run.write(t0, time.Since(t0), wr, errStopped)
					return
				}
				run.write(t0, time.Since(t0), wr, err)
				sleepCtx(stopAll, time.Duration(20+30*wi)*time.Millisecond)
			}
		}()
	}
	// burst sends 60 exports at once: batches of many writes in flight.
	var bursts sync.WaitGroup
	burst := func(tag string) {
		bursts.Add(1)
		defer bursts.Done()
		var wg sync.WaitGroup
		for i := range 60 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e := export("exp", "burst", fmt.Sprintf("%s-%02d", tag, i))
				t0 := time.Now()
				wctx, cancel := context.WithTimeout(stopAll, answerTimeout)
				err := burster.PublishExport(wctx, e)
				cancel()
				run.write(t0, time.Since(t0), write{kind: api.KindExport, key: api.ExportKey("exp", "burst", e.Name), version: ""}, err)
			}()
		}
		wg.Wait()
	}

	settle := func() {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			var revs []int64
			for _, r := range reps {
				revs = append(revs, r.revision(ctx))
			}
			if revs[0] == revs[1] && revs[0] > 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("replicas not ready and level 90 s after the fault: %v", revs)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	baseline := [2]int{}
	time.Sleep(3 * time.Second)
	for i, r := range reps {
		baseline[i] = r.goroutines(ctx)
	}

	run.phase("etcd leader SIGKILLed (back after 5 s)", func() {
		l := ec.Leader()
		if l < 0 {
			t.Fatal("no etcd leader")
		}
		ec.Kill(l)
		time.Sleep(5 * time.Second)
		ec.Restart(l)
		ec.WaitHealthy(60 * time.Second)
	}, settle)
	run.phase("quorum lost 30 s (2 of 3 members stopped)", func() {
		l := ec.Leader()
		f := (l + 1) % 3
		ec.Kill(l)
		ec.Kill(f)
		time.Sleep(30 * time.Second)
		ec.Restart(l)
		ec.Restart(f)
		ec.WaitHealthy(60 * time.Second)
	}, settle)
	run.phase("broker replica A SIGKILLed mid-batch (back after 3 s)", func() {
		go burst("kill")
		time.Sleep(30 * time.Millisecond)
		reps[0].kill()
		time.Sleep(3 * time.Second)
		reps[0].start()
	}, settle)
	run.phase("etcd leader paused 5 s (a stalled disk)", func() {
		l := ec.Leader()
		go burst("pause")
		ec.Pause(l)
		time.Sleep(5 * time.Second)
		ec.Resume(l)
	}, settle)

	bursts.Wait()
	cancelAll()
	workers.Wait()
	settle()
	final, err := admin.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range watchers { // the watchers' last flush
		for deadline := time.Now().Add(10 * time.Second); w.last() < final.Revision && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
		}
	}
	cancelWatch()
	watching.Wait()
	run.check(final, watchers, start.Revision)
	for i, r := range reps {
		g, hung := r.goroutines(ctx), r.hungHandlers(ctx)
		t.Logf("replica %s: %d goroutines before the faults, %d after; handlers waiting on a write: %d", r.name, baseline[i], g, hung)
		if hung > 0 {
			t.Errorf("replica %s: %d handlers still wait for a write after the run", r.name, hung)
		}
		if g > 2*baseline[i]+50 {
			t.Errorf("replica %s: %d goroutines after the run, %d before", r.name, g, baseline[i])
		}
	}
	for p, name := range run.phases {
		errs := map[string]int{}
		for _, c := range run.calls {
			if run.phaseOf(c.at) == p+1 && c.err != nil && !errors.Is(c.err, errLost) && !errors.Is(c.err, errStopped) {
				errs[c.err.Error()]++
			}
		}
		for e, n := range errs {
			if len(e) > 200 {
				e = e[:200]
			}
			t.Logf("%s: %d× %s", name, n, e)
		}
		var slow []string
		for _, c := range run.calls {
			if run.phaseOf(c.at) == p+1 && c.took > 5*time.Second {
				slow = append(slow, fmt.Sprintf("%s %s at %s took %s (%v)", c.w.kind, c.w.key, c.at.Round(time.Millisecond), c.took.Round(time.Millisecond), c.err))
			}
		}
		if len(slow) > 10 {
			slow = append(slow[:10], fmt.Sprintf("and %d more", len(slow)-10))
		}
		if len(slow) > 0 {
			t.Logf("%s: calls slower than 5 s:\n%s", name, strings.Join(slow, "\n"))
		}
	}
	var buf bytes.Buffer
	run.table(&buf)
	t.Logf("fault injection (etcd 3 members, --max-txn-ops 128 as shipped; 2 broker replicas, shipped settings):\n%s", buf.String())
}

var errNothing = errors.New("nothing to do")

// errStopped marks a write in flight when the run ended: its outcome is
// unknown, so it is no acknowledged write, and no failure either.
var errStopped = errors.New("in flight when the run ended")

// answerTimeout is the broker's response timeout (--response-timeout):
// a call not answered by then counts as unanswered.
const answerTimeout = broker.DefaultResponseTimeout

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// replica is one `broker serve` process on the etcd store.
type replica struct {
	t         *testing.T
	name      string
	bin, dir  string
	ec        *etcdtest.Cluster
	addr, url string
	debug     string
	proc      *brokerProc
	log       lockedWriter // every run's stderr
}

func newReplica(t *testing.T, bin, dir string, ec *etcdtest.Cluster, name string) *replica {
	addr := freeAddr(t)
	return &replica{t: t, name: name, bin: bin, dir: dir, ec: ec, addr: addr, url: "https://" + addr, debug: freeAddr(t)}
}

func (r *replica) start() {
	if r.log.w == nil {
		r.log.w = &bytes.Buffer{}
	}
	p := &brokerProc{stderr: r.log.w}
	p.cmd = exec.Command(r.bin, "serve", "--data-dir", r.dir, "--listen", r.addr, "--store", "etcd",
		"--etcd-endpoints", strings.Join(r.ec.Endpoints(), ","), "--etcd-prefix", "/tm", "--debug-listen", r.debug, "--log-level", "info")
	p.cmd.Stderr = &r.log
	if err := p.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.proc = p
	r.t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})
}

func (r *replica) kill() {
	_ = r.proc.cmd.Process.Kill()
	_ = r.proc.cmd.Wait()
}

func (r *replica) get(ctx context.Context, url string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// goroutines is the process's goroutine count (pprof's "total").
func (r *replica) goroutines(ctx context.Context) int {
	out := r.get(ctx, "http://"+r.debug+"/debug/pprof/goroutine?debug=1")
	_, rest, _ := strings.Cut(out, "total ")
	n, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(rest, "\n", 2)[0]))
	return n
}

// hungHandlers counts goroutines waiting for a write's outcome, the least
// of three looks a second apart (the sweep passes through too).
func (r *replica) hungHandlers(ctx context.Context) int {
	least := -1
	for range 3 {
		n := strings.Count(r.get(ctx, "http://"+r.debug+"/debug/pprof/goroutine?debug=2"), "core.(*Core).Do(")
		if least < 0 || n < least {
			least = n
		}
		time.Sleep(time.Second)
	}
	return least
}

// revision is the revision /readyz reports; 0 when not ready.
func (r *replica) revision(ctx context.Context) int64 {
	ca, _ := os.ReadFile(filepath.Join(r.dir, brokerpki.FileCACert))
	hc := caClient(r.t, ca)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.url+"/readyz", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0
	}
	var v struct{ Revision int64 }
	_ = json.NewDecoder(resp.Body).Decode(&v)
	return v.Revision
}

// write is one acknowledged (or not) write of the run.
type write struct {
	kind, key string
	version   string // what identifies this write's value ("" any)
	gone      bool   // a removal
}

type callRecord struct {
	at, took time.Duration // since the run began
	w        write
	err      error
}

type hbRecord struct {
	at, took time.Duration
	err      error
}

// faultRun gathers what the writers and heartbeaters saw, by phase.
type faultRun struct {
	t      *testing.T
	begin  time.Time
	mu     sync.Mutex
	phases []string
	spans  [][2]time.Duration // fault start and end, since begin
	calls  []callRecord
	hbs    []hbRecord
}

func (r *faultRun) since(t time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.begin.IsZero() {
		r.begin = t
	}
	return t.Sub(r.begin)
}

func (r *faultRun) write(t0 time.Time, took time.Duration, w write, err error) {
	at := r.since(t0)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, callRecord{at: at, took: took, w: w, err: err})
}

func (r *faultRun) heartbeat(t0 time.Time, took time.Duration, err error) {
	at := r.since(t0)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hbs = append(r.hbs, hbRecord{at: at, took: took, err: err})
}

// phase runs fault, then settle; the calls sent meanwhile count to it.
func (r *faultRun) phase(name string, fault, settle func()) {
	from := r.since(time.Now())
	r.mu.Lock()
	r.phases = append(r.phases, name)
	r.mu.Unlock()
	r.t.Logf("%s fault: %s", time.Now().Format("15:04:05.000"), name)
	fault()
	to := r.since(time.Now())
	r.mu.Lock()
	r.spans = append(r.spans, [2]time.Duration{from, to})
	r.mu.Unlock()
	settle()
}

// phaseOf is the fault a call sent at at counts to (1-based; 0: before
// the first).
func (r *faultRun) phaseOf(at time.Duration) int {
	p := 0
	for i, s := range r.spans {
		if at >= s[0] {
			p = i + 1
		}
	}
	return p
}

// watcher records what one watch stream delivered.
type watcher struct {
	name   string
	mu     sync.Mutex
	events []api.Event
}

func (w *watcher) last() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.events) == 0 {
		return 0
	}
	return w.events[len(w.events)-1].Revision
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (w *watcher) add(ev api.Event) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events = append(w.events, ev)
	return nil
}

// check verifies the acknowledged writes against the final state and
// every watcher's events; problems are test errors, counted per phase.
func (r *faultRun) check(final *api.Snapshot, ws []*watcher, from int64) {
	t := r.t
	state := map[string]string{}
	for _, c := range final.Clusters {
		state[api.KindCluster+"/"+c.ID] = ""
	}
	for _, g := range final.Gateways {
		state[api.KindGateway+"/"+api.GatewayKey(g.ClusterID, g.Hostname)] = g.PrivateIP
	}
	for _, e := range final.Exports {
		state[api.KindExport+"/"+api.ExportKey(e.ClusterID, e.Namespace, e.Name)] = e.Labels["seq"]
	}
	// Each watcher: every revision after from exactly once, in order, up
	// to the final one, and no snapshot (which would mean a lost place).
	seen := make([]map[string]map[string]bool, len(ws)) // watcher → kind/key → versions
	for i, w := range ws {
		seen[i] = map[string]map[string]bool{}
		next := from + 1
		for _, ev := range w.events {
			if ev.Type == api.EventSnapshot {
				t.Errorf("watcher on %s got a SNAPSHOT at %d: it lost its place", w.name, ev.Revision)
				continue
			}
			if ev.Revision != next {
				t.Errorf("watcher on %s: revision %d after %d (want each once, in order)", w.name, ev.Revision, next-1)
			}
			next = ev.Revision + 1
			k := ev.Kind + "/" + ev.Key
			if seen[i][k] == nil {
				seen[i][k] = map[string]bool{}
			}
			v := ""
			switch {
			case ev.Type == api.EventDelete:
				v = "gone"
			case ev.Gateway != nil:
				v = ev.Gateway.PrivateIP
				if ev.Gateway.ClusterID == "hb" && ev.Gateway.Stale {
					t.Errorf("gateway %s was marked stale (seen on %s at %d) though it heartbeated throughout", ev.Key, w.name, ev.Revision)
				}
			case ev.Export != nil:
				v = ev.Export.Labels["seq"]
			}
			seen[i][k][v] = true
		}
		if next-1 != final.Revision {
			t.Errorf("watcher on %s ended at revision %d, the state is at %d", w.name, next-1, final.Revision)
		}
	}
	removed := map[string]bool{} // a removal was sent (it may have been made, answered or not)
	for _, c := range r.calls {
		if c.w.gone {
			removed[c.w.key] = true
		}
	}
	lastCall := map[string]int{} // index of the last call to a key, whatever its outcome
	for i, c := range r.calls {
		lastCall[c.w.kind+"/"+c.w.key] = i
	}
	for i := range r.calls {
		c := &r.calls[i]
		if c.err != nil || c.w.key == "" {
			continue
		}
		k := c.w.kind + "/" + c.w.key
		want := c.w.version
		if c.w.gone {
			want = "gone"
		}
		lost := false
		cur, present := state[k]
		last := lastCall[k] == i // nothing was sent for this key after it
		switch {
		case c.w.gone && present:
			lost = true
		case !c.w.gone && !removed[c.w.key] && !present:
			lost = true
		case !c.w.gone && last && want != "" && cur != want:
			lost = true
		}
		for wi := range ws {
			if want == "" {
				if len(seen[wi][k]) == 0 {
					lost = true
				}
			} else if !seen[wi][k][want] {
				lost = true
			}
		}
		if lost {
			c.err = errLost
			t.Errorf("acknowledged write lost: %s %s (version %q, acked %s into the run): state %q/%v, watchers %v",
				c.w.kind, c.w.key, want, c.at.Round(time.Millisecond), cur, present, watcherVersions(seen, k))
		}
	}
}

var errLost = errors.New("lost")

func watcherVersions(seen []map[string]map[string]bool, k string) []string {
	var out []string
	for _, s := range seen {
		var vs []string
		for v := range s[k] {
			vs = append(vs, v)
		}
		sort.Strings(vs)
		out = append(out, strings.Join(vs, ","))
	}
	return out
}

// table prints one line per fault, counting the writes sent from its start
// until the next fault's (after it the replicas were ready and level
// again): those acknowledged, the acknowledged ones lost, those answered
// with an error, those never answered (nothing within the response
// timeout, a minute), the longest answer; and the heartbeats while the
// fault lasted, their 99th percentile and the failed ones.
func (r *faultRun) table(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "fault\twrites acked\tlost\tanswered with an error\tunanswered\tmax answer time\theartbeats\theartbeat p99 (during the fault)\theartbeats failed\t")
	for p, name := range r.phases {
		acked, lost, failed, unanswered := 0, 0, 0, 0
		var maxTook time.Duration
		for _, c := range r.calls {
			if r.phaseOf(c.at) != p+1 || errors.Is(c.err, errStopped) {
				continue
			}
			maxTook = max(maxTook, c.took)
			switch {
			case errors.Is(c.err, errLost):
				acked++
				lost++
			case c.err == nil:
				acked++
			case errors.Is(c.err, context.DeadlineExceeded):
				unanswered++
			default:
				failed++
			}
		}
		var hb []time.Duration
		hbFailed := 0
		span := r.spans[p]
		for _, h := range r.hbs {
			if h.at >= span[0] && h.at <= span[1] {
				hb = append(hb, h.took)
				if h.err != nil {
					hbFailed++
				}
			}
		}
		slices.Sort(hb)
		p99 := time.Duration(0)
		if len(hb) > 0 {
			p99 = hb[min(len(hb)-1, len(hb)*99/100)]
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%d\t%s\t%d\t\n", name, acked, lost, failed, unanswered,
			maxTook.Round(time.Millisecond), len(hb), p99.Round(time.Millisecond), hbFailed)
	}
	tw.Flush()
}

// Command broker-bench measures the broker with many simulated clusters and
// watchers: write throughput, write→all-watchers-seen latency and the broker
// process's RSS. It starts the broker as a separate process on loopback so
// the RSS is the broker's own, and prints a table. It is a benchmark, not a
// test: it never fails on a figure.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
)

func main() {
	var (
		brokerBin = flag.String("broker-bin", "", "broker binary (default: go build ./cmd/broker into a temp dir)")
		clusters  = flag.Int("clusters", 1000, "simulated clusters (each one gateway)")
		exports   = flag.Int("exports", 10, "exports per cluster")
		watchers  = flag.Int("watchers", 1000, "concurrent watchers (one per cluster, own TLS connection)")
		writers   = flag.Int("writers", 64, "concurrent writers in the bulk phase")
		rateList  = flag.String("rates", "20,100", "comma-separated writes per second of the steady phases")
		steady    = flag.Duration("steady", 15*time.Second, "length of each steady phase")
		cpuProf   = flag.String("cpuprofile", "", "write the bench process's CPU profile here")
		hbPhase   = flag.Duration("heartbeat-phase", 30*time.Second, "length of the heartbeat phase (every cluster's gateway heartbeats while every watcher follows); 0 skips it")
		hbEvery   = flag.Duration("heartbeat-interval", 10*time.Second, "each gateway's heartbeat period in the heartbeat phase")
		hbPeers   = flag.Int("heartbeat-peers", -1, "health entries per heartbeat (-1: one per other cluster, as a real gateway reports)")
		storeKind = flag.String("store", "bolt", "broker store: bolt (one broker) or etcd (--etcd-members etcd processes, --replicas brokers)")
		etcdBin   = flag.String("etcd-bin", "", "etcd binary for --store etcd (default: $KUBE_BIN_DIR/etcd, else _output/k8s/bin/etcd)")
		members   = flag.Int("etcd-members", 3, "etcd cluster size for --store etcd")
		replicas  = flag.Int("replicas", 2, "broker replicas for --store etcd; clients and watchers are spread over them")
		outage    = flag.Duration("outage", 20*time.Second, "length of the outage phase (every broker replica stopped while every watcher follows, then started again); 0 skips it")
		light     = flag.Bool("light-watchers", false, "watchers read the raw NDJSON stream and only look for the write's sequence number instead of decoding every event with brokerclient.Watch (shows the broker's fan-out capacity when the clients' JSON decoding does not share its CPUs)")
	)
	flag.Parse()
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	var rates []int
	for _, f := range strings.Split(*rateList, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || r <= 0 {
			fmt.Fprintf(os.Stderr, "broker-bench: bad --rates %q\n", *rateList)
			os.Exit(2)
		}
		rates = append(rates, r)
	}
	hb := hbConfig{phase: *hbPhase, every: *hbEvery, peers: *hbPeers}
	sc := storeConfig{kind: *storeKind, etcdBin: *etcdBin, members: *members, replicas: *replicas}
	if sc.kind != "etcd" {
		sc.kind, sc.replicas = "bolt", 1
	}
	if err := run(*brokerBin, sc, *clusters, *exports, *watchers, *writers, rates, *steady, hb, *outage, *light, os.Getenv("BROKER_BENCH_DEBUG_LISTEN")); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "broker-bench:", err)
		os.Exit(1)
	}
}

func raiseNoFile() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	return lim.Cur, nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:3], " ")
}

// procStatus reads VmRSS and VmHWM (peak RSS) in KiB.
func procStatus(pid int) (rss, hwm int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1, -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	return rss, hwm
}

// procCPU returns user+system CPU seconds of a process.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100 // USER_HZ
}

func selfCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// track follows one write until every watcher has seen it.
type track struct {
	start     time.Time
	acked     time.Duration
	remaining atomic.Int32
	seen      atomic.Int64 // nanoseconds after start when the last watcher saw it
	// every watcher's sighting, kept when each is set
	mu   sync.Mutex
	each []time.Duration
	keep bool
}

// seenAt is when each watcher saw the write, after its start (keep set).
func (t *track) seenAt() []time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.each)
}

type tracker struct {
	mu     sync.RWMutex
	writes []*track
	nWatch int32
	// keep: new writes keep every watcher's sighting (track.each).
	keep   atomic.Bool
	events atomic.Int64
	// changes counts the events that are not bookmarks.
	changes atomic.Int64
}

func (tr *tracker) add() (int, *track) {
	t := &track{start: time.Now(), keep: tr.keep.Load()}
	t.remaining.Store(tr.nWatch)
	tr.mu.Lock()
	tr.writes = append(tr.writes, t)
	n := len(tr.writes) - 1
	tr.mu.Unlock()
	return n, t
}

func (tr *tracker) saw(seq int) {
	tr.mu.RLock()
	if seq < 0 || seq >= len(tr.writes) {
		tr.mu.RUnlock()
		return
	}
	t := tr.writes[seq]
	tr.mu.RUnlock()
	if t.keep {
		t.mu.Lock()
		t.each = append(t.each, time.Since(t.start))
		t.mu.Unlock()
	}
	if t.remaining.Add(-1) == 0 {
		t.seen.Store(int64(time.Since(t.start)))
	}
}

func run(brokerBin string, sc storeConfig, nClusters, nExports, nWatchers, nWriters int, rates []int, steady time.Duration, hb hbConfig, outage time.Duration, light bool, debugListen string) error {
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil))) // watch reconnect chatter
	nofile, err := raiseNoFile()
	if err != nil {
		return fmt.Errorf("raise open-file limit: %w", err)
	}
	if need := uint64(2*nWatchers + 200); nofile < need {
		return fmt.Errorf("open-file limit %d < %d needed for %d watchers", nofile, need, nWatchers)
	}
	tmp, err := os.MkdirTemp("", "broker-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if brokerBin == "" {
		brokerBin = filepath.Join(tmp, "broker")
		out, err := exec.Command("go", "build", "-o", brokerBin, "github.com/tunnelmesh/tunnelmesh/cmd/broker").CombinedOutput()
		if err != nil {
			return fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	dataDir := filepath.Join(tmp, "data")
	storeArgs, stopEtcd, err := startStore(sc, tmp)
	if err != nil {
		return err
	}
	defer stopEtcd()
	// etcd may still be electing its first leader: init changes nothing
	// before its store answers, so it is simply tried again.
	for attempt := 0; ; attempt++ {
		out, err := exec.Command(brokerBin, append([]string{"init", "--data-dir", dataDir}, storeArgs...)...).CombinedOutput()
		if err == nil {
			break
		}
		if attempt == 30 {
			return fmt.Errorf("broker init: %v\n%s", err, out)
		}
		time.Sleep(time.Second)
	}
	addrs := make([]string, sc.replicas)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addrs[i] = ln.Addr().String()
		ln.Close()
	}
	var cmds []*exec.Cmd
	// startReplicas starts every replica on its address; stopReplicas
	// stops them gracefully (SIGTERM), as a rollout or a scale to 0 does.
	startReplicas := func() []int {
		cmds = cmds[:0]
		var pids []int
		for i, addr := range addrs {
			args := append([]string{"serve", "--data-dir", dataDir, "--listen", addr, "--log-level", "warn",
				"--stale-after", "10m"}, storeArgs...)
			cmd := exec.Command(brokerBin, args...)
			if debugListen != "" && i == 0 {
				cmd.Args = append(cmd.Args, "--debug-listen", debugListen)
			}
			cmd.Stderr = os.Stderr
			// The broker dies with the bench, even when the bench is killed.
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				fmt.Fprintln(os.Stderr, "broker-bench: start broker:", err)
				os.Exit(1)
			}
			cmds = append(cmds, cmd)
			pids = append(pids, cmd.Process.Pid)
		}
		return pids
	}
	stopReplicas := func() {
		for _, cmd := range cmds {
			_ = cmd.Process.Signal(syscall.SIGTERM)
		}
		for _, cmd := range cmds {
			_ = cmd.Wait()
		}
	}
	pids := startReplicas()
	defer stopReplicas()
	pid := pids[0]
	// urls lists every replica, the i-th first: cluster i writes and
	// watches through replica i mod replicas, failing over to the others.
	urls := func(i int) string {
		var out []string
		for k := range addrs {
			out = append(out, "https://"+addrs[(i+k)%len(addrs)])
		}
		return strings.Join(out, ",")
	}
	ca, _ := os.ReadFile(filepath.Join(dataDir, "ca.crt"))
	adminTok, _ := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	admin, err := brokerclient.New(urls(0), ca, strings.TrimSpace(string(adminTok)))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; ; i++ {
		if admin.Healthy(ctx) == nil {
			break
		}
		if i > 100 {
			return fmt.Errorf("broker did not become ready")
		}
		time.Sleep(100 * time.Millisecond)
	}
	loadStart := loadavg()
	tok, err := admin.CreateToken(ctx, time.Hour, "bench")
	if err != nil {
		return err
	}

	var rows []row
	// Phase 0: join and register every cluster.
	clients := make([]*brokerclient.Client, nClusters)
	t0 := time.Now()
	var acks0 []time.Duration
	var ackMu sync.Mutex
	err = parallel(32, nClusters, func(i int) error {
		c, err := brokerclient.New(urls(i), ca, "")
		if err != nil {
			return err
		}
		id := fmt.Sprintf("c%04d", i)
		s := time.Now()
		_, err = c.Join(ctx, tok, api.JoinRequest{ClusterID: id,
			PodCIDRs:     []string{fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)},
			ServiceCIDRs: []string{fmt.Sprintf("172.%d.%d.0/24", 16+i/256, i%256)}})
		if err != nil {
			return fmt.Errorf("join %s: %w", id, err)
		}
		d1 := time.Since(s)
		s = time.Now()
		key := make([]byte, 32)
		key[0], key[1], key[31] = byte(i>>8), byte(i), 1 // never the all-zero key, which the broker refuses
		err = c.RegisterGateway(ctx, api.Gateway{ClusterID: id, Hostname: "gw-0", PrivateIP: "192.0.2.1",
			Port: defaults.ListenPort, PublicKey: b64(key), Active: true})
		if err != nil {
			return fmt.Errorf("register %s: %w", id, err)
		}
		ackMu.Lock()
		acks0 = append(acks0, d1, time.Since(s))
		ackMu.Unlock()
		clients[i] = c
		return nil
	})
	if err != nil {
		return err
	}
	rows = append(rows, row{name: "join + register gateway", writes: 2 * nClusters, dur: time.Since(t0), acks: acks0})

	// tr.add numbers every write; watchers report the number back.
	tr := &tracker{nWatch: int32(nWatchers)}
	write := func(c *brokerclient.Client, cl, ex int, gen int) (*track, error) {
		seq, t := tr.add()
		e := api.Export{ClusterID: fmt.Sprintf("c%04d", cl), Namespace: "bench", Name: fmt.Sprintf("svc-%d", ex),
			Type: api.TypeClusterSetIP, IPs: []string{fmt.Sprintf("172.%d.%d.%d", 16+cl/256, cl%256, 10+ex)},
			IPFamilies: []string{"IPv4"},
			Ports:      []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}, {Name: "grpc", Protocol: "TCP", Port: int32(9000 + gen)}},
			Labels:     map[string]string{"app": "bench", "bench-seq": strconv.Itoa(seq)},
			CreatedAt:  time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		err := c.PublishExport(ctx, e)
		t.acked = time.Since(t.start)
		return t, err
	}
	total := nClusters * nExports
	// Phase 1: publish every export, then withdraw them, with no watcher:
	// the store's write throughput alone.
	t1 := time.Now()
	var noWatch []*track
	var nwMu sync.Mutex
	err = parallel(nWriters, total, func(k int) error {
		cl, ex := k%nClusters, k/nClusters
		t, err := write(clients[cl], cl, ex, 0)
		nwMu.Lock()
		noWatch = append(noWatch, t)
		nwMu.Unlock()
		return err
	})
	if err != nil {
		return err
	}
	rows = append(rows, row{name: fmt.Sprintf("publish, no watchers (%d wr.)", nWriters), writes: total, dur: time.Since(t1), acks: ackTimes(noWatch)})
	t1 = time.Now()
	var wAcks []time.Duration
	err = parallel(nWriters, total, func(k int) error {
		cl, ex := k%nClusters, k/nClusters
		s := time.Now()
		err := clients[cl].WithdrawExport(ctx, fmt.Sprintf("c%04d", cl), "bench", fmt.Sprintf("svc-%d", ex))
		ackMu.Lock()
		wAcks = append(wAcks, time.Since(s))
		ackMu.Unlock()
		return err
	})
	if err != nil {
		return err
	}
	rows = append(rows, row{name: fmt.Sprintf("withdraw, no watchers (%d wr.)", nWriters), writes: total, dur: time.Since(t1), acks: wAcks})

	// Watchers: one per cluster, each on its own connection.
	var ready sync.WaitGroup
	ready.Add(nWatchers)
	tw := time.Now()
	for i := 0; i < nWatchers; i++ {
		c := clients[i%nClusters]
		if i >= nClusters {
			c, _ = brokerclient.New(urls(i), ca, clients[i%nClusters].Credential())
		}
		if light {
			go lightWatch(ctx, addrs[i%len(addrs)], ca, c.Credential(), tr, ready.Done)
			continue
		}
		go func() {
			first := true
			_ = c.Watch(ctx, 0, func(ev api.Event) error {
				tr.events.Add(1)
				tr.changes.Add(1) // Watch never passes bookmarks on
				if first && ev.Type == api.EventSnapshot {
					first = false
					ready.Done()
					return nil
				}
				if ev.Type == api.EventPut && ev.Export != nil {
					if seq, err := strconv.Atoi(ev.Export.Labels["bench-seq"]); err == nil {
						tr.saw(seq)
					}
				}
				return nil
			})
		}()
	}
	ready.Wait()
	watchUp := time.Since(tw)
	rssIdle, _ := procStatus(pid)

	// Phase 2: publish every export again with every watcher following.
	tr.mu.Lock()
	tr.writes = nil // phase 1 had no watchers to count down
	tr.mu.Unlock()
	var bulk []*track
	var bulkMu sync.Mutex
	t1 = time.Now()
	err = parallel(nWriters, total, func(k int) error {
		cl, ex := k%nClusters, k/nClusters
		t, err := write(clients[cl], cl, ex, 0)
		bulkMu.Lock()
		bulk = append(bulk, t)
		bulkMu.Unlock()
		return err
	})
	if err != nil {
		return err
	}
	bulkAckDur := time.Since(t1)
	waitSeen(bulk, 600*time.Second)
	bulkSeenDur := time.Since(t1)
	rows = append(rows, row{name: fmt.Sprintf("publish, %d watchers (%d wr.)", nWatchers, nWriters), writes: total, dur: bulkAckDur,
		acks: ackTimes(bulk), seen: seenTimes(bulk), allSeen: bulkSeenDur})
	_, hwmBulk := procStatus(pid)

	// Phase 3: steady updates at fixed rates, each for the steady duration.
	gen := 0
	for _, rate := range rates {
		var steadyT []*track
		var stMu sync.Mutex
		var wg sync.WaitGroup
		tick := time.NewTicker(time.Second / time.Duration(rate))
		t2 := time.Now()
		for k := 0; time.Since(t2) < steady; k++ {
			<-tick.C
			gen++
			wg.Add(1)
			go func(k, gen int) {
				defer wg.Done()
				cl, ex := (k*7919)%nClusters, k%nExports
				t, err := write(clients[cl], cl, ex, gen)
				if err != nil {
					fmt.Fprintln(os.Stderr, "steady write:", err)
					return
				}
				stMu.Lock()
				steadyT = append(steadyT, t)
				stMu.Unlock()
			}(k, gen)
		}
		tick.Stop()
		wg.Wait()
		steadyDur := time.Since(t2)
		waitSeen(steadyT, 120*time.Second)
		rows = append(rows, row{name: fmt.Sprintf("steady updates (%d/s)", rate), writes: len(steadyT), dur: steadyDur,
			acks: ackTimes(steadyT), seen: seenTimes(steadyT)})
	}

	// Phase 4: every gateway heartbeats with its health while every watcher
	// follows. Heartbeats are liveness only: the target is no watch event.
	var hbRes *hbResult
	if hb.phase > 0 {
		hbRes, err = heartbeatPhase(ctx, admin, clients, tr, pid, hb, nWatchers)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			hbRes.unread += max(0, metric(ca, a, "tunnelmesh_broker_heartbeat_health_unread_total"))
		}
	}
	rss, hwm := procStatus(pid)
	bcpu := 0.0
	for _, p := range pids {
		bcpu += procCPU(p)
	}

	// Phase 5: every replica stopped for a while, then back.
	var outRes *outageResult
	if outage > 0 {
		outRes, err = outagePhase(ctx, outage, addrs, stopReplicas, startReplicas, ca, func() (*track, error) {
			tr.keep.Store(true)
			defer tr.keep.Store(false)
			gen++
			return write(clients[0], 0, 0, gen)
		}, tr, nWatchers)
		if err != nil {
			return err
		}
	}
	mode := "brokerclient.Watch, full JSON decoding"
	if light {
		mode = "light: raw stream, sequence number only"
	}
	fmt.Printf("\ntunnelmesh broker benchmark — %d clusters × %d exports, %d watchers (each its own TLS connection; %s), %d CPUs, GOMAXPROCS %d\n",
		nClusters, nExports, nWatchers, mode, runtime.NumCPU(), runtime.GOMAXPROCS(0))
	if sc.kind == "etcd" {
		fmt.Printf("store: etcd, %d broker replicas; clients and watchers spread over the replicas\netcd: %s\n", sc.replicas, etcdSettings(sc))
	} else {
		fmt.Printf("store: bbolt, one broker\n")
	}
	fmt.Printf("load average at start: %s; at end: %s\n\n", loadStart, loadavg())
	fmt.Printf("%-34s %7s %8s %9s %9s %9s %12s %12s %12s\n", "phase", "writes", "seconds", "writes/s",
		"ack p50", "ack p99", "seen p50", "seen p99", "seen max")
	for _, r := range rows {
		fmt.Printf("%-34s %7d %8.2f %9.0f %9s %9s %12s %12s %12s\n", r.name, r.writes, r.dur.Seconds(),
			float64(r.writes)/r.dur.Seconds(), ms(pct(r.acks, 50)), ms(pct(r.acks, 99)),
			ms(pct(r.seen, 50)), ms(pct(r.seen, 99)), ms(pct(r.seen, 100)))
	}
	if hbRes != nil {
		hbRes.print(nClusters, nWatchers)
	}
	if outRes != nil {
		outRes.print()
	}
	fmt.Printf("\nwatchers connected (initial snapshot received by all %d): %.2f s\n", nWatchers, watchUp.Seconds())
	fmt.Printf("bulk phase: all %d writes seen by all watchers %.2f s after the first write\n", total, rows[3].allSeen.Seconds())
	fmt.Printf("events delivered to watchers: %d\n", tr.events.Load())
	fmt.Printf("broker RSS (replica 0): %.0f MiB with watchers idle, %.0f MiB peak after bulk, %.0f MiB now, %.0f MiB peak overall\n",
		kib(rssIdle), kib(hwmBulk), kib(rss), kib(hwm))
	fmt.Printf("CPU seconds: broker (all replicas) %.1f, bench (clients + watchers) %.1f\n", bcpu, selfCPU())
	if sc.kind == "etcd" {
		var conflicts, followed float64
		for _, a := range addrs {
			conflicts += metric(ca, a, "tunnelmesh_broker_commit_conflicts_total")
			followed += metric(ca, a, "tunnelmesh_broker_followed_commits_total")
		}
		fmt.Printf("commits refused because the other replica committed first (re-validated, retried): %.0f; commits applied from the other replica: %.0f\n", conflicts, followed)
	}
	verb := "decoding"
	if light {
		verb = "reading"
	}
	fmt.Printf("\"ack\" = write request to durable acknowledgement; \"seen\" = write request to the last of the %d watchers %s the event.\n", nWatchers, verb)
	return nil
}

// metric reads one unlabelled counter from a broker's /metrics (-1 if absent).
func metric(ca []byte, addr, name string) float64 {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return metricWith(hc, addr, name)
}

// metricWith is metric over a client of the caller's.
func metricWith(hc *http.Client, addr, name string) float64 {
	resp, err := hc.Get("https://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	return -1
}

type row struct {
	name       string
	writes     int
	dur        time.Duration
	acks, seen []time.Duration
	allSeen    time.Duration
}

func kib(v int64) float64 { return float64(v) / 1024 }

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func waitSeen(ts []*track, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		done := true
		for _, t := range ts {
			if t.remaining.Load() > 0 {
				done = false
				break
			}
		}
		if done {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "warning: some writes not seen by every watcher within", timeout)
}

func ackTimes(ts []*track) []time.Duration {
	out := make([]time.Duration, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.acked)
	}
	return out
}

func seenTimes(ts []*track) []time.Duration {
	out := make([]time.Duration, 0, len(ts))
	for _, t := range ts {
		if t.remaining.Load() == 0 {
			out = append(out, time.Duration(t.seen.Load()))
		} else {
			out = append(out, time.Hour) // never seen by all: counts as worst
		}
	}
	return out
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return -1
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i < 1 {
		i = 1
	}
	if i > len(s) {
		i = len(s)
	}
	return s[i-1]
}

func ms(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	if d >= time.Hour {
		return "unseen"
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

// parallel runs fn(0..n-1) on w goroutines and returns the first error.
func parallel(w, n int, fn func(int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for g := 0; g < w; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// lightWatch follows the watch stream over its own HTTP/1.1 TLS connection
// and extracts only the bench sequence number of each export PUT.
func lightWatch(ctx context.Context, addr string, ca []byte, cred string, tr *tracker, ready func()) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	var resp *http.Response
	for attempt := 0; ; attempt++ { // retried like brokerclient.Watch would
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/v1/watch?since=0", nil)
		req.Header.Set("Authorization", "Bearer "+cred)
		var err error
		resp, err = hc.Do(req)
		if err == nil {
			break
		}
		if attempt == 20 || ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "light watcher gave up:", err)
			os.Exit(1)
		}
		time.Sleep(time.Duration(100<<min(attempt, 5)) * time.Millisecond)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	marker := []byte(`"bench-seq":"`)
	first := true
	for sc.Scan() {
		line := sc.Bytes()
		tr.events.Add(1)
		if !bytes.Contains(line, []byte(`"type":"BOOKMARK"`)) {
			tr.changes.Add(1)
		}
		if first {
			first = false
			ready()
			continue
		}
		i := bytes.Index(line, marker)
		if i < 0 {
			continue
		}
		rest := line[i+len(marker):]
		j := bytes.IndexByte(rest, '"')
		if seq, err := strconv.Atoi(string(rest[:j])); err == nil {
			tr.saw(seq)
		}
	}
}

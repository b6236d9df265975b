package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
)

type hbConfig struct {
	phase, every time.Duration
	peers        int
}

type hbResult struct {
	cfg              hbConfig
	peers            int
	sent, failed     int
	dur              time.Duration
	acks             []time.Duration
	revBefore        int64
	revAfter         int64
	changes          int64 // non-bookmark events all watchers received
	events           int64 // every event, bookmarks included
	bytesOut         int64 // bytes the broker process wrote (sockets, and disk if any)
	bytesIn          int64
	brokerCPUSeconds float64
	// unread counts heartbeats the broker took as a sign of life only,
	// too busy to read their health (every replica's metric).
	unread float64
}

// procIO reads the bytes a process passed to write(2)-like and
// read(2)-like calls: for the broker that is what it sends to and takes
// from its clients (TLS included), plus any store writes.
func procIO(pid int) (wchar, rchar int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return -1, -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ": ")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "wchar":
			wchar = n
		case "rchar":
			rchar = n
		}
	}
	return wchar, rchar
}

// heartbeatPhase makes every cluster's gateway heartbeat every hb.every,
// spread evenly over the period, with a health entry per peer whose
// counters change each time, for hb.phase.
func heartbeatPhase(ctx context.Context, admin *brokerclient.Client, clients []*brokerclient.Client, tr *tracker, pid int, hb hbConfig, nWatchers int) (*hbResult, error) {
	n := len(clients)
	peers := hb.peers
	if peers < 0 {
		peers = n - 1
	}
	snap, err := admin.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	res := &hbResult{cfg: hb, peers: peers, revBefore: snap.Revision}
	// Let the steady phases' events drain before counting.
	time.Sleep(2 * time.Second)
	ch0, ev0 := tr.changes.Load(), tr.events.Load()
	w0, r0 := procIO(pid)
	cpu0 := procCPU(pid)
	start := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := fmt.Sprintf("c%04d", i)
			next := start.Add(time.Duration(int64(hb.every) * int64(i) / int64(n)))
			for round := 0; next.Before(start.Add(hb.phase)); round++ {
				t := time.NewTimer(time.Until(next))
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				next = next.Add(hb.every)
				health := make([]api.PeerHealth, 0, peers)
				for p := 0; len(health) < peers; p++ {
					if p == i {
						continue
					}
					health = append(health, api.PeerHealth{Cluster: fmt.Sprintf("c%04d", p), Status: api.StatusConnected,
						RTTMillis: 1.5 + float64(p%7), LastHandshake: time.Now().Add(-time.Duration(p%100) * time.Second).UTC(),
						RxBytes: int64(round*1000 + p), TxBytes: int64(round*2000 + p)})
				}
				s := time.Now()
				err := clients[i].Heartbeat(ctx, id, "gw-0", health)
				d := time.Since(s)
				mu.Lock()
				res.sent++
				if err != nil {
					res.failed++
					if res.failed <= 3 {
						fmt.Fprintln(os.Stderr, "heartbeat:", err)
					}
				} else {
					res.acks = append(res.acks, d)
				}
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	res.dur = time.Since(start)
	time.Sleep(time.Second) // events caused by the last heartbeats reach the watchers
	res.changes, res.events = tr.changes.Load()-ch0, tr.events.Load()-ev0
	w1, r1 := procIO(pid)
	res.bytesOut, res.bytesIn = w1-w0, r1-r0
	res.brokerCPUSeconds = procCPU(pid) - cpu0
	snap, err = admin.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	res.revAfter = snap.Revision
	return res, nil
}

func (r *hbResult) print(nClusters, nWatchers int) {
	secs := (r.dur + time.Second).Seconds()
	fmt.Printf("\nheartbeat phase: %d gateways, one heartbeat each per %s with %d peers' health, %d watchers following, %.0f s\n",
		nClusters, r.cfg.every, r.peers, nWatchers, r.cfg.phase.Seconds())
	fmt.Printf("%-44s %12s\n", "figure", "value")
	fmt.Printf("%-44s %12d\n", "heartbeats sent", r.sent)
	fmt.Printf("%-44s %12d\n", "heartbeats failed", r.failed)
	fmt.Printf("%-44s %12.0f\n", "heartbeats whose health went unread (busy)", r.unread)
	fmt.Printf("%-44s %12.1f\n", "heartbeats/s", float64(r.sent)/r.cfg.phase.Seconds())
	fmt.Printf("%-44s %12s\n", "heartbeat ack p50", ms(pct(r.acks, 50)))
	fmt.Printf("%-44s %12s\n", "heartbeat ack p99", ms(pct(r.acks, 99)))
	fmt.Printf("%-44s %12d\n", "revisions made by heartbeats", r.revAfter-r.revBefore)
	fmt.Printf("%-44s %12.3f\n", "watch events/s per watcher (bookmarks excl.)", float64(r.changes)/secs/float64(nWatchers))
	fmt.Printf("%-44s %12.3f\n", "watch lines/s per watcher (bookmarks incl.)", float64(r.events)/secs/float64(nWatchers))
	fmt.Printf("%-44s %12.0f\n", "bytes/s out of the broker", float64(r.bytesOut)/secs)
	fmt.Printf("%-44s %12.0f\n", "bytes/s into the broker (heartbeats)", float64(r.bytesIn)/secs)
	fmt.Printf("%-44s %12.2f\n", "broker CPU (cores)", r.brokerCPUSeconds/secs)
}

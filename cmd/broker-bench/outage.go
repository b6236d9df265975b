package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// outageResult is what the outage phase measured: how the clusters'
// watchers behave while every broker replica is down, and how soon the
// broker's return is felt.
type outageResult struct {
	outage      time.Duration
	watchers    int
	attempts    int64         // connections the watchers opened while no broker answered
	peakAttempt int           // most in one second
	restart     time.Duration // from start to the first ready answer
	reconnected int64         // watch streams open 10 s after the return
	peakWatch   float64       // most watch streams opened in one second after the restart
	allBack     time.Duration // from the return until every watcher's stream is open again (negative: before it)
	allSeen     bool          // every stream was open again within the sampling
	cpu         float64       // broker CPU seconds while it was sampled (from the return, ~15 s)
	ack         time.Duration // the write made as soon as the broker answered
	felt        []time.Duration
}

// outagePhase stops every broker replica, keeps its port open meanwhile
// to count the watchers' reconnect attempts (each is accepted and closed,
// as a load balancer without backends would), starts the replicas again
// and writes one change as soon as one answers: the time until each
// watcher sees it is when the return was felt.
func outagePhase(ctx context.Context, outage time.Duration, addrs []string, stop func(), start func() []int,
	ca []byte, write func() (*track, error), tr *tracker, nWatchers int) (*outageResult, error) {
	res := &outageResult{outage: outage, watchers: nWatchers}
	stop()
	var lns []net.Listener
	var perSec sync.Map // unix second -> *atomic.Int64
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return nil, fmt.Errorf("hold %s during the outage: %w", a, err)
		}
		lns = append(lns, ln)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
				v, _ := perSec.LoadOrStore(time.Now().Unix(), new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
			}
		}()
	}
	time.Sleep(outage)
	for _, ln := range lns {
		ln.Close()
	}
	perSec.Range(func(_, v any) bool {
		n := v.(*atomic.Int64).Load()
		res.attempts += n
		res.peakAttempt = max(res.peakAttempt, int(n))
		return true
	})
	t0 := time.Now()
	pids := start()
	// Open watch streams every 50 ms from the restart on: the reconnect wave.
	type sample struct {
		at time.Time
		n  float64
	}
	var samples []sample
	sampled := make(chan struct{})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	mc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	go func() {
		defer close(sampled)
		for time.Since(t0) < 20*time.Second {
			v := 0.0
			for _, a := range addrs {
				v += max(0, metricWith(mc, a, "tunnelmesh_broker_watches_open"))
			}
			samples = append(samples, sample{time.Now(), v})
			time.Sleep(50 * time.Millisecond)
		}
	}()
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for {
		resp, err := hc.Get("https://" + addrs[0] + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Since(t0) > time.Minute {
			return nil, fmt.Errorf("broker not ready a minute after its restart")
		}
		time.Sleep(10 * time.Millisecond)
	}
	back := time.Now()
	res.restart = back.Sub(t0)
	cpu0 := 0.0
	for _, p := range pids {
		cpu0 += procCPU(p)
	}
	// The change, as soon as the broker is back.
	tr.mu.Lock()
	tr.writes = nil
	tr.mu.Unlock()
	t, err := write()
	if err != nil {
		return nil, fmt.Errorf("write after the return: %w", err)
	}
	res.ack = t.acked
	<-sampled
	for _, p := range pids {
		res.cpu += procCPU(p)
	}
	res.cpu -= cpu0
	for i, s := range samples {
		if s.at.Sub(back) <= 10*time.Second {
			res.reconnected = int64(s.n)
		}
		j := i
		for j+1 < len(samples) && samples[j+1].at.Sub(s.at) <= time.Second {
			j++
		}
		res.peakWatch = max(res.peakWatch, samples[j].n-s.n)
		if res.allBack == 0 && s.n >= float64(nWatchers) {
			res.allBack = s.at.Sub(back)
			res.allSeen = true
		}
	}
	waitSeen([]*track{t}, 60*time.Second)
	for _, s := range t.seenAt() {
		res.felt = append(res.felt, s-back.Sub(t.start))
	}
	slices.Sort(res.felt)
	return res, nil
}

func (r *outageResult) print() {
	fmt.Printf("\nbroker outage of %s (every replica stopped), then back, with %d watchers following:\n", r.outage.Round(time.Second), r.watchers)
	fmt.Printf("  reconnect attempts while no broker answered: %d in all, %.0f/s on average, %d in the busiest second\n",
		r.attempts, float64(r.attempts)/r.outage.Seconds(), r.peakAttempt)
	all := "not all"
	if r.allSeen {
		all = fmt.Sprintf("all %d by %+.1f s from its first ready answer", r.watchers, r.allBack.Seconds())
	}
	fmt.Printf("  the broker answered %.2f s after its start; its watch streams open again: %d 10 s later (%s), at most %.0f opened in one second; broker CPU %.1f s from the return to 20 s after the start\n",
		r.restart.Seconds(), r.reconnected, all, r.peakWatch, r.cpu)
	fmt.Printf("  a change written as soon as it answered (acknowledged in %s) was seen by every watcher within %s of the return (p50 %s, p99 %s)\n",
		ms(r.ack), ms(pct(r.felt, 100)), ms(pct(r.felt, 50)), ms(pct(r.felt, 99)))
}

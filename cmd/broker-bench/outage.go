package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
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
	reconnected int64         // watch requests in the 10 s after the return
	peakWatch   float64       // most watch requests in one second after the return
	allBack     time.Duration // from the return until every watcher asked again (0: not all within 10 s)
	cpu         float64       // broker CPU seconds in the 10 s after the return
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
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
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
	// Watch requests per 100 ms for 10 s: the reconnect wave.
	var samples []float64
	for range 100 {
		v := 0.0
		for _, a := range addrs {
			v += metricLabelled(ca, a, "tunnelmesh_broker_requests_total", `route="GET /v1/watch"`)
		}
		samples = append(samples, v)
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range pids {
		res.cpu += procCPU(p)
	}
	res.cpu -= cpu0
	res.reconnected = int64(samples[len(samples)-1])
	for i := range samples {
		j := min(i+10, len(samples)-1)
		res.peakWatch = max(res.peakWatch, samples[j]-samples[i])
		if res.allBack == 0 && samples[i] >= float64(nWatchers) {
			res.allBack = time.Duration(i+1) * 100 * time.Millisecond
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
	all := "not all within 10 s"
	if r.allBack > 0 {
		all = fmt.Sprintf("all %d within %.1f s", r.watchers, r.allBack.Seconds())
	}
	fmt.Printf("  after the broker answered again (%.2f s after its start): %d watch requests in 10 s (%s), at most %.0f in one second; broker CPU %.1f s in those 10 s\n",
		r.restart.Seconds(), r.reconnected, all, r.peakWatch, r.cpu)
	fmt.Printf("  a change written as soon as it answered (acknowledged in %s) was seen by every watcher within %s of the return (p50 %s, p99 %s)\n",
		ms(r.ack), ms(pct(r.felt, 100)), ms(pct(r.felt, 50)), ms(pct(r.felt, 99)))
}

// metricLabelled sums a counter's series whose labels contain label.
func metricLabelled(ca []byte, addr, name, label string) float64 {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get("https://" + addr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, name+"{") && strings.Contains(l, label) {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

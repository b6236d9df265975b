// Package netprobe is what meshctl's test pods run (through the netclient
// image): connectivity steps with timings, and a TCP throughput and latency
// benchmark. Results are JSON lines that meshctl reads back from the pods'
// logs. Standard library only: it is linked into a FROM-scratch image.
package netprobe

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"time"
)

// Modes: the first byte a benchmark client sends.
const (
	modeThroughput = 't'
	modeLatency    = 'l'
	// LatencyMessage is the size of one latency probe (and its echo).
	LatencyMessage = 64
)

// Serve answers benchmark clients on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener) error {
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go serveConn(c)
	}
}

func serveConn(c net.Conn) {
	defer c.Close()
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case modeThroughput:
		// Count what arrives until the client half-closes, then say how much.
		n, _ := io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(n))
		_, _ = c.Write(b[:])
	case modeLatency:
		buf := make([]byte, LatencyMessage)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}
}

// Throughput is one throughput run: bytes the server received over the time
// from the first byte sent to the server's count arriving back.
type Throughput struct {
	Kind    string  `json:"kind"` // "throughput"
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	Gbps    float64 `json:"gbps"`
}

// MeasureThroughput streams to addr for d over one TCP connection.
func MeasureThroughput(ctx context.Context, addr string, d time.Duration) (Throughput, error) {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return Throughput{}, err
	}
	defer c.Close()
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return Throughput{}, errors.New("not a TCP connection")
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	start := time.Now()
	if _, err := tc.Write([]byte{modeThroughput}); err != nil {
		return Throughput{}, fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, 128<<10)
	for end := start.Add(d); time.Now().Before(end); {
		if _, err := tc.Write(buf); err != nil {
			return Throughput{}, fmt.Errorf("send: %w", err)
		}
		if ctx.Err() != nil {
			return Throughput{}, ctx.Err()
		}
	}
	if err := tc.CloseWrite(); err != nil {
		return Throughput{}, err
	}
	var nb [8]byte
	if _, err := io.ReadFull(tc, nb[:]); err != nil {
		return Throughput{}, fmt.Errorf("read the server's count: %w", err)
	}
	secs := time.Since(start).Seconds()
	n := int64(binary.BigEndian.Uint64(nb[:]))
	return Throughput{Kind: "throughput", Bytes: n, Seconds: secs, Gbps: Gbps(n, secs)}, nil
}

// Gbps is n bytes over secs seconds in gigabits per second.
func Gbps(n int64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(n) * 8 / secs / 1e9
}

// Latency is one latency run: round trips of LatencyMessage bytes over one
// TCP connection, one at a time.
type Latency struct {
	Kind      string  `json:"kind"` // "latency"
	Samples   int     `json:"samples"`
	P50Micros float64 `json:"p50Micros"`
	P99Micros float64 `json:"p99Micros"`
	MinMicros float64 `json:"minMicros"`
	MaxMicros float64 `json:"maxMicros"`
}

// MeasureLatency makes n round trips to addr.
func MeasureLatency(ctx context.Context, addr string, n int) (Latency, error) {
	if n < 1 {
		return Latency{}, errors.New("want at least one sample")
	}
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return Latency{}, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte{modeLatency}); err != nil {
		return Latency{}, err
	}
	r := bufio.NewReader(c)
	msg, back := make([]byte, LatencyMessage), make([]byte, LatencyMessage)
	rtts := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return Latency{}, err
		}
		if _, err := io.ReadFull(r, back); err != nil {
			return Latency{}, err
		}
		rtts = append(rtts, time.Since(start))
	}
	return Summarize(rtts), nil
}

// Summarize turns round-trip times into a Latency.
func Summarize(rtts []time.Duration) Latency {
	s := append([]time.Duration(nil), rtts...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	if len(s) == 0 {
		return Latency{Kind: "latency"}
	}
	return Latency{Kind: "latency", Samples: len(s), P50Micros: us(Percentile(s, 50)), P99Micros: us(Percentile(s, 99)),
		MinMicros: us(s[0]), MaxMicros: us(s[len(s)-1])}
}

// Percentile of sorted (nearest rank): the smallest value with at least p
// percent of the samples at or below it.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted)) + 0.999999)
	if rank < 1 {
		rank = 1
	}
	if rank > len(sorted) {
		rank = len(sorted)
	}
	return sorted[rank-1]
}

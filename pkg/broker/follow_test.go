package broker_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker"
)

// TestWatchSnapshotWhenRevisionTooOld: a watcher whose revision is older
// than the retained log (or newer than the broker's) gets a SNAPSHOT first,
// then changes.
func TestWatchSnapshotWhenRevisionTooOld(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", func(c *broker.Config) { c.LogRetention = 5 })
	ctx := ctxT(t)
	a, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	for i := 0; i < 12; i++ {
		if err := a.PublishExport(ctx, export("east", "ns", fmt.Sprintf("s%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for i, since := range []int64{2, 1000} {
		col := watchAll(t, a, since)
		ev := col.until(t, "first event", 10*time.Second, func(api.Event) bool { return true })
		if ev.Type != api.EventSnapshot || ev.Snapshot == nil || len(ev.Snapshot.Exports) != 12+i || ev.Revision != int64(13+i) {
			t.Fatalf("since=%d: first event %s rev %d, want SNAPSHOT of %d exports at %d", since, ev.Type, ev.Revision, 12+i, 13+i)
		}
		if err := a.PublishExport(ctx, export("east", "ns", fmt.Sprintf("after-%d", since))); err != nil {
			t.Fatal(err)
		}
		ev = col.until(t, "next change", 10*time.Second, func(api.Event) bool { return true })
		if ev.Type != api.EventPut || ev.Export == nil || ev.Export.Name != fmt.Sprintf("after-%d", since) {
			t.Fatalf("since=%d: after the snapshot got %+v", since, ev)
		}
	}
	// Within the retained log: changes only, no snapshot.
	col := watchAll(t, a, 12)
	ev := col.until(t, "first event", 10*time.Second, func(api.Event) bool { return true })
	if ev.Type != api.EventPut || ev.Revision != 13 {
		t.Fatalf("since=12: got %s at %d, want PUT at 13", ev.Type, ev.Revision)
	}
}

// TestFollowDeliversWholeState: Follow calls back with the full state after
// the initial snapshot and after changes.
func TestFollowDeliversWholeState(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	a, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	states := make(chan api.Snapshot, 100)
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Follow(fctx, func(s api.Snapshot) { states <- s }) }()
	wait := func(what string, pred func(api.Snapshot) bool) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case s := <-states:
				if pred(s) {
					return
				}
			case <-deadline:
				t.Fatalf("Follow never delivered %s", what)
			}
		}
	}
	wait("initial state", func(s api.Snapshot) bool { return len(s.Clusters) == 1 })
	b, _ := tb.join("west", "10.2.0.0/16", "10.102.0.0/16")
	if err := b.RegisterGateway(ctx, gateway("west", "gw", 2)); err != nil {
		t.Fatal(err)
	}
	wait("west and its gateway", func(s api.Snapshot) bool {
		return len(s.Clusters) == 2 && len(s.Gateways) == 1 && s.Gateways[0].ClusterID == "west"
	})
	if err := tb.adminClient().RemoveCluster(ctx, "west"); err != nil {
		t.Fatal(err)
	}
	wait("west removed", func(s api.Snapshot) bool { return len(s.Clusters) == 1 && len(s.Gateways) == 0 })
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Follow returned %v, want context.Canceled", err)
	}
}

// TestWatchOutlivesReadTimeout: an HTTP/1.1 watch stream keeps going past
// the server's ReadTimeout, carrying bookmarks.
func TestWatchOutlivesReadTimeout(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", func(c *broker.Config) {
		c.ReadTimeout = 300 * time.Millisecond
		c.BookmarkInterval = 100 * time.Millisecond
	})
	a, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	hc := httpClient(t, tb) // HTTP/1.1: custom TLS config, no ForceAttemptHTTP2
	req, _ := http.NewRequestWithContext(ctxT(t), "GET", tb.url+"/v1/watch?since=1", nil)
	req.Header.Set("Authorization", "Bearer "+a.Credential())
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 1 {
		t.Fatalf("want HTTP/1.1, got %s", resp.Proto)
	}
	sc := bufio.NewScanner(resp.Body)
	start := time.Now()
	n := 0
	for time.Since(start) < 1500*time.Millisecond {
		if !sc.Scan() {
			t.Fatalf("stream ended after %v (%d lines): %v", time.Since(start), n, sc.Err())
		}
		n++
	}
}

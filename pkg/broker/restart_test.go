package broker_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
)

// TestRestartKeepsStateAndWatchResumes restarts the broker on the same data
// dir and port while a watch is running: every record and the revision
// survive, and the watch resumes from its revision with each change seen
// exactly once and no gap.
func TestRestartKeepsStateAndWatchResumes(t *testing.T) {
	dir := initDir(t)
	tb := startBroker(t, dir, "127.0.0.1:0", nil)
	ctx := ctxT(t)
	a, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	b, _ := tb.join("west", "10.2.0.0/16", "10.102.0.0/16")
	if err := a.RegisterGateway(ctx, gateway("east", "gw", 1)); err != nil {
		t.Fatal(err)
	}

	// The watcher starts at the current revision (not 0) so that it gets
	// only changes, and records every revision it sees.
	start, err := b.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b.WatchIdleTimeout = 2 * time.Second
	view := brokerclient.NewView()
	view.Apply(api.Event{Type: api.EventSnapshot, Revision: start.Revision, Snapshot: start})
	type seen struct {
		rev int64
		typ string
	}
	evs := make(chan seen, 10000)
	wctx, cancel := context.WithCancel(context.Background())
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		_ = b.Watch(wctx, start.Revision, func(ev api.Event) error {
			view.Apply(ev)
			evs <- seen{ev.Revision, ev.Type}
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-wdone })

	for i := 0; i < 20; i++ {
		if err := a.PublishExport(ctx, export("east", "ns", fmt.Sprintf("svc-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	before, err := a.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	addr := tb.addr
	tb.stop()

	tb2 := startBroker(t, dir, addr, nil)
	a2 := tb2.client(a.Credential()) // the credential survives the restart
	after, err := a2.Snapshot(ctx)
	if err != nil {
		t.Fatalf("snapshot after restart: %v", err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("state differs after restart:\nbefore %+v\nafter  %+v", before, after)
	}
	for i := 20; i < 30; i++ {
		if err := a2.PublishExport(ctx, export("east", "ns", fmt.Sprintf("svc-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := a2.WithdrawExport(ctx, "east", "ns", "svc-0"); err != nil {
		t.Fatal(err)
	}
	final, err := a2.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := start.Revision + 1
	deadline := time.After(30 * time.Second)
	for want <= final.Revision {
		select {
		case s := <-evs:
			if s.typ == api.EventSnapshot {
				t.Fatalf("watch fell back to a snapshot at %d; the log should have covered it", s.rev)
			}
			if s.rev != want {
				t.Fatalf("watch saw revision %d, want %d (gap or repeat)", s.rev, want)
			}
			want++
		case <-deadline:
			t.Fatalf("watch stuck before revision %d of %d", want, final.Revision)
		}
	}
	if got := view.Snapshot(); !reflect.DeepEqual(stripVolatile(got), stripVolatile(*final)) {
		t.Fatalf("watched view differs from the broker:\nview %+v\nbroker %+v", got, *final)
	}
}

// stripVolatile normalises times that JSON round trips change in location only.
func stripVolatile(s api.Snapshot) api.Snapshot {
	for i := range s.Clusters {
		s.Clusters[i].JoinedAt = s.Clusters[i].JoinedAt.UTC()
	}
	for i := range s.Exports {
		s.Exports[i].CreatedAt = s.Exports[i].CreatedAt.UTC()
	}
	return s
}

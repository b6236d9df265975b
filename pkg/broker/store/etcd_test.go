package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store/etcdtest"
)

func TestEtcdCommitLoadTrimAndFollow(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	s := c.Open(t, "/t1")
	st, err := s.Load(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	// A second handle (another replica) follows the first one's commits.
	other := c.Open(t, "/t1")
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	follow := other.Follow(fctx, st.Version)

	base := st.Version
	for rev := int64(1); rev <= 10; rev++ {
		ch := []store.Change{
			{Revision: rev, Kind: store.KindExport, Key: fmt.Sprintf("ns/e%d", rev), Value: []byte(`{"n":1}`)},
			{Kind: store.KindCredential, Key: "c", Value: []byte(fmt.Sprint(rev))},
		}
		last := rev
		if rev == 10 {
			ch = append(ch, store.Change{Revision: 11, Kind: store.KindExport, Key: "ns/e1"}) // delete
			last = 11
		}
		if base, err = s.Commit(ctx, base, ch, last, 4); err != nil {
			t.Fatal(err)
		}
	}
	st, err = other.Load(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if st.Revision != 11 || st.Version != base {
		t.Fatalf("revision %d version %d, want 11 and %d", st.Revision, st.Version, base)
	}
	if len(st.Records[store.KindExport]) != 9 || st.Records[store.KindExport]["ns/e1"] != nil {
		t.Fatalf("exports: %v", st.Records[store.KindExport])
	}
	if string(st.Records[store.KindCredential]["c"]) != "10" {
		t.Fatalf("credential: %q", st.Records[store.KindCredential]["c"])
	}
	var revs []int64
	for _, ch := range st.Log {
		revs = append(revs, ch.Revision)
	}
	// Trimmed by commit: entries ending at or below 11-4 are gone; the
	// last commit (10, 11) is one entry.
	if fmt.Sprint(revs) != "[8 9 10 11]" {
		t.Fatalf("log revisions %v, want [8 9 10 11]", revs)
	}
	if st, _ = other.Load(ctx, 2); len(st.Log) != 2 || st.Log[0].Revision != 10 {
		t.Fatalf("limited load: %+v", st.Log)
	}

	// Every commit arrives once, in order, with its private changes.
	for rev := int64(1); rev <= 10; rev++ {
		select {
		case b := <-follow:
			want := rev
			if rev == 10 {
				want = 11
			}
			if b.Reset || b.Revision != want {
				t.Fatalf("batch %+v, want revision %d", b, want)
			}
			var cred string
			var first int64
			for _, ch := range b.Changes {
				if ch.Kind == store.KindCredential {
					cred = string(ch.Value)
				}
				if first == 0 {
					first = ch.Revision
				}
			}
			if cred != fmt.Sprint(rev) || first != rev {
				t.Fatalf("batch %d: changes %+v", rev, b.Changes)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no followed commit %d", rev)
		}
	}
}

func TestEtcdConflictAndLimits(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	a, b := c.Open(t, "/t2"), c.Open(t, "/t2")
	st, err := a.Load(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	put := func(s *store.Etcd, base int64, key string) (int64, error) {
		return s.Commit(ctx, base, []store.Change{{Revision: 1, Kind: store.KindCluster, Key: key, Value: []byte(`{}`)}}, 1, 0)
	}
	if _, err := put(a, st.Version, "a"); err != nil {
		t.Fatal(err)
	}
	// b validated against the same state: refused.
	if _, err := put(b, st.Version, "b"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second commit on the same base: %v, want ErrConflict", err)
	}
	// A private-only commit moves the base too.
	st, _ = b.Load(ctx, 0)
	if _, err := a.Commit(ctx, st.Version, []store.Change{{Kind: store.KindToken, Key: "t", Value: []byte(`{}`)}}, 1, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Commit(ctx, st.Version, []store.Change{{Kind: store.KindToken, Key: "u", Value: []byte(`{}`)}}, 1, 0); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("commit after a private-only commit: %v, want ErrConflict", err)
	}
	st, _ = b.Load(ctx, 0)
	if st.Revision != 1 || len(st.Records[store.KindCluster]) != 1 || st.Records[store.KindCluster]["a"] == nil || len(st.Records[store.KindToken]) != 1 {
		t.Fatalf("state %+v", st.Records)
	}
	big := make([]store.Change, a.MaxChanges()+10)
	for i := range big {
		big[i] = store.Change{Kind: store.KindToken, Key: fmt.Sprint(i), Value: []byte(`{}`)}
	}
	if _, err := a.Commit(ctx, st.Version, big, 1, 0); !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("oversized commit: %v, want ErrTooLarge", err)
	}
}

func TestEtcdOpenRefusesMissingStore(t *testing.T) {
	c := etcdtest.Start(t, 1)
	_, err := store.OpenEtcd(context.Background(), store.EtcdConfig{Endpoints: c.Endpoints(), Prefix: "/none"}, false)
	if !errors.Is(err, store.ErrNoStore) {
		t.Fatalf("open of an empty prefix: %v, want ErrNoStore", err)
	}
}

// TestEtcdFollowSurvivesKilledMembers kills each member of a 3-member
// cluster in turn (one of them serves the follower's watch): every commit
// made meanwhile still reaches the follower, in order.
func TestEtcdFollowSurvivesKilledMembers(t *testing.T) {
	c := etcdtest.Start(t, 3)
	ctx := context.Background()
	w, f := c.Open(t, "/k"), c.Open(t, "/k")
	st, err := w.Load(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	follow := f.Follow(fctx, st.Version)
	base := st.Version
	for i := range 3 {
		c.Kill(i)
		rev := int64(i + 1)
		begin := time.Now()
		for {
			cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
			v, err := w.Commit(cctx, base, []store.Change{{Revision: rev, Kind: store.KindCluster, Key: fmt.Sprint(i), Value: []byte(`{}`)}}, rev, 0)
			ccancel()
			if err == nil {
				base = v
				break
			}
			if time.Since(begin) > time.Minute {
				t.Fatalf("commit %d with member %d down: %v", rev, i, err)
			}
			// A commit in flight when the leader died times out without
			// saying whether it happened (etcd's request timeout): read.
			st, lerr := w.Load(ctx, 0)
			if lerr == nil && st.Revision == rev {
				base = st.Version
				break
			}
			if lerr == nil {
				base = st.Version
			}
		}
		select {
		case b := <-follow:
			if b.Reset || b.Revision != rev {
				t.Fatalf("followed %+v, want revision %d", b, rev)
			}
			t.Logf("member %d down: commit %d followed %s after the kill", i, rev, time.Since(begin).Round(time.Millisecond))
		case <-time.After(30 * time.Second):
			t.Fatalf("commit %d not followed with member %d down", rev, i)
		}
		c.Restart(i)
		c.WaitHealthy(60 * time.Second)
	}
}

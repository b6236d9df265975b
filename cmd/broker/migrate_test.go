package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store/etcdtest"
)

func loadAll(t *testing.T, s store.Store) *store.State {
	t.Helper()
	st, err := s.Load(context.Background(), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	st.Version = 0 // the store's own position, not content
	return st
}

// TestMigrateRoundTrip copies a used bbolt store into etcd and back: the
// records, revision and watch log arrive unchanged, a cluster's credential
// keeps working against a broker on the etcd copy, and a migrate into a
// store that is not empty is refused.
func TestMigrateRoundTrip(t *testing.T) {
	brokertest.SkipUnlessBolt(t)
	ec := etcdtest.Start(t, 1)
	endpoints := strings.Join(ec.Endpoints(), ",")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	dir := brokertest.InitDir(t)
	tb := brokertest.Start(t, brokertest.Options{Dir: dir})
	east, _ := tb.Join("east", "10.1.0.0/16", "10.101.0.0/16")
	tb.Join("west", "10.2.0.0/16", "10.102.0.0/16")
	for i := range 5 {
		e := api.Export{ClusterID: "east", Namespace: "ns", Name: fmt.Sprintf("s%d", i), Type: api.TypeClusterSetIP,
			Ports: []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}}, IPs: []string{"10.101.0.10"}, IPFamilies: []string{"IPv4"}, CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
		if err := east.PublishExport(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := east.WithdrawExport(ctx, "east", "ns", "s0"); err != nil {
		t.Fatal(err)
	}
	mid, err := east.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tb.Stop()

	out, err := run(t, "migrate", "--from", "bolt:"+dir, "--to", "etcd:/moved", "--etcd-endpoints", endpoints, "--etcd-max-txn-ops", "16")
	if err != nil {
		t.Fatalf("migrate to etcd: %v\n%s", err, out)
	}
	bst, err := store.OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := loadAll(t, bst)
	bst.Close()
	est := ec.Open(t, "/moved")
	if got := loadAll(t, est); !reflect.DeepEqual(got, want) {
		t.Fatalf("etcd copy differs:\ngot  %+v\nwant %+v", got, want)
	}
	if _, err := run(t, "migrate", "--from", "bolt:"+dir, "--to", "etcd:/moved", "--etcd-endpoints", endpoints); err == nil ||
		!strings.Contains(err.Error(), "not empty") {
		t.Fatalf("migrate into a used store: %v, want a refusal", err)
	}

	// A broker on the etcd copy (PKI dir as before) knows east's
	// credential and resumes a watch from before the move.
	eb := brokertest.Start(t, brokertest.Options{Dir: dir, Store: est})
	c := eb.Client(east.Credential())
	got, err := c.Snapshot(ctx)
	if err != nil || got.Revision != mid.Revision || len(got.Exports) != 4 {
		t.Fatalf("snapshot on the etcd copy: %+v, %v", got, err)
	}
	var revs []int64
	wctx, wcancel := context.WithCancel(ctx)
	_ = c.Watch(wctx, mid.Revision-3, func(ev api.Event) error {
		revs = append(revs, ev.Revision)
		if ev.Revision == mid.Revision {
			wcancel()
		}
		return nil
	})
	if fmt.Sprint(revs) != fmt.Sprint([]int64{mid.Revision - 2, mid.Revision - 1, mid.Revision}) {
		t.Fatalf("watch from %d on the etcd copy saw %v", mid.Revision-3, revs)
	}
	eb.Stop()

	back := filepath.Join(t.TempDir(), "back")
	if out, err := run(t, "migrate", "--from", "etcd:/moved", "--to", "bolt:"+back, "--etcd-endpoints", endpoints); err != nil {
		t.Fatalf("migrate back: %v\n%s", err, out)
	}
	bst, err = store.OpenBolt(back)
	if err != nil {
		t.Fatal(err)
	}
	defer bst.Close()
	if got := loadAll(t, bst); !reflect.DeepEqual(got, want) {
		t.Fatalf("bbolt copy back differs:\ngot  %+v\nwant %+v", got, want)
	}
}

// TestInitOnEtcd: init puts the PKI in the data dir and the admin
// credential's hash into etcd; a second init against the same prefix from
// another directory is refused (the replicas share one PKI), and etcd flags
// without --store etcd are refused.
func TestInitOnEtcd(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	endpoints := strings.Join(ec.Endpoints(), ",")
	dir := t.TempDir()
	if out, err := run(t, "init", "--data-dir", dir, "--store", "etcd", "--etcd-endpoints", endpoints, "--etcd-prefix", "/i"); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, store.FileName)); err == nil {
		t.Error("init on etcd made a bbolt file too")
	}
	st, err := ec.Open(t, "/i").Load(context.Background(), 0)
	if err != nil || len(st.Records[store.KindMeta]["adminHash"]) == 0 {
		t.Fatalf("no admin credential in etcd: %v %+v", err, st)
	}
	_, err = run(t, "init", "--data-dir", t.TempDir(), "--store", "etcd", "--etcd-endpoints", endpoints, "--etcd-prefix", "/i")
	if err == nil || !strings.Contains(err.Error(), "already holds an initialised clusterset") {
		t.Fatalf("second init on the same prefix: %v", err)
	}
	if _, err := run(t, "init", "--data-dir", t.TempDir(), "--etcd-endpoints", endpoints); err == nil || !strings.Contains(err.Error(), "--store etcd") {
		t.Fatalf("etcd flags with the bolt store: %v", err)
	}
}

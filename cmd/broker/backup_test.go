package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
)

func publish(t *testing.T, b *brokertest.Broker, cluster, pod, svc, name string) {
	t.Helper()
	c, _ := b.Join(cluster, pod, svc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.PublishExport(ctx, api.Export{ClusterID: cluster, Namespace: "shop", Name: name, Type: api.TypeClusterSetIP,
		Ports: []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}}, IPs: []string{strings.Replace(svc, "0.0/16", "0.10", 1)}, // a ClusterIP of its own
		IPFamilies: []string{"IPv4"}, CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
}

func exportNames(t *testing.T, b *brokertest.Broker) []string {
	t.Helper()
	s, err := b.Admin().Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range s.Exports {
		out = append(out, e.Name)
	}
	return out
}

// A backup taken while the broker serves (through its API) and one taken
// while it is stopped (from the file) both restore a damaged store.
func TestBackupRestore(t *testing.T) {
	brokertest.SkipUnlessBolt(t) // backups copy the bbolt file; an etcd store is backed up with etcdctl snapshot
	b := brokertest.Start(t, brokertest.Options{})
	dir := b.Dir
	publish(t, b, "east", "10.1.0.0/16", "10.101.0.0/16", "cart")
	online := filepath.Join(t.TempDir(), "online.db")
	out, err := run(t, "backup", "--data-dir", dir, "--out", online, "--url", b.URL)
	if err != nil || !strings.Contains(out, "through the broker serving it") || !strings.Contains(out, "1 clusters") {
		t.Fatalf("online backup: %q, %v", out, err)
	}
	// Restore refuses while the broker holds the store.
	if _, err := run(t, "restore", "--data-dir", dir, "--from", online); err == nil || !strings.Contains(err.Error(), "stop it") {
		t.Fatalf("restore while serving: %v", err)
	}
	publish(t, b, "west", "10.2.0.0/16", "10.102.0.0/16", "pay")
	b.Stop()
	offline := filepath.Join(t.TempDir(), "offline.db")
	out, err = run(t, "backup", "--data-dir", dir, "--out", offline)
	if err != nil || !strings.Contains(out, "from the data dir") || !strings.Contains(out, "2 clusters") {
		t.Fatalf("offline backup: %q, %v", out, err)
	}

	// The store is damaged: the broker refuses it, saying to restore.
	if err := os.Truncate(filepath.Join(dir, store.FileName), 8192); err != nil {
		t.Fatal(err)
	}
	if _, err := store.OpenBolt(dir); err == nil || !strings.Contains(err.Error(), "broker restore") {
		t.Fatalf("damaged store: %v", err)
	}
	// A damaged or foreign file is not accepted as a backup.
	junk := filepath.Join(t.TempDir(), "junk.db")
	os.WriteFile(junk, []byte(strings.Repeat("junk", 4096)), 0o600)
	if _, err := run(t, "restore", "--data-dir", dir, "--from", junk); err == nil || !strings.Contains(err.Error(), "not usable") {
		t.Fatalf("restore from junk: %v", err)
	}

	for _, tc := range []struct {
		from string
		want string
	}{{online, "cart"}, {offline, "cart,pay"}} {
		out, err := run(t, "restore", "--data-dir", dir, "--from", tc.from)
		if err != nil || !strings.Contains(out, "kept as") {
			t.Fatalf("restore %s: %q, %v", tc.from, out, err)
		}
		rb := brokertest.Start(t, brokertest.Options{Dir: dir})
		if got := strings.Join(exportNames(t, rb), ","); got != tc.want {
			t.Fatalf("after restoring %s: exports %s, want %s", filepath.Base(tc.from), got, tc.want)
		}
		rb.Stop()
	}
	kept, _ := filepath.Glob(filepath.Join(dir, store.FileName+".replaced-*"))
	if len(kept) == 0 {
		t.Fatal("the replaced store was not kept")
	}
}

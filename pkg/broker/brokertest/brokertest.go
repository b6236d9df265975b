// Package brokertest runs a real broker (real TLS, a real bbolt file or a
// real etcd) on loopback for the tests of every package that talks to one.
//
// $TUNNELMESH_BROKER_STORE=etcd makes every broker of the test process use
// a store in a real single-member etcd (started per data directory) instead
// of bbolt, so a package's whole suite runs against either store.
package brokertest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store/etcdtest"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerpki"
)

// Options tune Start; the zero value is a fresh broker on a free port.
type Options struct {
	// Dir is an initialised data directory to serve; empty: a new one.
	Dir string
	// Addr to listen on; empty: 127.0.0.1:0.
	Addr string
	// Tweak changes the configuration before the broker is made.
	Tweak func(*broker.Config)
	// Store to serve instead of Dir's; the caller closes it.
	Store store.Store
}

// Broker is a running broker. Stop (also run at cleanup) ends it.
type Broker struct {
	t          testing.TB
	Dir        string
	Addr       string // host:port it listens on
	URL        string // https://host:port
	CA         []byte // PEM of the broker's CA
	AdminToken string
	Broker     *broker.Broker

	cancel context.CancelFunc
	done   chan error
}

// EnvStore names the store brokers of the test process use: "bolt"
// (default) or "etcd".
const EnvStore = "TUNNELMESH_BROKER_STORE"

// UsesEtcd reports whether this process's brokers store in etcd.
func UsesEtcd() bool { return os.Getenv(EnvStore) == "etcd" }

// SkipUnlessBolt skips a test about the bbolt file itself in an etcd run.
func SkipUnlessBolt(t testing.TB) {
	t.Helper()
	if UsesEtcd() {
		t.Skipf("tests the bbolt store; %s=etcd", EnvStore)
	}
}

// etcdPrefix is where InitDir puts a test's etcd store.
const etcdPrefix = "/tunnelmesh"

// etcdOf maps a data dir made by InitDir to its etcd cluster.
var etcdOf sync.Map

// InitDir makes a fresh data directory as `broker init` does (with
// $TUNNELMESH_BROKER_STORE=etcd: the PKI there, the store in a new etcd).
func InitDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	opts := broker.InitOptions{DataDir: dir}
	if UsesEtcd() {
		c := etcdtest.Start(t, 1)
		st := c.Open(t, etcdPrefix)
		opts.Store = st
		etcdOf.Store(dir, c)
	}
	if _, err := broker.Init(opts); err != nil {
		t.Fatalf("brokertest: init: %v", err)
	}
	return dir
}

// OpenStore opens the store of a data dir made by InitDir.
func OpenStore(t testing.TB, dir string) (store.Store, error) {
	if c, ok := etcdOf.Load(dir); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return store.OpenEtcd(ctx, store.EtcdConfig{Endpoints: c.(*etcdtest.Cluster).Endpoints(),
			Prefix: etcdPrefix, MaxTxnOps: etcdtest.MaxTxnOps}, false)
	}
	return store.OpenBolt(dir)
}

// Start serves a broker until the test ends.
func Start(t testing.TB, o Options) *Broker {
	t.Helper()
	if o.Dir == "" {
		o.Dir = InitDir(t)
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	st, owned := o.Store, o.Store == nil
	if owned {
		var err error
		if st, err = OpenStore(t, o.Dir); err != nil {
			t.Fatalf("brokertest: open store: %v", err)
		}
	}
	closeStore := func() {
		if owned {
			st.Close()
		}
	}
	cfg := broker.Config{Store: st, BookmarkInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if o.Tweak != nil {
		o.Tweak(&cfg)
	}
	b, err := broker.New(cfg)
	if err != nil {
		closeStore()
		t.Fatalf("brokertest: new broker: %v", err)
	}
	tlsConf, err := brokerpki.ServerTLS(o.Dir)
	if err != nil {
		closeStore()
		t.Fatalf("brokertest: %v", err)
	}
	var ln net.Listener
	for i := 0; ; i++ { // the listener of a broker just stopped may take a moment to go
		ln, err = net.Listen("tcp", o.Addr)
		if err == nil || i > 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		closeStore()
		t.Fatalf("brokertest: listen: %v", err)
	}
	ca, err := os.ReadFile(filepath.Join(o.Dir, brokerpki.FileCACert))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := os.ReadFile(filepath.Join(o.Dir, brokerpki.FileAdminToken))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb := &Broker{t: t, Dir: o.Dir, Addr: ln.Addr().String(), CA: ca, AdminToken: strings.TrimSpace(string(admin)),
		Broker: b, cancel: cancel, done: make(chan error, 1)}
	tb.URL = "https://" + tb.Addr
	go func() {
		err := b.Serve(ctx, ln, tlsConf)
		closeStore()
		tb.done <- err
	}()
	t.Cleanup(tb.Stop)
	return tb
}

// Stop ends the broker gracefully and waits for it; calling it again does nothing.
func (tb *Broker) Stop() {
	if tb.cancel == nil {
		return
	}
	tb.cancel()
	tb.cancel = nil
	select {
	case err := <-tb.done:
		if err != nil {
			tb.t.Errorf("brokertest: serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		tb.t.Errorf("brokertest: broker did not stop")
	}
}

// Client returns a client presenting cred (empty: none).
func (tb *Broker) Client(cred string) *brokerclient.Client {
	tb.t.Helper()
	c, err := brokerclient.New(tb.URL, tb.CA, cred)
	if err != nil {
		tb.t.Fatalf("brokertest: client: %v", err)
	}
	return c
}

// Admin returns a client with the admin credential.
func (tb *Broker) Admin() *brokerclient.Client { return tb.Client(tb.AdminToken) }

// JoinToken creates a one-hour join token.
func (tb *Broker) JoinToken(description string) string {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := tb.Admin().CreateToken(ctx, time.Hour, description)
	if err != nil {
		tb.t.Fatalf("brokertest: create token: %v", err)
	}
	return tok
}

// Join joins cluster id with one pod and one service CIDR and returns a
// client holding the cluster's own credential, and the broker's answer.
func (tb *Broker) Join(id, pod, svc string) (*brokerclient.Client, *api.JoinResponse) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := tb.Client("").Join(ctx, tb.JoinToken("test "+id),
		api.JoinRequest{ClusterID: id, PodCIDRs: []string{pod}, ServiceCIDRs: []string{svc}})
	if err != nil {
		tb.t.Fatalf("brokertest: join %s: %v", id, err)
	}
	return tb.Client(resp.Credential), resp
}

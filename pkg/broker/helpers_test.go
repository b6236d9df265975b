package broker_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
)

// testBroker is a real broker on loopback with a real bbolt file.
type testBroker struct {
	t      *testing.T
	dir    string
	addr   string
	url    string
	ca     []byte
	admin  string
	b      *broker.Broker
	cancel context.CancelFunc
	done   chan error
}

// initDir runs `broker init` logic in a fresh temp dir.
func initDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := broker.Init(broker.InitOptions{DataDir: dir}); err != nil {
		t.Fatalf("init: %v", err)
	}
	return dir
}

// startBroker serves dir on addr ("127.0.0.1:0" for a fresh port).
func startBroker(t *testing.T, dir, addr string, tweak func(*broker.Config)) *testBroker {
	t.Helper()
	st, err := store.OpenBolt(dir)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	cfg := broker.Config{Store: st, BookmarkInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if tweak != nil {
		tweak(&cfg)
	}
	b, err := broker.New(cfg)
	if err != nil {
		st.Close()
		t.Fatalf("new broker: %v", err)
	}
	tlsConf, err := broker.ServerTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	for i := 0; ; i++ { // the old listener of a restart may take a moment to go
		ln, err = net.Listen("tcp", addr)
		if err == nil || i > 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, broker.FileCACert))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := os.ReadFile(filepath.Join(dir, broker.FileAdminToken))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb := &testBroker{t: t, dir: dir, addr: ln.Addr().String(), ca: ca, admin: strings.TrimSpace(string(admin)),
		b: b, cancel: cancel, done: make(chan error, 1)}
	tb.url = "https://" + tb.addr
	go func() {
		err := b.Serve(ctx, ln, tlsConf)
		st.Close()
		tb.done <- err
	}()
	t.Cleanup(tb.stop)
	return tb
}

func (tb *testBroker) stop() {
	if tb.cancel == nil {
		return
	}
	tb.cancel()
	tb.cancel = nil
	select {
	case err := <-tb.done:
		if err != nil {
			tb.t.Errorf("broker serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		tb.t.Errorf("broker did not stop")
	}
}

func (tb *testBroker) client(cred string) *brokerclient.Client {
	tb.t.Helper()
	c, err := brokerclient.New(tb.url, tb.ca, cred)
	if err != nil {
		tb.t.Fatal(err)
	}
	return c
}

func (tb *testBroker) adminClient() *brokerclient.Client { return tb.client(tb.admin) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// join creates a token and joins cluster id with the given CIDRs.
func (tb *testBroker) join(id, pod, svc string) (*brokerclient.Client, *api.JoinResponse) {
	tb.t.Helper()
	ctx := ctxT(tb.t)
	tok, err := tb.adminClient().CreateToken(ctx, time.Hour, "test "+id)
	if err != nil {
		tb.t.Fatalf("create token: %v", err)
	}
	c := tb.client("")
	resp, err := c.Join(ctx, tok, api.JoinRequest{ClusterID: id, PodCIDRs: []string{pod}, ServiceCIDRs: []string{svc}})
	if err != nil {
		tb.t.Fatalf("join %s: %v", id, err)
	}
	return c, resp
}

func apiCode(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// wgKey returns a syntactically valid WireGuard key, distinct per n.
func wgKey(n byte) string {
	b := make([]byte, 32)
	for i := range b {
		b[i] = n
	}
	return encodeB64(b)
}

func gateway(cluster, host string, key byte) api.Gateway {
	return api.Gateway{ClusterID: cluster, Hostname: host, PrivateIP: "192.0.2.10", PublicIP: "198.51.100.7",
		Port: 51820, PublicKey: wgKey(key), Active: true}
}

func export(cluster, ns, name string) api.Export {
	return api.Export{ClusterID: cluster, Namespace: ns, Name: name, Type: api.TypeClusterSetIP,
		Ports: []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}}, IPs: []string{"10.96.0.10"},
		IPFamilies: []string{"IPv4"}, CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// collector gathers watch events for assertions.
type collector struct {
	ch chan api.Event
}

func watchAll(t *testing.T, c *brokerclient.Client, since int64) *collector {
	col := &collector{ch: make(chan api.Event, 100000)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Watch(ctx, since, func(ev api.Event) error { col.ch <- ev; return nil })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return col
}

// until reads events until pred holds or the timeout passes.
func (col *collector) until(t *testing.T, what string, timeout time.Duration, pred func(api.Event) bool) api.Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-col.ch:
			if pred(ev) {
				return ev
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
			return api.Event{}
		}
	}
}

func asAPI(err error, target **api.Error) bool { return errors.As(err, target) }

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// httpClient trusts the test broker's CA.
func httpClient(t *testing.T, tb *testBroker) *http.Client {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(tb.ca) {
		t.Fatal("bad CA")
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

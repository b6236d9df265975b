package broker_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
)

// testBroker is a real broker on loopback with a real bbolt file.
type testBroker struct {
	*brokertest.Broker
	t     *testing.T
	dir   string
	addr  string
	url   string
	ca    []byte
	admin string
	b     *broker.Broker
}

// initDir runs `broker init` logic in a fresh temp dir.
func initDir(t *testing.T) string { return brokertest.InitDir(t) }

// startBroker serves dir on addr ("127.0.0.1:0" for a fresh port).
func startBroker(t *testing.T, dir, addr string, tweak func(*broker.Config)) *testBroker {
	t.Helper()
	b := brokertest.Start(t, brokertest.Options{Dir: dir, Addr: addr, Tweak: tweak})
	return &testBroker{Broker: b, t: t, dir: b.Dir, addr: b.Addr, url: b.URL, ca: b.CA, admin: b.AdminToken, b: b.Broker}
}

func (tb *testBroker) stop() { tb.Stop() }

func (tb *testBroker) client(cred string) *brokerclient.Client { return tb.Client(cred) }

func (tb *testBroker) adminClient() *brokerclient.Client { return tb.Admin() }

// join creates a token and joins cluster id with the given CIDRs.
func (tb *testBroker) join(id, pod, svc string) (*brokerclient.Client, *api.JoinResponse) {
	tb.t.Helper()
	return tb.Join(id, pod, svc)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
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

// clusterIPs are ClusterIPs inside the service CIDRs the tests give each
// cluster (east 10.101.0.0/16, west 10.102.0.0/16, north 10.103.0.0/16).
var clusterIPs = map[string]string{"east": "10.101.0.10", "west": "10.102.0.10", "north": "10.103.0.10"}

func export(cluster, ns, name string) api.Export {
	e := api.Export{ClusterID: cluster, Namespace: ns, Name: name, Type: api.TypeClusterSetIP,
		Ports:      []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}},
		IPFamilies: []string{"IPv4"}, CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if ip, ok := clusterIPs[cluster]; ok {
		e.IPs = []string{ip}
	}
	return e
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

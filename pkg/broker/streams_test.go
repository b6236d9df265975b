package broker_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/pprof"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker"
)

// handlersRunning counts goroutines inside the named broker handler.
func handlersRunning(name string) int { return goroutinesIn("broker.(*Broker)." + name + "(") }

// goroutinesIn counts the goroutines whose stack holds every one of the
// function names given (as "pkg.(*T).f(").
func goroutinesIn(funcs ...string) int {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
	n := 0
	for _, stack := range strings.Split(buf.String(), "\n\n") {
		all := true
		for _, f := range funcs {
			all = all && strings.Contains(stack, f)
		}
		if all {
			n++
		}
	}
	return n
}

// stuckClient sends one GET and never reads the answer; its receive buffer
// is tiny so the broker's writes block once the kernel buffers fill.
func stuckClient(t *testing.T, tb *testBroker, path, cred string) {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	raw, err := d.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(tb.ca)
	conn := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}})
	t.Cleanup(func() { conn.Close() })
	if err := conn.Handshake(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer %s\r\n\r\n", path, cred)
}

// Clients that never read must not pin handlers (and the snapshot each
// holds) forever: every response has a write deadline.
func TestUnreadSnapshotsAreDropped(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", func(c *broker.Config) {
		c.ResponseTimeout = 2 * time.Second
		c.WatchWriteTimeout = 2 * time.Second
	})
	ctx := ctxT(t)
	a, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	// About 8 MB of state, far more than the socket buffers hold.
	for i := 0; i < 40; i++ {
		e := export("east", "big", fmt.Sprintf("svc-%d", i))
		e.Type, e.IPs, e.IPFamilies = api.TypeHeadless, nil, nil
		for j := 0; j < 2000; j++ {
			e.Endpoints = append(e.Endpoints, api.Endpoint{Addresses: []string{fmt.Sprintf("10.1.%d.%d", j/250, j%250+1)},
				Hostname: fmt.Sprintf("pod-with-a-longish-name-%d", j), Ready: true})
		}
		if err := a.PublishExport(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 20; i++ {
		stuckClient(t, tb, "/v1/snapshot", tb.admin)
	}
	// Watchers that never read their first chunk (the snapshot) are dropped too.
	for i := 0; i < 5; i++ {
		stuckClient(t, tb, "/v1/watch", tb.admin)
	}
	// The handlers are stuck writing at first ...
	testkit.Until(t, 10*time.Second, "snapshot handlers blocked on unread clients", func() bool { return handlersRunning("handleSnapshot") > 0 })
	// ... and all end within the deadline, though the clients are still connected.
	testkit.Until(t, 15*time.Second, "stuck snapshot handlers to end", func() bool { return handlersRunning("handleSnapshot") == 0 })
	testkit.Until(t, 15*time.Second, "stuck watch handlers to end", func() bool { return handlersRunning("handleWatch") == 0 })
}

// openWatch starts a raw watch stream and returns its response.
func openWatch(t *testing.T, tb *testBroker, cred string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tb.url+"/v1/watch", nil)
	req.Header.Set("Authorization", "Bearer "+cred)
	hc := httpClient(t, tb)
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestWatchStreamsCappedPerCredential(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", func(c *broker.Config) { c.MaxWatchesPerCredential = 2 })
	a, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	w, _ := tb.join("west", "10.2.0.0/16", "10.102.0.0/16")
	first := openWatch(t, tb, a.Credential())
	openWatch(t, tb, a.Credential())
	third := openWatch(t, tb, a.Credential())
	if third.StatusCode == http.StatusOK {
		t.Fatal("a third stream of one credential was accepted; want 429")
	}
	body, _ := io.ReadAll(third.Body)
	if third.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), api.CodeTooManyRequests) ||
		!strings.Contains(string(body), "2 open watch streams") {
		t.Fatalf("third stream of one credential: %s %s; want 429 saying the limit", third.Status, body)
	}
	if r := openWatch(t, tb, w.Credential()); r.StatusCode != http.StatusOK {
		t.Fatalf("another credential's stream: %s", r.Status)
	}
	// Closing a stream frees its slot.
	first.Body.Close()
	testkit.Until(t, 10*time.Second, "a freed slot", func() bool {
		r := openWatch(t, tb, a.Credential())
		r.Body.Close()
		return r.StatusCode == http.StatusOK
	})
}

// A removed cluster's open stream ends at once instead of receiving more.
func TestWatchEndsWhenClusterRemoved(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	a, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	resp := openWatch(t, tb, a.Credential())
	if resp.StatusCode != http.StatusOK {
		t.Fatal(resp.Status)
	}
	ended := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
		}
		ended <- sc.Err()
	}()
	time.Sleep(300 * time.Millisecond) // the stream is open and getting bookmarks
	if err := tb.adminClient().RemoveCluster(ctx, "east"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	case <-time.After(3 * time.Second):
		t.Fatal("the removed cluster's watch stream is still open 3 s later")
	}
	// Its credential no longer opens one.
	if r := openWatch(t, tb, a.Credential()); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("watch with the removed cluster's credential: %s", r.Status)
	}
}

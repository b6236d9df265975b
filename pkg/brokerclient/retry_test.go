package brokerclient_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerpki"
)

// A join whose answer is lost after the broker made it (a proxy or a
// replica gone between the commit and the answer) left the cluster joined
// and its credential unknown: the client gave up on a POST it had sent,
// and joining again was refused ("cluster exists"). The client now sends
// the write again with the same Idempotency-Key and gets the answer.
func TestJoinAnswerLostIsRetried(t *testing.T) {
	b := brokertest.Start(t, brokertest.Options{})
	target, _ := url.Parse(b.URL)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b.CA)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	var mu sync.Mutex
	var keys []string
	proxy := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/join" {
			rp.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		keys = append(keys, r.Header.Get(api.HeaderIdempotencyKey))
		first := len(keys) == 1
		mu.Unlock()
		if !first {
			rp.ServeHTTP(w, r)
			return
		}
		// The broker gets the join and answers; its answer is lost.
		body, _ := io.ReadAll(r.Body)
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, b.URL+r.URL.Path, bytes.NewReader(body))
		req.Header = r.Header.Clone()
		resp, err := rp.Transport.RoundTrip(req)
		if err != nil {
			t.Errorf("proxy: %v", err)
		} else {
			resp.Body.Close()
		}
		panic(http.ErrAbortHandler)
	}))
	cert, err := tls.LoadX509KeyPair(filepath.Join(b.Dir, brokerpki.FileServerCert), filepath.Join(b.Dir, brokerpki.FileServerKey))
	if err != nil {
		t.Fatal(err)
	}
	proxy.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	proxy.StartTLS()
	defer proxy.Close()

	c, err := brokerclient.New(proxy.URL, b.CA, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	tok := b.JoinToken("lost answer")
	jr, err := c.Join(ctx, tok, api.JoinRequest{ClusterID: "east", PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.101.0.0/16"}})
	if err != nil {
		t.Fatalf("join whose first answer was lost: %v", err)
	}
	if _, err := b.Client(jr.Credential).Snapshot(ctx); err != nil {
		t.Fatalf("the credential the retry got: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keys) < 2 || keys[0] == "" || keys[1] != keys[0] {
		t.Errorf("join attempts carried keys %q; want one key, sent again", keys)
	}
	toks, err := b.Admin().ListTokens(ctx)
	if err != nil || len(toks) != 1 || toks[0].Uses != 1 {
		t.Errorf("token uses after the retried join: %+v (%v); want 1", toks, err)
	}
}

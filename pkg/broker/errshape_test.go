package broker_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker"
)

// do sends one request and returns the status, headers and decoded error.
func do(t *testing.T, hc *http.Client, method, url, auth, ctype, body string) (*http.Response, api.Error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var ae api.Error
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(raw, &ae); err != nil || ae.Code == "" || ae.Message == "" {
			t.Fatalf("%s %s: status %d, body not a JSON error: %q", method, url, resp.StatusCode, raw)
		}
	}
	return resp, ae
}

// TestSlowBodyTimesOut: a client that sends headers and then stalls in the
// body gets 408 once the read timeout passes, and the message names no
// socket address of either end.
func TestSlowBodyTimesOut(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", func(c *broker.Config) { c.ReadTimeout = 500 * time.Millisecond })
	a, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(tb.ca)
	conn, err := tls.Dial("tcp", tb.addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	partial := `{"privateIP":"192.0.2.1",`
	fmt.Fprintf(conn, "PUT /v1/clusters/east/gateways/gw HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n%s", tb.addr, a.Credential(), partial)
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response to a stalled body: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var ae api.Error
	if err := json.Unmarshal(raw, &ae); err != nil {
		t.Fatalf("status %d, body not a JSON error: %q", resp.StatusCode, raw)
	}
	if resp.StatusCode != http.StatusRequestTimeout || ae.Code != "RequestTimeout" {
		t.Fatalf("got %d %+v, want 408 RequestTimeout", resp.StatusCode, ae)
	}
	_, brokerPort, _ := net.SplitHostPort(tb.addr)
	_, clientPort, _ := net.SplitHostPort(conn.LocalAddr().String())
	for _, leak := range []string{"127.0.0.1", ":" + brokerPort, ":" + clientPort, "i/o timeout", "tcp"} {
		if strings.Contains(string(raw), leak) {
			t.Errorf("408 body leaks %q: %s", leak, raw)
		}
	}
}

// TestJoinChecksTokenFirst: without a valid join token the answer is 401,
// whatever is wrong with the body.
func TestJoinChecksTokenFirst(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	hc := httpClient(t, tb)
	revoked, err := tb.adminClient().CreateToken(ctx, 0, "to revoke")
	if err != nil {
		t.Fatal(err)
	}
	toks, err := tb.adminClient().ListTokens(ctx)
	if err != nil || len(toks) != 1 {
		t.Fatalf("tokens: %v %v", toks, err)
	}
	if err := tb.adminClient().RevokeToken(ctx, toks[0].ID); err != nil {
		t.Fatal(err)
	}
	unknown := "tmj.0123456789abcdef." + strings.Repeat("A", 43)
	good, err := tb.adminClient().CreateToken(ctx, 0, "good")
	if err != nil {
		t.Fatal(err)
	}
	bodies := map[string][2]string{
		"bad CIDR":     {"application/json", `{"clusterID":"west","podCIDRs":["10.2.0.0/33"],"serviceCIDRs":["10.102.0.0/16"]}`},
		"bad JSON":     {"application/json", `{"clusterID":`},
		"unknown key":  {"application/json", `{"clusterID":"west","admin":true}`},
		"content type": {"text/plain", `{}`},
	}
	for name, body := range bodies {
		for tokName, tok := range map[string]string{"unknown": unknown, "revoked": revoked} {
			resp, ae := do(t, hc, "POST", tb.url+"/v1/join", "Bearer "+tok, body[0], body[1])
			if resp.StatusCode != http.StatusUnauthorized || ae.Code != api.CodeUnauthorized {
				t.Errorf("%s token, %s: got %d %+v, want 401", tokName, name, resp.StatusCode, ae)
			}
		}
		// A good token reaches the body checks.
		resp, ae := do(t, hc, "POST", tb.url+"/v1/join", "Bearer "+good, body[0], body[1])
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode < 400 {
			t.Errorf("good token, %s: got %d %+v, want a body error", name, resp.StatusCode, ae)
		}
	}
}

// TestBearerSchemeCaseInsensitive: RFC 9110 auth schemes ignore case.
func TestBearerSchemeCaseInsensitive(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	a, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	hc := httpClient(t, tb)
	for _, scheme := range []string{"Bearer", "bearer", "BEARER", "bEaReR"} {
		resp, ae := do(t, hc, "GET", tb.url+"/v1/snapshot", scheme+" "+a.Credential(), "", "")
		if resp.StatusCode != http.StatusOK {
			t.Errorf("scheme %q: got %d %+v", scheme, resp.StatusCode, ae)
		}
		resp, ae = do(t, hc, "GET", tb.url+"/v1/tokens", scheme+" "+tb.admin, "", "")
		if resp.StatusCode != http.StatusOK {
			t.Errorf("admin, scheme %q: got %d %+v", scheme, resp.StatusCode, ae)
		}
	}
	if resp, _ := do(t, hc, "GET", tb.url+"/v1/snapshot", "Basic "+a.Credential(), "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("Basic scheme: got %d", resp.StatusCode)
	}
}

// TestWrongMethod: a known path with another method is 405 with Allow; an
// unknown path stays 404.
func TestWrongMethod(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	hc := httpClient(t, tb)
	for _, tc := range []struct {
		method, path, allow string
	}{
		{"POST", "/healthz", "GET, HEAD"},
		{"DELETE", "/readyz", "GET, HEAD"},
		{"PUT", "/metrics", "GET, HEAD"},
		{"GET", "/v1/join", "POST"},
		{"PUT", "/v1/tokens", "GET, HEAD, POST"},
		{"GET", "/v1/tokens/abc", "DELETE"},
		{"POST", "/v1/watch", "GET, HEAD"},
		{"PATCH", "/v1/clusters/east/gateways/gw", "PUT, DELETE"},
		{"GET", "/v1/clusters/east/gateways/gw/heartbeat", "POST"},
		{"POST", "/v1/clusters/east/exports/ns/svc", "PUT, DELETE"},
		{"GET", "/v1/clusters/east", "DELETE"},
	} {
		resp, ae := do(t, hc, tc.method, tb.url+tc.path, "Bearer "+tb.admin, "application/json", "")
		if resp.StatusCode != http.StatusMethodNotAllowed || ae.Code != "MethodNotAllowed" || resp.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: got %d %+v Allow %q, want 405 Allow %q", tc.method, tc.path, resp.StatusCode, ae,
				resp.Header.Get("Allow"), tc.allow)
		}
	}
	for _, path := range []string{"/v2/join", "/v1/nothing", "/v1/clusters/east/other"} {
		if resp, ae := do(t, hc, "GET", tb.url+path, "", "", ""); resp.StatusCode != http.StatusNotFound || ae.Code != api.CodeNotFound {
			t.Errorf("GET %s: got %d %+v, want 404", path, resp.StatusCode, ae)
		}
	}
}

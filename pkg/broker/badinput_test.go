package broker_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// TestBadInputRefused sends malformed, oversize, unknown-field, wrongly
// typed and unauthenticated requests: each gets a 4xx with a JSON error,
// the broker stays up and nothing is stored.
func TestBadInputRefused(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	a, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	cred := a.Credential()
	tok, err := tb.adminClient().CreateToken(ctx, 0, "bad input")
	if err != nil {
		t.Fatal(err)
	}
	before, err := a.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hc := httpClient(t, tb)
	gwURL := tb.url + "/v1/clusters/east/gateways/gw"
	exURL := tb.url + "/v1/clusters/east/exports/ns/svc"
	goodGW, _ := json.Marshal(gateway("east", "gw", 1))
	big := `{"clusterID":"east","namespace":"ns","name":"svc","type":"ClusterSetIP","annotations":{"a":"` + strings.Repeat("x", 2<<20) + `"}}`
	cases := []struct {
		name, method, url, ctype, auth, body string
		status                               int
		code, field                          string
	}{
		{"malformed JSON", "PUT", gwURL, "application/json", cred, `{"hostname":`, 400, api.CodeBadRequest, ""},
		{"not an object", "PUT", gwURL, "application/json", cred, `[1,2]`, 400, api.CodeBadRequest, ""},
		{"trailing data", "PUT", gwURL, "application/json", cred, string(goodGW) + `{}`, 400, api.CodeBadRequest, ""},
		{"empty body", "PUT", gwURL, "application/json", cred, ``, 400, api.CodeBadRequest, ""},
		{"unknown field", "PUT", gwURL, "application/json", cred, `{"hostname":"gw","privateIP":"192.0.2.1","port":51820,"bogus":1}`, 400, api.CodeBadRequest, "bogus"},
		{"wrong type", "PUT", gwURL, "application/json", cred, `{"port":"51820"}`, 400, api.CodeBadRequest, "port"},
		{"bad key", "PUT", gwURL, "application/json", cred, `{"privateIP":"192.0.2.1","port":51820,"publicKey":"abc"}`, 400, api.CodeInvalid, "publicKey"},
		{"bad port", "PUT", gwURL, "application/json", cred, `{"privateIP":"192.0.2.1","port":70000}`, 400, api.CodeInvalid, "port"},
		{"bad IP", "PUT", gwURL, "application/json", cred, `{"privateIP":"300.1.1.1","port":1}`, 400, api.CodeInvalid, "privateIP"},
		{"body cluster mismatch", "PUT", gwURL, "application/json", cred, `{"clusterID":"west","privateIP":"192.0.2.1","port":1}`, 400, api.CodeInvalid, "clusterID"},
		{"oversize", "PUT", exURL, "application/json", cred, big, 413, api.CodeTooLarge, ""},
		{"wrong content type", "PUT", gwURL, "text/plain", cred, string(goodGW), 415, api.CodeUnsupportedMedia, ""},
		{"no content type", "PUT", gwURL, "", cred, string(goodGW), 415, api.CodeUnsupportedMedia, ""},
		{"no credential", "PUT", gwURL, "application/json", "", string(goodGW), 401, api.CodeUnauthorized, ""},
		{"garbage credential", "PUT", gwURL, "application/json", "garbage", string(goodGW), 401, api.CodeUnauthorized, ""},
		{"forged cluster credential", "PUT", gwURL, "application/json", "tmc.east." + strings.Repeat("A", 43), string(goodGW), 401, api.CodeUnauthorized, ""},
		{"forged admin credential", "POST", tb.url + "/v1/tokens", "application/json", "tma." + strings.Repeat("A", 43), `{}`, 401, api.CodeUnauthorized, ""},
		{"join token as credential", "PUT", gwURL, "application/json", tok, string(goodGW), 401, api.CodeUnauthorized, ""},
		{"cluster credential as join token", "POST", tb.url + "/v1/join", "application/json", cred, `{"clusterID":"west","podCIDRs":["10.2.0.0/16"],"serviceCIDRs":["10.102.0.0/16"]}`, 401, api.CodeUnauthorized, ""},
		{"join unknown field", "POST", tb.url + "/v1/join", "application/json", tok, `{"clusterID":"west","podCIDRs":["10.2.0.0/16"],"serviceCIDRs":["10.102.0.0/16"],"admin":true}`, 400, api.CodeBadRequest, "admin"},
		{"join bad CIDR", "POST", tb.url + "/v1/join", "application/json", tok, `{"clusterID":"west","podCIDRs":["10.2.0.0/33"],"serviceCIDRs":["10.102.0.0/16"]}`, 400, api.CodeInvalid, "podCIDRs[0]"},
		{"bad export type", "PUT", exURL, "application/json", cred, `{"type":"ExternalName"}`, 400, api.CodeInvalid, "type"},
		// Validation gaps of issue 7: each was accepted with 2xx.
		{"key in another case", "PUT", gwURL, "application/json", cred, `{"privateIP":"192.0.2.1","Port":51820,"publicKey":"` + wgKey(9) + `"}`, 400, api.CodeBadRequest, "Port"},
		{"duplicate key", "PUT", gwURL, "application/json", cred, `{"privateIP":"192.0.2.1","port":51820,"port":51821,"publicKey":"` + wgKey(9) + `"}`, 400, api.CodeBadRequest, "port"},
		{"join key in another case", "POST", tb.url + "/v1/join", "application/json", tok, `{"ClusterId":"west","podCIDRs":["10.2.0.0/16"],"serviceCIDRs":["10.102.0.0/16"]}`, 400, api.CodeBadRequest, "ClusterId"},
		{"join IPv4-mapped prefix over east's", "POST", tb.url + "/v1/join", "application/json", tok, `{"clusterID":"west","podCIDRs":["::ffff:10.1.0.0/112"],"serviceCIDRs":["10.102.0.0/16"]}`, 400, api.CodeInvalid, "podCIDRs[0]"},
		{"join IPv4-mapped prefix over the tunnel CIDR", "POST", tb.url + "/v1/join", "application/json", tok, `{"clusterID":"west","podCIDRs":["10.2.0.0/16"],"serviceCIDRs":["::ffff:100.127.0.0/120"]}`, 400, api.CodeInvalid, "serviceCIDRs[0]"},
		{"join loopback", "POST", tb.url + "/v1/join", "application/json", tok, `{"clusterID":"west","podCIDRs":["10.2.0.0/16"],"serviceCIDRs":["127.0.0.0/8"]}`, 400, api.CodeInvalid, "serviceCIDRs[0]"},
		{"join multicast", "POST", tb.url + "/v1/join", "application/json", tok, `{"clusterID":"west","podCIDRs":["224.0.0.0/4"],"serviceCIDRs":["10.102.0.0/16"]}`, 400, api.CodeInvalid, "podCIDRs[0]"},
		{"join default route", "POST", tb.url + "/v1/join", "application/json", tok, `{"clusterID":"west","podCIDRs":["0.0.0.0/0"],"serviceCIDRs":["10.102.0.0/16"]}`, 400, api.CodeInvalid, "podCIDRs[0]"},
		{"join IPv6 link-local", "POST", tb.url + "/v1/join", "application/json", tok, `{"clusterID":"west","podCIDRs":["fe80::/64"],"serviceCIDRs":["10.102.0.0/16"]}`, 400, api.CodeInvalid, "podCIDRs[0]"},
		{"all-zero WireGuard key", "PUT", gwURL, "application/json", cred, `{"privateIP":"192.0.2.1","port":51820,"publicKey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`, 400, api.CodeInvalid, "publicKey"},
		{"unspecified gateway IP", "PUT", gwURL, "application/json", cred, `{"privateIP":"0.0.0.0","port":51820,"publicKey":"` + wgKey(9) + `"}`, 400, api.CodeInvalid, "privateIP"},
		{"export endpoint port without protocol", "PUT", exURL, "application/json", cred, `{"type":"Headless","endpoints":[{"addresses":["10.1.0.5"],"ports":[{"port":80}]}]}`, 400, api.CodeInvalid, "endpoints[0].ports[0].protocol"},
		{"export duplicate port", "PUT", exURL, "application/json", cred, `{"type":"ClusterSetIP","createdAt":"2026-01-02T03:04:05Z","ports":[{"name":"a","protocol":"TCP","port":80},{"name":"b","protocol":"TCP","port":80}]}`, 400, api.CodeInvalid, "ports[1]"},
		{"export two IPv4 IPs", "PUT", exURL, "application/json", cred, `{"type":"ClusterSetIP","createdAt":"2026-01-02T03:04:05Z","ips":["10.96.0.1","10.96.0.2"]}`, 400, api.CodeInvalid, "ips[1]"},
		{"export zoned endpoint", "PUT", exURL, "application/json", cred, `{"type":"Headless","createdAt":"2026-01-02T03:04:05Z","endpoints":[{"addresses":["fe80::1%eth0"]}]}`, 400, api.CodeInvalid, "endpoints[0].addresses[0]"},
		{"bad since", "GET", tb.url + "/v1/watch?since=-3", "", cred, ``, 400, api.CodeBadRequest, "since"},
		{"unknown path", "GET", tb.url + "/v2/whatever", "", cred, ``, 404, api.CodeNotFound, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx, tc.method, tc.url, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", "Bearer "+tc.auth)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			var ae api.Error
			if err := json.Unmarshal(body, &ae); err != nil {
				t.Fatalf("status %d, body not a JSON error: %q", resp.StatusCode, body)
			}
			if resp.StatusCode != tc.status || ae.Code != tc.code || ae.Field != tc.field {
				t.Fatalf("got %d %+v, want %d %s field %q", resp.StatusCode, ae, tc.status, tc.code, tc.field)
			}
			if ae.Message == "" {
				t.Fatal("error without a message")
			}
		})
	}
	after, err := a.Snapshot(ctx)
	if err != nil {
		t.Fatalf("broker unhealthy after bad input: %v", err)
	}
	if after.Revision != before.Revision || len(after.Clusters) != 1 || len(after.Gateways) != 0 || len(after.Exports) != 0 {
		t.Fatalf("bad input changed state: %+v", after)
	}
}

package validate

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// FuzzDecodeValidate feeds arbitrary bodies to the strict decoder and the
// validators of every request type. It must never panic; a body that is
// accepted must re-encode to a body that decodes to the same value and is
// accepted again. The seeds run in every `go test`.
func FuzzDecodeValidate(f *testing.F) {
	seeds := []struct {
		kind byte
		body string
	}{
		{0, `{"clusterID":"east","podCIDRs":["10.1.0.0/16"],"serviceCIDRs":["10.101.0.0/16"],"labels":{"region":"eu"}}`},
		{0, `{"clusterID":"East","podCIDRs":["10.1.0.1/16"]}`},
		{0, `{"clusterID":"a","podCIDRs":["fd00::/64"],"serviceCIDRs":["fd01::/108"]}`},
		{1, `{"clusterID":"east","hostname":"node-1.example","privateIP":"192.0.2.1","publicIP":"198.51.100.1","port":51820,"publicKey":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=","active":true,"health":[{"cluster":"west","status":"connected","rttMillis":1.5}]}`},
		{1, `{"port":"x"}`},
		{1, `{"hostname":"-bad-","privateIP":"::1","port":1}`},
		{2, `{"clusterID":"east","namespace":"shop","name":"cart","type":"ClusterSetIP","ports":[{"name":"http","protocol":"TCP","port":80}],"ips":["10.96.0.1"],"ipFamilies":["IPv4"],"sessionAffinity":"ClientIP","sessionAffinityTimeoutSeconds":10800,"createdAt":"2026-01-02T03:04:05Z"}`},
		{2, `{"clusterID":"east","namespace":"shop","name":"db","type":"Headless","endpoints":[{"addresses":["10.1.2.3"],"hostname":"db-0","ready":true}]}`},
		{2, `{"type":"Headless","endpoints":[{"addresses":[]}]}`},
		{3, `{"health":[{"cluster":"west","status":"error","reason":"no handshake"}]}`},
		{4, `{"ttlSeconds":3600,"description":"x"}`},
		{4, `{"ttlSeconds":-1}`},
		{0, `{"clusterID":"east"} {}`},
		{1, `{"unknown":true}`},
		{2, "\x00\xff"},
		{3, ``},
		// Strict keys: case variants, repeats (also after unescaping and in
		// maps and nested lists), invalid UTF-8.
		{0, `{"ClusterId":"east","podCIDRs":["10.1.0.0/16"],"serviceCIDRs":["10.101.0.0/16"]}`},
		{0, `{"clusterID":"east","clusterID":"west","podCIDRs":["10.1.0.0/16"],"serviceCIDRs":["10.101.0.0/16"]}`},
		{0, `{"clusterID":"east","\u0063lusterID":"west","podCIDRs":["10.1.0.0/16"],"serviceCIDRs":["10.101.0.0/16"]}`},
		{0, `{"clusterID":"east","podCIDRs":["10.1.0.0/16"],"serviceCIDRs":["10.101.0.0/16"],"labels":{"a":"1","A":"2","a":"3"}}`},
		{3, `{"health":[{"cluster":"west","status":"connected","Status":"error"}]}`},
		{1, `{"publicKey":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=","public\u212aey":"x","privateIP":"192.0.2.1","port":1}`},
		{0, "{\"clusterID\":\"e\xffst\"}"},
		{2, `{"annotations":{"a":"x\"}{,:\\","a":"y"},"createdAt":"2026-01-02T03:04:05Z","type":"Headless"}`},
		// Unroutable and IPv4-mapped CIDRs.
		{0, `{"clusterID":"west","podCIDRs":["::ffff:10.1.0.0/112"],"serviceCIDRs":["10.102.0.0/16"]}`},
		{0, `{"clusterID":"west","podCIDRs":["127.0.0.0/8"],"serviceCIDRs":["224.0.0.0/4"]}`},
		{0, `{"clusterID":"west","podCIDRs":["169.254.0.0/16"],"serviceCIDRs":["fe80::/10"]}`},
		{0, `{"clusterID":"west","podCIDRs":["0.0.0.0/0"],"serviceCIDRs":["::/0"]}`},
		{0, `{"clusterID":"west","podCIDRs":["::1/128"],"serviceCIDRs":["::/128"]}`},
		// Gateways: all-zero key, unspecified and zoned addresses.
		{1, `{"privateIP":"192.0.2.1","port":51820,"publicKey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`},
		{1, `{"privateIP":"0.0.0.0","publicIP":"::","port":51820,"publicKey":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}`},
		{1, `{"privateIP":"fe80::1%eth0","port":51820,"publicKey":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}`},
		// Exports: no createdAt, repeated ports, names and families, zones.
		{2, `{"namespace":"shop","name":"cart","type":"ClusterSetIP","ports":[{"protocol":"TCP","port":80}]}`},
		{2, `{"namespace":"shop","name":"cart","type":"ClusterSetIP","createdAt":"2026-01-02T03:04:05Z","ports":[{"name":"a","protocol":"TCP","port":80},{"name":"b","protocol":"TCP","port":80}]}`},
		{2, `{"namespace":"shop","name":"cart","type":"ClusterSetIP","createdAt":"2026-01-02T03:04:05Z","ports":[{"name":"a","protocol":"TCP","port":80},{"name":"a","protocol":"UDP","port":80}]}`},
		{2, `{"namespace":"shop","name":"cart","type":"ClusterSetIP","createdAt":"2026-01-02T03:04:05Z","ips":["10.96.0.1","10.96.0.2"]}`},
		{2, `{"namespace":"shop","name":"cart","type":"ClusterSetIP","createdAt":"2026-01-02T03:04:05Z","ips":["fd00::1","10.96.0.2"],"ipFamilies":["IPv6","IPv4"]}`},
		{2, `{"namespace":"shop","name":"cart","type":"ClusterSetIP","createdAt":"2026-01-02T03:04:05Z","ips":["fe80::1%eth0"]}`},
		{2, `{"namespace":"shop","name":"db","type":"Headless","createdAt":"0001-01-01T00:00:00Z","endpoints":[{"addresses":["::ffff:10.1.2.3"]}]}`},
		{2, `{"namespace":"shop","name":"db","type":"Headless","createdAt":"2026-01-02T03:04:05Z","endpoints":[{"addresses":["127.0.0.1","169.254.0.1"]}]}`},
		{2, `{"namespace":"shop","name":"cart","type":"ClusterSetIP","createdAt":"2026-01-02T03:04:05+02:00","ips":["0.0.0.0","ff02::1"]}`},
	}
	for _, s := range seeds {
		f.Add(s.kind, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, kind byte, body []byte) {
		newV, check := target(kind)
		v := newV()
		_ = strictKeys(body, reflect.TypeOf(v)) // total on any input, not only valid JSON
		if err := Decode(bytes.NewReader(body), v, 1<<20); err != nil {
			if err.Code == "" || err.Message == "" {
				t.Fatalf("error without code or message: %+v", err)
			}
			return
		}
		// An accepted body means the same to any JSON reader: the lenient
		// decoder finds the same value.
		lenient := newV()
		if err := json.Unmarshal(body, lenient); err != nil || !reflect.DeepEqual(v, lenient) {
			t.Fatalf("strictly accepted body decodes differently when lenient (%v):\n%s", err, body)
		}
		if err := check(v); err != nil {
			if err.Code == "" || err.Message == "" {
				t.Fatalf("validation error without code or message: %+v", err)
			}
			return
		}
		again, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("accepted value does not encode: %v", err)
		}
		v2 := newV()
		if derr := Decode(bytes.NewReader(again), v2, 1<<20); derr != nil {
			t.Fatalf("re-encoded body refused: %v\n%s", derr, again)
		}
		if verr := check(v2); verr != nil {
			t.Fatalf("re-encoded value invalid: %v", verr)
		}
		a, _ := json.Marshal(v2)
		if !reflect.DeepEqual(a, again) {
			t.Fatalf("round trip changed the value:\n%s\n%s", again, a)
		}
	})
}

func target(kind byte) (func() any, func(any) *api.Error) {
	switch kind % 5 {
	case 0:
		return func() any { return new(api.JoinRequest) }, func(v any) *api.Error {
			_, err := JoinRequest(v.(*api.JoinRequest))
			return err
		}
	case 1:
		return func() any { return new(api.Gateway) }, func(v any) *api.Error {
			g := v.(*api.Gateway)
			if g.ClusterID == "" {
				g.ClusterID = "east"
			}
			if g.Hostname == "" {
				g.Hostname = "gw"
			}
			return Gateway(g)
		}
	case 2:
		return func() any { return new(api.Export) }, func(v any) *api.Error {
			e := v.(*api.Export)
			if e.ClusterID == "" {
				e.ClusterID = "east"
			}
			return Export(e)
		}
	case 3:
		return func() any { return new(api.HeartbeatRequest) }, func(v any) *api.Error {
			return Health("health", v.(*api.HeartbeatRequest).Health)
		}
	default:
		return func() any { return new(api.CreateTokenRequest) }, func(v any) *api.Error {
			return TokenRequest(v.(*api.CreateTokenRequest))
		}
	}
}

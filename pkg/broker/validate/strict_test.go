package validate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

func TestDecodeStrictKeys(t *testing.T) {
	for _, tc := range []struct {
		name  string
		v     any
		body  string
		field string // "" means accepted
		msg   string
	}{
		{"exact names", new(api.JoinRequest), `{"clusterID":"east","podCIDRs":["10.1.0.0/16"]}`, "", ""},
		{"other case", new(api.JoinRequest), `{"ClusterId":"east"}`, "ClusterId", `did you mean "clusterID"`},
		{"other case after the right one", new(api.JoinRequest), `{"clusterID":"east","CLUSTERID":"west"}`, "CLUSTERID", "case-sensitive"},
		{"duplicate key", new(api.JoinRequest), `{"clusterID":"east","clusterID":"west"}`, "clusterID", "appears twice"},
		{"duplicate after unescaping", new(api.JoinRequest), `{"clusterID":"east","\u0063lusterID":"west"}`, "clusterID", "appears twice"},
		{"escaped exact name", new(api.JoinRequest), `{"\u0063lusterID":"east"}`, "", ""},
		{"Kelvin sign folds to k", new(api.Gateway), `{"publicKey":"x","public\u212aey":"y"}`, "public\u212aey", `"public\u212aey": JSON names are case-sensitive`},
		{"map keys differing in case", new(api.JoinRequest), `{"labels":{"App":"a","app":"b"}}`, "", ""},
		{"duplicate map key", new(api.JoinRequest), `{"labels":{"app":"a","app":"b"}}`, "labels.app", "appears twice"},
		{"duplicate key of a big map", new(api.JoinRequest), `{"labels":{` + manyKeys(40) + `,"k7":"again"}}`, "labels.k7", "appears twice"},
		{"big map, no duplicate", new(api.JoinRequest), `{"labels":{` + manyKeys(40) + `}}`, "", ""},
		{"nested struct in a list", new(api.HeartbeatRequest), `{"health":[{"cluster":"west","status":"connected"},{"cluster":"x","Status":"error"}]}`, "health[1].Status", "case-sensitive"},
		{"nested duplicate", new(api.Export), `{"ports":[{"port":80,"port":81}]}`, "ports[0].port", "appears twice"},
		{"time value is opaque", new(api.Export), `{"createdAt":"2026-01-02T03:04:05Z","name":"a"}`, "", ""},
		{"whitespace everywhere", new(api.Export), " {\n\t\"ports\" : [ { \"port\" : 80 , \"Port\" : 1 } ] } \n", "ports[0].Port", "case-sensitive"},
		{"null struct and list", new(api.Export), `{"ports":null,"sessionAffinityTimeoutSeconds":null,"labels":null}`, "", ""},
		{"escaped quotes in values", new(api.Export), `{"annotations":{"a":"x\"}{,:\\","a":"y"}}`, "annotations.a", "appears twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Decode(strings.NewReader(tc.body), tc.v, 1<<20)
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("refused: %+v", err)
			case tc.field == "":
			case err == nil:
				t.Fatalf("accepted: %s", tc.body)
			case err.Code != api.CodeBadRequest || err.Field != tc.field || !strings.Contains(err.Message, tc.msg):
				t.Fatalf("got %+v, want BadRequest on %q mentioning %q", err, tc.field, tc.msg)
			}
		})
	}
}

func TestDecodeRefusesInvalidUTF8(t *testing.T) {
	err := Decode(strings.NewReader("{\"clusterID\":\"e\xffst\"}"), new(api.JoinRequest), 1<<20)
	if err == nil || err.Code != api.CodeBadRequest || !strings.Contains(err.Message, "UTF-8") {
		t.Fatalf("got %+v", err)
	}
}

// TestStrictKeysAgreesWithEncodingJSON: on every body encoding/json
// marshals, the key check finds nothing (no false refusals).
func TestStrictKeysAgreesWithEncodingJSON(t *testing.T) {
	e := bigExport(50)
	for _, v := range []any{&e, &api.JoinRequest{ClusterID: "a", Labels: map[string]string{"x": "1", "X": "2"}},
		&api.HeartbeatRequest{Health: []api.PeerHealth{{Cluster: "b"}}}} {
		b, _ := json.Marshal(v)
		if err := strictKeys(b, reflect.TypeOf(v)); err != nil {
			t.Errorf("%T: %s: %s", v, err.field(), err.msg)
		}
	}
}

func manyKeys(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":"v"`, i)
	}
	return b.String()
}

// bigExport is a headless export with n endpoints, ~460 bytes each.
func bigExport(n int) api.Export {
	e := api.Export{ClusterID: "east", Namespace: "shop", Name: "db", Type: api.TypeHeadless,
		Ports: []api.ServicePort{{Name: "pg", Protocol: "TCP", Port: 5432}}, CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Labels: map[string]string{"app": "db", "tier": "backend"}, Annotations: map[string]string{"note": strings.Repeat("x", 200)}}
	for i := range n {
		e.Endpoints = append(e.Endpoints, api.Endpoint{
			Addresses: []string{fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), fmt.Sprintf("fd00:1::%x", i+1)},
			Hostname:  fmt.Sprintf("db-%d", i), Ready: true})
	}
	return e
}

// BenchmarkDecode measures the strict decoder on a body near the 1 MiB
// limit, and the key check's share of it.
func BenchmarkDecode(b *testing.B) {
	e := bigExport(api.MaxEndpoints)
	body, _ := json.Marshal(e)
	b.Run(fmt.Sprintf("Decode/%dKiB", len(body)>>10), func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var out api.Export
			if err := Decode(bytes.NewReader(body), &out, 1<<20); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(fmt.Sprintf("strictKeys/%dKiB", len(body)>>10), func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		t := reflect.TypeOf(&e)
		for b.Loop() {
			if err := strictKeys(body, t); err != nil {
				b.Fatal(err.msg)
			}
		}
	})
}

// TestStrictKeysFollowsEncodingJSONNames: embedded structs, pointers, "-"
// and untagged fields are named as encoding/json names them.
func TestStrictKeysFollowsEncodingJSONNames(t *testing.T) {
	type inner struct {
		A int `json:"a"`
	}
	type outer struct {
		inner
		P     *inner `json:"p"`
		Skip  int    `json:"-"`
		Plain int
		T     *time.Time `json:"t,omitempty"`
		L     []*inner   `json:"l"`
	}
	for body, field := range map[string]string{
		`{"a":1,"p":{"a":2},"Plain":3,"t":"2026-01-02T03:04:05Z","l":[{"a":1},null]}`: "",
		`{"A":1}`:                 "A",
		`{"p":{"A":1}}`:           "p.A",
		`{"plain":1}`:             "plain",
		`{"l":[{"a":1},{"A":2}]}`: "l[1].A",
		`{"a":1,"a":2}`:           "a",
	} {
		err := Decode(strings.NewReader(body), new(outer), 1<<20)
		switch {
		case field == "" && err != nil:
			t.Errorf("%s refused: %+v", body, err)
		case field != "" && (err == nil || err.Field != field):
			t.Errorf("%s: got %+v, want an error on %q", body, err, field)
		}
	}
}

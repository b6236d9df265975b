package broker_test

import (
	"io"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker"
)

func TestJoinRegisterWatchedByOtherCluster(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	a, ja := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	b, jb := tb.join("west", "10.2.0.0/16", "10.102.0.0/16")
	if ja.Cluster.TunnelIP == "" || ja.Cluster.TunnelIP == jb.Cluster.TunnelIP {
		t.Fatalf("tunnel IPs not unique: %q %q", ja.Cluster.TunnelIP, jb.Cluster.TunnelIP)
	}
	if a.Credential() != ja.Credential || ja.Credential == "" {
		t.Fatal("client did not adopt the joined credential")
	}

	col := watchAll(t, b, 0)
	col.until(t, "initial snapshot", 10*time.Second, func(ev api.Event) bool { return ev.Type == api.EventSnapshot })

	// The observed address decides other gateways' endpoints (one NAT or
	// not) and the stale flag their choice: a member claiming either in
	// its body is overruled by what the broker saw.
	spoofed := gateway("east", "node-1", 1)
	spoofed.ObservedIP, spoofed.Stale = "203.0.113.66", true
	if err := a.RegisterGateway(ctx, spoofed); err != nil {
		t.Fatalf("register: %v", err)
	}
	ev := col.until(t, "east's gateway in west's watch", 10*time.Second, func(ev api.Event) bool {
		return ev.Type == api.EventPut && ev.Gateway != nil && ev.Gateway.ClusterID == "east"
	})
	g := ev.Gateway
	if g.Hostname != "node-1" || g.ObservedIP != "127.0.0.1" || g.Stale {
		t.Fatalf("unexpected gateway record: %+v", g)
	}
	if err := a.PublishExport(ctx, export("east", "shop", "cart")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	col.until(t, "east's export", 10*time.Second, func(ev api.Event) bool {
		return ev.Type == api.EventPut && ev.Export != nil && ev.Export.Name == "cart"
	})
	if err := a.WithdrawExport(ctx, "east", "shop", "cart"); err != nil {
		t.Fatalf("withdraw: %v", err)
	}
	col.until(t, "export delete", 10*time.Second, func(ev api.Event) bool {
		return ev.Type == api.EventDelete && ev.Kind == api.KindExport && ev.Key == "east/shop/cart"
	})

	// Revoked and expired join tokens are refused.
	admin := tb.adminClient()
	info, err := admin.CreateTokenInfo(ctx, time.Hour, "to revoke")
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.RevokeToken(ctx, info.Info.ID); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	_, err = tb.client("").Join(ctx, info.Token, api.JoinRequest{ClusterID: "north", PodCIDRs: []string{"10.3.0.0/16"}, ServiceCIDRs: []string{"10.103.0.0/16"}})
	if apiCode(err) != api.CodeUnauthorized {
		t.Fatalf("join with revoked token: got %v, want Unauthorized", err)
	}
	short, err := admin.CreateToken(ctx, time.Second, "short")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	_, err = tb.client("").Join(ctx, short, api.JoinRequest{ClusterID: "north", PodCIDRs: []string{"10.3.0.0/16"}, ServiceCIDRs: []string{"10.103.0.0/16"}})
	if apiCode(err) != api.CodeUnauthorized {
		t.Fatalf("join with expired token: got %v, want Unauthorized", err)
	}
	toks, err := admin.ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var revoked, used int
	for _, tk := range toks {
		if tk.RevokedAt != nil {
			revoked++
		}
		used += tk.Uses
	}
	if len(toks) != 4 || revoked != 1 || used != 2 {
		t.Fatalf("tokens: %d listed, %d revoked, %d uses; want 4, 1, 2: %+v", len(toks), revoked, used, toks)
	}
	snap, err := b.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Clusters) != 2 {
		t.Fatalf("refused joins stored something: %+v", snap.Clusters)
	}
	// A join token is good only for joining; a cluster cannot manage tokens.
	if _, err := tb.client(short).Snapshot(ctx); apiCode(err) != api.CodeUnauthorized {
		t.Fatalf("snapshot with join token: %v", err)
	}
	if _, err := a.CreateToken(ctx, time.Hour, "x"); apiCode(err) != api.CodeForbidden {
		t.Fatalf("cluster creating token: %v", err)
	}
}

func TestCrossClusterWritesForbidden(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	a, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	b, _ := tb.join("west", "10.2.0.0/16", "10.102.0.0/16")
	if err := b.RegisterGateway(ctx, gateway("west", "gw", 2)); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishExport(ctx, export("west", "shop", "cart")); err != nil {
		t.Fatal(err)
	}
	before, err := b.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	evil := gateway("west", "gw", 9)
	evil.PrivateIP = "203.0.113.66"
	ex := export("west", "shop", "cart")
	ex.IPs = []string{"10.96.6.6"}
	attempts := map[string]error{
		"register west gateway":  a.RegisterGateway(ctx, evil),
		"heartbeat west gateway": a.Heartbeat(ctx, "west", "gw", nil),
		"delete west gateway":    a.DeleteGateway(ctx, "west", "gw"),
		"publish west export":    a.PublishExport(ctx, ex),
		"withdraw west export":   a.WithdrawExport(ctx, "west", "shop", "cart"),
		"remove cluster west":    a.RemoveCluster(ctx, "west"),
	}
	for what, err := range attempts {
		if apiCode(err) != api.CodeForbidden {
			t.Errorf("%s with east's credential: got %v, want Forbidden", what, err)
		}
	}
	// A body naming another cluster than the URL is refused too.
	mismatch := gateway("west", "gw", 9)
	if err := a.RegisterGateway(ctx, mismatch); apiCode(err) != api.CodeForbidden {
		t.Errorf("mismatch: %v", err)
	}
	after, err := b.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("state changed by forbidden writes:\nbefore %+v\nafter  %+v", before, after)
	}
	// Every credential reads the whole state.
	s, err := a.Snapshot(ctx)
	if err != nil || len(s.Gateways) != 1 || len(s.Exports) != 1 {
		t.Fatalf("east cannot read west's records: %v %+v", err, s)
	}
	// The admin removes a cluster with its records; its credential dies.
	if err := tb.adminClient().RemoveCluster(ctx, "west"); err != nil {
		t.Fatalf("admin remove: %v", err)
	}
	s, err = a.Snapshot(ctx)
	if err != nil || len(s.Clusters) != 1 || len(s.Gateways) != 0 || len(s.Exports) != 0 {
		t.Fatalf("after removal: %v %+v", err, s)
	}
	if _, err := b.Snapshot(ctx); apiCode(err) != api.CodeUnauthorized {
		t.Fatalf("removed cluster's credential still works: %v", err)
	}
}

func TestJoinOverlapRefused(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	admin := tb.adminClient()
	before, err := admin.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := admin.CreateToken(ctx, time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		req     api.JoinRequest
		code    string
		status  string
		cluster string
		field   string
	}{
		// Overlapping a member is translated (translate_test.go); the
		// broker's own ranges never are.
		{"pod CIDR in the mapped pool", api.JoinRequest{ClusterID: "west", PodCIDRs: []string{"240.0.0.0/16"}, ServiceCIDRs: []string{"10.102.0.0/16"}}, api.CodeCIDROverlap, "", "", "podCIDRs[0]"},
		{"service CIDR in the mapped pool", api.JoinRequest{ClusterID: "west", PodCIDRs: []string{"10.2.0.0/16"}, ServiceCIDRs: []string{"247.255.0.0/16"}}, api.CodeCIDROverlap, "", "", "serviceCIDRs[0]"},
		{"overlaps tunnel CIDR", api.JoinRequest{ClusterID: "west", PodCIDRs: []string{"100.127.5.0/24"}, ServiceCIDRs: []string{"10.102.0.0/16"}}, api.CodeCIDROverlap, "", "", "podCIDRs[0]"},
		{"same ID", api.JoinRequest{ClusterID: "east", PodCIDRs: []string{"10.9.0.0/16"}, ServiceCIDRs: []string{"10.109.0.0/16"}}, api.CodeClusterExists, "", "east", "clusterID"},
		{"own CIDRs overlap", api.JoinRequest{ClusterID: "west", PodCIDRs: []string{"10.2.0.0/16"}, ServiceCIDRs: []string{"10.2.3.0/24"}}, api.CodeCIDROverlap, "", "", "podCIDRs[0]"},
		{"bad ID", api.JoinRequest{ClusterID: "West_1", PodCIDRs: []string{"10.2.0.0/16"}, ServiceCIDRs: []string{"10.102.0.0/16"}}, api.CodeInvalid, "", "", "clusterID"},
		{"host bits", api.JoinRequest{ClusterID: "west", PodCIDRs: []string{"10.2.0.1/16"}, ServiceCIDRs: []string{"10.102.0.0/16"}}, api.CodeInvalid, "", "", "podCIDRs[0]"},
		{"no service CIDR", api.JoinRequest{ClusterID: "west", PodCIDRs: []string{"10.2.0.0/16"}}, api.CodeInvalid, "", "", "serviceCIDRs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tb.client("").Join(ctx, tok, tc.req)
			var ae *api.Error
			if !asAPI(err, &ae) {
				t.Fatalf("got %v, want an api.Error", err)
			}
			if ae.Code != tc.code || ae.Cluster != tc.cluster || ae.Field != tc.field {
				t.Fatalf("got %+v, want code %s cluster %q field %q", ae, tc.code, tc.cluster, tc.field)
			}
		})
	}
	after, err := admin.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("refused joins changed state:\n%+v\n%+v", before, after)
	}
	// A non-overlapping join with the same token works.
	if _, err := tb.client("").Join(ctx, tok, api.JoinRequest{ClusterID: "west", PodCIDRs: []string{"10.2.0.0/16"}, ServiceCIDRs: []string{"10.102.0.0/16"}}); err != nil {
		t.Fatalf("good join: %v", err)
	}
}

func TestStaleGatewayMarkedAndCleared(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", func(c *broker.Config) { c.StaleAfter = 700 * time.Millisecond })
	ctx := ctxT(t)
	a, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	tb.join("west", "10.2.0.0/16", "10.102.0.0/16") // the cluster east reports health about
	col := watchAll(t, a, 0)
	// Connected first: a watch that connected after the mark would get it
	// inside its snapshot, not as the event waited for below.
	col.until(t, "initial snapshot", 10*time.Second, func(ev api.Event) bool { return ev.Type == api.EventSnapshot })
	if err := a.RegisterGateway(ctx, gateway("east", "gw", 1)); err != nil {
		t.Fatal(err)
	}
	col.until(t, "stale mark", 10*time.Second, func(ev api.Event) bool {
		return ev.Type == api.EventPut && ev.Gateway != nil && ev.Gateway.Stale
	})
	st, err := a.Status(ctx)
	if err != nil || len(st) != 1 {
		t.Fatalf("status: %+v, %v", st, err)
	}
	if since := time.Since(st[0].LastHeartbeat); since < 700*time.Millisecond {
		t.Fatalf("marked stale too early: last sign of life %v ago", since)
	}
	s, _ := a.Snapshot(ctx)
	if len(s.Gateways) != 1 || !s.Gateways[0].Stale {
		t.Fatalf("stale gateway not visible as stale: %+v", s.Gateways)
	}
	health := []api.PeerHealth{{Cluster: "west", Status: api.StatusConnected, RTTMillis: 1.5}}
	if err := a.Heartbeat(ctx, "east", "gw", health); err != nil {
		t.Fatal(err)
	}
	col.until(t, "heartbeat clears stale", 10*time.Second, func(ev api.Event) bool {
		return ev.Type == api.EventPut && ev.Gateway != nil && !ev.Gateway.Stale
	})
	if st, err := a.Status(ctx); err != nil || len(st) != 1 || !reflect.DeepEqual(st[0].Health, health) {
		t.Fatalf("health not recorded: %+v, %v", st, err)
	}
	if err := a.Heartbeat(ctx, "east", "nope", nil); apiCode(err) != api.CodeNotFound {
		t.Fatalf("heartbeat of unregistered gateway: %v", err)
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	a, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	col := watchAll(t, a, 0)
	// The broker counts a watch before it sends the first snapshot.
	col.until(t, "initial snapshot", 10*time.Second, func(ev api.Event) bool { return ev.Type == api.EventSnapshot })
	hc := httpClient(t, tb)
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := hc.Get(tb.url + p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", p, err, resp)
		}
		resp.Body.Close()
	}
	resp, err := hc.Get(tb.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"tunnelmesh_broker_watches_open 1",
		`tunnelmesh_broker_records{kind="cluster"} 1`,
		"tunnelmesh_broker_revision 1",
		`tunnelmesh_broker_requests_total{code="201",method="POST",route="POST /v1/join"} 1`,
	} {
		if !contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	_ = http.StatusOK
}

package broker_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// Heartbeats prove liveness only: however many arrive, no revision and no
// watch event follows (issue: every heartbeat was fanned out to every member).
func TestHeartbeatsMakeNoRevision(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	a, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	w, _ := tb.join("west", "10.2.0.0/16", "10.102.0.0/16")
	if err := a.RegisterGateway(ctx, gateway("east", "gw", 1)); err != nil {
		t.Fatal(err)
	}
	col := watchAll(t, w, 0)
	col.until(t, "snapshot", 10*time.Second, func(ev api.Event) bool { return ev.Type == api.EventSnapshot })
	before := tb.b.Revision()
	for i := 0; i < 20; i++ {
		// Counters change on every heartbeat, as a real gateway's do.
		h := []api.PeerHealth{{Cluster: "west", Status: api.StatusConnected, RTTMillis: 1, RxBytes: int64(i), TxBytes: int64(2 * i)}}
		if err := a.Heartbeat(ctx, "east", "gw", h); err != nil {
			t.Fatal(err)
		}
	}
	if after := tb.b.Revision(); after != before {
		t.Fatalf("20 heartbeats moved the revision from %d to %d", before, after)
	}
	// A later real change is the next event the watcher gets: nothing came between.
	if err := a.PublishExport(ctx, export("east", "shop", "cart")); err != nil {
		t.Fatal(err)
	}
	ev := col.until(t, "next non-bookmark event", 10*time.Second, func(ev api.Event) bool { return ev.Type != api.EventBookmark })
	if ev.Export == nil || ev.Revision != before+1 {
		t.Fatalf("after heartbeats the watcher got %s %s rev %d; want the export at rev %d", ev.Type, ev.Kind, ev.Revision, before+1)
	}
}

// Health goes to GET /v1/status: the admin reads every cluster's, a cluster
// its own. Only health about clusters that exist is kept, one entry each.
func TestStatus(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	a, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	w, _ := tb.join("west", "10.2.0.0/16", "10.102.0.0/16")
	g := gateway("east", "gw", 1)
	g.Epoch = 3
	if err := a.RegisterGateway(ctx, g); err != nil {
		t.Fatal(err)
	}
	if err := w.RegisterGateway(ctx, gateway("west", "gw", 2)); err != nil {
		t.Fatal(err)
	}
	many := []api.PeerHealth{{Cluster: "west", Status: api.StatusConnected, RTTMillis: 2, RxBytes: 1 << 40},
		{Cluster: "west", Status: api.StatusError}, {Cluster: "east", Status: api.StatusConnected}}
	for i := range 300 {
		many = append(many, api.PeerHealth{Cluster: fmt.Sprintf("c%04d", i), Status: api.StatusConnected, RTTMillis: 2})
	}
	if err := a.Heartbeat(ctx, "east", "gw", many); err != nil {
		t.Fatalf("heartbeat with %d peers: %v", len(many), err)
	}
	if err := w.Heartbeat(ctx, "west", "gw", []api.PeerHealth{{Cluster: "east", Status: api.StatusConnected}}); err != nil {
		t.Fatal(err)
	}
	all, err := tb.adminClient().Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].ClusterID != "east" || len(all[0].Health) != 1 || all[0].Health[0] != many[0] || all[0].Epoch != 3 ||
		all[1].ClusterID != "west" || time.Since(all[1].LastHeartbeat) > time.Minute {
		t.Fatalf("admin status = %d entries %+v", len(all), summary(all))
	}
	own, err := w.Status(ctx)
	if err != nil || len(own) != 1 || own[0].ClusterID != "west" {
		t.Fatalf("west's status = %+v, %v; want only west", summary(own), err)
	}
	// Another cluster's status is refused to a cluster credential.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tb.url+"/v1/status?cluster=east", nil)
	req.Header.Set("Authorization", "Bearer "+w.Credential())
	resp, err := httpClient(t, tb).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("west reading east's status: %s, want 403", resp.Status)
	}
	if _, err := tb.client("").Status(ctx); apiCode(err) != api.CodeUnauthorized {
		t.Fatalf("status without credential: %v", err)
	}
	// A removed gateway's status goes with it.
	if err := a.DeleteGateway(ctx, "east", "gw"); err != nil {
		t.Fatal(err)
	}
	if all, _ := tb.adminClient().Status(ctx); len(all) != 1 {
		t.Fatalf("after delete: %+v", summary(all))
	}
}

func summary(s []api.GatewayStatus) []string {
	var out []string
	for _, g := range s {
		out = append(out, fmt.Sprintf("%s/%s epoch %d, %d health, at %s", g.ClusterID, g.Hostname, g.Epoch, len(g.Health), g.LastHeartbeat))
	}
	return out
}

// Epoch fencing: an active registration older than the cluster's active
// epoch is refused with 409; an equal or newer one becomes the one active.
func TestEpochFencing(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	a, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	reg := func(host string, epoch int64) error {
		g := gateway("east", host, 1)
		g.Epoch = epoch
		return a.RegisterGateway(ctx, g)
	}
	active := func() map[string]int64 {
		s, err := a.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for _, g := range s.Gateways {
			if g.Active {
				out[g.Hostname] = g.Epoch
			}
		}
		return out
	}
	if err := reg("gw1", 5); err != nil {
		t.Fatal(err)
	}
	if err := reg("gw2", 6); err != nil {
		t.Fatal(err)
	}
	if got := active(); len(got) != 1 || got["gw2"] != 6 {
		t.Fatalf("active after epoch 6 = %v; want only gw2", got)
	}
	// The old active (partitioned, still at epoch 5) cannot take it back.
	err := reg("gw1", 5)
	var ae *api.Error
	if !asAPI(err, &ae) || ae.Code != api.CodeConflict || ae.Field != "epoch" || !contains(ae.Message, "older than epoch 6") {
		t.Fatalf("stale epoch: %v; want 409 Conflict on epoch", err)
	}
	if got := active(); len(got) != 1 || got["gw2"] != 6 {
		t.Fatalf("a refused registration changed the active gateway: %v", got)
	}
	if err := reg("gw1", 6); err != nil {
		t.Fatalf("equal epoch: %v", err)
	}
	if got := active(); len(got) != 1 || got["gw1"] != 6 {
		t.Fatalf("active after equal epoch = %v; want only gw1", got)
	}
}

package broker

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerpki"
)

// TestBusyBrokerTakesHeartbeatsAsLiveness: with every place in the
// heartbeat queue taken (the broker short of CPU), a heartbeat still
// proves its gateway alive; its health is not read, the last report stays.
func TestBusyBrokerTakesHeartbeatsAsLiveness(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b, err := New(Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	tlsConf, err := brokerpki.ServerTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- b.Serve(ctx, ln, tlsConf) }()
	defer func() { cancel(); <-served }()
	ca, _ := os.ReadFile(filepath.Join(dir, brokerpki.FileCACert))
	adminTok, _ := os.ReadFile(filepath.Join(dir, brokerpki.FileAdminToken))
	url := "https://" + ln.Addr().String()
	client := func(cred string) *brokerclient.Client {
		c, err := brokerclient.New(url, ca, cred)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tok, err := client(strings.TrimSpace(string(adminTok))).CreateToken(ctx, time.Hour, "shed")
	if err != nil {
		t.Fatal(err)
	}
	east := client("")
	for _, j := range []api.JoinRequest{{ClusterID: "west", PodCIDRs: []string{"10.2.0.0/16"}, ServiceCIDRs: []string{"10.102.0.0/16"}},
		{ClusterID: "east", PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.101.0.0/16"}}} {
		c := client("")
		if _, err := c.Join(ctx, tok, j); err != nil {
			t.Fatal(err)
		}
		east = c
	}
	g := api.Gateway{ClusterID: "east", Hostname: "gw", PrivateIP: "192.0.2.10", Port: 51820,
		PublicKey: "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", Active: true}
	if err := east.RegisterGateway(ctx, g); err != nil {
		t.Fatal(err)
	}
	first := []api.PeerHealth{{Cluster: "west", Status: api.StatusConnected, RTTMillis: 1}}
	if err := east.Heartbeat(ctx, "east", "gw", first); err != nil {
		t.Fatal(err)
	}
	before, _ := b.live.lastHeartbeat("east/gw")
	for range cap(b.hbQueue) {
		b.hbQueue <- struct{}{}
	}
	time.Sleep(10 * time.Millisecond)
	err = east.Heartbeat(ctx, "east", "gw", []api.PeerHealth{{Cluster: "west", Status: api.StatusError, Reason: "x"}})
	for range cap(b.hbQueue) {
		<-b.hbQueue
	}
	if err != nil {
		t.Fatalf("a heartbeat while the broker is busy: %v", err)
	}
	s, _ := b.live.get("east/gw")
	if !s.LastHeartbeat.After(before) || len(s.Health) != 1 || s.Health[0] != first[0] {
		t.Fatalf("after a heartbeat the busy broker did not read: %+v; want a newer heartbeat time with the first report", s)
	}
	mfs, err := b.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "tunnelmesh_broker_heartbeat_health_unread_total" {
			n = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if n != 1 {
		t.Fatalf("unread health counted %v times, want 1", n)
	}
}

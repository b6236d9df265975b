package brokerclient_test

import (
	"net"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
)

// TestCallsFailOverToAReachableReplica: with the first URL dead, reads and
// writes (a POST included: it was never sent) go to the next one, and the
// client stays there.
func TestCallsFailOverToAReachableReplica(t *testing.T) {
	b := brokertest.Start(t, brokertest.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + ln.Addr().String()
	ln.Close()
	c, err := brokerclient.New(dead+","+b.URL, b.CA, b.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := c.CreateToken(ctx, time.Hour, "via failover"); err != nil {
		t.Fatalf("create token with the first replica down: %v", err)
	}
	if _, err := c.Snapshot(ctx); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	toks, err := c.ListTokens(ctx)
	if err != nil || len(toks) != 1 {
		t.Fatalf("tokens %v, %v: want exactly one (no POST sent twice)", toks, err)
	}
}

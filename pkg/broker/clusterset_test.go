package broker_test

import (
	"encoding/base64"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// Every member reads the same gossip key, made once, kept across a
// restart, never a revision of the watched state, and hidden from anyone
// without a member's or the admin credential.
func TestClusterSetGossipKey(t *testing.T) {
	dir := initDir(t)
	tb := startBroker(t, dir, "127.0.0.1:0", nil)
	ctx := ctxT(t)
	east, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	west, _ := tb.join("west", "10.2.0.0/16", "10.102.0.0/16")
	rev := tb.b.Revision()

	a, err := east.ClusterSet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	k, err := base64.StdEncoding.DecodeString(a.GossipKey)
	if err != nil || len(k) != 32 {
		t.Fatalf("gossip key %q: %d bytes, %v; want base64 of 32 bytes", a.GossipKey, len(k), err)
	}
	if b, err := west.ClusterSet(ctx); err != nil || b != a {
		t.Fatalf("west reads %+v, %v; east read %+v", b, err, a)
	}
	if b, err := tb.adminClient().ClusterSet(ctx); err != nil || b != a {
		t.Fatalf("admin reads %+v, %v; east read %+v", b, err, a)
	}
	if got := tb.b.Revision(); got != rev {
		t.Fatalf("making the gossip key moved the revision %d -> %d: it must stay out of the watched state", rev, got)
	}
	if _, err := tb.client("").ClusterSet(ctx); apiCode(err) != api.CodeUnauthorized {
		t.Fatalf("no credential: %v, want %s", err, api.CodeUnauthorized)
	}
	if _, err := tb.client(tb.JoinToken("not a member")).ClusterSet(ctx); apiCode(err) != api.CodeUnauthorized {
		t.Fatalf("join token: %v, want %s", err, api.CodeUnauthorized)
	}

	tb.stop()
	tb = startBroker(t, dir, tb.addr, nil)
	if b, err := tb.adminClient().ClusterSet(ctxT(t)); err != nil || b != a {
		t.Fatalf("after a restart: %+v, %v; before %+v", b, err, a)
	}
}

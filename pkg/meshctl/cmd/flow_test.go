package cmd

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/brokerdeploy"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/internal/testenv"
)

// TestUserFlow runs the commands a user types: a local broker, join (twice),
// show, leave, through meshctl's own flag parsing, against a real API
// server and a real broker.
func TestUserFlow(t *testing.T) {
	info := filepath.Join(t.TempDir(), "broker-info.json")
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- brokerdeploy.Local(ctx, brokerdeploy.LocalOptions{DataDir: filepath.Join(t.TempDir(), "broker"),
			Listen: testenv.FreeAddr(t), InfoFile: info, Ready: func(*brokerdeploy.Result) { close(ready) }})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("local broker: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("local broker not ready")
	}

	c := testenv.Start(t, "kind-east")
	c.AddNode(t, "east-control-plane", true, "172.18.0.2", "tunnelmesh/gateway:dev")
	c.StandInGateway(t, "kind-east", "east-control-plane")
	kc := []string{"--kubeconfig", c.Kubeconfig}

	_, stderr, code := run(t, append([]string{"join", info}, kc...)...)
	if code != cli.ExitRefused || !strings.Contains(stderr, "pass --pod-cidr and --service-cidr") {
		t.Fatalf("join without CIDRs: exit %d\n%s", code, stderr)
	}
	args := append([]string{"join", info, "--pod-cidr", "10.244.0.0/16", "--service-cidr", "10.96.0.0/16"}, kc...)
	out, stderr, code := run(t, args...)
	if code != 0 || !strings.Contains(out, `Cluster "kind-east" joined`) || !strings.Contains(stderr, `Joining context "kind-east"`) {
		t.Fatalf("join: exit %d\n%s%s", code, out, stderr)
	}
	before := c.Objects(t)
	out, stderr, code = run(t, args...)
	if code != 0 || !strings.Contains(out, "already a member; nothing changed") {
		t.Fatalf("join again: exit %d\n%s%s", code, out, stderr)
	}
	if d := testenv.Diff(before, c.Objects(t)); d != "" {
		t.Errorf("second join changed:\n%s", d)
	}
	out, stderr, code = run(t, append([]string{"show", "clusters"}, kc...)...)
	if code != 0 || !strings.Contains(out, "kind-east") || !strings.Contains(out, "10.244.0.0/16") {
		t.Fatalf("show clusters: exit %d\n%s%s", code, out, stderr)
	}
	out, stderr, code = run(t, append([]string{"leave"}, kc...)...)
	if code != 0 || !strings.Contains(out, "left the clusterset") {
		t.Fatalf("leave: exit %d\n%s%s", code, out, stderr)
	}
	_, stderr, code = run(t, append([]string{"show", "clusters"}, kc...)...)
	if code != cli.ExitRefused || !strings.Contains(stderr, "has not joined") {
		t.Fatalf("show after leave: exit %d\n%s", code, stderr)
	}
}

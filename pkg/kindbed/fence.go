package kindbed

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"sigs.k8s.io/kind/pkg/cluster"
)

// The kind network's fence keeps the test bed's traffic inside the
// containers it made. A kind node routes everything it has no route for
// to the Docker host, which forwards it to the host's own network: a
// kubelet, CoreDNS or a test pod aiming at a Service address before
// kube-proxy has programmed it (a node just started or restarted), or a
// pod address no tunnel serves yet, would reach whatever answers at that
// address out there (a CI run once got "404 Not Found" from some
// 10.245.0.5:8080 outside, and CoreDNS a foreign TLS certificate from
// 10.96.0.1). The fence drops what the host would forward from the kind
// bridge to any other interface. Traffic between kind nodes stays on the
// bridge, image loading goes through docker exec and Docker's resolver
// still answers the node containers' names (e2e TestCoreDNS), so the test
// bed loses nothing; Internet names may no longer resolve in the nodes
// (nothing here looks one up).
const fenceTable = "tunnelmesh-kind-fence"

// kindNetwork is the Docker network kind puts every node on.
const kindNetwork = "kind"

// kindBridge is the host interface of kind's network (Docker names a
// user network's bridge br-<first 12 hex digits of its ID>).
func kindBridge(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "docker", "network", "inspect", kindNetwork, "-f", "{{.Id}}").Output()
	if err != nil {
		return "", fmt.Errorf("docker network %s: %w", kindNetwork, err)
	}
	id := strings.TrimSpace(string(out))
	if len(id) < 12 {
		return "", fmt.Errorf("docker network %s: id %q", kindNetwork, id)
	}
	return "br-" + id[:12], nil
}

// fenceKindNetwork installs the fence (idempotent: the table is replaced).
func fenceKindNetwork(ctx context.Context) error {
	br, err := kindBridge(ctx)
	if err != nil {
		return err
	}
	rules := fmt.Sprintf(`table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	chain forward {
		type filter hook forward priority -10; policy accept;
		iifname %[2]q oifname != %[2]q counter drop comment "kind nodes reach only each other"
	}
}
`, fenceTable, br)
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft fence on %s: %v: %s", br, err, out)
	}
	return nil
}

// fenceWhenNetworkExists installs the fence as soon as kind has made its
// network, which it does before it starts the first node: run it beside
// the cluster creation. It returns when the fence is in or ctx ends.
func fenceWhenNetworkExists(ctx context.Context) error {
	for {
		err := exec.CommandContext(ctx, "docker", "network", "inspect", kindNetwork).Run()
		if err == nil {
			return fenceKindNetwork(ctx)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kind's network %s never appeared: %w", kindNetwork, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// removeFence deletes the fence once no kind cluster is left.
func removeFence(p *cluster.Provider) {
	if left, err := p.List(); err != nil || len(left) > 0 {
		return
	}
	if out, err := exec.Command("nft", "delete", "table", "inet", fenceTable).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
		logf("remove the kind network's fence: %v: %s", err, out)
	}
}

// CheckFence reports what is wrong with the kind network's fence: missing,
// or not naming the kind network's bridge ("" when it is in place).
func CheckFence(ctx context.Context) string {
	br, err := kindBridge(ctx)
	if err != nil {
		return err.Error()
	}
	out, err := exec.CommandContext(ctx, "nft", "list", "table", "inet", fenceTable).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("no fence: nft list table inet %s: %v: %s", fenceTable, err, out)
	}
	if !strings.Contains(string(out), `iifname "`+br+`" oifname != "`+br+`"`) || !strings.Contains(string(out), "drop") {
		return fmt.Sprintf("the fence does not drop what leaves bridge %s:\n%s", br, out)
	}
	return ""
}

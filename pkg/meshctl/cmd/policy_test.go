package cmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
)

// The broker's admin tightens the clusterset policy with meshctl: a member
// outside it is flagged (kept), `show clusters` shows the policy; a
// member's credential cannot change it.
func TestPolicySetAndShown(t *testing.T) {
	tb, dir := clusterset(t)
	flags := []string{"--broker-info", filepath.Join(dir, "info.json"), "--credential-file", filepath.Join(dir, "admin")}
	out, stderr, code := run(t, append([]string{"show", "clusters"}, flags...)...)
	if code != 0 || !strings.Contains(out, "Clusterset policy: pod and service CIDRs inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7; IPv4 at most /12 wide, IPv6 at most /48 wide; overlapping joins: translate (mapped pool 240.0.0.0/5, fc00::/8) (the default)") {
		t.Fatalf("show clusters: exit %d\n%s%s", code, out, stderr)
	}
	out, stderr, code = run(t, append([]string{"policy", "set", "--allowed-cidrs", "10.1.0.0/16,10.3.0.0/16,10.96.0.0/16", "--min-prefix-length-ipv4", "16"}, flags...)...)
	if code != 0 || !strings.Contains(out, "inside 10.1.0.0/16, 10.3.0.0/16, 10.96.0.0/16; IPv4 at most /16 wide, IPv6 at most /48 wide") ||
		!strings.Contains(out, "west: 10.2.0.0/16 is not inside the clusterset's allowed ranges") {
		t.Fatalf("policy set: exit %d\n%s%s", code, out, stderr)
	}
	out, _, code = run(t, append([]string{"show", "clusters"}, flags...)...)
	var westRow string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "west ") {
			westRow = l
		}
	}
	if code != 0 || !strings.Contains(westRow, "outside: 10.2.0.0/16") || strings.Contains(out, "(the default)") {
		t.Fatalf("show clusters after tightening: exit %d\n%s", code, out)
	}
	north, _ := tb.Join("north", "10.3.0.0/16", "10.96.3.0/24") // inside the new policy
	member := filepath.Join(dir, "member")
	if err := os.WriteFile(member, []byte(north.Credential()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = run(t, "policy", "set", "--default", "--broker-info", filepath.Join(dir, "info.json"), "--credential-file", member)
	if code != cli.ExitRefused || !strings.Contains(stderr, "needs the broker's admin credential") {
		t.Fatalf("policy set with a member's credential: exit %d\n%s", code, stderr)
	}
	_, stderr, code = run(t, append([]string{"policy", "set", "--allowed-cidrs", "10.1.0.1/16"}, flags...)...)
	if code != cli.ExitRefused || !strings.Contains(stderr, "has host bits set") {
		t.Fatalf("policy set with a bad range: exit %d\n%s", code, stderr)
	}
	if _, stderr, code = run(t, append([]string{"policy", "set"}, flags...)...); code != cli.ExitUsage {
		t.Fatalf("policy set without a value: exit %d\n%s", code, stderr)
	}
	out, stderr, code = run(t, append([]string{"policy", "set", "--overlap", "refuse", "--mapped-cidrs", "240.0.0.0/6"}, flags...)...)
	if code != 0 || !strings.Contains(out, "inside 10.1.0.0/16, 10.3.0.0/16, 10.96.0.0/16; IPv4 at most /16 wide, IPv6 at most /48 wide; overlapping joins: refuse (mapped pool 240.0.0.0/6)") {
		t.Fatalf("policy set --overlap refuse --mapped-cidrs: exit %d\n%s%s", code, out, stderr)
	}
	if _, stderr, code = run(t, append([]string{"policy", "set", "--overlap", "nat"}, flags...)...); code != cli.ExitRefused || !strings.Contains(stderr, `"nat" is neither "translate" nor "refuse"`) {
		t.Fatalf("policy set --overlap nat: exit %d\n%s", code, stderr)
	}
	out, stderr, code = run(t, append([]string{"policy", "set", "--default"}, flags...)...)
	if code != 0 || !strings.Contains(out, "Every member is inside it.") {
		t.Fatalf("policy set --default: exit %d\n%s%s", code, out, stderr)
	}
}

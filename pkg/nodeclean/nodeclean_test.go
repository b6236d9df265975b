package nodeclean

import (
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/nft"
	"github.com/tunnelmesh/tunnelmesh/pkg/nsenter"
	"github.com/tunnelmesh/tunnelmesh/pkg/nsenter/nstest"
	"github.com/tunnelmesh/tunnelmesh/pkg/routeagent"
)

// A node as a route agent and a gateway leave it when their pods stop
// (nothing is removed on a stop: a restart must not cut traffic), beside
// what others have there. Clean takes all of ours and nothing of theirs.
func TestClean(t *testing.T) {
	nstest.Need(t)
	n := nstest.New(t, "node")
	lan := nstest.New(t, "lan")
	nstest.Run(t, "ip", "link", "add", "eth0", "netns", n.Name, "type", "veth", "peer", "name", "p0", "netns", lan.Name)
	n.IP(t, "addr", "add", "172.30.0.4/24", "dev", "eth0")
	n.IP(t, "link", "set", "eth0", "up")
	// Ours: the agent's routes, VXLAN device and table; the gateway's device, route and table.
	a := routeagent.New(routeagent.Config{NetNS: &n.Handle, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var self routeagent.Self
	if err := nsenter.Do(n.Handle, func() (err error) {
		self, err = routeagent.Discover("w", []netip.Addr{netip.MustParseAddr("172.30.0.4")})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.Set(routeagent.Input{Self: self, Active: routeagent.Gateway{Node: "g", Addresses: []netip.Addr{netip.MustParseAddr("172.30.0.2")}},
		Local: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, Remote: []netip.Prefix{netip.MustParsePrefix("10.50.0.0/16")}}); err != nil {
		t.Fatal(err)
	}
	n.IP(t, "link", "add", "tmesh0", "type", "bridge") // stands in for the WireGuard device
	n.IP(t, "link", "set", "tmesh0", "up")
	n.IP(t, "route", "add", "10.60.0.0/16", "dev", "tmesh0", "proto", "77")
	if err := nsenter.Do(n.Handle, func() error {
		return nft.NewTable(nil).Set(nft.Desired{Interface: "tmesh0", Local: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}})
	}); err != nil {
		t.Fatal(err)
	}
	// Theirs: a CNI's device, route and table.
	n.IP(t, "link", "add", "cni0", "type", "bridge")
	n.IP(t, "link", "set", "cni0", "up")
	n.IP(t, "route", "add", "10.244.9.0/24", "dev", "cni0", "proto", "79")
	n.Exec(t, "nft", "add", "table", "inet", "cni")
	// Kernel settings: the record `gateway sysctl` wrote, and what is there now.
	dir, sys := t.TempDir(), t.TempDir()
	setting := func(name, v string) {
		p := filepath.Join(sys, strings.ReplaceAll(name, ".", "/"))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setting("net.ipv4.ip_forward", "1")
	setting("net.ipv4.conf.eth0.rp_filter", "2")
	setting("net.ipv4.conf.default.rp_filter", "0") // changed by someone since
	if err := Record(dir, []Setting{{"net.ipv4.ip_forward", "0", "1"}, {"net.ipv4.conf.eth0.rp_filter", "1", "2"}}); err != nil {
		t.Fatal(err)
	}
	// A later run records again: the first value found is the node's own.
	if err := Record(dir, []Setting{{"net.ipv4.conf.eth0.rp_filter", "2", "2"}, {"net.ipv4.conf.default.rp_filter", "1", "2"}}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}

	var did []string
	if err := nsenter.Do(n.Handle, func() (err error) {
		did, err = Clean(Config{StateDir: dir, RunDir: t.TempDir(), ProcSys: sys})
		return err
	}); err != nil {
		t.Fatalf("clean: %v", err)
	}
	t.Logf("done:\n%s", strings.Join(did, "\n"))
	if got := n.IP(t, "route", "show", "proto", "77") + n.IP(t, "route", "show", "proto", "78"); got != "" {
		t.Errorf("routes of ours left:\n%s", got)
	}
	links := n.IP(t, "-o", "link", "show")
	if strings.Contains(links, "tmesh") {
		t.Errorf("devices of ours left:\n%s", links)
	}
	tables := n.Exec(t, "nft", "list", "tables")
	if strings.Contains(tables, "tunnelmesh") {
		t.Errorf("tables of ours left:\n%s", tables)
	}
	if !strings.Contains(links, "cni0") || !strings.Contains(tables, "inet cni") || n.IP(t, "route", "show", "proto", "79") == "" {
		t.Errorf("others' device, table or route removed:\n%s\n%s", links, tables)
	}
	for name, want := range map[string]string{"net.ipv4.ip_forward": "0", "net.ipv4.conf.eth0.rp_filter": "1", "net.ipv4.conf.default.rp_filter": "0"} {
		b, _ := os.ReadFile(filepath.Join(sys, strings.ReplaceAll(name, ".", "/")))
		if got := strings.TrimSpace(string(b)); got != want {
			t.Errorf("%s = %s after clean, want %s", name, got, want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("state left in %s: %v", dir, ents)
	}
	// Nothing left: a second run does nothing.
	if err := nsenter.Do(n.Handle, func() (err error) {
		did, err = Clean(Config{StateDir: dir, RunDir: t.TempDir(), ProcSys: sys})
		return err
	}); err != nil || len(did) != 0 {
		t.Errorf("second clean: %v %v", did, err)
	}
}

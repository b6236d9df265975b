package sysctl

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestPlan(t *testing.T) {
	base := map[string]string{"net/ipv4/ip_forward": "0", "net/ipv4/conf/default/rp_filter": "1",
		"net/ipv4/conf/eth0/rp_filter": "1", "net/ipv4/conf/flannel.1/rp_filter": "0",
		"net/ipv6/conf/all/accept_ra": "1", "net/ipv6/conf/eth0/accept_ra": "1", "net/ipv6/conf/lo/accept_ra": "0",
		"net/ipv6/conf/all/forwarding": "0"}
	names := func(cs []Change) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.String())
		}
		return out
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		cur  map[string]string
		want []string
	}{
		{name: "strict node, IPv4", cfg: Config{Forward: true, Devices: []string{"eth0", "flannel.1"}}, cur: base, want: []string{
			"net.ipv4.ip_forward: 0 -> 1", "net.ipv4.conf.eth0.rp_filter: 1 -> 2"}},
		{name: "IPv6 too: accept_ra before forwarding, never on all", cfg: Config{Forward: true, Devices: []string{"eth0"}, IPv6: true}, cur: base, want: []string{
			"net.ipv4.ip_forward: 0 -> 1", "net.ipv4.conf.eth0.rp_filter: 1 -> 2",
			"net.ipv6.conf.eth0.accept_ra: 1 -> 2", "net.ipv6.conf.all.forwarding: 0 -> 1"}},
		{name: "already right: nothing", cfg: Config{Forward: true, Devices: []string{"eth0"}}, cur: map[string]string{
			"net/ipv4/ip_forward": "1", "net/ipv4/conf/default/rp_filter": "2", "net/ipv4/conf/eth0/rp_filter": "0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := names(Plan(tc.cfg, tc.cur, []string{"all", "eth0", "lo"}))
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// SetSysctls on a directory laid out like /proc/sys.
func TestSetSysctlsWritesOnlyWhatDiffers(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{"net/ipv4/ip_forward": "0\n", "net/ipv4/conf/default/rp_filter": "2\n",
		"net/ipv4/conf/eth0/rp_filter": "1\n"}
	for p, v := range files {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{Forward: true, Root: root, Devices: []string{"eth0"}}
	dry, err := Set(cfg, true)
	if err != nil || len(dry) != 2 {
		t.Fatalf("dry run: %v %v", dry, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "net/ipv4/ip_forward")); string(b) != "0\n" {
		t.Fatal("the dry run wrote")
	}
	got, err := Set(cfg, false)
	if err != nil || len(got) != 2 {
		t.Fatalf("set: %v %v", got, err)
	}
	for p, want := range map[string]string{"net/ipv4/ip_forward": "1\n", "net/ipv4/conf/eth0/rp_filter": "2\n", "net/ipv4/conf/default/rp_filter": "2\n"} {
		if b, _ := os.ReadFile(filepath.Join(root, p)); string(b) != want {
			t.Errorf("%s = %q, want %q", p, b, want)
		}
	}
	if again, err := Set(cfg, false); err != nil || len(again) != 0 {
		t.Errorf("second run changed %v (%v); want nothing", again, err)
	}
	if _, err := Set(Config{Forward: true, Root: root, Devices: []string{"nosuch0"}}, false); err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Errorf("missing device: %v", err)
	}
}

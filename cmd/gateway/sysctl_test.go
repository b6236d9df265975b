package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// `gateway sysctl` prints each change it makes, then nothing the second time.
func TestSysctlPrintsWhatItChanged(t *testing.T) {
	root := t.TempDir()
	for p, v := range map[string]string{"net/ipv4/ip_forward": "0", "net/ipv4/conf/default/rp_filter": "1", "net/ipv4/conf/flannel.1/rp_filter": "1"} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func() string {
		var out bytes.Buffer
		c := sysctlCmd()
		c.SetArgs([]string{"--proc-sys", root, "--reply-device", "flannel.1"})
		c.SetOut(&out)
		if err := c.ExecuteContext(context.Background()); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	want := "set net.ipv4.ip_forward: 0 -> 1\nset net.ipv4.conf.flannel.1.rp_filter: 1 -> 2\n"
	if got := run(); got != want {
		t.Errorf("first run printed:\n%s\nwant:\n%s", got, want)
	}
	if got := run(); got != "kernel settings already right; nothing changed\n" {
		t.Errorf("second run printed:\n%s", got)
	}
}

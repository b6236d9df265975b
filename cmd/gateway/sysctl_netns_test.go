package main

import (
	"os"
	"strings"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/testbed"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbed.RemoveBuilds()
	os.Exit(code)
}

// The real thing in a network namespace that stands for a strict node:
// `gateway sysctl --node-ip` finds the device, loosens it, turns forwarding
// on, and leaves the test's own namespace alone. "default" stays strict: a
// pod veth the CNI creates afterwards keeps its reverse-path filter (the
// anti-spoofing a CNI may rely on); tunnelmesh's own devices are loosened
// by whoever creates them (pkg/sysctl, through netlink).
func TestSysctlOnAStrictNode(t *testing.T) {
	bed := testbed.New(t)
	ns := bed.NS("node")
	bed.Underlay().Attach(ns, "172.31.0.5/24")
	bed.MustExec(ns, "sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv4.conf.all.rp_filter=1",
		"net.ipv4.conf.default.rp_filter=1", "net.ipv4.conf.eth0.rp_filter=1")
	hostDefault, _ := os.ReadFile("/proc/sys/net/ipv4/conf/default/rp_filter")
	bin := testbed.Build(t, "github.com/tunnelmesh/tunnelmesh/cmd/gateway")

	out := bed.MustExec(ns, bin, "sysctl", "--node-ip", "172.31.0.5")
	for _, want := range []string{"net.ipv4.ip_forward: 0 -> 1", "net.ipv4.conf.eth0.rp_filter: 1 -> 2"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	got := bed.MustExec(ns, "sysctl", "-n", "net.ipv4.ip_forward", "net.ipv4.conf.default.rp_filter", "net.ipv4.conf.eth0.rp_filter")
	if strings.Fields(got)[0] != "1" || strings.Fields(got)[1] != "1" || strings.Fields(got)[2] != "2" {
		t.Errorf("after: %q; want ip_forward 1, default rp_filter 1 (untouched), eth0 rp_filter 2", got)
	}
	// A pod veth created afterwards keeps the strict filter.
	bed.MustIP(ns, "link", "add", "veth-pod", "type", "veth", "peer", "name", "veth-podp")
	if v := strings.TrimSpace(bed.MustExec(ns, "sysctl", "-n", "net.ipv4.conf.veth-pod.rp_filter")); v != "1" {
		t.Errorf("a pod veth created later has rp_filter %s; want 1 (strict, as the node had it)", v)
	}
	if again := bed.MustExec(ns, bin, "sysctl", "--node-ip", "172.31.0.5"); !strings.Contains(again, "nothing changed") {
		t.Errorf("second run:\n%s", again)
	}
	if now, _ := os.ReadFile("/proc/sys/net/ipv4/conf/default/rp_filter"); string(now) != string(hostDefault) {
		t.Errorf("the test's own namespace changed: default rp_filter %q -> %q", hostDefault, now)
	}
	if _, err := bed.Exec(ns, bin, "sysctl", "--node-ip", "172.31.0.99"); err == nil {
		t.Error("an address no device holds was accepted")
	}
}

package sysctl

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/testbed"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Root-only tests run in a network namespace of their own.
func TestMain(m *testing.M) { os.Exit(testbed.MainInNetns(m)) }

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + p + "/rp_filter")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// As in the gateway's main container: /proc/sys is read-only and only
// NET_ADMIN is held. A device tunnelmesh creates (here a veth named like
// the route agent's) is still loosened, through netlink, and "default"
// stays strict.
func TestDeviceLoosenedWithProcSysReadOnly(t *testing.T) {
	testbed.RequireNetns(t)
	for _, p := range []string{"default", "all"} {
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+p+"/rp_filter", []byte("1"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dev := testbed.UniqueName("tmvx")
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: dev}, PeerName: dev + "p"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(dev); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	if v := read(t, dev); v != "1" {
		t.Fatalf("new device rp_filter %s; want 1 (strict default)", v)
	}
	errc := make(chan error, 1)
	go func() {
		// This thread gets a mount namespace of its own with /proc/sys
		// read-only; it is never unlocked, so it ends with the goroutine.
		runtime.LockOSThread()
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return err
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return err
			}
			if err := unix.Mount("/proc/sys", "/proc/sys", "", unix.MS_BIND, ""); err != nil {
				return err
			}
			if err := unix.Mount("", "/proc/sys", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
				return err
			}
			if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+dev+"/rp_filter", []byte("2"), 0o644); err == nil {
				return errors.New("/proc/sys is writable: the test does not stand for the main container")
			}
			changes, err := Set(Config{Devices: []string{dev}}, false)
			if err == nil && len(changes) != 1 {
				err = errors.New("want one change")
			}
			return err
		}()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if v := read(t, dev); v != "2" {
		t.Fatalf("%s rp_filter %s after Set; want 2", dev, v)
	}
	if v := read(t, "default"); v != "1" {
		t.Fatalf("default rp_filter %s; want 1 (untouched)", v)
	}
}

package vxlan

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/nsenter"
	"github.com/tunnelmesh/tunnelmesh/pkg/nsenter/nstest"
	"github.com/vishvananda/netlink"
)

func TestValidate(t *testing.T) {
	a := netip.MustParseAddr
	good := Device{Name: "tmesh-vx", VNI: DefaultVNI, Port: DefaultPort, MTU: 1450, Local: a("192.0.2.1"), MAC: MACFor(a("192.0.2.1"))}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Device){
		"name":   func(d *Device) { d.Name = "vx0" },
		"long":   func(d *Device) { d.Name = "tmesh-0123456789" },
		"bare":   func(d *Device) { d.Name = "tmesh-" },
		"vni":    func(d *Device) { d.VNI = 1 << 24 },
		"port":   func(d *Device) { d.Port = 0 },
		"mtu":    func(d *Device) { d.MTU = 10 },
		"local":  func(d *Device) { d.Local = netip.Addr{} },
		"mac":    func(d *Device) { d.MAC = nil },
		"family": func(d *Device) { d.Remotes = []netip.Addr{a("fd00::1")} },
	} {
		d := good
		mut(&d)
		if err := d.Validate(); err == nil {
			t.Errorf("%s: bad device accepted: %+v", name, d)
		}
	}
	if got := MACFor(a("172.18.0.3")).String(); got != "0e:74:ac:12:00:03" {
		t.Errorf("MACFor = %s", got)
	}
	if Overhead(a("10.0.0.1")) != 50 || Overhead(a("fd00::1")) != 70 {
		t.Error("overhead")
	}
}

// TestSet builds VXLAN devices in two namespaces joined by a veth "underlay",
// sends traffic through them, and moves the default destination to a third.
func TestSet(t *testing.T) {
	nstest.Need(t)
	a, b, c := nstest.New(t, "vxa"), nstest.New(t, "vxb"), nstest.New(t, "vxc")
	nstest.Run(t, "ip", "link", "add", "br0", "netns", a.Name, "type", "bridge")
	a.IP(t, "link", "set", "br0", "up")
	a.IP(t, "addr", "add", "192.0.2.1/24", "dev", "br0")
	for i, n := range []nstest.NS{b, c} {
		nstest.Run(t, "ip", "link", "add", "eth0", "netns", n.Name, "type", "veth", "peer", "name", "p"+n.Name[len(n.Name)-4:], "netns", a.Name)
		a.IP(t, "link", "set", "p"+n.Name[len(n.Name)-4:], "master", "br0", "up")
		n.IP(t, "addr", "add", "192.0.2."+string(rune('2'+i))+"/24", "dev", "eth0")
		n.IP(t, "link", "set", "eth0", "up")
	}
	addr := netip.MustParseAddr
	dev := func(local string, remotes ...string) Device {
		d := Device{Name: DefaultName, VNI: DefaultVNI, Port: DefaultPort, MTU: 1450, Local: addr(local), MAC: MACFor(addr(local))}
		if local == "192.0.2.1" {
			d.Underlay = "br0"
		}
		for _, r := range remotes {
			d.Remotes = append(d.Remotes, addr(r))
		}
		return d
	}
	set := func(n nstest.NS, d Device) {
		t.Helper()
		if err := nsenter.Do(n.Handle, func() error { return Set(d) }); err != nil {
			t.Fatal(err)
		}
	}
	index := func(n nstest.NS) int {
		t.Helper()
		var idx int
		if err := nsenter.Do(n.Handle, func() error {
			l, err := netlink.LinkByName(DefaultName)
			if err == nil {
				idx = l.Attrs().Index
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return idx
	}
	// A sends everything to B (the "gateway"), B answers A; A knows B's MAC statically.
	da := dev("192.0.2.1", "192.0.2.2")
	da.Neighbors = []Neighbor{{IP: addr("10.99.0.2"), MAC: MACFor(addr("192.0.2.2"))}}
	da.Addresses = []netip.Prefix{netip.MustParsePrefix("10.99.0.1/24")}
	set(a, da)
	set(b, dev("192.0.2.2", "192.0.2.1"))
	set(c, dev("192.0.2.3", "192.0.2.1"))
	a.IP(t, "addr", "add", "10.99.7.7/24", "dev", DefaultName) // not wanted: the next Set removes it
	b.IP(t, "addr", "add", "10.99.0.2/24", "dev", DefaultName)
	c.IP(t, "addr", "add", "10.99.0.2/24", "dev", DefaultName) // the standby holds the same address
	a.Exec(t, "ping", "-c1", "-W2", "10.99.0.2")
	if got := a.IP(t, "-d", "link", "show", DefaultName); !strings.Contains(got, "vxlan id 29805") || !strings.Contains(got, "dstport 4803") ||
		!strings.Contains(got, "mtu 1450") || !strings.Contains(got, "nolearning") || !strings.Contains(got, "dev br0") {
		t.Errorf("device: %s", got)
	}

	// Idempotent: the same state keeps the device (same index) and one FDB entry.
	set(a, da)
	if got := a.IP(t, "-4", "addr", "show", "dev", DefaultName); strings.Contains(got, "10.99.7.7") || !strings.Contains(got, "10.99.0.1/24") {
		t.Errorf("addresses = %s", got)
	}
	before := index(a)
	neighs, addrs, done := make(chan netlink.NeighUpdate, 16), make(chan netlink.AddrUpdate, 16), make(chan struct{})
	if err := netlink.NeighSubscribeAt(a.Handle, neighs, done); err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrSubscribeAt(a.Handle, addrs, done); err != nil {
		t.Fatal(err)
	}
	set(a, da)
	if index(a) != before {
		t.Error("second Set recreated the device")
	}
	// Markers after the Set: every event before them was written by the Set.
	a.IP(t, "neigh", "add", "192.0.2.99", "lladdr", "02:00:00:00:00:99", "dev", "br0")
	a.IP(t, "addr", "add", "192.0.2.98/32", "dev", "br0")
	for u := range neighs {
		if net.IP.Equal(u.IP, net.ParseIP("192.0.2.99")) {
			break
		}
		if u.LinkIndex != before {
			// The kernel's own: an underlay ARP entry on br0 aging from
			// REACHABLE to STALE (Set writes only on the vxlan device).
			continue
		}
		t.Errorf("second Set wrote a neighbour or FDB entry: %+v", u.Neigh)
	}
	for u := range addrs {
		if u.LinkAddress.IP.Equal(net.ParseIP("192.0.2.98")) {
			break
		}
		t.Errorf("second Set wrote an address: %v", u.LinkAddress)
	}
	close(done)
	if got := nstest.Run(t, "ip", "netns", "exec", a.Name, "bridge", "fdb", "show", "dev", DefaultName); strings.Count(got, "dst") != 1 || !strings.Contains(got, "dst 192.0.2.2") {
		t.Errorf("fdb = %q", got)
	}

	// Failover: C becomes the destination; only FDB and neighbour change.
	da.Remotes = []netip.Addr{addr("192.0.2.3")}
	da.Neighbors = []Neighbor{{IP: addr("10.99.0.2"), MAC: MACFor(addr("192.0.2.3"))}}
	da.MTU = 1400
	set(a, da)
	if index(a) != before {
		t.Error("a new destination recreated the device")
	}
	fdb := nstest.Run(t, "ip", "netns", "exec", a.Name, "bridge", "fdb", "show", "dev", DefaultName)
	if strings.Contains(fdb, "192.0.2.2") || !strings.Contains(fdb, "dst 192.0.2.3") {
		t.Errorf("fdb after failover = %q", fdb)
	}
	if got := a.IP(t, "neigh", "show", "dev", DefaultName); !strings.Contains(got, "10.99.0.2 lladdr 0e:74:c0:00:02:03 PERMANENT") {
		t.Errorf("neighbour after failover = %q", got)
	}
	a.Exec(t, "ping", "-c1", "-W2", "10.99.0.2")
	if got := c.IP(t, "-s", "link", "show", DefaultName); !strings.Contains(got, "RX:") {
		t.Errorf("link stats: %s", got)
	}

	// A VNI change needs a new device; both ends change and traffic flows again.
	da.VNI = 4242
	db := dev("192.0.2.3", "192.0.2.1")
	db.VNI = 4242
	set(a, da)
	set(c, db)
	if index(a) == before {
		t.Error("VNI change kept the old device")
	}
	c.IP(t, "addr", "add", "10.99.0.2/24", "dev", DefaultName)
	a.Exec(t, "ping", "-c1", "-W2", "10.99.0.2")

	for range 2 { // a second teardown finds nothing and is fine
		if err := nsenter.Do(a.Handle, func() error { return Teardown(DefaultName) }); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.IP(t, "link", "show"); strings.Contains(got, DefaultName) {
		t.Errorf("device left after teardown: %s", got)
	}
	// Not ours to delete: a non-VXLAN device of that name.
	a.IP(t, "link", "add", "tmesh-x", "type", "bridge")
	if err := nsenter.Do(a.Handle, func() error { return Teardown("tmesh-x") }); err == nil {
		t.Error("teardown deleted a bridge")
	}
}

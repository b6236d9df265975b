package plan

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func TestRoutes(t *testing.T) {
	nodes := []Node{
		{Name: "cp", InternalIPs: []netip.Addr{addr("172.18.0.2"), addr("fc00:f853::2")}, PodCIDRs: []netip.Prefix{pfx("10.244.0.0/24"), pfx("fd00:10:244::/64")}},
		{Name: "w2", InternalIPs: []netip.Addr{addr("172.18.0.4")}, PodCIDRs: []netip.Prefix{pfx("10.244.2.0/24"), pfx("fd00:10:244:2::/64")}},
		{Name: "w1", InternalIPs: []netip.Addr{addr("172.18.0.3")}, PodCIDRs: []netip.Prefix{pfx("10.244.1.0/24")}},
		{Name: "new", InternalIPs: []netip.Addr{addr("172.18.0.5")}},
	}
	got := Routes("w1", nodes)
	want := []Route{
		{Dst: pfx("10.244.0.0/24"), Via: addr("172.18.0.2")},
		{Dst: pfx("10.244.2.0/24"), Via: addr("172.18.0.4")},
		{Dst: pfx("fd00:10:244::/64"), Via: addr("fc00:f853::2")},
		// w2's IPv6 CIDR has no IPv6 InternalIP to route through: skipped.
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Routes = %v, want %v", got, want)
	}
	if r := Routes("cp", nodes[:1]); len(r) != 0 {
		t.Fatalf("single node wants no routes, got %v", r)
	}
}

func TestCNIConfig(t *testing.T) {
	if _, err := CNIConfig(nil, 1500); err == nil {
		t.Fatal("no pod CIDR must be an error")
	}
	b, err := CNIConfig([]netip.Prefix{pfx("10.244.1.7/24"), pfx("fd00::/64")}, 1450)
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		CNIVersion string `json:"cniVersion"`
		Name       string
		Plugins    []struct {
			Type string
			MTU  int
			IPAM struct {
				Type   string
				Ranges [][]struct{ Subnet string }
				Routes []struct{ Dst string }
			}
			Capabilities map[string]bool
		}
	}
	if err := json.Unmarshal(b, &conf); err != nil {
		t.Fatalf("config is not JSON: %v\n%s", err, b)
	}
	if conf.Name != ConfigListName || len(conf.Plugins) != 2 {
		t.Fatalf("unexpected config:\n%s", b)
	}
	ptp := conf.Plugins[0]
	if ptp.Type != "ptp" || ptp.MTU != 1450 || ptp.IPAM.Type != "host-local" {
		t.Fatalf("unexpected ptp plugin:\n%s", b)
	}
	if len(ptp.IPAM.Ranges) != 2 || ptp.IPAM.Ranges[0][0].Subnet != "10.244.1.0/24" || ptp.IPAM.Ranges[1][0].Subnet != "fd00::/64" {
		t.Fatalf("ranges wrong:\n%s", b)
	}
	if ptp.IPAM.Routes[0].Dst != "0.0.0.0/0" || ptp.IPAM.Routes[1].Dst != "::/0" {
		t.Fatalf("routes wrong:\n%s", b)
	}
	if conf.Plugins[1].Type != "portmap" || !conf.Plugins[1].Capabilities["portMappings"] {
		t.Fatalf("portmap wrong:\n%s", b)
	}
}

func TestMasqueradeMergesRanges(t *testing.T) {
	m := MasqueradeFor(
		[]netip.Prefix{pfx("10.244.1.0/24")},
		[]netip.Prefix{pfx("10.96.0.0/16"), pfx("10.244.0.0/16"), pfx("10.244.3.0/24"), pfx("10.245.0.0/16"), pfx("fd00::/64"), pfx("192.0.2.0/24")},
	)
	r := func(a, b string) Range { return Range{addr(a), addr(b)} }
	if want := []Range{r("10.244.1.0", "10.244.1.255")}; !reflect.DeepEqual(m.Sources4, want) {
		t.Fatalf("Sources4 = %v", m.Sources4)
	}
	want := []Range{r("10.96.0.0", "10.96.255.255"), r("10.244.0.0", "10.245.255.255"), r("192.0.2.0", "192.0.2.255")}
	if !reflect.DeepEqual(m.Skip4, want) {
		t.Fatalf("Skip4 = %v, want %v", m.Skip4, want)
	}
	if want := []Range{r("fd00::", "fd00::ffff:ffff:ffff:ffff")}; !reflect.DeepEqual(m.Skip6, want) {
		t.Fatalf("Skip6 = %v", m.Skip6)
	}
	if len(m.Sources6) != 0 {
		t.Fatalf("Sources6 = %v", m.Sources6)
	}
	all := MasqueradeFor(nil, []netip.Prefix{pfx("0.0.0.0/0"), pfx("10.0.0.0/8")})
	if want := []Range{r("0.0.0.0", "255.255.255.255")}; !reflect.DeepEqual(all.Skip4, want) {
		t.Fatalf("0/0 merge = %v", all.Skip4)
	}
}

func TestParseCIDRs(t *testing.T) {
	got, err := ParseCIDRs(" 10.244.0.0/16,10.96.0.5/12\nfd00::/64 ")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{pfx("10.244.0.0/16"), pfx("10.96.0.0/12"), pfx("fd00::/64")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseCIDRs = %v", got)
	}
	if got, err := ParseCIDRs(""); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
	if _, err := ParseCIDRs("10.0.0.0/8,bogus"); err == nil {
		t.Fatal("bad CIDR accepted")
	}
}

func TestParseInterfacePrefixes(t *testing.T) {
	got, err := ParseInterfacePrefixes("tmesh, vx-tm*")
	if err != nil || !reflect.DeepEqual(got, []string{"tmesh", "vx-tm"}) {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range []string{"a-very-long-interface-name", "*", "eth/0"} {
		if _, err := ParseInterfacePrefixes(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

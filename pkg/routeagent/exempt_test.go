package routeagent

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/nft"
	"github.com/tunnelmesh/tunnelmesh/pkg/nsenter"
	"github.com/tunnelmesh/tunnelmesh/pkg/nsenter/nstest"
)

// TestExemptionBeatsCNIMasquerade establishes what netfilter does with a
// masquerading CNI in a pod → node → outside chain of namespaces: the CNI's
// rule masquerades every pod packet leaving the cluster CIDR (as flannel,
// kindnet and Calico do, whatever the outgoing interface); an "accept" in an
// earlier NAT chain does not stop it; our null binding does, for a CNI rule in
// nftables and in legacy iptables alike, and only for the exempted destinations.
func TestExemptionBeatsCNIMasquerade(t *testing.T) {
	nstest.Need(t)
	cnis := map[string][][]string{
		"nft": {
			{"nft", "add table ip cni"},
			{"nft", "add chain ip cni post { type nat hook postrouting priority srcnat; }"},
			{"nft", "add rule ip cni post ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade"},
		},
		"iptables-legacy": {
			{"iptables-legacy", "-t nat -A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE"},
		},
	}
	for cni, rules := range cnis {
		t.Run(cni, func(t *testing.T) {
			if _, err := exec.LookPath(rules[0][0]); err != nil {
				t.Skipf("%s not installed", rules[0][0])
			}
			pod, node, out := podNodeOutside(t)
			for _, r := range rules {
				args := []string{r[0]}
				if r[0] == "nft" {
					args = append(args, r[1])
				} else {
					args = append(args, strings.Fields(r[1])...)
				}
				node.Exec(t, args...)
			}
			srv := listenUDP(t, out)
			exempted, other := "10.50.0.1", "10.60.0.1"
			if got := sourceSeen(t, pod, srv, exempted); got != "172.30.0.1" {
				t.Fatalf("control: without our table the source was %s, want the node's 172.30.0.1 (is the CNI rule masquerading?)", got)
			}

			// An accept in a NAT chain that runs first ends only that chain.
			node.Exec(t, "nft", "add table inet naive")
			node.Exec(t, "nft", "add chain inet naive post { type nat hook postrouting priority 50; }")
			node.Exec(t, "nft", "add rule inet naive post ip daddr 10.50.0.0/16 accept")
			if got := sourceSeen(t, pod, srv, exempted); got != "172.30.0.1" {
				t.Fatalf("with an accept rule first the source was %s; expected the CNI to masquerade anyway", got)
			}
			node.Exec(t, "nft", "delete table inet naive")

			ex := Exemption{Sources: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
				Destinations: []netip.Prefix{netip.MustParsePrefix("10.50.0.0/16"), netip.MustParsePrefix("fd50::/64")}}
			for range 2 { // replacing the table must work as well as creating it
				if err := nsenter.Do(node.Handle, func() error { return applyTable(ex, nil) }); err != nil {
					t.Fatal(err)
				}
			}
			if got := sourceSeen(t, pod, srv, exempted); got != "10.244.1.2" {
				t.Errorf("to an exempted destination the source was %s, want the pod's 10.244.1.2", got)
			}
			if got := sourceSeen(t, pod, srv, other); got != "172.30.0.1" {
				t.Errorf("to another destination the source was %s, want the CNI's masquerade to 172.30.0.1", got)
			}
			for range 2 {
				if err := nsenter.Do(node.Handle, func() error { return nft.DeleteTable(TableName) }); err != nil {
					t.Fatal(err)
				}
			}
			if got := sourceSeen(t, pod, srv, exempted); got != "172.30.0.1" {
				t.Errorf("after deleting our table the source was %s, want masquerade again", got)
			}
		})
	}
}

// podNodeOutside builds pod (10.244.1.2) → node (forwarding) → outside, where
// outside holds 10.50.0.1 and 10.60.0.1 and routes the pod CIDR back.
func podNodeOutside(t *testing.T) (pod, node, out nstest.NS) {
	pod, node, out = nstest.New(t, "pod"), nstest.New(t, "node"), nstest.New(t, "out")
	nstest.Run(t, "ip", "link", "add", "eth0", "netns", pod.Name, "type", "veth", "peer", "name", "vpod", "netns", node.Name)
	nstest.Run(t, "ip", "link", "add", "eth0", "netns", out.Name, "type", "veth", "peer", "name", "eth0", "netns", node.Name)
	pod.IP(t, "addr", "add", "10.244.1.2/24", "dev", "eth0")
	pod.IP(t, "link", "set", "eth0", "up")
	pod.IP(t, "route", "add", "default", "via", "10.244.1.1")
	node.IP(t, "addr", "add", "10.244.1.1/24", "dev", "vpod")
	node.IP(t, "link", "set", "vpod", "up")
	node.IP(t, "addr", "add", "172.30.0.1/24", "dev", "eth0")
	node.IP(t, "link", "set", "eth0", "up")
	node.IP(t, "route", "add", "10.0.0.0/8", "via", "172.30.0.2")
	node.Exec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	out.IP(t, "addr", "add", "172.30.0.2/24", "dev", "eth0")
	out.IP(t, "link", "set", "eth0", "up")
	out.IP(t, "addr", "add", "10.50.0.1/32", "dev", "lo")
	out.IP(t, "addr", "add", "10.60.0.1/32", "dev", "lo")
	out.IP(t, "route", "add", "10.244.0.0/16", "via", "172.30.0.1")
	return pod, node, out
}

func listenUDP(t *testing.T, ns nstest.NS) net.PacketConn {
	var srv net.PacketConn
	if err := nsenter.Do(ns.Handle, func() (err error) {
		srv, err = net.ListenPacket("udp4", "0.0.0.0:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// sourceSeen sends one datagram from ns to dst and returns the source address
// the server saw. Each call uses a new socket, so a new conntrack entry.
func sourceSeen(t *testing.T, ns nstest.NS, srv net.PacketConn, dst string) string {
	t.Helper()
	port := srv.LocalAddr().(*net.UDPAddr).Port
	var c net.Conn
	if err := nsenter.Do(ns.Handle, func() (err error) {
		c, err = net.Dial("udp4", net.JoinHostPort(dst, fmt.Sprint(port)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	_ = srv.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 16)
	_, from, err := srv.ReadFrom(buf)
	if err != nil {
		t.Fatalf("datagram to %s never arrived: %v", dst, err)
	}
	return from.(*net.UDPAddr).IP.String()
}

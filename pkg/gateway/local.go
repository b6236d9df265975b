package gateway

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/wg"
)

// OutboundIP returns the local address this host uses to reach the broker
// (no packet is sent) — the gateway's private IP unless one is given — and
// the broker's address.
func OutboundIP(brokerURL string) (local, remote net.IP, err error) {
	u, err := url.Parse(brokerURL)
	if err != nil || u.Host == "" {
		return nil, nil, fmt.Errorf("--broker %q is not a URL (want e.g. https://192.0.2.1:8443)", brokerURL)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	c, err := net.Dial("udp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return nil, nil, fmt.Errorf("find the local address towards the broker %s: %w", u.Host, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP, c.RemoteAddr().(*net.UDPAddr).IP, nil
}

// TunnelMTU is the underlay MTU towards ip (a remote underlay address) minus WireGuard's IPv6-safe overhead.
func TunnelMTU(ip net.IP) (int, error) {
	m, err := wg.UnderlayMTU(ip)
	if err != nil {
		return 0, err
	}
	return m - defaults.WireGuardOverhead, nil
}

// Nameservers are the DNS servers the resolv.conf files at paths name
// (files that do not exist are skipped); loopback ones (a local stub) are
// left out: no remote CIDR can cover them.
func Nameservers(paths ...string) []netip.Addr {
	var out []netip.Addr
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 2 || fs[0] != "nameserver" {
				continue
			}
			if a, err := netip.ParseAddr(fs[1]); err == nil && !a.IsLoopback() {
				out = append(out, a.Unmap())
			}
		}
		f.Close()
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

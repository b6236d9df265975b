package gateway

import "github.com/tunnelmesh/tunnelmesh/pkg/sysctl"

// forwarding remembers which families the data plane switched on.
type forwarding struct{ v4, v6 bool }

// enable turns on IPv4 forwarding, and IPv6 forwarding only when v6 is
// true, and loosens dev's reverse-path filter (pkg/sysctl's plan:
// interfaces that accept router advertisements keep accepting them). On
// tmesh0 a loose filter gives nothing away: WireGuard drops every packet
// whose source is not in its peer's allowed IPs.
func (f *forwarding) enable(v6 bool, dev ...string) error {
	if f.v4 && (f.v6 || !v6) {
		return nil
	}
	if _, err := sysctl.Set(sysctl.Config{Forward: true, IPv6: v6, Devices: dev}, false); err != nil {
		return err
	}
	f.v4, f.v6 = true, f.v6 || v6
	return nil
}

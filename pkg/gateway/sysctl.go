package gateway

import "github.com/tunnelmesh/tunnelmesh/pkg/sysctl"

// forwarding remembers which families the data plane switched on.
type forwarding struct{ v4, v6 bool }

// enable turns on IPv4 forwarding, and IPv6 forwarding only when v6 is
// true (pkg/sysctl's plan: interfaces that accept router advertisements
// keep accepting them).
func (f *forwarding) enable(v6 bool) error {
	if f.v4 && (f.v6 || !v6) {
		return nil
	}
	if _, err := sysctl.Set(sysctl.Config{Forward: true, IPv6: v6}, false); err != nil {
		return err
	}
	f.v4, f.v6 = true, f.v6 || v6
	return nil
}

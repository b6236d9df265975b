package gateway

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
)

// procSys is where the network sysctls live (per network namespace).
const procSys = "/proc/sys/net"

// forwarding remembers which families the data plane switched on.
type forwarding struct{ v4, v6 bool }

// enable turns on IPv4 forwarding, and IPv6 forwarding only when v6 is
// true. Switching IPv6 forwarding on makes every interface stop accepting
// router advertisements unless its accept_ra is 2, so interfaces that
// accept them (accept_ra=1, and the default for new ones) get 2 first.
func (f *forwarding) enable(v6 bool) error {
	if !f.v4 {
		if err := setSysctl(filepath.Join(procSys, "ipv4/ip_forward"), "1"); err != nil {
			return err
		}
		f.v4 = true
	}
	if !v6 || f.v6 {
		return nil
	}
	confs, err := filepath.Glob(filepath.Join(procSys, "ipv6/conf/*/accept_ra"))
	if err != nil {
		return err
	}
	for _, c := range confs {
		if filepath.Base(filepath.Dir(c)) == "all" {
			continue
		}
		if b, err := os.ReadFile(c); err == nil && string(bytes.TrimSpace(b)) == "1" {
			if err := setSysctl(c, "2"); err != nil {
				return err
			}
		}
	}
	if err := setSysctl(filepath.Join(procSys, "ipv6/conf/all/forwarding"), "1"); err != nil {
		return err
	}
	f.v6 = true
	return nil
}

func setSysctl(path, v string) error {
	if b, err := os.ReadFile(path); err == nil && string(bytes.TrimSpace(b)) == v {
		return nil
	}
	if err := os.WriteFile(path, []byte(v+"\n"), 0o644); err != nil {
		return fmt.Errorf("set %s to %s: %w", path, v, err)
	}
	return nil
}

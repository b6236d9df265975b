// Package sysctl is the one plan of the kernel settings tunnelmesh needs
// on a node (Plan, pure) and its applier (Set). The gateway DaemonSet's
// privileged init container (`gateway sysctl`), the gateway's data plane
// (`gateway run` and `gateway k8s`) and the route agent all go through it.
//
// The DaemonSet's main container is not privileged, so /proc/sys is
// read-only in it; the init container sets what it can first. Set writes
// a setting only when it differs, so once these are in place the others
// write nothing.
package sysctl

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Config says what to set.
type Config struct {
	// Root is where sysctls are read and written (/proc/sys when empty).
	Root string
	// Forward: IPv4 forwarding on (and IPv6 forwarding with IPv6).
	Forward bool
	// IPv6: with Forward, IPv6 forwarding too (for IPv6 CIDRs).
	IPv6 bool
	// Devices whose strict reverse-path filter becomes loose: the node's
	// underlay device, a CNI's overlay device replies may arrive on, and
	// the devices tunnelmesh creates (tmesh0, tmesh-vx) once they exist.
	// "default" is never loosened: every device created later (pod veths)
	// would come up without the filter the CNI may rely on.
	Devices []string
}

// Change is one setting changed (or to change).
type Change struct {
	Name     string // dotted, as sysctl(8) shows it
	From, To string
	path     string
	device   string // a device's rp_filter: set through netlink on the live system
}

func (c Change) String() string { return fmt.Sprintf("%s: %s -> %s", c.Name, c.From, c.To) }

// Plan lists the changes needed given the current values (read by path
// relative to the root: "net/ipv4/ip_forward"); ipv6Confs are the names
// under net/ipv6/conf. Pure.
//
//   - Forward: net.ipv4.ip_forward=1: the gateway forwards between the pod
//     network and the tunnel, route agents between pods and the VXLAN device.
//   - rp_filter 1 (strict) becomes 2 (loose) on Devices only, since replies
//     from other clusters come back by the CNI's path, not the one the
//     request left by. The kernel uses the larger of "all" and the device's
//     value, so 2 on a device is loose whatever "all" is, and 0 is left
//     alone (no filter is looser). The devices tunnelmesh creates are
//     loosened by whoever creates them, once they exist (Set does it through
//     netlink on the live system, where /proc/sys may be read-only).
//   - Forward with IPv6: interfaces that accept router advertisements
//     (accept_ra=1) get 2 first, since forwarding=1 would make them stop;
//     then net.ipv6.conf.all.forwarding=1.
func Plan(cfg Config, current map[string]string, ipv6Confs []string) []Change {
	var out []Change
	want := func(path, to string, only func(from string) bool) *Change {
		from, ok := current[path]
		if !ok || from == to || (only != nil && !only(from)) {
			return nil
		}
		out = append(out, Change{Name: strings.ReplaceAll(path, "/", "."), From: from, To: to, path: path})
		return &out[len(out)-1]
	}
	strict := func(v string) bool { return v == "1" }
	if cfg.Forward {
		want("net/ipv4/ip_forward", "1", nil)
	}
	for _, d := range cfg.Devices {
		if c := want("net/ipv4/conf/"+d+"/rp_filter", "2", strict); c != nil {
			c.device = d
		}
	}
	if cfg.Forward && cfg.IPv6 {
		for _, c := range ipv6Confs {
			if c != "all" {
				want("net/ipv6/conf/"+c+"/accept_ra", "2", func(v string) bool { return v == "1" })
			}
		}
		want("net/ipv6/conf/all/forwarding", "1", nil)
	}
	return out
}

// Set reads the settings under cfg.Root, applies Plan's changes in order
// and returns those made. A device that does not exist is an error
// (nothing is changed then).
func Set(cfg Config, dryRun bool) ([]Change, error) {
	root := cfg.Root
	if root == "" {
		root = "/proc/sys"
	}
	var paths []string
	if cfg.Forward {
		paths = append(paths, "net/ipv4/ip_forward")
	}
	for _, d := range cfg.Devices {
		if d == "" || strings.ContainsAny(d, "/") || d == "." || d == ".." {
			return nil, fmt.Errorf("device name %q is not valid", d)
		}
		paths = append(paths, "net/ipv4/conf/"+d+"/rp_filter")
	}
	var ipv6Confs []string
	if cfg.Forward && cfg.IPv6 {
		ents, err := os.ReadDir(filepath.Join(root, "net/ipv6/conf"))
		if err != nil {
			return nil, fmt.Errorf("IPv6 settings: %w (is IPv6 disabled on this node? then drop --ipv6)", err)
		}
		for _, e := range ents {
			ipv6Confs = append(ipv6Confs, e.Name())
			paths = append(paths, "net/ipv6/conf/"+e.Name()+"/accept_ra")
		}
		paths = append(paths, "net/ipv6/conf/all/forwarding")
	}
	current := map[string]string{}
	for _, p := range slices.Compact(paths) {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", strings.ReplaceAll(p, "/", "."), err)
		}
		current[p] = string(bytes.TrimSpace(b))
	}
	plan := Plan(cfg, current, ipv6Confs)
	if dryRun {
		return plan, nil
	}
	for i, c := range plan {
		var err error
		if cfg.Root == "" && c.device != "" {
			err = setRPFilter(c.device, 2)
		} else {
			err = os.WriteFile(filepath.Join(root, c.path), []byte(c.To+"\n"), 0o644)
		}
		if err != nil {
			return plan[:i], fmt.Errorf("set %s to %s (run privileged, or set it on the node yourself): %w", c.Name, c.To, err)
		}
	}
	return plan, nil
}

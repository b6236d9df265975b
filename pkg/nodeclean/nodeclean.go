// Package nodeclean takes off a node everything tunnelmesh put on it, for
// `meshctl leave` and `uninstall` (run on every node by a short-lived
// DaemonSet, `gateway cleanup`, once the gateway and route-agent pods are
// gone): the routes tagged with the gateway's and the route agent's
// protocols (77, 78), the tmesh0 and tmesh-* devices (the VXLAN device and
// its FDB with it), the nftables tables inet tunnelmesh, tunnelmesh-fence and
// inet tunnelmesh-agent, the WireGuard control socket and the node state
// directory's files, and the kernel settings `gateway sysctl` changed.
//
// Settings are put back only from a record: `gateway sysctl` writes, before
// changing anything, each setting's value as it found it (Record), and Clean
// restores a setting only while it still holds the value tunnelmesh set: a
// value someone changed since is theirs. A node set up by a tunnelmesh
// without the record keeps its settings.
package nodeclean

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/nft"
	"github.com/tunnelmesh/tunnelmesh/pkg/routeagent"
	"github.com/tunnelmesh/tunnelmesh/pkg/routes"
	"github.com/tunnelmesh/tunnelmesh/pkg/vxlan"
)

// RecordFile, in the node's state directory, holds the settings changed.
const RecordFile = "sysctl-before.json"

// Setting is one kernel setting tunnelmesh changed.
type Setting struct {
	Name   string `json:"name"` // dotted, e.g. net.ipv4.ip_forward
	Before string `json:"before"`
	Set    string `json:"set"` // what tunnelmesh wrote
}

// Record adds changed to the record in dir. A setting recorded already
// keeps its first Before: that is the node's own value, not one a previous
// run of tunnelmesh left.
func Record(dir string, changed []Setting) error {
	if len(changed) == 0 {
		return nil
	}
	rec, err := readRecord(dir)
	if err != nil {
		return err
	}
	for _, c := range changed {
		i := slices.IndexFunc(rec, func(r Setting) bool { return r.Name == c.Name })
		if i < 0 {
			rec = append(rec, c)
			continue
		}
		rec[i].Set = c.Set
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("record the kernel settings changed: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, RecordFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("record the kernel settings changed: %w", err)
	}
	return nil
}

func readRecord(dir string) ([]Setting, error) {
	b, err := os.ReadFile(filepath.Join(dir, RecordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the record of kernel settings: %w", err)
	}
	var rec []Setting
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("read the record of kernel settings %s: %w", filepath.Join(dir, RecordFile), err)
	}
	return rec, nil
}

// Config says where things are; zero values are the DaemonSet's paths.
type Config struct {
	StateDir string // /var/lib/tunnelmesh
	RunDir   string // the WireGuard socket directory, /var/run/wireguard
	ProcSys  string // /proc/sys
}

// Clean removes what tunnelmesh put on this node (in the caller's network
// namespace) and returns what it did, one line each. It carries on past
// errors and returns them joined.
func Clean(cfg Config) ([]string, error) {
	if cfg.StateDir == "" {
		cfg.StateDir = "/var/lib/tunnelmesh"
	}
	if cfg.RunDir == "" {
		cfg.RunDir = "/var/run/wireguard"
	}
	if cfg.ProcSys == "" {
		cfg.ProcSys = "/proc/sys"
	}
	var done []string
	var errs []error
	for _, p := range []netlink.RouteProtocol{routes.Protocol, routeagent.RouteProtocol} {
		have, err := routes.OwnedBy(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range have {
			if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete route %v: %w", r.Dst, err))
				continue
			}
			done = append(done, fmt.Sprintf("route %v (proto %d) deleted", r.Dst, p))
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("list links: %w", err))
	}
	for _, l := range links {
		name := l.Attrs().Name
		if name != defaults.Interface && !strings.HasPrefix(name, vxlan.NamePrefix) {
			continue
		}
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete device %s: %w", name, err))
			continue
		}
		done = append(done, "device "+name+" deleted")
	}
	for _, t := range []string{nft.TableName, nft.FenceTableName, routeagent.TableName} {
		ok, err := nft.TableExists(t)
		if err == nil && ok {
			err = nft.DeleteTable(t)
			if err == nil {
				done = append(done, "nftables table inet "+t+" deleted")
			}
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	restored, err := restore(cfg)
	done = append(done, restored...)
	errs = append(errs, err)
	sock := filepath.Join(cfg.RunDir, defaults.Interface+".sock")
	if err := os.Remove(sock); err == nil {
		done = append(done, "socket "+sock+" removed")
	} else if !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	if errors.Join(errs...) == nil { // keep the record until the settings are back
		ents, err := os.ReadDir(cfg.StateDir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		for _, e := range ents {
			if err := os.RemoveAll(filepath.Join(cfg.StateDir, e.Name())); err != nil {
				errs = append(errs, err)
				continue
			}
			done = append(done, "state "+filepath.Join(cfg.StateDir, e.Name())+" removed")
		}
	}
	return done, errors.Join(errs...)
}

// restore puts back each recorded setting that still holds the value
// tunnelmesh set.
func restore(cfg Config) ([]string, error) {
	rec, err := readRecord(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	var done []string
	var errs []error
	for i := len(rec) - 1; i >= 0; i-- { // the reverse of the order they were made in
		s := rec[i]
		path := filepath.Join(cfg.ProcSys, strings.ReplaceAll(s.Name, ".", "/"))
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // a device that is gone
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", s.Name, err))
			continue
		}
		if cur := strings.TrimSpace(string(b)); cur != s.Set {
			done = append(done, fmt.Sprintf("%s left at %s (changed since tunnelmesh set %s)", s.Name, cur, s.Set))
			continue
		}
		if err := os.WriteFile(path, []byte(s.Before+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore %s to %s: %w", s.Name, s.Before, err))
			continue
		}
		done = append(done, fmt.Sprintf("%s restored: %s -> %s", s.Name, s.Set, s.Before))
	}
	return done, errors.Join(errs...)
}

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tunnelmesh/tunnelmesh/pkg/fsutil"
)

// capNames maps Linux capability numbers to their OCI names.
var capNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// specFile returns the JSON file runc will read the process capabilities
// from for this invocation, or "" when the command needs no change.
// Global flags come before the command; the command's own flags after it.
func specFile(args []string) string {
	cmd, rest := command(args)
	switch cmd {
	case "create", "run":
		bundle := flagValue(rest, "bundle", "b")
		if bundle == "" {
			bundle = "."
		}
		return filepath.Join(bundle, "config.json")
	case "exec":
		return flagValue(rest, "process", "p")
	}
	return ""
}

// globalWithValue lists runc's global flags that take a separate value.
var globalWithValue = map[string]bool{"--root": true, "--log": true, "--log-format": true, "--criu": true, "--rootless": true}

func command(args []string) (string, []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			if !strings.Contains(a, "=") && globalWithValue[a] {
				i++
			}
			continue
		}
		return a, args[i+1:]
	}
	return "", nil
}

func flagValue(args []string, long, short string) string {
	for i, a := range args {
		for _, p := range []string{"--" + long, "-" + long, "-" + short} {
			if a == p && i+1 < len(args) {
				return args[i+1]
			}
			if strings.HasPrefix(a, p+"=") {
				return strings.TrimPrefix(a, p+"=")
			}
		}
	}
	return ""
}

// boundingSet reads this process's capability bounding set.
func boundingSet() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("read bounding set: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapBnd:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("parse CapBnd %q: %w", v, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("no CapBnd in /proc/self/status")
}

// missing returns the names of known capabilities absent from bnd.
func missing(bnd uint64) map[string]bool {
	m := map[string]bool{}
	for i, n := range capNames {
		if bnd&(1<<uint(i)) == 0 {
			m[n] = true
		}
	}
	return m
}

// fixFile rewrites file in place when it grants capabilities outside bnd.
func fixFile(file string, bnd uint64) error {
	drop := missing(bnd)
	if len(drop) == 0 {
		return nil
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("read spec: %w", err)
	}
	out, changed, err := fixSpec(raw, drop)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if !changed {
		return nil
	}
	st, err := os.Stat(file)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(file, out, st.Mode().Perm()); err != nil {
		return fmt.Errorf("write spec: %w", err)
	}
	return nil
}

// fixSpec removes the capabilities in drop from a runtime spec
// (process.capabilities) or a process file (capabilities). Fields it does
// not know are kept as they are.
func fixSpec(raw []byte, drop map[string]bool) ([]byte, bool, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, false, fmt.Errorf("parse: %w", err)
	}
	changed := false
	if c, ok := doc["capabilities"]; ok {
		nc, ch, err := fixCaps(c, drop)
		if err != nil {
			return nil, false, err
		}
		doc["capabilities"], changed = nc, ch
	}
	if p, ok := doc["process"]; ok {
		var proc map[string]json.RawMessage
		if err := json.Unmarshal(p, &proc); err != nil {
			return nil, false, fmt.Errorf("parse process: %w", err)
		}
		if c, ok := proc["capabilities"]; ok {
			nc, ch, err := fixCaps(c, drop)
			if err != nil {
				return nil, false, err
			}
			if ch {
				proc["capabilities"] = nc
				if doc["process"], err = json.Marshal(proc); err != nil {
					return nil, false, err
				}
				changed = true
			}
		}
	}
	if !changed {
		return raw, false, nil
	}
	out, err := json.Marshal(doc)
	return out, true, err
}

func fixCaps(raw json.RawMessage, drop map[string]bool) (json.RawMessage, bool, error) {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return raw, false, nil
	}
	var sets map[string][]string
	if err := json.Unmarshal(raw, &sets); err != nil {
		return nil, false, fmt.Errorf("parse capabilities: %w", err)
	}
	changed := false
	for k, list := range sets {
		kept := list[:0:0]
		for _, c := range list {
			if drop[c] {
				changed = true
				continue
			}
			kept = append(kept, c)
		}
		sets[k] = kept
	}
	if !changed {
		return raw, false, nil
	}
	out, err := json.Marshal(sets)
	return out, true, err
}

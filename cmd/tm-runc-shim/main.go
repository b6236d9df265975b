// Command tm-runc-shim is an OCI runtime wrapper for hosts whose capability
// bounding set lacks capabilities that privileged containers ask for (for
// example CAP_SYS_RESOURCE on some VMs). It removes every capability the
// calling process cannot hold from the OCI spec — <bundle>/config.json on
// create/run and the --process file on exec — and then execs the real runc
// with unchanged arguments. On a host whose bounding set is complete it
// changes nothing.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

func main() {
	real, err := realRunc()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tm-runc-shim:", err)
		os.Exit(1)
	}
	args := os.Args[1:]
	if file := specFile(args); file != "" {
		bnd, err := boundingSet()
		if err != nil {
			fmt.Fprintln(os.Stderr, "tm-runc-shim:", err)
			os.Exit(1)
		}
		if err := fixFile(file, bnd); err != nil {
			fmt.Fprintln(os.Stderr, "tm-runc-shim:", err)
			os.Exit(1)
		}
	}
	argv := append([]string{real}, args...)
	if err := syscall.Exec(real, argv, os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "tm-runc-shim: exec %s: %v\n", real, err)
		os.Exit(1)
	}
}

// realRunc finds the runc this wrapper stands in for: $TM_REAL_RUNC, or the
// first runc in the usual places that is not this program.
func realRunc() (string, error) {
	if p := os.Getenv("TM_REAL_RUNC"); p != "" {
		return p, nil
	}
	self, _ := os.Executable()
	self, _ = filepath.EvalSymlinks(self)
	for _, p := range []string{"/usr/local/sbin/runc", "/usr/sbin/runc", "/usr/bin/runc", "/usr/local/bin/runc"} {
		r, err := filepath.EvalSymlinks(p)
		if err != nil || r == self {
			continue
		}
		if st, err := os.Stat(r); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("no runc found (set TM_REAL_RUNC)")
}

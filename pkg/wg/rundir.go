package wg

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// DefaultRunDir is where wireguard-go, wg(8) and wgctrl look for UAPI sockets.
const DefaultRunDir = "/var/run/wireguard"

const runDirEnv = "TUNNELMESH_WG_RUN_DIR_BOUND"

// UseRunDir makes dir appear at /var/run/wireguard for this process only, so
// several gateways (one per network namespace) can each own a socket named
// tmesh0.sock while wireguard-go, wgctrl and `wg` keep their fixed path.
//
// /var/run is one filesystem shared by every network namespace, so the
// process moves into a private mount namespace: it unshares on a locked
// thread, bind-mounts dir over /var/run/wireguard and re-executes itself from
// that thread (execve keeps the thread's namespaces; the PID stays the same).
// It returns nil in the re-executed process. Outside that process, reach the
// socket with `nsenter -t PID -m -n wg show`.
func UseRunDir(dir string) error {
	if dir == "" || filepath.Clean(dir) == DefaultRunDir {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("run dir %s: %w", dir, err)
	}
	if os.Getenv(runDirEnv) == abs {
		return nil
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return fmt.Errorf("create run dir: %w", err)
	}
	if err := os.MkdirAll(DefaultRunDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", DefaultRunDir, err)
	}
	runtime.LockOSThread() // never unlocked: this thread execs or the process exits
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount(abs, DefaultRunDir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s over %s: %w", abs, DefaultRunDir, err)
	}
	env := append(os.Environ(), runDirEnv+"="+abs)
	err = unix.Exec("/proc/self/exe", os.Args, env)
	return fmt.Errorf("re-exec in private mount namespace: %w", err)
}

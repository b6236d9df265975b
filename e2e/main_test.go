//go:build e2e

package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	flag.Parse()
	ci := os.Getenv("CI") == "true"
	nodeImage, reason := prerequisites()
	if reason != "" {
		if ci {
			fmt.Println("e2e: FAIL:", reason)
			return 1
		}
		fmt.Println("e2e: SKIPPED:", reason)
		return 0
	}
	// One test bed per Docker engine: runs share cluster names, so a second
	// run waits for the first instead of deleting its clusters.
	unlock, err := lockTestBed()
	if err != nil {
		fmt.Println("e2e: FAIL:", err)
		return 1
	}
	defer unlock()
	logDir := os.Getenv("E2E_LOG_DIR")
	if logDir == "" {
		logDir, _ = filepath.Abs("logs")
	}
	workDir, err := os.MkdirTemp("", "tm-e2e-")
	if err != nil {
		fmt.Println("e2e: FAIL:", err)
		return 1
	}
	keep := os.Getenv("E2E_KEEP") == "1"
	reuse := os.Getenv("E2E_REUSE") == "1"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	logf("node image %s", nodeImage)
	e, err := Setup(ctx, nodeImage, workDir, reuse)
	code := 0
	if err != nil {
		fmt.Println("e2e: FAIL: setup:", err)
		code = 1
	} else {
		logf("test bed ready in %s", time.Since(start).Round(time.Second))
		env = e
		code = m.Run()
	}
	if code != 0 {
		e.GatherLogs(logDir)
	}
	if keep {
		logf("E2E_KEEP=1: clusters kept (kubeconfigs in %s); E2E_REUSE=1 runs against them; delete with `kind delete cluster --name <name>`", workDir)
		return code
	}
	e.Teardown()
	os.RemoveAll(workDir)
	return code
}

// lockTestBed takes the machine-wide e2e lock (flock on a file in the temp
// directory), waiting while another run holds it.
func lockTestBed() (func(), error) {
	path := filepath.Join(os.TempDir(), "tunnelmesh-e2e.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		logf("another e2e run holds %s; waiting for it", path)
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
	}
	return func() { f.Close() }, nil
}

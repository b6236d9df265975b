//go:build e2e

package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/kindbed"
)

// env is set by TestMain before any test runs.
var env *kindbed.Env

func TestMain(m *testing.M) { os.Exit(run(m)) }

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "e2e: "+format+"\n", args...)
}

func run(m *testing.M) int {
	flag.Parse()
	ci := os.Getenv("CI") == "true"
	nodeImage, reason := kindbed.Prerequisites()
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
	unlock, err := kindbed.Lock()
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
	e, err := kindbed.Setup(ctx, nodeImage, workDir, reuse)
	code := 0
	if err != nil {
		fmt.Println("e2e: FAIL: setup:", err)
		code = 1
	} else {
		bed := time.Since(start)
		logf("test bed ready in %s", bed.Round(time.Second))
		env = e
		tests := time.Now()
		code = m.Run()
		printHeld()
		logf("phases: test bed %s, tests %s (each test's time above)", bed.Round(time.Second), time.Since(tests).Round(time.Second))
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

package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestControllerCmdNeedsTheBrokerSecret(t *testing.T) {
	dir := t.TempDir()
	c := controllerCmd()
	c.SetArgs([]string{"--broker-dir", dir, "--identity", "test"})
	c.SilenceUsage, c.SilenceErrors = true, true
	err := c.ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "mount Secret tunnelmesh-broker") {
		t.Fatalf("missing broker files: %v", err)
	}
	for k, v := range map[string]string{"url": "https://127.0.0.1:1", "ca.crt": "", "credential": "c", "cluster-id": "east"} {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	err = c.ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "ca.crt") {
		t.Fatalf("empty ca.crt: %v", err)
	}
}

package main

import (
	"context"
	"strings"
	"testing"
)

// Bad flags are refused with a clear message before anything is changed.
func TestRunRefusesBadFlags(t *testing.T) {
	base := []string{"--cluster-id", "east", "--pod-cidr", "10.1.0.0/16", "--broker", "https://127.0.0.1:1",
		"--ca-file", "/nonexistent/ca.crt", "--credential-file", "/nonexistent/cred", "--run-dir", "/var/run/wireguard"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen-port", "0"}, "--listen-port 0: want a fixed UDP port in 1-65535"},
		{[]string{"--listen-port", "70000"}, "--listen-port 70000"},
		{[]string{"--epoch", "0"}, "--epoch 0"},
	} {
		c := runCmd()
		c.SetArgs(append(base, tc.args...))
		c.SilenceErrors, c.SilenceUsage = true, true
		err := c.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
}

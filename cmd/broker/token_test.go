package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
)

// run executes the broker CLI in-process and returns its stdout.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRoot()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestTokenCommands(t *testing.T) {
	dir := t.TempDir()
	if _, err := run(t, "init", "--data-dir", dir); err != nil {
		t.Fatalf("init: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		cmd := newRoot()
		cmd.SetArgs([]string{"serve", "--data-dir", dir, "--listen", addr, "--log-level", "warn"})
		done <- cmd.ExecuteContext(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	url := "https://" + addr
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	probe, err := brokerclient.New(url, caPEM, "")
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, probe, done)

	tok, err := run(t, "token", "create", "--data-dir", dir, "--url", url, "--description", "east")
	if err != nil {
		t.Fatalf("token create: %v: %s", err, tok)
	}
	tok = strings.TrimSpace(tok)

	out, err := run(t, "token", "list", "--data-dir", dir, "--url", url, "-o", "json")
	if err != nil {
		t.Fatalf("token list: %v: %s", err, out)
	}
	var infos []api.TokenInfo
	if err := json.Unmarshal([]byte(out), &infos); err != nil || len(infos) != 1 || infos[0].Description != "east" {
		t.Fatalf("token list = %q (%v); want one token described east", out, err)
	}
	if strings.Contains(out, tok) {
		t.Fatal("token list shows the secret")
	}
	if out, err := run(t, "token", "revoke", infos[0].ID, "--data-dir", dir, "--url", url); err != nil {
		t.Fatalf("token revoke: %v: %s", err, out)
	}
	out, _ = run(t, "token", "list", "--data-dir", dir, "--url", url)
	if !strings.Contains(out, "revoked") {
		t.Fatalf("token list after revoke = %q; want it marked revoked", out)
	}
	joiner, _ := brokerclient.New(url, caPEM, "")
	_, err = joiner.Join(context.Background(), tok, api.JoinRequest{ClusterID: "east", PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.101.0.0/16"}})
	var apiErr *api.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("join with a revoked token: err = %v; want an API error", err)
	}

	if _, err := run(t, "token", "create", "--url", url); err == nil {
		t.Fatal("token create without credentials succeeded")
	}
	wrong := filepath.Join(t.TempDir(), "wrong.token")
	os.WriteFile(wrong, []byte("tma.not-the-admin\n"), 0o600)
	if out, err := run(t, "token", "create", "--url", url, "--ca-file", filepath.Join(dir, "ca.crt"), "--credential-file", wrong); err == nil {
		t.Fatalf("token create with a wrong admin credential succeeded: %s", out)
	}
}

func waitReady(t *testing.T, c *brokerclient.Client, done <-chan error) {
	t.Helper()
	for i := 0; i < 100; i++ {
		select {
		case err := <-done:
			t.Fatalf("serve exited: %v", err)
		default:
		}
		if c.Healthy(context.Background()) == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("broker never became ready")
}

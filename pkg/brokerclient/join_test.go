package brokerclient_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
)

// startBroker runs a real broker on loopback and returns its URL, CA and an admin client.
func startBroker(t *testing.T) (string, []byte, *brokerclient.Client) {
	t.Helper()
	b := brokertest.Start(t, brokertest.Options{})
	return b.URL, b.CA, b.Admin()
}

func ensureCredential(ctx context.Context, url string, ca []byte, credFile, tokenFile string, req api.JoinRequest) (string, error) {
	return brokerclient.EnsureCredential(ctx, brokerclient.JoinOnce{URL: url, CA: ca, CredentialFile: credFile,
		JoinTokenFile: tokenFile, Request: req})
}

func TestEnsureCredential(t *testing.T) {
	url, ca, admin := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "join.token")
	credFile := filepath.Join(dir, "east", "credential")
	tok, err := admin.CreateToken(ctx, time.Hour, "east")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(tokFile, []byte(tok+"\n"), 0o600)
	east := api.JoinRequest{ClusterID: "east", PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.101.0.0/16"}}

	if _, err := ensureCredential(ctx, url, ca, credFile, "", east); err == nil {
		t.Fatal("no credential and no join token: want an error")
	}
	cred, err := ensureCredential(ctx, url, ca, credFile, tokFile, east)
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	st, err := os.Stat(credFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("credential file: %v, mode %v; want 0600", err, st.Mode())
	}
	// The credential works: it may register east's gateway.
	c, _ := brokerclient.New(url, ca, cred)
	if err := c.RegisterGateway(ctx, api.Gateway{ClusterID: "east", Hostname: "gw1", PrivateIP: "192.0.2.10", Port: 51820,
		PublicKey: "9kq3sNSNyH9qLAJd7lpUzsDnp8lYjQ/yuxrSpsVq1lo=", Active: true}); err != nil {
		t.Fatalf("register with the stored credential: %v", err)
	}
	// A restart reads the file and never joins again (the token's use count stays 1).
	again, err := ensureCredential(ctx, url, ca, credFile, tokFile, east)
	if err != nil || again != cred {
		t.Fatalf("second start: %q, %v; want the stored credential", again, err)
	}
	toks, err := admin.ListTokens(ctx)
	if err != nil || len(toks) != 1 || toks[0].Uses != 1 {
		t.Fatalf("tokens after restart = %+v, %v; want one token used once", toks, err)
	}

	// An empty credential file is an error, not an empty credential.
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	if _, err := ensureCredential(ctx, url, ca, empty, tokFile, east); err == nil {
		t.Fatal("empty credential file: want an error")
	}

	// A join the broker refuses (a CIDR in the tunnel pool) stores nothing.
	westCred := filepath.Join(dir, "west", "credential")
	west := api.JoinRequest{ClusterID: "west", PodCIDRs: []string{"100.127.9.0/24"}, ServiceCIDRs: []string{"10.102.0.0/16"}}
	_, err = ensureCredential(ctx, url, ca, westCred, tokFile, west)
	var apiErr *api.Error
	if !errors.As(err, &apiErr) || apiErr.Code != api.CodeCIDROverlap || apiErr.Field != "podCIDRs[0]" {
		t.Fatalf("join into the tunnel pool: err = %v; want CIDROverlap on podCIDRs[0]", err)
	}
	if _, err := os.Stat(westCred); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("refused join left a credential file: %v", err)
	}

	// meshctl passes the token itself (from its broker-info file).
	southCred := filepath.Join(dir, "south", "credential")
	south := api.JoinRequest{ClusterID: "south", PodCIDRs: []string{"10.3.0.0/16"}, ServiceCIDRs: []string{"10.103.0.0/16"}}
	got, err := brokerclient.EnsureCredential(ctx, brokerclient.JoinOnce{URL: url, CA: ca, CredentialFile: southCred,
		JoinToken: tok, Request: south})
	if err != nil || got == "" {
		t.Fatalf("join with a token string: %q, %v", got, err)
	}
	if b, _ := os.ReadFile(southCred); strings.TrimSpace(string(b)) != got {
		t.Fatalf("stored credential %q, returned %q", b, got)
	}
}

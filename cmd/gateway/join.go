package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
)

// ensureCredential returns the cluster's broker credential from credFile.
// When the file does not exist yet and a join token file is given, it joins
// the clusterset with that token first and stores the credential it gets
// (0600, written atomically), so a restart never joins twice.
func ensureCredential(ctx context.Context, brokerURL string, ca []byte, credFile, tokenFile string, req api.JoinRequest) (string, error) {
	cred, err := os.ReadFile(credFile)
	if err == nil {
		return strings.TrimSpace(string(cred)), nil
	}
	if !errors.Is(err, fs.ErrNotExist) || tokenFile == "" {
		return "", fmt.Errorf("read --credential-file: %w", err)
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		return "", fmt.Errorf("read --join-token-file: %w", err)
	}
	c, err := brokerclient.New(brokerURL, ca, "")
	if err != nil {
		return "", fmt.Errorf("broker client: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := c.Join(ctx, strings.TrimSpace(string(tok)), req)
	if err != nil {
		return "", fmt.Errorf("join clusterset as %q: %w", req.ClusterID, err)
	}
	if err := os.MkdirAll(filepath.Dir(credFile), 0o700); err != nil {
		return "", fmt.Errorf("store credential: %w", err)
	}
	tmp := credFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(resp.Credential+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("store credential: %w", err)
	}
	if err := os.Rename(tmp, credFile); err != nil {
		return "", fmt.Errorf("store credential: %w", err)
	}
	return resp.Credential, nil
}

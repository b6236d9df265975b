package brokerclient

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
	"github.com/tunnelmesh/tunnelmesh/pkg/fsutil"
)

// JoinOnce says where a cluster keeps its broker credential and how to get
// one the first time.
type JoinOnce struct {
	// URL and CA reach the broker (as for New).
	URL string
	CA  []byte
	// CredentialFile holds the cluster's credential once joined (0600).
	CredentialFile string
	// JoinToken, or else the content of JoinTokenFile, joins the cluster
	// when CredentialFile does not exist yet. With neither, a missing
	// credential file is an error. The token file is read only then, so
	// it may be deleted after the first join.
	JoinToken     string
	JoinTokenFile string
	// Request is the join request (cluster ID and CIDRs).
	Request api.JoinRequest
}

// EnsureCredential returns the cluster's broker credential, joining the
// clusterset first when it has none yet: the credential is stored durably
// (fsutil.WriteFileAtomic) before it is returned, so a restart reads it
// and never joins twice. A join the broker refuses stores nothing. The
// gateway and meshctl both bootstrap through it.
func EnsureCredential(ctx context.Context, j JoinOnce) (string, error) {
	cred, err := os.ReadFile(j.CredentialFile)
	if err == nil {
		c := strings.TrimSpace(string(cred))
		if c == "" {
			return "", fmt.Errorf("credential file %s is empty; delete it to join again with a join token", j.CredentialFile)
		}
		return c, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read credential file: %w", err)
	}
	tok := strings.TrimSpace(j.JoinToken)
	if tok == "" && j.JoinTokenFile != "" {
		b, err := os.ReadFile(j.JoinTokenFile)
		if err != nil {
			return "", fmt.Errorf("read join token file: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	if tok == "" {
		return "", fmt.Errorf("no credential file %s and no join token: give a join token (from `broker token create`) to join once", j.CredentialFile)
	}
	c, err := New(j.URL, j.CA, "")
	if err != nil {
		return "", fmt.Errorf("broker client: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := c.Join(ctx, tok, j.Request)
	if err != nil {
		return "", fmt.Errorf("join clusterset as %q: %w", j.Request.ClusterID, err)
	}
	if err := os.MkdirAll(filepath.Dir(j.CredentialFile), 0o700); err != nil {
		return "", fmt.Errorf("store credential: %w", err)
	}
	if err := fsutil.WriteFileAtomic(j.CredentialFile, []byte(resp.Credential+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("store credential (the cluster has joined: remove it with the admin credential before joining again): %w", err)
	}
	return resp.Credential, nil
}

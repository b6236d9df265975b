package main

import (
	"context"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
)

// ensureCredential joins once with the token file and keeps the credential
// in credFile (brokerclient.EnsureCredential).
func ensureCredential(ctx context.Context, brokerURL string, ca []byte, credFile, tokenFile string, req api.JoinRequest) (string, error) {
	return brokerclient.EnsureCredential(ctx, brokerclient.JoinOnce{URL: brokerURL, CA: ca,
		CredentialFile: credFile, JoinTokenFile: tokenFile, Request: req})
}

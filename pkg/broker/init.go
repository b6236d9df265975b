package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tunnelmesh/tunnelmesh/pkg/broker/core"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerpki"
)

// InitOptions configures Init.
type InitOptions struct {
	DataDir string
	// SANs are extra DNS names or IPs for the server certificate, besides
	// localhost and 127.0.0.1.
	SANs []string
	// Force replaces an existing CA, server certificate and admin token.
	Force bool
	// Store, when set, receives the admin credential's hash instead of a
	// new bbolt store in DataDir (which then holds only the PKI); the
	// caller closes it. A store that already has an admin credential is
	// refused without Force: its replicas share one PKI directory.
	Store store.Store
}

// Init creates the CA, the server certificate and the admin credential in
// opts.DataDir and stores the credential's hash. It returns the admin token.
func Init(opts InitOptions) (string, error) {
	dir := opts.DataDir
	if dir == "" {
		return "", errors.New("no data dir")
	}
	// Checked before anything is created, so a typo leaves no trace.
	if _, _, err := brokerpki.ParseSANs(opts.SANs); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create data dir: %w", err)
	}
	caPath := filepath.Join(dir, brokerpki.FileCACert)
	if _, err := os.Stat(caPath); err == nil && !opts.Force {
		return "", fmt.Errorf("%s already exists; the broker is initialised (use --force to replace its CA, server certificate and admin token)", caPath)
	}
	st := opts.Store
	if st == nil {
		bst, err := store.Create(dir)
		if err != nil {
			return "", err
		}
		defer bst.Close()
		st = bst
	} else if !opts.Force {
		cur, err := st.Load(context.Background(), 0)
		if err != nil {
			return "", err
		}
		if len(cur.Records[store.KindMeta][core.MetaAdminHash]) > 0 {
			return "", errors.New("the store already holds an initialised clusterset (it has an admin credential); " +
				"give every broker replica the PKI directory made when it was initialised (`serve --pki-dir`), " +
				"or use --force to replace the CA, server certificate and admin credential")
		}
	}

	files, err := brokerpki.Generate(opts.SANs)
	if err != nil {
		return "", err
	}
	if err := brokerpki.WriteDir(dir, files); err != nil {
		return "", err
	}
	admin := brokerpki.AdminToken(files)
	if err := SetAdminToken(context.Background(), st, admin); err != nil {
		return "", err
	}
	return admin, nil
}

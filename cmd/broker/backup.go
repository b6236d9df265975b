package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerpki"
)

func newBackupCommands() []*cobra.Command { return []*cobra.Command{newBackup(), newRestore()} }

// newBackup copies the store consistently. With no broker serving the data
// dir it reads the file in one bbolt read transaction; while a broker
// serves it (the file is locked) it asks that broker for the same copy
// over its admin API (GET /v1/backup), so backups need no downtime.
func newBackup() *cobra.Command {
	var dataDir, out, url string
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Write a consistent copy of the broker's store to --out (works while the broker serves)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in, err := store.BackupFile(dataDir, out)
			via := "from the data dir (no broker serving it)"
			if errors.Is(err, store.ErrInUse) {
				via = "through the broker serving it at " + url
				in, err = backupOnline(cmd.Context(), dataDir, out, url)
			}
			if err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backed up revision %d (%s; %d bytes) %s to %s\n",
				in.Revision, counts(in), in.Bytes, via, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "broker data directory (required)")
	f.StringVar(&out, "out", "", "backup file to write (required)")
	f.StringVar(&url, "url", "https://127.0.0.1:8443", "the serving broker's URL, used when a broker holds the data dir")
	_ = cmd.MarkFlagRequired("data-dir")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

func backupOnline(ctx context.Context, dataDir, out, url string) (store.Info, error) {
	ca, err := os.ReadFile(filepath.Join(dataDir, brokerpki.FileCACert))
	if err != nil {
		return store.Info{}, err
	}
	admin, err := os.ReadFile(filepath.Join(dataDir, brokerpki.FileAdminToken))
	if err != nil {
		return store.Info{}, err
	}
	c, err := brokerclient.New(url, ca, strings.TrimSpace(string(admin)))
	if err != nil {
		return store.Info{}, err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	err = store.WriteFileFrom(out, func(w io.Writer) (int64, error) { return c.Backup(ctx, w) })
	if err != nil {
		return store.Info{}, fmt.Errorf("the data dir is in use, and the broker at %s did not give a backup (pass its address with --url): %w", url, err)
	}
	return store.VerifyFile(out)
}

func newRestore() *cobra.Command {
	var dataDir, from string
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Put a backup made by `broker backup` in place as the store of --data-dir (the broker must be stopped)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in, kept, err := store.Restore(dataDir, from)
			if err != nil {
				return fmt.Errorf("restore: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored revision %d (%s) into %s\n", in.Revision, counts(in), dataDir)
			if kept != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "the replaced store is kept as %s; delete it once the broker runs well\n", kept)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "broker data directory made by `broker init` (required)")
	f.StringVar(&from, "from", "", "backup file made by `broker backup` (required)")
	_ = cmd.MarkFlagRequired("data-dir")
	_ = cmd.MarkFlagRequired("from")
	return cmd
}

func counts(in store.Info) string {
	return fmt.Sprintf("%d clusters, %d gateways, %d exports, %d join tokens",
		in.Records[store.KindCluster], in.Records[store.KindGateway], in.Records[store.KindExport], in.Records[store.KindToken])
}

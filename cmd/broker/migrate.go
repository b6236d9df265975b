package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
)

// newMigrate copies a stopped broker's store into a new, empty one of the
// other kind, so a clusterset moves between bbolt and etcd without any
// cluster joining again (credentials, tokens, revisions and the watch log
// come along; the PKI directory stays as it is).
func newMigrate() *cobra.Command {
	var (
		from, to string
		sf       storeFlags
	)
	cmd := &cobra.Command{
		Use:   "migrate --from bolt:DATA_DIR --to etcd[:PREFIX] [--etcd-endpoints …]",
		Short: "Copy a broker store into a new, empty one (bbolt to etcd or back); stop every broker first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fk, fa, err := parseStoreArg("--from", from)
			if err != nil {
				return err
			}
			tk, ta, err := parseStoreArg("--to", to)
			if err != nil {
				return err
			}
			if fk == tk && fk == storeEtcd {
				return fmt.Errorf("--from and --to are both etcd; copy between etcd clusters with etcd's own tools")
			}
			open := func(kind, arg string, create bool) (store.Store, error) {
				if kind == storeBolt {
					if create {
						return store.Create(arg)
					}
					return store.OpenBolt(arg)
				}
				f := sf
				if arg != "" {
					f.prefix = arg
				}
				return f.openEtcd(cmd.Context(), create)
			}
			src, err := open(fk, fa, false)
			if err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			defer src.Close()
			dst, err := open(tk, ta, true)
			if err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			defer dst.Close()
			res, err := store.Copy(cmd.Context(), src, dst)
			if err != nil {
				return fmt.Errorf("migrate: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "migrated revision %d: %d records, %d log entries, from %s to %s\n",
				res.Revision, res.Records, res.LogEntries, from, to)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "source store: bolt:DATA_DIR or etcd[:PREFIX] (required)")
	f.StringVar(&to, "to", "", "target store, new or empty: bolt:DATA_DIR or etcd[:PREFIX] (required)")
	sf.registerEtcd(f)
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

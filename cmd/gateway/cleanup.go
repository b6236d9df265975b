package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tunnelmesh/tunnelmesh/pkg/nodeclean"
)

// cleanupCmd is `meshctl leave`'s and `uninstall`'s node cleanup DaemonSet:
// its init container cleans, its main container waits (so that the
// DaemonSet is ready exactly when every node is clean).
func cleanupCmd() *cobra.Command {
	var (
		cfg  nodeclean.Config
		wait bool
	)
	c := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove from this node every route, device, nftables table, kernel setting and state file of tunnelmesh (for leave and uninstall)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if wait {
				sig := make(chan os.Signal, 1)
				signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
				<-sig
				return nil
			}
			done, err := nodeclean.Clean(cfg)
			for _, d := range done {
				fmt.Fprintln(cmd.OutOrStdout(), d)
			}
			if err != nil {
				return fmt.Errorf("node cleanup: %w", err)
			}
			if len(done) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "nothing of tunnelmesh on this node")
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&cfg.StateDir, "state-dir", "/var/lib/tunnelmesh", "the node's tunnelmesh state directory (its files are removed; the kernel settings' record is read from it)")
	fl.StringVar(&cfg.RunDir, "run-dir", "/var/run/wireguard", "directory of the WireGuard control socket")
	fl.BoolVar(&wait, "wait", false, "clean nothing; wait for SIGTERM (the DaemonSet's main container)")
	return c
}

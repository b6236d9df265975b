// Command broker is the tunnelmesh broker: `broker init` creates its CA,
// server certificate and admin credential; `broker serve` runs it.
package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerpki"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "broker:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "broker",
		Short:         "tunnelmesh broker: stores clusters, gateways and exports; streams changes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newInit(), newServe(), newToken(), newMigrate())
	root.AddCommand(newBackupCommands()...)
	return root
}

func newInit() *cobra.Command {
	var (
		opts broker.InitOptions
		sf   storeFlags
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the CA, server certificate and admin credential in --data-dir (and the store: there, or in etcd)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, _, err := brokerpki.ParseSANs(opts.SANs); err != nil {
				return fmt.Errorf("--san: %w", err)
			}
			if err := sf.check(); err != nil {
				return err
			}
			where := opts.DataDir
			if sf.kind == storeEtcd {
				st, err := sf.openEtcd(cmd.Context(), true)
				if err != nil {
					return err
				}
				defer st.Close()
				opts.Store = st
				where = fmt.Sprintf("%s (records in etcd under %s)", opts.DataDir, sf.prefix)
			}
			if _, err := broker.Init(opts); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "initialised %s\n  CA certificate: %s\n  admin credential: %s (keep it secret)\n",
				where, filepath.Join(opts.DataDir, brokerpki.FileCACert), filepath.Join(opts.DataDir, brokerpki.FileAdminToken))
			return nil
		},
	}
	sf.register(cmd.Flags())
	cmd.Flags().StringVar(&opts.DataDir, "data-dir", "", "broker data directory (required)")
	cmd.Flags().StringSliceVar(&opts.SANs, "san", nil, "extra DNS name or IP address clients use to reach the broker, for the server certificate (repeatable or comma-separated; no URLs, ports or brackets)")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "replace an existing CA, server certificate and admin credential")
	_ = cmd.MarkFlagRequired("data-dir")
	return cmd
}

func newServe() *cobra.Command {
	var (
		dataDir, pkiDir, listen, tunnelCIDR, logLevel, debugListen string
		staleAfter, bookmark, responseTimeout                      time.Duration
		retention, maxWatches                                      int
		sf                                                         storeFlags
		caps                                                       memberCaps
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the broker API over HTTPS",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			slog.SetDefault(log)
			pool, err := netip.ParsePrefix(tunnelCIDR)
			if err != nil || pool.Masked() != pool || !pool.Addr().Is4() || pool.Bits() > 30 {
				return fmt.Errorf("--tunnel-cidr %q: want a canonical IPv4 CIDR of /30 or larger", tunnelCIDR)
			}
			if staleAfter < broker.MinStaleAfter {
				return fmt.Errorf("--stale-after %s: want at least %s, and at least two of the gateways' heartbeats (gateway --heartbeat-interval)",
					staleAfter, broker.MinStaleAfter)
			}
			if err := sf.check(); err != nil {
				return err
			}
			if err := caps.check(); err != nil {
				return err
			}
			if pkiDir == "" {
				pkiDir = dataDir
			}
			// Refuses a PKI dir without its CA or with a server
			// certificate from another CA, before anything listens.
			tlsConf, err := brokerpki.ServerTLS(pkiDir)
			if err != nil {
				return err
			}
			st, err := sf.open(cmd.Context(), dataDir, pkiDir != dataDir, log)
			if err != nil {
				return err
			}
			defer st.Close()
			if pkiDir != dataDir {
				tok, err := os.ReadFile(filepath.Join(pkiDir, brokerpki.FileAdminToken))
				if err != nil {
					return fmt.Errorf("--pki-dir: %w", err)
				}
				if err := broker.SetAdminToken(cmd.Context(), st, string(tok)); err != nil {
					return err
				}
			}
			b, err := broker.New(broker.Config{
				Store:            st,
				StaleAfter:       staleAfter,
				TunnelCIDR:       pool,
				LogRetention:     retention,
				BookmarkInterval: bookmark,
				ResponseTimeout:  responseTimeout,
				Logger:           log,

				MaxWatchesPerCredential: maxWatches,
				MaxGatewaysPerCluster:   caps.gateways,
				MaxExportsPerCluster:    caps.exports,
				MaxSlicesPerExport:      caps.slices,
			})
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				b.Close()
				return fmt.Errorf("listen %s: %w", listen, err)
			}
			if debugListen != "" {
				go func() {
					// net/http/pprof registers on http.DefaultServeMux.
					log.Warn("debug listener stopped", "err", http.ListenAndServe(debugListen, nil))
				}()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			if err := b.Serve(ctx, ln, tlsConf); err != nil {
				return err
			}
			log.Info("broker stopped")
			return nil
		},
	}
	f := cmd.Flags()
	sf.register(f)
	f.StringVar(&dataDir, "data-dir", "", "broker data directory made by `broker init` (required; with --store etcd it holds only the PKI)")
	f.StringVar(&pkiDir, "pki-dir", "", "directory with the server certificate, key and admin.token made by `broker init`, when not the data directory (e.g. a mounted Secret); its admin credential is the store's")
	f.StringVar(&listen, "listen", ":8443", "HTTPS listen address")
	f.DurationVar(&staleAfter, "stale-after", broker.DefaultStaleAfter, "mark a gateway stale after this long without a heartbeat (at least 3s)")
	f.StringVar(&tunnelCIDR, "tunnel-cidr", broker.DefaultTunnelCIDR.String(), "pool of per-cluster tunnel IPs; joins overlapping it are refused")
	f.IntVar(&retention, "log-retention", broker.DefaultLogRetention, "changes kept for watch resumption; older watchers get a snapshot")
	f.DurationVar(&bookmark, "bookmark-interval", broker.DefaultBookmarkInterval, "bookmark period on idle watch streams")
	f.DurationVar(&responseTimeout, "response-timeout", broker.DefaultResponseTimeout, "longest time to write one response (watch streams: each chunk); clients that do not read are dropped")
	f.IntVar(&maxWatches, "max-watches-per-credential", broker.DefaultWatchesPerCred, "open watch streams one credential may hold")
	caps.register(f)
	f.StringVar(&debugListen, "debug-listen", "", "serve Go pprof (no TLS, no auth) on this address, e.g. 127.0.0.1:6060; off by default")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	_ = cmd.MarkFlagRequired("data-dir")
	return cmd
}

// memberCaps are the caps on what one member cluster may hold.
type memberCaps struct{ gateways, exports, slices int }

func (c *memberCaps) register(f *pflag.FlagSet) {
	f.IntVar(&c.gateways, "max-gateways-per-cluster", broker.DefaultGatewaysPerCluster, "gateways one cluster may register (each one's heartbeats are kept by every replica)")
	f.IntVar(&c.exports, "max-exports-per-cluster", broker.DefaultExportsPerCluster, "exports one cluster may publish (each ClusterSetIP import takes a ClusterIP in every importing cluster)")
	f.IntVar(&c.slices, "max-slices-per-export", broker.DefaultSlicesPerExport, fmt.Sprintf("EndpointSlices one export may make in every importing cluster (at most %d, the most importers build)", api.MaxSlicesPerExport))
}

func (c *memberCaps) check() error {
	switch {
	case c.gateways < 1:
		return fmt.Errorf("--max-gateways-per-cluster %d: want at least 1", c.gateways)
	case c.exports < 1:
		return fmt.Errorf("--max-exports-per-cluster %d: want at least 1", c.exports)
	case c.slices < 1 || c.slices > api.MaxSlicesPerExport:
		return fmt.Errorf("--max-slices-per-export %d: want 1 to %d (importers build no more)", c.slices, api.MaxSlicesPerExport)
	}
	return nil
}

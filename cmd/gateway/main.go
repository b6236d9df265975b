// Command gateway runs tunnelmesh's data plane on a gateway node: a
// WireGuard device with a peer per remote cluster, routes, an nftables table
// and health probes, all following the broker.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/gateway"
	"github.com/tunnelmesh/tunnelmesh/pkg/wg"
)

func main() {
	if err := rootCmd().ExecuteContext(context.Background()); err != nil {
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{Use: "gateway", Short: "tunnelmesh gateway: WireGuard tunnels and routes between clusters", SilenceUsage: true}
	root.AddCommand(runCmd(), controllerCmd(), k8sCmd(), sysctlCmd(), cleanupCmd())
	return root
}

type runFlags struct {
	clusterID, broker, caFile, credFile, keyFile, hostname string
	joinTokenFile                                          string
	publicIP, privateIP, iface, mode, runDir, stateFile    string
	metrics, logLevel                                      string
	podCIDRs, svcCIDRs                                     []string
	listenPort, mtu                                        int
	epoch                                                  int64
}

func runCmd() *cobra.Command {
	var f runFlags
	c := &cobra.Command{
		Use:   "run",
		Short: "Run the gateway outside Kubernetes",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.clusterID, "cluster-id", "", "this cluster's ID in the clusterset (required)")
	fl.StringSliceVar(&f.podCIDRs, "pod-cidr", nil, "this cluster's pod CIDR (repeatable, required)")
	fl.StringSliceVar(&f.svcCIDRs, "service-cidr", nil, "this cluster's service CIDR (repeatable)")
	fl.StringVar(&f.broker, "broker", "", "broker URL, e.g. https://192.0.2.1:8443 (required)")
	fl.StringVar(&f.caFile, "ca-file", "", "PEM file with the broker's CA certificate (required)")
	fl.StringVar(&f.credFile, "credential-file", "", "file holding this cluster's broker credential (required; written by a join with --join-token-file)")
	fl.StringVar(&f.joinTokenFile, "join-token-file", "", "join token to use when --credential-file does not exist yet; the credential it yields is stored there")
	fl.StringVar(&f.keyFile, "key-file", "/var/lib/tunnelmesh/private.key", "WireGuard private key file; created if missing")
	fl.IntVar(&f.listenPort, "listen-port", defaults.ListenPort, "WireGuard UDP port (1-65535)")
	fl.Int64Var(&f.epoch, "epoch", 1, "failover epoch announced with the active registration; raise it to take over from another active gateway of the cluster")
	fl.StringVar(&f.hostname, "hostname", "", "gateway name announced to the broker (default: the host name)")
	fl.StringVar(&f.publicIP, "public-ip", "", "public address peers should use (default: none; peers use the private or broker-observed address)")
	fl.StringVar(&f.privateIP, "private-ip", "", "underlay address (default: the local address towards the broker)")
	fl.IntVar(&f.mtu, "mtu", 0, fmt.Sprintf("tunnel MTU (default: underlay MTU - %d)", defaults.WireGuardOverhead))
	fl.StringVar(&f.iface, "interface", defaults.Interface, "WireGuard interface name")
	fl.StringVar(&f.mode, "wireguard", "auto", "WireGuard implementation: auto, kernel or userspace")
	fl.StringVar(&f.runDir, "run-dir", wg.DefaultRunDir, "directory for the UAPI socket; another directory is bound over "+wg.DefaultRunDir+" in a private mount namespace")
	fl.StringVar(&f.stateFile, "state-file", "", "last broker state, reused when restarting during a broker outage (default: state.json next to --key-file)")
	fl.StringVar(&f.metrics, "metrics", ":9570", "Prometheus metrics listen address (empty disables)")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	return c
}

func run(ctx context.Context, f runFlags) error {
	log, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	var missing []string
	for _, fv := range [][2]string{{"cluster-id", f.clusterID}, {"broker", f.broker}, {"ca-file", f.caFile}, {"credential-file", f.credFile}} {
		if fv[1] == "" {
			missing = append(missing, "--"+fv[0])
		}
	}
	if len(f.podCIDRs) == 0 {
		missing = append(missing, "--pod-cidr")
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing required flags: %s", strings.Join(missing, ", "))
	}
	if f.listenPort < 1 || f.listenPort > 65535 {
		return fmt.Errorf("--listen-port %d: want a fixed UDP port in 1-65535 (remote gateways reach this one on the port it announces; 0 would pick a random one)", f.listenPort)
	}
	if f.epoch < 1 {
		return fmt.Errorf("--epoch %d: want 1 or more", f.epoch)
	}
	pods, err := gateway.ParsePrefixes("pod-cidr", f.podCIDRs)
	if err != nil {
		return err
	}
	svcs, err := gateway.ParsePrefixes("service-cidr", f.svcCIDRs)
	if err != nil {
		return err
	}
	// Before anything else: this may re-execute the process.
	if err := wg.UseRunDir(f.runDir); err != nil {
		return err
	}
	ca, err := os.ReadFile(f.caFile)
	if err != nil {
		return fmt.Errorf("read --ca-file: %w", err)
	}
	cred, err := ensureCredential(ctx, f.broker, ca, f.credFile, f.joinTokenFile, api.JoinRequest{
		ClusterID: f.clusterID, PodCIDRs: f.podCIDRs, ServiceCIDRs: f.svcCIDRs,
	})
	if err != nil {
		return err
	}
	key, err := wg.LoadOrCreateKey(f.keyFile)
	if err != nil {
		return err
	}
	if f.hostname == "" {
		if f.hostname, err = os.Hostname(); err != nil {
			return fmt.Errorf("hostname: %w", err)
		}
	}
	localIP, brokerIP, err := gateway.OutboundIP(f.broker)
	if err != nil && (f.privateIP == "" || f.mtu == 0) {
		return fmt.Errorf("%w; or set --private-ip and --mtu", err)
	}
	if f.privateIP == "" {
		f.privateIP = localIP.String()
	}
	if f.mtu == 0 {
		if f.mtu, err = gateway.TunnelMTU(brokerIP); err != nil {
			return fmt.Errorf("underlay MTU: %w; or set --mtu", err)
		}
	}
	if f.stateFile == "" {
		f.stateFile = filepath.Join(filepath.Dir(f.keyFile), "state.json")
	}
	bc, err := brokerclient.New(f.broker, ca, cred)
	if err != nil {
		return fmt.Errorf("broker client: %w", err)
	}
	local := gateway.Local{ClusterID: f.clusterID, Interface: f.iface, PodCIDRs: pods, ServiceCIDRs: svcs}
	for _, s := range []string{f.privateIP, f.publicIP} {
		if a, err := netip.ParseAddr(s); err == nil {
			local.UnderlayAddrs = append(local.UnderlayAddrs, a.Unmap())
		}
	}
	if localIP != nil {
		if a, ok := netip.AddrFromSlice(localIP); ok {
			local.UnderlayAddrs = append(local.UnderlayAddrs, a.Unmap())
		}
	}
	if brokerIP != nil {
		if a, ok := netip.AddrFromSlice(brokerIP); ok {
			local.BrokerAddrs = append(local.BrokerAddrs, a.Unmap())
		}
	}
	eng := gateway.New(gateway.Config{
		Local:      local,
		Role:       gateway.RoleActive, // outside Kubernetes the process is its cluster's active gateway
		Epoch:      f.epoch,
		Hostname:   f.hostname,
		PrivateKey: key,
		ListenPort: f.listenPort,
		PublicIP:   f.publicIP,
		PrivateIP:  f.privateIP,
		MTU:        f.mtu,
		Mode:       wg.Mode(f.mode),
		StateFile:  f.stateFile,
		Log:        log,
	}, bc)

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f.metrics != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(eng.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		ln, err := net.Listen("tcp", f.metrics)
		if err != nil {
			return fmt.Errorf("--metrics %s: %w", f.metrics, err)
		}
		srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "err", err)
			}
		}()
		defer srv.Close()
	}
	return eng.Run(ctx)
}

// newLogger is every subcommand's structured logger on stderr at --log-level.
func newLogger(level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})), nil
}

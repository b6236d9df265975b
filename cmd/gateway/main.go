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
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
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

func runCmd() *cobra.Command {
	c := defaultConfig()
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the gateway outside Kubernetes",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), c)
		},
	}
	c.register(cmd.Flags(), modeRun)
	return cmd
}

func run(ctx context.Context, f config) error {
	log, err := newLogger(f.LogLevel)
	if err != nil {
		return err
	}
	p, err := f.check(modeRun)
	if err != nil {
		return err
	}
	// Before anything else: this may re-execute the process.
	if err := wg.UseRunDir(f.RunDir); err != nil {
		return err
	}
	ca, err := os.ReadFile(f.CAFile)
	if err != nil {
		return fmt.Errorf("read --ca-file: %w", err)
	}
	cred, err := ensureCredential(ctx, f.Broker, ca, f.CredentialFile, f.JoinTokenFile, api.JoinRequest{
		ClusterID: f.ClusterID, PodCIDRs: f.PodCIDRs, ServiceCIDRs: f.ServiceCIDRs,
	})
	if err != nil {
		return err
	}
	key, err := wg.LoadOrCreateKey(f.KeyFile)
	if err != nil {
		return err
	}
	if f.Hostname == "" {
		if f.Hostname, err = os.Hostname(); err != nil {
			return fmt.Errorf("hostname: %w", err)
		}
	}
	localIP, brokerIP, err := gateway.OutboundIP(f.Broker)
	if err != nil && (f.PrivateIP == "" || f.MTU == 0) {
		return fmt.Errorf("%w; or set --private-ip and --mtu", err)
	}
	if f.PrivateIP == "" {
		f.PrivateIP = localIP.String()
	}
	if f.MTU == 0 {
		if f.MTU, err = gateway.TunnelMTU(brokerIP); err != nil {
			return fmt.Errorf("underlay MTU: %w; or set --mtu", err)
		}
	}
	bc, err := brokerclient.New(f.Broker, ca, cred)
	if err != nil {
		return fmt.Errorf("broker client: %w", err)
	}
	local := gateway.Local{ClusterID: f.ClusterID, Interface: f.Interface, PodCIDRs: p.pods, ServiceCIDRs: p.services,
		DNSAddrs: gateway.Nameservers(f.ResolvConf...), NodeAddrs: p.nodeIPs}
	for _, s := range []string{f.PrivateIP, f.PublicIP} {
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
		Local:             local,
		Role:              gateway.RoleActive, // outside Kubernetes the process is its cluster's active gateway
		Epoch:             f.Epoch,
		Hostname:          f.Hostname,
		PrivateKey:        key,
		ListenPort:        f.ListenPort,
		PublicIP:          f.PublicIP,
		PrivateIP:         f.PrivateIP,
		MTU:               f.MTU,
		Mode:              wg.Mode(f.WireGuard),
		HeartbeatInterval: f.HeartbeatInterval,
		Log:               log,
	}, bc, gateway.NewSource(gateway.SourceConfig{Broker: bc, StateFile: f.StateFile, Local: local, Log: log}))

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	reg := prometheus.NewRegistry()
	reg.MustRegister(eng.Collector())
	var underlay []netip.Addr
	if a, err := netip.ParseAddr(f.PrivateIP); err == nil {
		underlay = append(underlay, a.Unmap())
	}
	closeMetrics, err := serveMetrics(f.Metrics, underlay, reg, log)
	if err != nil {
		return err
	}
	defer closeMetrics()
	return eng.Run(ctx)
}

// serveMetrics serves reg (with the Go and process collectors added) on
// addr until the returned func is called; an empty addr serves nothing.
// An addr without a host (":9570", the default) listens on the node's own
// address (the first of nodeIPs), never on every address of a host-network
// pod; "0.0.0.0:9570" asks for every address.
func serveMetrics(addr string, nodeIPs []netip.Addr, reg *prometheus.Registry, log *slog.Logger) (func(), error) {
	if addr == "" {
		return func() {}, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics %q: want host:port or :port: %w", addr, err)
	}
	if host == "" {
		if len(nodeIPs) == 0 {
			return nil, fmt.Errorf("--metrics %q: no node address known to listen on; give one (or 0.0.0.0:%s for every address)", addr, port)
		}
		addr = net.JoinHostPort(nodeIPs[0].String(), port)
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", addr, err)
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	return func() { srv.Close() }, nil
}

// newLogger is every subcommand's structured logger on stderr at --log-level.
func newLogger(level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})), nil
}

// Command meshnet is tunnelmesh's small CNI daemon for kind clusters (like kind's
// kindnetd, but ours). Run as a hostNetwork DaemonSet, it writes the node's CNI
// config (ptp + host-local over spec.podCIDRs + portmap), routes every other node's
// pod CIDRs via that node's InternalIP and masquerades pod traffic leaving the
// cluster, except to CIDRs on the no-masquerade list (env and ConfigMap).
//
// Environment: NODE_NAME (required), POD_SUBNET, SERVICE_SUBNET, NO_MASQUERADE_CIDRS,
// NO_MASQUERADE_INTERFACES (name prefixes, e.g. tmesh: traffic into tunnelmesh's tunnels
// keeps pod source IPs),
// CONTROL_PLANE_ENDPOINT (host:port, set by kind), POD_NAMESPACE, CONFIGMAP_NAME,
// CNI_CONF_DIR, METRICS_ADDR, RESYNC.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/tunnelmesh/tunnelmesh/images/components/meshnet/apply"
	"github.com/tunnelmesh/tunnelmesh/images/components/meshnet/daemon"
	"github.com/tunnelmesh/tunnelmesh/images/components/meshnet/plan"
	"github.com/vishvananda/netlink"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("meshnet failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	node := os.Getenv("NODE_NAME")
	if node == "" {
		return errors.New("NODE_NAME is empty; set it from the downward API (spec.nodeName)")
	}
	var skip []netip.Prefix
	for _, k := range []string{"POD_SUBNET", "SERVICE_SUBNET", "NO_MASQUERADE_CIDRS"} {
		ps, err := plan.ParseCIDRs(os.Getenv(k))
		if err != nil {
			return fmt.Errorf("env %s: %w", k, err)
		}
		skip = append(skip, ps...)
	}
	skipIfs, err := plan.ParseInterfacePrefixes(os.Getenv("NO_MASQUERADE_INTERFACES"))
	if err != nil {
		return fmt.Errorf("env NO_MASQUERADE_INTERFACES: %w", err)
	}
	resync := 30 * time.Second
	if v := os.Getenv("RESYNC"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("env RESYNC=%q: want a positive duration like 30s", v)
		}
		resync = d
	}

	rc, err := rest.InClusterConfig()
	if err != nil {
		return fmt.Errorf("in-cluster config: %w", err)
	}
	// Before kube-proxy runs the kubernetes Service IP goes nowhere; kind hands us the
	// API server's real address for that reason.
	if ep := os.Getenv("CONTROL_PLANE_ENDPOINT"); ep != "" {
		rc.Host = "https://" + ep
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	masq, err := apply.NewMasquerade(-1)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	d := daemon.New(daemon.Config{
		NodeName:    node,
		Client:      client,
		CNIConfDir:  envOr("CNI_CONF_DIR", "/etc/cni/net.d"),
		StaticSkip:  skip,
		SkipOutIfs:  skipIfs,
		ConfigMapNS: envOr("POD_NAMESPACE", "kube-system"),
		ConfigMap:   envOr("CONFIGMAP_NAME", "tunnelmesh-cni"),
		Resync:      resync,
		MTU:         linkMTU,
		Routes:      apply.NewRoutes(nil),
		Masquerade:  masq,
		Log:         log,
		Metrics:     reg,
	})

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if addr := envOr("METRICS_ADDR", ":9109"); addr != "off" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "addr", addr, "err", err)
			}
		}()
		defer srv.Close()
	}
	go func() {
		onDelete := func() {
			log.Info("a meshnet route was deleted; reconciling")
			d.Kick()
		}
		// Once subscribed, d.Kick checks the routes: one deleted before the watch raised no event.
		if err := apply.WatchRouteDeletes(ctx, nil, d.Kick, onDelete); err != nil {
			log.Warn("not watching route deletions; relying on the periodic resync", "err", err)
		}
	}()
	return d.Run(ctx)
}

// linkMTU returns the MTU of the interface holding one of the node's InternalIPs
// (0, the plugin default, when none is found).
func linkMTU(nodeIPs []netip.Addr) int {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return 0
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		for _, n := range nodeIPs {
			if ip.Unmap() == n {
				if l, err := netlink.LinkByIndex(a.LinkIndex); err == nil {
					return l.Attrs().MTU
				}
			}
		}
	}
	return 0
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

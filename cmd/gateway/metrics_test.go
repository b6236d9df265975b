package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics with host networking: the default address (no host) listens on
// the node's own address only, never on every address of the node (public
// ones included).
func TestMetricsListenOnTheNodeAddressByDefault(t *testing.T) {
	def := defaultConfig().Metrics
	host, port, err := net.SplitHostPort(def)
	if err != nil || host != "" || port != "9570" {
		t.Fatalf("default --metrics %q; want \":9570\" (the node's address, port 9570)", def)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a free port for the test
	if err != nil {
		t.Fatal(err)
	}
	free := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	node := netip.MustParseAddr("127.0.0.2")
	stop, err := serveMetrics(fmt.Sprintf(":%d", free), []netip.Addr{node}, prometheus.NewRegistry(), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	get := func(host string) error {
		c := http.Client{Timeout: 2 * time.Second}
		r, err := c.Get(fmt.Sprintf("http://%s/metrics", net.JoinHostPort(host, fmt.Sprint(free))))
		if err == nil {
			_, _ = io.Copy(io.Discard, r.Body)
			r.Body.Close()
		}
		return err
	}
	if err := get(node.String()); err != nil {
		t.Fatalf("metrics on the node address %s: %v", node, err)
	}
	if err := get("127.0.0.1"); err == nil {
		t.Fatal("metrics answered on 127.0.0.1, an address other than the node's: they listen on every address")
	}
}

// Package benchmark is `meshctl benchmark throughput|latency`.
package benchmark

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/env"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/output"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/probe"
)

// New returns `benchmark` and its two kinds.
func New(e *env.Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "benchmark",
		Short: "Measure throughput or latency between pods of two member clusters",
		Args:  cobra.NoArgs,
		RunE:  func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	kind := func(name, short string) *cobra.Command {
		var (
			other env.Other
			o     = probe.BenchOptions{Kind: name}
			f     output.Format
		)
		c := &cobra.Command{
			Use:   name,
			Short: short,
			Long: short + `: a server pod in this cluster (--context), client pods in the other
(--to-context), one on its active gateway node and one on a non-gateway node
unless --client-node names one; by pod IP, one TCP connection. Everything it
creates is deleted at the end, also on a timeout or Ctrl-C. Needs the
project's netclient image on the nodes of both clusters (kind load docker-image
tunnelmesh/netclient:dev --name CLUSTER).`,
			Example: "  meshctl benchmark " + name + " --context kind-east --to-context kind-west",
			Args:    cobra.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				pair, err := e.Pair(c.Context(), other)
				if err != nil {
					return err
				}
				o.Progress = e.Progress()
				rep, err := probe.Benchmark(c.Context(), pair, o)
				if rep != nil && len(rep.Rows) > 0 {
					if perr := output.Print(e.Out, f, rep, rep.Grid()); perr != nil && err == nil {
						err = perr
					}
				}
				if err != nil {
					return err
				}
				if n := rep.Failed(); n > 0 {
					return cli.Failed(nil, "run `meshctl verify` with the same contexts to see which path fails", "%d of %d measurements failed", n, len(rep.Rows))
				}
				return nil
			},
		}
		fl := c.Flags()
		other.AddTo(fl)
		fl.StringVar(&o.ServerNode, "server-node", "", "node of this cluster for the server (default: a non-gateway node)")
		fl.StringVar(&o.ClientNode, "client-node", "", "one node of the other cluster for the client (default: its active gateway and a non-gateway node)")
		fl.StringVar(&o.Image, "image", probe.ClientImage, "the netclient image (server and clients)")
		fl.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "give up after this long (cleanup comes on top)")
		if name == probe.Throughput {
			fl.DurationVar(&o.Duration, "duration", 10*time.Second, "how long each client sends")
		} else {
			fl.IntVar(&o.Samples, "samples", 1000, "round trips per client")
		}
		output.AddFlag(c, &f)
		return c
	}
	cmd.AddCommand(
		kind(probe.Throughput, "TCP throughput between two clusters in Gb/s"),
		kind(probe.Latency, "TCP round-trip time between two clusters (p50, p99)"),
	)
	return cmd
}

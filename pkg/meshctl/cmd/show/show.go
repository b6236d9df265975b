// Package show is `meshctl show`.
package show

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"

	"github.com/spf13/cobra"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/access"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/env"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/output"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/view"
)

// New returns `show` and its nouns.
func New(e *env.Env) *cobra.Command {
	var af access.Flags
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show the clusterset: clusters, gateways, connections, exports, a graph",
		Long: `Show what the broker knows. The broker and a credential come from the current
cluster's Secret tunnelmesh-system/tunnelmesh-broker (a member cluster), or from
--broker-info/--broker-url with --credential-file (the admin or a cluster credential).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	p := cmd.PersistentFlags()
	p.StringVar(&af.InfoFile, "broker-info", "", "broker-info file giving the broker's URL and CA")
	p.StringVar(&af.URL, "broker-url", "", "broker URL (overrides --broker-info's)")
	p.StringVar(&af.CAFile, "ca-file", "", "broker CA certificate (overrides --broker-info's)")
	p.StringVar(&af.CredentialFile, "credential-file", "", "file holding the admin or a cluster credential")

	load := func(ctx context.Context) (*view.Data, error) {
		c, u, err := af.Client(ctx, e.Kube.Connect)
		if err != nil {
			return nil, err
		}
		d, err := view.Load(ctx, c, nil)
		if err != nil {
			return nil, access.Explain(err, u)
		}
		return d, nil
	}
	noun := func(name, short string, pick func(*view.Data) (any, output.Grid)) *cobra.Command {
		var f output.Format
		c := &cobra.Command{
			Use:   name,
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				d, err := load(c.Context())
				if err != nil {
					return err
				}
				obj, grid := pick(d)
				return output.Print(e.Out, f, obj, grid)
			},
		}
		output.AddFlag(c, &f)
		return c
	}
	cmd.AddCommand(
		noun("clusters", "Member clusters, their CIDRs and active gateway", func(d *view.Data) (any, output.Grid) { o, g := d.Clusters(); return o, g }),
		noun("gateways", "Gateways: active and standby, endpoints, heartbeats", func(d *view.Data) (any, output.Grid) { o, g := d.Gateways(); return o, g }),
		noun("exports", "Exported services of every cluster", func(d *view.Data) (any, output.Grid) { o, g := d.Exports(); return o, g }),
		noun("connections", "Tunnels: status, RTT, last handshake, rx/tx per remote cluster", func(d *view.Data) (any, output.Grid) {
			o, g := d.Connections()
			return o, g
		}),
		newAll(e, load),
		newGraph(e, load),
	)
	return cmd
}

func newAll(e *env.Env, load func(context.Context) (*view.Data, error)) *cobra.Command {
	var f output.Format
	c := &cobra.Command{
		Use:   "all",
		Short: "Every table at once",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			d, err := load(c.Context())
			if err != nil {
				return err
			}
			all, sections := d.All()
			if f != output.Table {
				return output.Print(e.Out, f, all, output.Grid{})
			}
			for i, s := range sections {
				if i > 0 {
					fmt.Fprintln(e.Out)
				}
				fmt.Fprintf(e.Out, "%s:\n", s.Title)
				if err := output.PrintTable(e.Out, s.Grid); err != nil {
					return err
				}
			}
			return nil
		},
	}
	output.AddFlag(c, &f)
	return c
}

func newGraph(e *env.Env, load func(context.Context) (*view.Data, error)) *cobra.Command {
	var svg string
	c := &cobra.Command{
		Use:   "graph",
		Short: "The clusterset as a Graphviz DOT graph (or SVG with --svg)",
		Example: `  meshctl show graph | dot -Tpng > clusterset.png
  meshctl show graph --svg clusterset.svg`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if svg != "" {
				if _, err := exec.LookPath("dot"); err != nil {
					return cli.Refused(nil, "install Graphviz (apt-get install graphviz), or pipe the DOT yourself: meshctl show graph | dot -Tsvg > graph.svg",
						"--svg needs Graphviz's dot on PATH")
				}
			}
			d, err := load(c.Context())
			if err != nil {
				return err
			}
			dot := d.Graph()
			if svg == "" {
				_, err := fmt.Fprint(e.Out, dot)
				return err
			}
			cmd := exec.CommandContext(c.Context(), "dot", "-Tsvg", "-o", svg)
			cmd.Stdin = bytes.NewBufferString(dot)
			if out, err := cmd.CombinedOutput(); err != nil {
				return cli.Failed(fmt.Errorf("%v: %s", err, out), "", "dot could not render the graph")
			}
			fmt.Fprintf(e.Out, "Graph written to %s\n", svg)
			return nil
		},
	}
	c.Flags().StringVar(&svg, "svg", "", "render SVG into this file with Graphviz's dot")
	return c
}

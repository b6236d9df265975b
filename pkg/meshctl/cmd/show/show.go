// Package show is `meshctl show`.
package show

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"time"

	"github.com/spf13/cobra"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/access"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/env"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/output"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/view"
)

// New returns `show` and its nouns.
func New(e *env.Env) *cobra.Command {
	var af access.Flags
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show the clusterset: clusters, gateways, connections, exports, imports, a graph",
		Long: `Show what the broker knows. The broker and a credential come from the current
cluster's Secret tunnelmesh-system/tunnelmesh-broker (a member cluster), or from
--broker-info/--broker-url with --credential-file (the admin or a cluster credential).
A cluster credential shows only its own cluster's gateway status.
` + "`show imports`" + ` reads the current cluster's ServiceImports instead (no broker).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	p := cmd.PersistentFlags()
	af.Register(p, "the admin or a cluster credential")

	// load reads the broker; with no broker flags it reads the member
	// cluster's Secret, and then (withImports) that cluster's ServiceImports.
	load := func(ctx context.Context, withImports bool) (*view.Data, error) {
		var kc *kube.Cluster
		connect := func(ctx context.Context) (*kube.Cluster, error) {
			var err error
			kc, err = e.Kube.Connect(ctx)
			return kc, err
		}
		c, u, err := af.Client(ctx, connect)
		if err != nil {
			return nil, err
		}
		d, err := view.Load(ctx, c)
		if err != nil {
			return nil, access.Explain(err, u)
		}
		if kc != nil && withImports {
			if d.ServiceImports, d.WithheldSlices, err = loadImports(ctx, kc); err != nil {
				return nil, err
			}
			d.HasCluster = true
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
				d, err := load(c.Context(), false)
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
		newImports(e),
		newAll(e, load),
		newGraph(e, load),
	)
	return cmd
}

func newAll(e *env.Env, load func(context.Context, bool) (*view.Data, error)) *cobra.Command {
	var f output.Format
	c := &cobra.Command{
		Use:   "all",
		Short: "Every table at once",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			d, err := load(c.Context(), true)
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

func newGraph(e *env.Env, load func(context.Context, bool) (*view.Data, error)) *cobra.Command {
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
			d, err := load(c.Context(), false)
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

// newImports is `show imports`: this cluster's ServiceImports, read from
// the cluster itself (no broker needed).
func newImports(e *env.Env) *cobra.Command {
	var f output.Format
	c := &cobra.Command{
		Use:   "imports",
		Short: "ServiceImports of this cluster: type, IPs, ports, exporting clusters",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			kc, err := e.Kube.Connect(c.Context())
			if err != nil {
				return err
			}
			sis, withheld, err := loadImports(c.Context(), kc)
			if err != nil {
				return err
			}
			d := &view.Data{ServiceImports: sis, WithheldSlices: withheld, HasCluster: true, Now: time.Now()}
			obj, grid := d.Imports()
			return output.Print(e.Out, f, obj, grid)
		},
	}
	output.AddFlag(c, &f)
	return c
}

// loadImports reads the cluster's ServiceImports and the import slices
// the controller marks withheld.
func loadImports(ctx context.Context, kc *kube.Cluster) ([]mcsv1beta1.ServiceImport, []discoveryv1.EndpointSlice, error) {
	sis, err := view.LoadImports(ctx, kc.Config)
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		return nil, nil, cli.Refused(err, "run `meshctl join` in it first", "%s has no ServiceImport API (not a member of a clusterset)", kc.Describe())
	}
	if err != nil {
		return nil, nil, cli.Failed(err, "check your access to serviceimports.multicluster.x-k8s.io (`kubectl get serviceimports -A`)", "cannot list the ServiceImports of %s", kc.Describe())
	}
	withheld, err := view.LoadWithheld(ctx, kc.Config)
	if err != nil {
		return nil, nil, cli.Failed(err, "check your access to endpointslices.discovery.k8s.io (`kubectl get endpointslices -A`)", "cannot list the import EndpointSlices of %s", kc.Describe())
	}
	return sis, withheld, nil
}

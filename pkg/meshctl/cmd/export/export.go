// Package export is `meshctl export service` and `meshctl unexport service`.
package export

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/env"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/svcexport"
)

// New returns `export`.
func New(e *env.Env) *cobra.Command {
	cmd := &cobra.Command{Use: "export", Short: "Export a resource to the clusterset", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() }}
	var (
		ns     string
		noWait bool
		o      svcexport.Options
	)
	svc := &cobra.Command{
		Use:     "service NAME",
		Aliases: []string{"svc"},
		Short:   "Export a Service: every member cluster can then reach it as NAME.NAMESPACE.svc.clusterset.local",
		Example: "  meshctl export service web -n demo",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.Kube.Connect(cmd.Context())
			if err != nil {
				return err
			}
			o.Wait, o.Progress = !noWait, e.Progress()
			if _, err := svcexport.Export(cmd.Context(), c, ns, args[0], o); err != nil {
				return err
			}
			if o.Wait {
				fmt.Fprintf(e.Out, "Service %s/%s exported: %s.%s.svc.clusterset.local\n", ns, args[0], args[0], ns)
			}
			return nil
		},
	}
	svc.Flags().StringVarP(&ns, "namespace", "n", "default", "the Service's namespace")
	svc.Flags().BoolVar(&noWait, "no-wait", false, "do not wait for the export to be Ready")
	svc.Flags().DurationVar(&o.Timeout, "timeout", 2*time.Minute, "how long to wait for Ready")
	cmd.AddCommand(svc)
	return cmd
}

// NewUnexport returns `unexport`.
func NewUnexport(e *env.Env) *cobra.Command {
	cmd := &cobra.Command{Use: "unexport", Short: "Stop exporting a resource", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() }}
	var ns string
	svc := &cobra.Command{
		Use:     "service NAME",
		Aliases: []string{"svc"},
		Short:   "Stop exporting a Service (its imports go away in every cluster)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.Kube.Connect(cmd.Context())
			if err != nil {
				return err
			}
			deleted, err := svcexport.Unexport(cmd.Context(), c, ns, args[0])
			if err != nil {
				return err
			}
			if deleted {
				fmt.Fprintf(e.Out, "Service %s/%s is no longer exported\n", ns, args[0])
			} else {
				fmt.Fprintf(e.Out, "Service %s/%s was not exported; nothing to do\n", ns, args[0])
			}
			return nil
		},
	}
	svc.Flags().StringVarP(&ns, "namespace", "n", "default", "the Service's namespace")
	cmd.AddCommand(svc)
	return cmd
}

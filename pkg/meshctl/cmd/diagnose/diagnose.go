// Package diagnose is `meshctl diagnose`.
package diagnose

import (
	"github.com/spf13/cobra"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/env"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/diagnose"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/output"
)

// New returns `diagnose`.
func New(e *env.Env) *cobra.Command {
	var f output.Format
	c := &cobra.Command{
		Use:   "diagnose",
		Short: "Check this member cluster: CIDRs, components, gateway, TUN, MTU, kube-proxy, DNS, WireGuard, clocks",
		Long: `Check this member cluster and what its broker says of it. Each check passes,
warns or fails, with the fix in one line. Exit code 1 when any check fails
(warnings alone exit 0). Run it in every member cluster: a cluster's
credential reads its own status only.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			kc, err := e.Kube.Connect(c.Context())
			if err != nil {
				return err
			}
			facts, err := diagnose.Gather(c.Context(), kc)
			if err != nil {
				return err
			}
			fs := diagnose.Run(facts)
			if f == output.Table {
				err = diagnose.Print(e.Out, fs)
			} else {
				err = output.Print(e.Out, f, fs, output.Grid{})
			}
			if err != nil {
				return err
			}
			if n := diagnose.Failed(fs); n > 0 {
				return cli.Failed(nil, "apply the fix under each FAIL, then run `meshctl diagnose` again", "%d of %d checks failed in cluster %q", n, len(fs), facts.ClusterID)
			}
			return nil
		},
	}
	output.AddFlag(c, &f)
	return c
}

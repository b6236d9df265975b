// Package version is `meshctl version`.
package version

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/env"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/output"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/version"
)

// New returns the command.
func New(e *env.Env) *cobra.Command {
	var format output.Format
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print meshctl's version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			v := version.Get()
			if format == output.Table {
				commit := ""
				if v.Commit != "" {
					commit = ", commit " + v.Commit
				}
				_, err := fmt.Fprintf(e.Out, "meshctl %s (%s, %s%s)\n", v.Version, v.GoVersion, v.Platform, commit)
				return err
			}
			return output.Print(e.Out, format, map[string]any{"meshctl": v}, output.Grid{})
		},
	}
	output.AddFlag(cmd, &format)
	return cmd
}

// Package leave is `meshctl leave` and `meshctl uninstall`.
package leave

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/env"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/member"
)

// New returns `leave`.
func New(e *env.Env) *cobra.Command {
	var o member.LeaveOptions
	cmd := &cobra.Command{
		Use:   "leave",
		Short: "Take the current cluster out of its clusterset (broker records, then components)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.Kube.Connect(cmd.Context())
			if err != nil {
				return err
			}
			o.Progress = e.Progress()
			left, err := member.Leave(cmd.Context(), c, o)
			if err != nil {
				return err
			}
			if left {
				fmt.Fprintln(e.Out, "The cluster has left the clusterset")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&o.Force, "force", false, "remove the components even when the broker cannot be told")
	return cmd
}

// NewUninstall returns `uninstall`.
func NewUninstall(e *env.Env) *cobra.Command {
	var o member.LeaveOptions
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove everything of tunnelmesh from the current cluster (leaving the clusterset first, the broker included)",
		Long: `Remove everything tunnelmesh created in the current cluster, and nothing else: the
components, the namespace tunnelmesh-system (the broker included), the imports the
export controller made, leftovers of verify and benchmark runs, the Corefile edit and
the node labels meshctl added. Objects that existed before tunnelmesh (CRDs, labels)
stay as they were. The ServiceExport, ServiceImport and ClusterProperty CRDs stay too,
since other software may use them; --delete-crds removes those tunnelmesh created,
and with them every ServiceExport and ServiceImport in the cluster.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.Kube.Connect(cmd.Context())
			if err != nil {
				return err
			}
			o.Progress = e.Progress()
			if err := member.Uninstall(cmd.Context(), c, o); err != nil {
				return err
			}
			fmt.Fprintln(e.Out, "tunnelmesh is uninstalled")
			return nil
		},
	}
	cmd.Flags().BoolVar(&o.Force, "force", false, "go on when the broker cannot be told that the cluster leaves")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 2*time.Minute, "how long to wait for the namespace to go")
	cmd.Flags().BoolVar(&o.DeleteCRDs, "delete-crds", false, "also delete the MCS and ClusterProperty CRDs tunnelmesh created (and every object of those kinds)")
	return cmd
}

// Package verify is `meshctl verify`.
package verify

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/env"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/output"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/probe"
)

// New returns `verify`.
func New(e *env.Env) *cobra.Command {
	var (
		other env.Other
		o     probe.VerifyOptions
		f     output.Format
	)
	c := &cobra.Command{
		Use:   "verify",
		Short: "Check connectivity and DNS between two member clusters with test pods",
		Long: `Start an echo server, its Service and a ServiceExport in this cluster (--context),
and a client pod in the other (--to-context) that reaches the server by pod IP
(TCP, UDP, its pod IP kept) and by <svc>.<ns>.svc.clusterset.local (DNS, TCP).
Each step passes or fails with its time. Everything it creates lives in a
namespace of its own and is deleted at the end, also on a timeout or Ctrl-C.
Pods run on non-gateway nodes unless --server-node/--client-node say otherwise.

Needs the project's test images on the nodes of both clusters (make project-images;
kind load docker-image tunnelmesh/echoserver:dev tunnelmesh/netclient:dev --name CLUSTER).
Exit code 1 when a step fails, 4 when the run timed out.`,
		Example: `  meshctl verify --context kind-east --to-context kind-west
  meshctl verify --kubeconfig east.kubeconfig --to-kubeconfig west.kubeconfig -o json`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			pair, err := e.Pair(c.Context(), other)
			if err != nil {
				return err
			}
			o.Progress = e.Progress()
			rep, err := probe.Verify(c.Context(), pair, o)
			if rep != nil {
				if perr := output.Print(e.Out, f, rep, rep.Grid()); perr != nil && err == nil {
					err = perr
				}
			}
			if err != nil {
				return err
			}
			if n := rep.Failed(); n > 0 {
				return cli.Failed(nil, "`meshctl diagnose` in both clusters tells what to fix", "%d of %d verify steps failed", n, len(rep.Steps))
			}
			fmt.Fprintf(e.Err, "All %d steps passed: %s reaches %s by pod IP and by clusterset.local name.\n", len(rep.Steps), pair.ClientID, pair.ServerID)
			return nil
		},
	}
	fl := c.Flags()
	other.AddTo(fl)
	fl.StringVar(&o.ServerNode, "server-node", "", "node of this cluster for the server pod (default: a non-gateway node)")
	fl.StringVar(&o.ClientNode, "client-node", "", "node of the other cluster for the client pod (default: a non-gateway node)")
	fl.StringVar(&o.EchoImage, "server-image", probe.EchoImage, "the echo server image")
	fl.StringVar(&o.ClientImage, "client-image", probe.ClientImage, "the client image")
	fl.DurationVar(&o.Timeout, "timeout", 3*time.Minute, "give up after this long (cleanup comes on top)")
	output.AddFlag(c, &f)
	return c
}

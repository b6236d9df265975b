// Package cmd is meshctl's root command; each verb lives in a package below.
package cmd

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/env"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/version"
)

// NewRoot returns meshctl's command tree writing to e's streams.
func NewRoot(e *env.Env) *cobra.Command {
	root := &cobra.Command{
		Use:   "meshctl",
		Short: "meshctl links Kubernetes clusters into one network with tunnelmesh",
		Long: `meshctl links Kubernetes clusters into one network with tunnelmesh.

  meshctl deploy-broker --kubeconfig broker.kubeconfig   # once: a broker, and broker-info.json
  meshctl join broker-info.json --context kind-east      # in every cluster
  meshctl export service web -n demo                     # share a Service with the clusterset
  meshctl show all                                       # see the clusterset
  meshctl diagnose --context kind-east                   # check a member: pass/warn/fail with fixes
  meshctl verify --context kind-east --to-context kind-west   # test pods across two clusters

Exit codes: 0 ok, 1 failure, 2 usage error, 3 refused before changing anything,
4 changes made but a wait timed out.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(e.In)
	root.SetOut(e.Out)
	root.SetErr(e.Err)
	e.Kube.AddTo(root.PersistentFlags())
	_ = root.RegisterFlagCompletionFunc("context", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return e.Kube.Contexts(), cobra.ShellCompDirectiveNoFileComp
	})
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return cli.Usage(fmt.Sprintf("run `%s --help` for usage", c.CommandPath()), "%s", err)
	})
	root.AddCommand(version.New(e))
	for _, add := range verbs {
		root.AddCommand(add(e))
	}
	return root
}

// verbs are added by the verb files of this package (one per verb).
var verbs []func(*env.Env) *cobra.Command

// Main runs meshctl with args and returns the exit code.
func Main(args []string, streams cli.Streams) int {
	e := &env.Env{Streams: streams}
	root := NewRoot(e)
	root.SetArgs(args)
	ran := false
	root.PersistentPreRun = func(*cobra.Command, []string) { ran = true }
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := root.ExecuteContextC(ctx)
	if err == nil {
		return cli.ExitOK
	}
	if !ran && cli.ExitCode(err) == cli.ExitFailure {
		// Cobra refused the arguments before the verb ran.
		err = cli.Usage(fmt.Sprintf("run `%s --help` for usage", c.CommandPath()), "%s", err)
	}
	cli.Render(streams.Err, err)
	return cli.ExitCode(err)
}

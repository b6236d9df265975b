// Package deploybroker is `meshctl deploy-broker`.
package deploybroker

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/brokerdeploy"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/env"
)

// New returns the command.
func New(e *env.Env) *cobra.Command {
	var (
		o     brokerdeploy.Options
		local brokerdeploy.LocalOptions
		isLoc bool
	)
	cmd := &cobra.Command{
		Use:   "deploy-broker",
		Short: "Run the broker in the current cluster (or --local on this host) and write broker-info.json",
		Long: `Run the tunnelmesh broker and write a broker-info file (URL, CA, a join token) that
'meshctl join' reads. Into the current cluster by default: the broker's PKI goes
into Secret tunnelmesh-system/tunnelmesh-broker-pki, the broker runs on one node
(its data on that node's disk) behind a NodePort. With --local it runs in this
process on this host until interrupted.

Running it again keeps the broker and its CA and only writes a new join token.`,
		Example: `  meshctl deploy-broker --context kind-broker
  meshctl deploy-broker --local --data-dir ./broker --listen :8443 --san 172.18.0.1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p := e.Progress()
			if isLoc {
				local.TokenTTL, local.InfoFile, local.BrokerURL, local.SANs, local.Progress = o.TokenTTL, o.InfoFile, o.BrokerURL, o.SANs, p
				local.Ready = func(r *brokerdeploy.Result) { summary(e, r) }
				return brokerdeploy.Local(cmd.Context(), local)
			}
			c, err := e.Kube.Connect(cmd.Context())
			if err != nil {
				return err
			}
			o.Progress = p
			r, err := brokerdeploy.InCluster(cmd.Context(), c, o)
			if err != nil {
				return err
			}
			summary(e, r)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&isLoc, "local", false, "run the broker as a process on this host instead of in the cluster")
	f.StringVar(&o.BrokerURL, "broker-url", "", "URL other clusters reach the broker at (default https://<node InternalIP>:<NodePort>, or the --listen address with --local)")
	f.StringSliceVar(&o.SANs, "san", nil, "extra DNS name or IP for the broker's certificate (repeatable)")
	f.DurationVar(&o.TokenTTL, "token-ttl", 24*time.Hour, "lifetime of the join token")
	f.StringVarP(&o.InfoFile, "file", "f", "broker-info.json", "where to write the broker info (mode 0600)")
	f.StringVar(&o.Node, "node", "", "node that runs the broker and keeps its data (default: the first Ready node)")
	f.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "how long to wait for the broker")
	f.StringVar(&local.DataDir, "data-dir", "tunnelmesh-broker", "with --local: the broker's data directory (initialised when empty)")
	f.StringVar(&local.Listen, "listen", ":8443", "with --local: HTTPS listen address")
	return cmd
}

func summary(e *env.Env, r *brokerdeploy.Result) {
	where := ""
	if r.Node != "" {
		where = " on node " + r.Node
	}
	fmt.Fprintf(e.Out, "Broker ready at %s%s\n", r.Info.URL, where)
	fmt.Fprintf(e.Out, "Broker info (join token valid until %s) written to %s\n", r.TokenExpires.UTC().Format(time.RFC3339), r.InfoFile)
	fmt.Fprintf(e.Out, "Next, in each cluster: meshctl join %s --context CONTEXT\n", r.InfoFile)
}

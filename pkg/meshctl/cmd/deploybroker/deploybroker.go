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

With --replicas N (more than 1) N brokers serve at once behind the Service and
keep their records in etcd: an existing etcd cluster with --etcd-endpoints, else
the bundled one (deploy/broker-etcd: 3 members, TLS to peers and clients, only
the broker's client certificate let in; its PKI is made here and kept in
Secrets tunnelmesh-etcd-tls and tunnelmesh-broker-etcd; needs a default
StorageClass). A client given several URLs (--broker-url a,b) fails over
between them.

Running it again keeps the broker and its CA and only writes a new join token.`,
		Example: `  meshctl deploy-broker --context kind-broker
  meshctl deploy-broker --context prod --replicas 3 --etcd-endpoints https://etcd-0:2379,https://etcd-1:2379,https://etcd-2:2379 \
      --etcd-ca etcd-ca.crt --etcd-cert etcd-client.crt --etcd-key etcd-client.key
  meshctl deploy-broker --local --data-dir ./broker --listen :8443 --san 172.18.0.1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p := e.Progress()
			if isLoc && (o.Etcd.Enabled() || o.Replicas > 1) {
				return fmt.Errorf("--local runs one broker on its own data dir; --replicas and --etcd-* are for the in-cluster broker")
			}
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
	f.IntVar(&o.Replicas, "replicas", 1, "brokers serving at once (more than 1: on --etcd-endpoints, else on the bundled etcd with TLS and client certificates)")
	f.StringSliceVar(&o.Etcd.Endpoints, "etcd-endpoints", nil, "keep the records in this etcd cluster (client URLs as the broker pods reach them) instead of a file on one node")
	f.StringVar(&o.Etcd.Prefix, "etcd-prefix", "/tunnelmesh", "etcd key prefix of this clusterset")
	f.StringVar(&o.Etcd.CAFile, "etcd-ca", "", "PEM CA of the etcd servers (copied into Secret tunnelmesh-broker-etcd)")
	f.StringVar(&o.Etcd.CertFile, "etcd-cert", "", "PEM client certificate for etcd (copied into the Secret)")
	f.StringVar(&o.Etcd.KeyFile, "etcd-key", "", "PEM key of --etcd-cert (copied into the Secret)")
	f.IntVar(&o.Etcd.MaxTxnOps, "etcd-max-txn-ops", 0, "the etcd servers' --max-txn-ops, if not etcd's default 128")
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

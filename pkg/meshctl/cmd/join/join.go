// Package join is `meshctl join`.
package join

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/access"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/env"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/member"
)

// New returns the command.
func New(e *env.Env) *cobra.Command {
	var o member.JoinOptions
	cmd := &cobra.Command{
		Use:   "join BROKER-INFO",
		Short: "Make the current cluster a member of the clusterset",
		Long: `Make the current cluster (--context) a member of the clusterset whose broker
BROKER-INFO (written by 'meshctl deploy-broker') names: check the broker, find the
pod and service CIDRs, pick a gateway node, join the broker (CIDRs overlapping a
member's are translated: both clusters' get mapped CIDRs, unless the clusterset
policy refuses overlapping joins; taken IDs and CIDRs outside the policy are
refused before anything in the cluster changes),
store the cluster's credential in Secret tunnelmesh-system/tunnelmesh-broker,
install the components and wait until they are up.

Running it again on a member changes nothing.`,
		Example: `  meshctl join broker-info.json --context kind-east
  meshctl join broker-info.json --cluster-id west --pod-cidr 10.245.0.0/16 --service-cidr 10.97.0.0/16`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			info, err := access.ReadInfo(args[0])
			if err != nil {
				return err
			}
			o.Info = *info
			c, err := e.Kube.Connect(cmd.Context())
			if err != nil {
				return err
			}
			o.Detector, o.Waiter, o.Corefile, o.Progress = member.Discovery{}, member.TunnelsUp{}, member.EnableClustersetDNS, e.Progress()
			r, err := member.Join(cmd.Context(), c, o)
			if err != nil {
				return err
			}
			verb := "joined"
			if r.AlreadyMember {
				verb = "was already a member; nothing changed"
			}
			fmt.Fprintf(e.Out, "Cluster %q %s (tunnel IP %s, gateway node %s)\n", r.ClusterID, verb, r.TunnelIP, r.GatewayNode)
			if len(r.Translations) > 0 {
				fmt.Fprintf(e.Out, "Its CIDRs overlap a member's: the mesh knows them as mapped CIDRs (%s); other clusters see its pods at their mapped addresses\n",
					api.DescribeTranslations(r.Translations))
			}
			for _, m := range r.Translated {
				fmt.Fprintf(e.Out, "Member %q is translated too (%s): its pods' mesh addresses changed\n", m.ID, api.DescribeTranslations(m.Translations))
			}
			fmt.Fprintf(e.Out, "Next: meshctl show connections; meshctl export service NAME -n NAMESPACE\n")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.ClusterID, "cluster-id", "", "this cluster's ID in the clusterset (default: the context name)")
	f.StringSliceVar(&o.PodCIDRs, "pod-cidr", nil, "pod CIDR(s) of this cluster (default: detected)")
	f.StringSliceVar(&o.ServiceCIDRs, "service-cidr", nil, "service CIDR(s) of this cluster (default: detected)")
	f.StringVar(&o.GatewayNode, "gateway-node", "", "node to be the gateway (default: a node labelled tunnelmesh.io/gateway=true, else the first Ready node)")
	f.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "how long to wait for the gateway")
	return cmd
}

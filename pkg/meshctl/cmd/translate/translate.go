// Package translate is `meshctl translate`: the broker admin gives a member
// that joined without translation mapped CIDRs, live.
package translate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/access"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/env"
)

// New returns `translate CLUSTER`.
func New(e *env.Env) *cobra.Command {
	var (
		af    access.Flags
		cidrs []string
	)
	cmd := &cobra.Command{
		Use:   "translate CLUSTER",
		Short: "Give a member cluster mapped CIDRs, live (broker admin)",
		Long: `A translated CIDR is known to the rest of the clusterset under a mapped CIDR of
the same size from the clusterset's mapped pool: the cluster's active gateway
rewrites each pod's address to its mapped one on the way out and back on the way
in, so every pod keeps one address across the mesh. Clusters whose CIDRs overlap
a member's are translated when they join (and that member with them); this
gives a member that joined without translation one now, for instance before a
cluster with the same CIDRs joins, at a time of your choosing.

The change rolls through the clusterset with no restart: the member's gateway
starts translating, every other cluster routes the mapped CIDRs, the member's
exports publish mapped addresses. Connections open to the member's pods under
their old addresses end; NetworkPolicies elsewhere that name its real CIDRs need
its mapped ones instead.`,
		Example: `  meshctl translate east --broker-info broker-info.json --credential-file admin.token
  meshctl translate east --cidr 10.244.0.0/16 --broker-info broker-info.json --credential-file admin.token`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(c.Context(), 30*time.Second)
			defer cancel()
			bc, url, err := af.Client(ctx, e.Kube.Connect)
			if err != nil {
				return err
			}
			before, err := bc.Snapshot(ctx)
			if err != nil {
				return explain(err, url)
			}
			rec, err := bc.Translate(ctx, args[0], cidrs)
			if err != nil {
				return explain(err, url)
			}
			for _, o := range before.Clusters {
				if o.ID == rec.ID && len(o.Translations) == len(rec.Translations) {
					fmt.Fprintf(e.Out, "Cluster %q was translated already: %s\n", rec.ID, api.DescribeTranslations(rec.Translations))
					return nil
				}
			}
			fmt.Fprintf(e.Out, "Cluster %q translated: %s.\nIts gateway rewrites between real and mapped addresses from now on; the other clusters route the mapped CIDRs; its exports publish mapped addresses.\n",
				rec.ID, api.DescribeTranslations(rec.Translations))
			return nil
		},
	}
	af.Register(cmd.Flags(), "the broker's admin credential (admin.token)")
	cmd.Flags().StringSliceVar(&cidrs, "cidr", nil, "a real CIDR of the cluster to translate (repeated or comma-separated; default: every CIDR not translated yet)")
	return cmd
}

// explain says what a refused translate call means.
func explain(err error, url string) error {
	var ae *api.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case api.CodeForbidden:
			return access.NeedsAdmin(ae, "translating a cluster")
		case api.CodeNotFound:
			return cli.Refused(ae, "`meshctl show clusters` lists the members", "no such member cluster")
		case api.CodeInvalid, api.CodeBadRequest:
			return cli.Refused(ae, "name the cluster's own CIDRs (`meshctl show clusters`)", "the broker refused the translation")
		case api.CodeExhausted:
			return cli.Refused(ae, "ask the broker's admin to widen the mapped pool (meshctl policy set --mapped-cidrs)", "the clusterset's mapped pool is full")
		}
	}
	return access.Explain(err, url)
}

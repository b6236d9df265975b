// Package policy is `meshctl policy set`: the broker admin's change of the
// clusterset policy (the ranges members may claim, what an overlapping
// join gets, the mapped pool).
package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/access"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cmd/env"
)

// New returns `policy` and `policy set`.
func New(e *env.Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Change the clusterset policy: the ranges member clusters may claim, overlapping joins (broker admin)",
		Long: `The clusterset policy says which pod and service CIDRs a cluster may join with:
inside one of the allowed ranges, and no wider than the minimum prefix length of
its family. By default: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10
and fc00::/7, IPv4 at most /12 wide, IPv6 at most /48 wide. ` + "`meshctl show clusters`" + `
shows it and flags members outside it; they joined under an earlier policy and
stay linked until the broker's admin removes them.

It also says what a join whose CIDRs overlap a member's gets: translated (the
default: the overlapping CIDRs of both clusters get mapped CIDRs from the
mapped pool, 240.0.0.0/5 and fc00::/8 by default) or refused. Moving the mapped
pool leaves the mapped CIDRs already given out where they are.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	var (
		af      access.Flags
		allowed []string
		min4    int
		min6    int
		dflt    bool
		overlap string
		mapped  []string
	)
	set := &cobra.Command{
		Use:   "set",
		Short: "Set the allowed ranges, minimum prefix lengths, overlap rule or mapped pool; flags left out keep their value",
		Example: `  meshctl policy set --allowed-cidrs 10.0.0.0/8,fd00::/8 --broker-info broker-info.json --credential-file admin.token
  meshctl policy set --min-prefix-length-ipv4 16 --broker-info broker-info.json --credential-file admin.token
  meshctl policy set --overlap refuse --broker-info broker-info.json --credential-file admin.token
  meshctl policy set --mapped-cidrs 240.0.0.0/5,fc00::/8 --broker-info broker-info.json --credential-file admin.token
  meshctl policy set --default --broker-info broker-info.json --credential-file admin.token`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			f := c.Flags()
			changed := f.Changed("allowed-cidrs") || f.Changed("min-prefix-length-ipv4") || f.Changed("min-prefix-length-ipv6") ||
				f.Changed("overlap") || f.Changed("mapped-cidrs")
			if !changed && !dflt {
				return cli.Usage("pass --allowed-cidrs, --min-prefix-length-ipv4, --min-prefix-length-ipv6, --overlap, --mapped-cidrs or --default; `meshctl show clusters` shows the policy",
					"nothing to set")
			}
			if changed && dflt {
				return cli.Usage("pass --default alone, or the values to change", "--default sets the whole default policy")
			}
			ctx, cancel := context.WithTimeout(c.Context(), 30*time.Second)
			defer cancel()
			bc, url, err := af.Client(ctx, e.Kube.Connect)
			if err != nil {
				return err
			}
			cur, err := bc.Policy(ctx)
			if err != nil {
				return explain(err, url)
			}
			p := cur.Policy
			if dflt {
				p = api.DefaultPolicy()
			}
			if f.Changed("allowed-cidrs") {
				p.AllowedCIDRs = allowed
			}
			if f.Changed("min-prefix-length-ipv4") {
				p.MinPrefixLengthIPv4 = min4
			}
			if f.Changed("min-prefix-length-ipv6") {
				p.MinPrefixLengthIPv6 = min6
			}
			if f.Changed("overlap") {
				p.Overlap = overlap
			}
			if f.Changed("mapped-cidrs") {
				p.MappedCIDRs = mapped
			}
			st, err := bc.SetPolicy(ctx, p)
			if err != nil {
				return explain(err, url)
			}
			report(e.Out, st)
			return nil
		},
	}
	p := set.Flags()
	af.Register(p, "the broker's admin credential (admin.token)")
	p.StringSliceVar(&allowed, "allowed-cidrs", nil, "ranges members' pod and service CIDRs must lie in (comma-separated or repeated)")
	p.IntVar(&min4, "min-prefix-length-ipv4", 0, "an IPv4 CIDR a member claims is at least this long (0: any)")
	p.IntVar(&min6, "min-prefix-length-ipv6", 0, "an IPv6 CIDR a member claims is at least this long (0: any)")
	p.StringVar(&overlap, "overlap", "", "what a join whose CIDRs overlap a member's gets: translate (mapped CIDRs for both) or refuse")
	p.StringSliceVar(&mapped, "mapped-cidrs", nil, "the mapped pool translated CIDRs take their mapped CIDRs from (comma-separated or repeated)")
	p.BoolVar(&dflt, "default", false, "set the default policy")
	cmd.AddCommand(set)
	return cmd
}

// explain says what a refused policy call means.
func explain(err error, url string) error {
	var ae *api.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case api.CodeForbidden:
			return access.NeedsAdmin(ae, "changing the clusterset policy")
		case api.CodeInvalid, api.CodeBadRequest:
			return cli.Refused(ae, "fix the value the broker names", "the broker refused the policy")
		case api.CodeNotFound:
			return cli.Refused(ae, "upgrade the broker", "the broker at %s has no clusterset policy (an older version)", url)
		}
	}
	return access.Explain(err, url)
}

// report prints the policy set and the members outside it.
func report(w io.Writer, st *api.PolicyStatus) {
	fmt.Fprintf(w, "Clusterset policy set: %s\n", st.Policy)
	if len(st.Outside) == 0 {
		fmt.Fprintln(w, "Every member is inside it.")
		return
	}
	fmt.Fprintln(w, "Members outside it (they stay linked, flagged in `meshctl show clusters`; remove one with `meshctl leave` in it or DELETE /v1/clusters/ID as the admin):")
	for _, v := range st.Outside {
		fmt.Fprintf(w, "  %s: %s\n", v.Cluster, v.Reason)
	}
}

package env

import (
	"context"

	"github.com/spf13/pflag"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/probe"
)

// Other selects the second cluster of a cross-cluster verb.
type Other struct {
	Kubeconfig, Context string
}

// AddTo registers --to-context and --to-kubeconfig.
func (o *Other) AddTo(fs *pflag.FlagSet) {
	fs.StringVar(&o.Context, "to-context", "", "the other cluster's kubeconfig context (the client side)")
	fs.StringVar(&o.Kubeconfig, "to-kubeconfig", "", "the other cluster's kubeconfig file (default: --kubeconfig's)")
}

// Pair connects this cluster (--kubeconfig/--context, the server side) and
// the other one (the client side), both members of one clusterset.
func (e *Env) Pair(ctx context.Context, o Other) (probe.Pair, error) {
	if o.Context == "" && o.Kubeconfig == "" {
		return probe.Pair{}, cli.Usage("pass --to-context (or --to-kubeconfig) for the other cluster, e.g. --context kind-east --to-context kind-west",
			"a cross-cluster check needs a second cluster")
	}
	to := kube.Flags{Kubeconfig: o.Kubeconfig, Context: o.Context}
	if to.Kubeconfig == "" {
		to.Kubeconfig = e.Kube.Kubeconfig
	}
	server, err := e.Kube.Connect(ctx)
	if err != nil {
		return probe.Pair{}, err
	}
	client, err := to.Connect(ctx)
	if err != nil {
		return probe.Pair{}, err
	}
	return probe.Members(ctx, server, client)
}

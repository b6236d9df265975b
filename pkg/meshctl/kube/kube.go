// Package kube connects meshctl to a cluster the way kubectl does
// (--kubeconfig, --context, $KUBECONFIG) and applies manifests with
// server-side apply.
package kube

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
)

// FieldManager owns the fields meshctl applies.
const FieldManager = "meshctl"

// Flags select a cluster like kubectl's flags of the same names.
type Flags struct {
	Kubeconfig string
	Context    string
}

// AddTo registers --kubeconfig and --context.
func (f *Flags) AddTo(fs *pflag.FlagSet) {
	fs.StringVar(&f.Kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&f.Context, "context", "", "the kubeconfig context to use (default: the current context)")
}

// Contexts lists the kubeconfig's context names (for shell completion).
func (f Flags) Contexts() []string {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = f.Kubeconfig
	raw, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).RawConfig()
	if err != nil {
		return nil
	}
	var out []string
	for name := range raw.Contexts {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// Cluster is a connection to one cluster.
type Cluster struct {
	// Context is the kubeconfig context's name ("" when built from a rest.Config).
	Context string
	// Server is the API server's URL.
	Server  string
	Config  *rest.Config
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	mapper  *restmapper.DeferredDiscoveryRESTMapper
}

// Describe names the cluster for messages: `context "kind-east" (https://…)`.
func (c *Cluster) Describe() string {
	if c.Context == "" {
		return c.Server
	}
	return fmt.Sprintf("context %q (%s)", c.Context, c.Server)
}

// Connect loads the kubeconfig and checks that the API server answers.
func (f Flags) Connect(ctx context.Context) (*Cluster, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = f.Kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: f.Context})
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, cli.Refused(err, "pass --kubeconfig FILE or set $KUBECONFIG to a readable kubeconfig", "cannot read the kubeconfig")
	}
	name := f.Context
	if name == "" {
		name = raw.CurrentContext
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, cli.Refused(nil,
				"pass --kubeconfig FILE or set $KUBECONFIG (for kind: `kind export kubeconfig --name NAME`)",
				"no kubeconfig found (looked at %s)", rules.GetLoadingPrecedence())
		}
		if f.Context != "" {
			if _, ok := raw.Contexts[f.Context]; !ok {
				return nil, cli.Refused(nil, "list the contexts with `kubectl config get-contexts`",
					"context %q is not in the kubeconfig", f.Context)
			}
		}
		return nil, cli.Refused(err, "check the kubeconfig (`kubectl config view`)", "invalid kubeconfig for context %q", name)
	}
	// API deprecation warnings (uninstall and verify list every kind,
	// v1 Endpoints included) say nothing a meshctl user can act on.
	cfg.WarningHandler = rest.NoWarnings{}
	c, err := New(cfg, name)
	if err != nil {
		return nil, err
	}
	if err := c.Ping(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// New builds a Cluster from a rest.Config (tests, other programs).
func New(cfg *rest.Config, contextName string) (*Cluster, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 100
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("discovery client: %w", err)
	}
	return &Cluster{Context: contextName, Server: cfg.Host, Config: cfg, Client: cs, Dynamic: dyn,
		mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

// Ping checks that the API server answers within 15 s.
func (c *Cluster) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	_, err := c.Client.Discovery().RESTClient().Get().AbsPath("/version").DoRaw(ctx)
	if err != nil {
		return cli.Refused(err,
			"check that the cluster is running and that --context/--kubeconfig name the right one (`kubectl cluster-info`)",
			"cannot reach the cluster of %s", c.Describe())
	}
	return nil
}

// Mapper maps kinds to resources; ResetMapper forgets it after new CRDs.
func (c *Cluster) Mapper() meta.RESTMapper { return c.mapper }

// ResetMapper drops the cached discovery (call after CRDs are created).
func (c *Cluster) ResetMapper() { c.mapper.Reset() }

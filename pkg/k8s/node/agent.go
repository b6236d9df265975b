package node

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/gateway"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/election"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	"github.com/tunnelmesh/tunnelmesh/pkg/routeagent"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// runAgent keeps this node's route agent fed from the Lease and the
// MeshGateway objects until ctx ends; the routes stay in place afterwards.
func (r *runner) runAgent(ctx context.Context, self routeagent.Self) error {
	agent := routeagent.New(routeagent.Config{Log: r.log.With("role", "route-agent"), Metrics: r.cfg.Metrics})
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	leases := informers.NewSharedInformerFactoryWithOptions(r.cfg.Client, 0, informers.WithNamespace(r.cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", r.leaseName()).String()
		}))
	leaseInf := leases.Coordination().V1().Leases().Informer()
	if _, err := leaseInf.AddEventHandler(handler); err != nil {
		return err
	}
	gws := dynamicinformer.NewFilteredDynamicSharedInformerFactory(r.cfg.Dynamic, 0, r.cfg.Namespace, func(o *metav1.ListOptions) {
		if r.cfg.ClusterID != "" { // the account may read only this one
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", r.cfg.ClusterID).String()
		}
	})
	gwInf := gws.ForResource(status.GVR).Informer()
	if _, err := gwInf.AddEventHandler(handler); err != nil {
		return err
	}
	nodes := informers.NewSharedInformerFactory(r.cfg.Client, 0)
	nodeInf := nodes.Core().V1().Nodes().Informer()
	if _, err := nodeInf.AddEventHandler(handler); err != nil {
		return err
	}
	leases.Start(ctx.Done())
	gws.Start(ctx.Done())
	nodes.Start(ctx.Done())
	defer leases.Shutdown()
	defer gws.Shutdown()
	defer nodes.Shutdown()

	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.Run(ctx) }()

	dns := gateway.Nameservers(r.cfg.ResolvConf...)
	var last *routeagent.Input
	var lastProblems []string
	resync := time.NewTicker(10 * time.Second)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			<-agentDone
			return nil
		case err := <-agentDone:
			return fmt.Errorf("route agent: %w", err)
		case <-kick:
		case <-resync.C:
		}
		if !leaseInf.HasSynced() || !gwInf.HasSynced() || !nodeInf.HasSynced() {
			continue
		}
		holder := ""
		for _, o := range leaseInf.GetStore().List() {
			if l, ok := o.(*coordinationv1.Lease); ok && l.Name == r.leaseName() {
				holder, _ = election.LeaseHolder(l)
			}
		}
		var gateways []status.MeshGateway
		for _, o := range gwInf.GetStore().List() {
			var mg status.MeshGateway
			if u, ok := o.(*unstructured.Unstructured); ok && runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &mg) == nil {
				gateways = append(gateways, mg)
			}
		}
		var all []*corev1.Node
		for _, o := range nodeInf.GetStore().List() {
			if n, ok := o.(*corev1.Node); ok {
				all = append(all, n)
			}
		}
		v := viewOf(holder, gateways, all, dns)
		if v.Holder != "" && len(v.HolderAddrs) == 0 {
			r.log.Warn("the active gateway's node has no InternalIP (yet)", "node", v.Holder)
		}
		in, problems := AgentInput(self, v, r.agentSettings())
		if !slices.Equal(problems, lastProblems) {
			for _, p := range problems {
				r.log.Warn("route agent input", "problem", p)
			}
			lastProblems = problems
		}
		if last != nil && reflect.DeepEqual(*last, in) {
			continue
		}
		if len(in.Remote) == 0 && last == nil {
			continue // nothing to route yet; keep what an earlier process left in place
		}
		if err := agent.Set(in); err != nil {
			r.log.Warn("route agent", "active", in.Active.Node, "err", err)
			if in.Active.Node == "" {
				last = &in
			}
			continue
		}
		last = &in
		if in.Active.Node == "" {
			r.log.Info("no active gateway node (the Lease is free); routes stay on the last one", "remote", len(in.Remote))
			continue
		}
		r.log.Info("routes point at the active gateway", "active", in.Active.Node, "remote", len(in.Remote))
	}
}

// viewOf is what the agent knows of the cluster now: the holder's
// addresses are read from its Node every time, so a node that comes back
// with a new address moves the VXLAN FDB with it. Pure.
func viewOf(holder string, gateways []status.MeshGateway, nodes []*corev1.Node, dns []netip.Addr) ClusterView {
	v := ClusterView{Holder: holder, Gateways: gateways, Nodes: NodeAddrs(nodes), DNS: dns}
	for _, n := range nodes {
		if n.Name == holder {
			v.HolderAddrs = InternalIPs(n)
		}
	}
	return v
}

func (r *runner) agentSettings() AgentSettings {
	return AgentSettings{ClusterID: r.cfg.ClusterID, Mode: r.cfg.AgentMode, PodCIDRs: r.cfg.Overrides.Pod, ReplyDevices: r.cfg.ReplyDevices}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

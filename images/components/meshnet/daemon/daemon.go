// Package daemon is meshnet's reconcile loop: it watches Nodes and the
// no-masquerade ConfigMap, computes the node's plan and hands it to the appliers.
package daemon

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tunnelmesh/tunnelmesh/images/components/meshnet/plan"
	"github.com/tunnelmesh/tunnelmesh/pkg/fsutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// ConfigMapKey holds extra no-masquerade CIDRs (comma/space/newline separated) in
// the daemon's ConfigMap; tunnelmesh adds remote clusters' CIDRs there.
const ConfigMapKey = "noMasqueradeCIDRs"

// RouteApplier and MasqueradeApplier are the kernel side (package apply).
type RouteApplier interface{ Apply([]plan.Route) error }

// MasqueradeApplier programs the masquerade rule.
type MasqueradeApplier interface{ Apply(plan.Masquerade) error }

// Config wires a Daemon.
type Config struct {
	NodeName    string
	Client      kubernetes.Interface
	CNIConfDir  string         // e.g. /etc/cni/net.d
	StaticSkip  []netip.Prefix // POD_SUBNET, SERVICE_SUBNET, NO_MASQUERADE_CIDRS
	SkipOutIfs  []string       // NO_MASQUERADE_INTERFACES: interface-name prefixes
	ConfigMapNS string
	ConfigMap   string
	Resync      time.Duration // full re-apply period, restoring anything removed behind our back
	MTU         func(nodeIPs []netip.Addr) int
	Routes      RouteApplier
	Masquerade  MasqueradeApplier
	Log         *slog.Logger
	Metrics     prometheus.Registerer
}

// Daemon reconciles one node.
type Daemon struct {
	cfg       Config
	nodes     cache.Indexer
	cms       cache.Indexer
	trigger   chan struct{}
	lastMasq  *plan.Masquerade
	lastSkip  []netip.Prefix // last valid ConfigMap list, kept when a bad edit arrives
	mRoutes   prometheus.Gauge
	mErrors   prometheus.Counter
	mLastSync prometheus.Gauge
}

// New returns a Daemon; Run starts it.
func New(cfg Config) *Daemon {
	d := &Daemon{
		cfg:       cfg,
		trigger:   make(chan struct{}, 1),
		mRoutes:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshnet_routes", Help: "Routes to other nodes' pod CIDRs programmed by meshnet."}),
		mErrors:   prometheus.NewCounter(prometheus.CounterOpts{Name: "meshnet_sync_errors_total", Help: "Failed reconciles."}),
		mLastSync: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshnet_last_sync_timestamp_seconds", Help: "Time of the last successful reconcile."}),
	}
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(d.mRoutes, d.mErrors, d.mLastSync)
	}
	return d
}

// Run watches the API and reconciles until ctx ends.
func (d *Daemon) Run(ctx context.Context) error {
	all := informers.NewSharedInformerFactory(d.cfg.Client, 0)
	nodeInf := all.Core().V1().Nodes().Informer()
	cmFactory := informers.NewSharedInformerFactoryWithOptions(d.cfg.Client, 0,
		informers.WithNamespace(d.cfg.ConfigMapNS),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", d.cfg.ConfigMap).String()
		}))
	cmInf := cmFactory.Core().V1().ConfigMaps().Informer()
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { d.Kick() },
		UpdateFunc: func(any, any) { d.Kick() },
		DeleteFunc: func(any) { d.Kick() },
	}
	if _, err := nodeInf.AddEventHandler(h); err != nil {
		return fmt.Errorf("watch nodes: %w", err)
	}
	if _, err := cmInf.AddEventHandler(h); err != nil {
		return fmt.Errorf("watch configmap: %w", err)
	}
	d.nodes, d.cms = nodeInf.GetIndexer(), cmInf.GetIndexer()
	all.Start(ctx.Done())
	cmFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), nodeInf.HasSynced, cmInf.HasSynced) {
		return fmt.Errorf("node/configmap caches never synced: %w", ctx.Err())
	}
	d.cfg.Log.Info("meshnet running", "node", d.cfg.NodeName, "resync", d.cfg.Resync)
	tick := time.NewTicker(d.cfg.Resync)
	defer tick.Stop()
	d.Kick()
	for {
		force := false
		select {
		case <-ctx.Done():
			return nil
		case <-d.trigger:
		case <-tick.C:
			force = true
		}
		if err := d.reconcile(force); err != nil {
			d.mErrors.Inc()
			d.cfg.Log.Error("reconcile failed; retrying", "err", err)
			time.AfterFunc(2*time.Second, d.Kick)
		}
	}
}

// Kick asks for a reconcile soon (coalesced with any already pending).
func (d *Daemon) Kick() {
	select {
	case d.trigger <- struct{}{}:
	default:
	}
}

func (d *Daemon) reconcile(force bool) error {
	var nodes []plan.Node
	var self *plan.Node
	for _, o := range d.nodes.List() {
		n := toPlanNode(o.(*corev1.Node))
		nodes = append(nodes, n)
		if n.Name == d.cfg.NodeName {
			self = &nodes[len(nodes)-1]
		}
	}
	if self == nil {
		return fmt.Errorf("node %q not found in the API (is NODE_NAME right?)", d.cfg.NodeName)
	}
	if len(self.PodCIDRs) == 0 {
		d.cfg.Log.Info("waiting for the node's spec.podCIDRs (is kube-controller-manager allocating node CIDRs?)")
		return nil
	}
	selfPods := append([]netip.Prefix(nil), self.PodCIDRs...)

	conf, err := plan.CNIConfig(selfPods, d.cfg.MTU(self.InternalIPs))
	if err != nil {
		return err
	}
	if err := writeIfChanged(filepath.Join(d.cfg.CNIConfDir, "10-"+plan.ConfigListName+".conflist"), conf); err != nil {
		return err
	}

	routes := plan.Routes(d.cfg.NodeName, nodes)
	if err := d.cfg.Routes.Apply(routes); err != nil {
		return err
	}
	d.mRoutes.Set(float64(len(routes)))

	skip := append([]netip.Prefix(nil), d.cfg.StaticSkip...)
	for _, n := range nodes {
		skip = append(skip, n.PodCIDRs...)
	}
	skip = append(skip, d.configMapSkip()...)
	m := plan.MasqueradeFor(selfPods, skip)
	m.SkipOutInterfaces = d.cfg.SkipOutIfs
	changed := d.lastMasq == nil || !reflect.DeepEqual(*d.lastMasq, m)
	if force || changed {
		if err := d.cfg.Masquerade.Apply(m); err != nil {
			return err
		}
		d.lastMasq = &m
		if changed {
			d.cfg.Log.Info("masquerade rule applied", "sources", len(m.Sources4)+len(m.Sources6),
				"skipRanges", len(m.Skip4)+len(m.Skip6), "skipInterfaces", m.SkipOutInterfaces)
		}
	}
	d.mLastSync.SetToCurrentTime()
	return nil
}

// configMapSkip returns the ConfigMap's CIDRs; a bad edit is logged and the last
// good list stays in force.
func (d *Daemon) configMapSkip() []netip.Prefix {
	objs, _ := d.cms.ByIndex(cache.NamespaceIndex, d.cfg.ConfigMapNS)
	var found *corev1.ConfigMap
	for _, o := range objs {
		if cm := o.(*corev1.ConfigMap); cm.Name == d.cfg.ConfigMap {
			found = cm
		}
	}
	if found == nil {
		d.lastSkip = nil
		return nil
	}
	ps, err := plan.ParseCIDRs(found.Data[ConfigMapKey])
	if err != nil {
		d.cfg.Log.Error("ignoring bad ConfigMap edit; keeping the previous list",
			"configmap", d.cfg.ConfigMapNS+"/"+d.cfg.ConfigMap, "key", ConfigMapKey, "err", err)
		return d.lastSkip
	}
	d.lastSkip = ps
	return ps
}

func toPlanNode(n *corev1.Node) plan.Node {
	out := plan.Node{Name: n.Name}
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out.InternalIPs = append(out.InternalIPs, ip)
		}
	}
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil {
			out.PodCIDRs = append(out.PodCIDRs, p.Masked())
		}
	}
	return out
}

// writeIfChanged replaces path atomically when its content differs, so the runtime
// never reads a half-written CNI config.
func writeIfChanged(path string, b []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	if err := fsutil.WriteFileAtomic(path, b, 0o644); err != nil {
		return fmt.Errorf("install CNI config: %w", err)
	}
	return nil
}

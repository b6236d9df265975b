package export

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"
	mcsinformers "sigs.k8s.io/mcs-api/pkg/client/informers/externalversions"
	mcslisters "sigs.k8s.io/mcs-api/pkg/client/listers/apis/v1beta1"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
)

// Broker is what the controller needs of the broker; *brokerclient.Client
// has it.
type Broker interface {
	PublishExport(ctx context.Context, e api.Export) error
	WithdrawExport(ctx context.Context, clusterID, namespace, name string) error
	Follow(ctx context.Context, onChange func(api.Snapshot)) error
}

var _ Broker = (*brokerclient.Client)(nil)

// What the controller ships with: its API clients' rate limits (each
// client — core, MCS, dynamic — has its own) and the workers per export
// and per import queue. cmd/gateway's controller command uses them and
// `make bench-export` measures with them.
//
// A new import costs four writes in every cluster, an export one more in
// its own, and a dead cluster one slice write per import it exports: a
// thousand imports withdrawn within seconds need hundreds of writes a
// second. At 50 QPS and 4 workers a dead cluster stayed in 1000 imports for
// 18 s and a 1000-export file took 8 s to import (p99, bench-export); at
// these settings 3.2 s and 1.8 s. Why this is safe for the API server: the
// bound that acts is concurrency — each worker has one request in flight,
// so at most 2×16 writes of ours are in flight, whatever the QPS (the
// limit only stops a runaway loop); there is no polling, so when nothing
// changes we write nothing; and API Priority and Fairness puts a
// ServiceAccount's requests in the workload-low priority level, queued
// fairly among its users and apart from the levels of nodes, leader
// election and the system controllers, which our bursts cannot starve.
const (
	DefaultQPS     = 500
	DefaultBurst   = 1000
	DefaultWorkers = 16
)

// Config is a controller's wiring.
type Config struct {
	// ClusterID is this cluster's ID in the clusterset (its broker credential's).
	ClusterID string
	// ClusterSetID, when set, is written to the ClusterProperty clusterset.k8s.io.
	ClusterSetID string
	Kube         kubernetes.Interface
	MCS          mcsclient.Interface
	// Dynamic writes the ClusterProperty objects; nil skips them.
	Dynamic dynamic.Interface
	Broker  Broker
	// Reachability says which remote clusters' tunnels are up (the active
	// gateway's verdict, FollowMeshGateway); the endpoints of the others are
	// withheld from every import (Withdrawals). nil: all up.
	Reachability Reachability
	Logger       *slog.Logger
	// Workers per queue (export and import); 0 means DefaultWorkers.
	Workers int
}

// Controller runs the export and import loops of one cluster.
type Controller struct {
	cfg Config
	log *slog.Logger

	kubeInformers informers.SharedInformerFactory
	mcsInformers  mcsinformers.SharedInformerFactory
	services      corelisters.ServiceLister
	namespaces    corelisters.NamespaceLister
	slices        discoverylisters.EndpointSliceLister
	sliceIndex    cache.Indexer
	exports       mcslisters.ServiceExportLister
	imports       mcslisters.ServiceImportLister

	exportQ workqueue.TypedRateLimitingInterface[string]
	importQ workqueue.TypedRateLimitingInterface[string]

	mu       sync.RWMutex
	synced   bool
	records  map[string]api.Export // broker key → export, as last seen
	resolved map[string]*Service   // namespace/name → resolved service
	byNS     map[string][]string   // namespace → names of resolved services
	// sent holds exports published whose watch event has not come back,
	// by namespace/name, so that they are not published twice.
	sent map[string]api.Export
	// snap is the broker's latest state (its clusters and gateways decide
	// withdrawals); withdrawn is Withdrawals of it, replaced, never changed
	// in place, so that a reader may keep the map it got.
	snap      api.Snapshot
	withdrawn map[string]Withholding
	// clusters are snap's clusters by ID (their translations).
	clusters map[string]api.Cluster
}

// Indexes of the EndpointSlice informer.
const (
	indexService   = "service"   // namespace/kubernetes.io/service-name
	indexMCService = "mcservice" // namespace/multicluster.kubernetes.io/service-name, our slices only
)

// MaxRetryDelay caps the wait before a failed key is tried again. A
// publish fails while the broker is down; client-go's default backoff
// (doubling to 1000 s) had grown to a minute or more after an outage of
// one, so an export made meanwhile reached the broker that long after it
// was back. Capped, it goes out within MaxRetryDelay of the return.
const MaxRetryDelay = 2 * time.Second

// retryLimiter is client-go's default controller limiter (per key 5 ms
// doubling, 10 retries per second in all, bursts of 100) with the per-key
// delay capped at MaxRetryDelay.
func retryLimiter() workqueue.TypedRateLimiter[string] {
	return workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](5*time.Millisecond, MaxRetryDelay),
		&workqueue.TypedBucketRateLimiter[string]{Limiter: rate.NewLimiter(rate.Limit(10), 100)})
}

// New wires a controller; Run starts it.
func New(cfg Config) (*Controller, error) {
	if cfg.ClusterID == "" || cfg.Kube == nil || cfg.MCS == nil || cfg.Broker == nil {
		return nil, errors.New("export: ClusterID, Kube, MCS and Broker are required")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Controller{cfg: cfg, log: cfg.Logger.With("component", "export", "cluster", cfg.ClusterID),
		records: map[string]api.Export{}, sent: map[string]api.Export{}, resolved: map[string]*Service{}, byNS: map[string][]string{}}
	c.exportQ = workqueue.NewTypedRateLimitingQueueWithConfig(retryLimiter(),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "serviceexports"})
	c.importQ = workqueue.NewTypedRateLimitingQueueWithConfig(retryLimiter(),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "serviceimports"})

	c.kubeInformers = informers.NewSharedInformerFactory(cfg.Kube, 10*time.Minute)
	c.mcsInformers = mcsinformers.NewSharedInformerFactory(cfg.MCS, 10*time.Minute)
	svcInf := c.kubeInformers.Core().V1().Services()
	nsInf := c.kubeInformers.Core().V1().Namespaces()
	sliceInf := c.kubeInformers.Discovery().V1().EndpointSlices()
	seInf := c.mcsInformers.Multicluster().V1beta1().ServiceExports()
	siInf := c.mcsInformers.Multicluster().V1beta1().ServiceImports()
	c.services, c.namespaces, c.slices = svcInf.Lister(), nsInf.Lister(), sliceInf.Lister()
	c.exports, c.imports = seInf.Lister(), siInf.Lister()
	if err := sliceInf.Informer().AddIndexers(cache.Indexers{
		indexService: func(obj any) ([]string, error) {
			s := obj.(*discoveryv1.EndpointSlice)
			if n := s.Labels[discoveryv1.LabelServiceName]; n != "" && s.Labels[discoveryv1.LabelManagedBy] != ManagedBy {
				return []string{s.Namespace + "/" + n}, nil
			}
			return nil, nil
		},
		indexMCService: func(obj any) ([]string, error) {
			s := obj.(*discoveryv1.EndpointSlice)
			if n := s.Labels[labelMCSService]; n != "" && s.Labels[discoveryv1.LabelManagedBy] == ManagedBy {
				return []string{s.Namespace + "/" + n}, nil
			}
			return nil, nil
		},
	}); err != nil {
		return nil, err
	}
	c.sliceIndex = sliceInf.Informer().GetIndexer()

	handle := func(inf cache.SharedIndexInformer, fn func(obj any)) error {
		_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    fn,
			UpdateFunc: func(_, obj any) { fn(obj) },
			DeleteFunc: func(obj any) {
				if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = d.Obj
				}
				fn(obj)
			},
		})
		return err
	}
	errs := []error{
		handle(seInf.Informer(), func(obj any) { c.exportQ.Add(key(obj)) }),
		handle(siInf.Informer(), func(obj any) { c.importQ.Add(key(obj)) }),
		handle(svcInf.Informer(), func(obj any) {
			s, ok := obj.(*corev1.Service)
			if !ok {
				return
			}
			if n := s.Labels[LabelImportName]; s.Labels[LabelManagedBy] == ManagedBy && n != "" {
				c.importQ.Add(s.Namespace + "/" + n)
				return
			}
			c.exportQ.Add(s.Namespace + "/" + s.Name)
		}),
		handle(sliceInf.Informer(), func(obj any) {
			s, ok := obj.(*discoveryv1.EndpointSlice)
			if !ok {
				return
			}
			if s.Labels[discoveryv1.LabelManagedBy] == ManagedBy {
				if n := s.Labels[labelMCSService]; n != "" {
					c.importQ.Add(s.Namespace + "/" + n)
				}
				return
			}
			if n := s.Labels[discoveryv1.LabelServiceName]; n != "" {
				c.exportQ.Add(s.Namespace + "/" + n)
			}
		}),
		handle(nsInf.Informer(), func(obj any) {
			ns, ok := obj.(*corev1.Namespace)
			if !ok {
				return
			}
			c.mu.RLock()
			names := c.byNS[ns.Name]
			c.mu.RUnlock()
			for _, n := range names {
				c.importQ.Add(ns.Name + "/" + n)
			}
		}),
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

func key(obj any) string {
	k, _ := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	return k
}

// Run writes the ClusterProperty objects, follows the broker and runs the
// loops until ctx ends. Nothing is changed in the cluster before the
// caches and the broker's first snapshot are in, so a restart during a
// broker outage leaves every import as it was.
func (c *Controller) Run(ctx context.Context) error {
	defer c.exportQ.ShutDown()
	defer c.importQ.ShutDown()
	if c.cfg.Dynamic != nil {
		if err := EnsureClusterProperties(ctx, c.cfg.Dynamic, c.cfg.ClusterID, c.cfg.ClusterSetID); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	c.kubeInformers.Start(ctx.Done())
	c.mcsInformers.Start(ctx.Done())
	defer c.kubeInformers.Shutdown()
	defer c.mcsInformers.Shutdown()
	for t, ok := range c.kubeInformers.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("export: cache of %v did not sync: %w", t, context.Cause(ctx))
		}
	}
	for t, ok := range c.mcsInformers.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("export: cache of %v did not sync (are the MCS CRDs installed?): %w", t, context.Cause(ctx))
		}
	}

	first := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		var once sync.Once
		err := c.cfg.Broker.Follow(ctx, func(s api.Snapshot) {
			c.onBroker(s)
			once.Do(func() { close(first) })
		})
		if err != nil && ctx.Err() == nil {
			c.log.Error("broker follow ended", "err", err)
		}
	}()
	c.log.Info("waiting for the broker's state")
	select {
	case <-first:
	case <-ctx.Done():
		return nil
	}
	if r := c.cfg.Reachability; r != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case <-r.Changed():
					c.requeueWithdrawn(c.refreshWithdrawals())
				}
			}
		}()
	}
	for range c.cfg.Workers {
		wg.Add(2)
		go func() { defer wg.Done(); c.work(ctx, c.exportQ, c.reconcileExport) }()
		go func() { defer wg.Done(); c.work(ctx, c.importQ, c.reconcileImport) }()
	}
	c.log.Info("export controller running")
	<-ctx.Done()
	return nil
}

func (c *Controller) work(ctx context.Context, q workqueue.TypedRateLimitingInterface[string], fn func(context.Context, string) error) {
	go func() { <-ctx.Done(); q.ShutDown() }()
	for {
		k, quit := q.Get()
		if quit {
			return
		}
		err := fn(ctx, k)
		switch {
		case err == nil:
			q.Forget(k)
		case ctx.Err() != nil:
		default:
			c.log.Warn("reconcile failed; retrying", "key", k, "err", err)
			q.AddRateLimited(k)
		}
		q.Done(k)
	}
}

// onBroker takes a new broker state: it resolves every service and queues
// the keys whose exports changed.
func (c *Controller) onBroker(s api.Snapshot) {
	records := make(map[string]api.Export, len(s.Exports))
	for _, e := range s.Exports {
		records[api.ExportKey(e.ClusterID, e.Namespace, e.Name)] = e
	}
	resolved := map[string]*Service{}
	byNS := map[string][]string{}
	for _, svc := range Resolve(s.Exports) {
		resolved[svc.Key()] = &svc
		byNS[svc.Namespace] = append(byNS[svc.Namespace], svc.Name)
	}
	clusters := make(map[string]api.Cluster, len(s.Clusters))
	for _, cl := range s.Clusters {
		clusters[cl.ID] = cl
	}
	c.mu.Lock()
	old, wasSynced, oldClusters := c.records, c.synced, c.clusters
	c.records, c.resolved, c.byNS, c.synced, c.snap, c.clusters = records, resolved, byNS, true, s, clusters
	c.mu.Unlock()
	c.requeueWithdrawn(c.refreshWithdrawals())
	// A cluster translated (at another's join or by the admin): every
	// import of its exports uses its mapped addresses now, and when it is
	// this cluster, every export is published again with them.
	retranslated := map[string]bool{}
	for id, cl := range clusters {
		if o := oldClusters[id]; !reflect.DeepEqual(o.Translations, cl.Translations) {
			retranslated[id] = true
		}
	}
	c.requeueWithdrawn(retranslated)
	if wasSynced && retranslated[c.cfg.ClusterID] {
		c.log.Info("this cluster's translations changed: publishing every export with its mapped addresses",
			"translations", clusters[c.cfg.ClusterID].Translations)
		ses, _ := c.exports.List(labels.Everything())
		for _, se := range ses {
			c.exportQ.Add(se.Namespace + "/" + se.Name)
		}
	}

	changed := map[string]bool{}
	for k, e := range records {
		if o, ok := old[k]; !ok || !reflect.DeepEqual(o, e) {
			changed[e.Namespace+"/"+e.Name] = true
		}
	}
	for k, o := range old {
		if _, ok := records[k]; !ok {
			changed[o.Namespace+"/"+o.Name] = true
		}
	}
	if !wasSynced {
		// Everything the cluster holds is checked once against the broker.
		sis, _ := c.imports.List(labels.Everything())
		for _, si := range sis {
			changed[si.Namespace+"/"+si.Name] = true
		}
		ses, _ := c.exports.List(labels.Everything())
		for _, se := range ses {
			c.exportQ.Add(se.Namespace + "/" + se.Name)
		}
	}
	c.mu.Lock()
	for k := range changed {
		delete(c.sent, k)
	}
	c.mu.Unlock()
	for k := range changed {
		c.importQ.Add(k)
		c.exportQ.Add(k)
	}
}

// view returns the broker's record of our export of key and the resolved service.
func (c *Controller) view(ns, name string) (api.Export, bool, *Service) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.records[api.ExportKey(c.cfg.ClusterID, ns, name)]
	return e, ok, c.resolved[ns+"/"+name]
}

// resolvedWith is the service of exp as it resolves once the broker holds
// exp as this cluster's export: what the ServiceExport's conditions are
// computed from as soon as exp is published, so that they are written
// once, not again when the broker's watch echoes the export.
func (c *Controller) resolvedWith(exp api.Export) *Service {
	c.mu.RLock()
	var es []api.Export
	if svc := c.resolved[exp.Namespace+"/"+exp.Name]; svc != nil {
		for _, e := range svc.Exports {
			if e.ClusterID != exp.ClusterID {
				es = append(es, e)
			} else {
				exp.CreatedAt = e.CreatedAt // the broker's, which is what counts
			}
		}
	}
	c.mu.RUnlock()
	s := Resolve(append(es, exp))[0]
	return &s
}

// scope is what PlanImport needs to know of this cluster now.
func (c *Controller) scope() Scope {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return Scope{Local: c.cfg.ClusterID, Withdrawn: c.withdrawn, Clusters: c.clusters}
}

// self is the broker's record of this cluster (zero before it is known).
func (c *Controller) self() api.Cluster {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.clusters[c.cfg.ClusterID]
}

// refreshWithdrawals recomputes which clusters are withdrawn from the
// broker's state and the tunnels, logs what changed and returns the
// clusters whose verdict changed.
func (c *Controller) refreshWithdrawals() map[string]bool {
	var up func(string) bool
	if r := c.cfg.Reachability; r != nil {
		up = r.Reachable
	}
	c.mu.Lock()
	exporters := map[string]bool{}
	for _, e := range c.records {
		exporters[e.ClusterID] = true
	}
	now := Withdrawals(c.cfg.ClusterID, c.snap, slices.Collect(maps.Keys(exporters)), up)
	old := c.withdrawn
	c.withdrawn = now
	c.mu.Unlock()
	changed := map[string]bool{}
	for cl, w := range now {
		if o, ok := old[cl]; !ok || o != w {
			changed[cl] = true
			c.log.Warn("withholding a cluster's endpoints from every import until it recovers", "from", cl, "reason", w.Reason, "why", w.Message)
		}
	}
	for cl := range old {
		if _, ok := now[cl]; !ok {
			changed[cl] = true
			c.log.Info("importing a cluster's endpoints again", "from", cl)
		}
	}
	return changed
}

// requeueWithdrawn queues every import that has an export of one of clusters.
func (c *Controller) requeueWithdrawn(clusters map[string]bool) {
	if len(clusters) == 0 {
		return
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	for k, svc := range c.resolved {
		if slices.ContainsFunc(svc.Exports, func(e api.Export) bool { return clusters[e.ClusterID] }) {
			c.importQ.Add(k)
		}
	}
}

package export_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/tunnelmesh/tunnelmesh/deploy"
	"github.com/tunnelmesh/tunnelmesh/internal/kubeapi"
	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/export"
	"github.com/tunnelmesh/tunnelmesh/pkg/gateway"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/k8stest"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
)

// BenchmarkExport creates N ServiceExports (default 1000, BENCH_EXPORTS)
// in cluster east and measures, per export, the time from its creation
// until cluster west holds its ServiceImport with ips and an EndpointSlice,
// and from its deletion until that ServiceImport is gone; twice: the
// exports made one after the other by one writer (as `kubectl apply` of a
// file), then all at once by 32 writers. After the first round west's
// active gateway reports the tunnel to east down (its MeshGateway, as the
// gateway writes it), and it measures until each of east's slices in west
// is withheld, and back when the tunnel is up again. The controllers run
// with the shipped client rate limits, workers and Lease timings, etcd
// with fsync. It prints a table; `make bench-export` runs it once.
func BenchmarkExport(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("BENCH_EXPORTS")); err == nil && v > 0 {
		n = v
	}
	for range b.N {
		benchExport(b, n)
	}
}

func benchExport(b *testing.B, n int) {
	// The shipped settings; BENCH_QPS, BENCH_BURST and BENCH_WORKERS try
	// others (the table says which ran).
	o := clusterOptions{api: kubeapi.Options{Fsync: true}, qps: export.DefaultQPS, burst: export.DefaultBurst, workers: export.DefaultWorkers,
		shippedElection: true}
	if v, err := strconv.ParseFloat(os.Getenv("BENCH_QPS"), 32); err == nil {
		o.qps = float32(v)
	}
	if v, err := strconv.Atoi(os.Getenv("BENCH_BURST")); err == nil {
		o.burst = v
	}
	if v, err := strconv.Atoi(os.Getenv("BENCH_WORKERS")); err == nil {
		o.workers = v
	}
	shipped := o.qps == export.DefaultQPS && o.burst == export.DefaultBurst && o.workers == export.DefaultWorkers
	br := brokertest.Start(b, brokertest.Options{})
	east := startClusterWith(b, br, "east", "10.1.0.0/16", "10.101.0.0/16", o)
	west := startClusterWith(b, br, "west", "10.2.0.0/16", "10.102.0.0/16", o)
	objs, err := k8stest.Files(deploy.FS, "gateway/crd-meshgateways.yaml")
	if err != nil {
		b.Fatal(err)
	}
	k8stest.Apply(b, west.env.Config, objs)
	for _, c := range []*cluster{east, west} {
		// The test apiserver's own range (a /24) holds 254 Services; 2n are needed.
		_, err := c.kube.NetworkingV1().ServiceCIDRs().Create(context.Background(), &networkingv1.ServiceCIDR{
			ObjectMeta: metav1.ObjectMeta{Name: "bench"}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.96.0.0/16"}}}, metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		c.namespace("bench")
		c.run()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// West follows its MeshGateway as the controller command does.
	go export.FollowMeshGateway(ctx, west.ctrlDyn, "", "west", west.tunnels, slog.New(slog.DiscardHandler))

	// West's side: when each import became complete, when east's slice
	// was withheld and back, and when the import went.
	var mu sync.Mutex
	hasIPs, hasSlice := map[string]bool{}, map[string]bool{}
	ready, gone := map[string]time.Time{}, map[string]time.Time{}
	withheld, restored := map[string]time.Time{}, map[string]time.Time{}
	note := func(name string) {
		if hasIPs[name] && hasSlice[name] {
			if _, ok := ready[name]; !ok {
				ready[name] = time.Now()
			}
		}
	}
	siW, err := west.mcs.MulticlusterV1beta1().ServiceImports("bench").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	slW, err := west.kube.DiscoveryV1().EndpointSlices("bench").Watch(ctx, metav1.ListOptions{
		LabelSelector: labels.Set{discoveryv1.LabelManagedBy: export.ManagedBy}.String()})
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for {
			select {
			case ev, ok := <-siW.ResultChan():
				if !ok {
					return
				}
				si, ok := ev.Object.(*mcsv1beta1.ServiceImport)
				if !ok {
					continue
				}
				mu.Lock()
				if ev.Type == watch.Deleted {
					gone[si.Name] = time.Now()
				} else if len(si.Spec.IPs) > 0 {
					hasIPs[si.Name] = true
					note(si.Name)
				}
				mu.Unlock()
			case ev, ok := <-slW.ResultChan():
				if !ok {
					return
				}
				s, ok := ev.Object.(*discoveryv1.EndpointSlice)
				if !ok || ev.Type == watch.Deleted {
					continue
				}
				name := s.Labels[mcsv1beta1.LabelServiceName]
				mu.Lock()
				hasSlice[name] = true
				note(name)
				if s.Labels[mcsv1beta1.LabelSourceCluster] == "east" {
					if s.Labels[export.LabelWithheld] == export.WithheldTunnelDown {
						if _, ok := withheld[name]; !ok {
							withheld[name] = time.Now()
						}
					} else if _, ok := withheld[name]; ok {
						if _, ok := restored[name]; !ok {
							restored[name] = time.Now()
						}
					}
				}
				mu.Unlock()
			}
		}
	}()

	// The broker's side: when each export was committed and withdrawn.
	inBroker, outBroker := map[string]time.Time{}, map[string]time.Time{}
	go func() {
		_ = br.Admin().Watch(ctx, 0, func(ev api.Event) error {
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case ev.Type == api.EventPut && ev.Export != nil:
				if _, ok := inBroker[ev.Export.Name]; !ok {
					inBroker[ev.Export.Name] = now
				}
			case ev.Type == api.EventDelete && ev.Kind == api.KindExport:
				outBroker[ev.Key[strings.LastIndex(ev.Key, "/")+1:]] = now
			}
			return nil
		})
	}()

	ports := []corev1.ServicePort{tcp("http", 80, 8080)}
	// One export first, so that start-up (caches, first writes of each
	// kind) is not counted.
	east.service("bench", "warmup", false, ports, pod{ip: "10.1.255.1"})
	east.export("bench", "warmup")
	testkit.Eventually(b, time.Minute, func() error {
		mu.Lock()
		defer mu.Unlock()
		if ready["warmup"].IsZero() {
			return fmt.Errorf("warm-up export not imported")
		}
		return nil
	})
	waitAll := func(m map[string]time.Time, names []string) {
		testkit.Eventually(b, 10*time.Minute, func() error {
			mu.Lock()
			defer mu.Unlock()
			missing := 0
			for _, n := range names {
				if _, ok := m[n]; !ok {
					missing++
				}
			}
			if missing > 0 {
				return fmt.Errorf("%d of %d not yet", missing, len(names))
			}
			return nil
		})
	}
	lat := func(names []string, from []time.Time, to map[string]time.Time) []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		out := make([]time.Duration, len(names))
		for i, name := range names {
			out[i] = to[name].Sub(from[i])
		}
		slices.Sort(out)
		return out
	}
	type row struct {
		phase       string
		d           []time.Duration
		writes, all time.Duration
	}
	var rows []row

	// Two rounds of n exports: made one after the other by one writer, as
	// `kubectl apply` of a file does, then all at once by benchWriters
	// writers. The first round also cuts and mends the tunnel.
	for round, writers := range []int{1, benchWriters} {
		tag := fmt.Sprintf("%d writer(s)", writers)
		names := make([]string, n)
		for i := range n {
			names[i] = fmt.Sprintf("r%d-svc-%04d", round, i)
		}
		// The Services and their pods' slices first; then the exports.
		parallel(b, benchWriters, n, func(i int) error {
			return east.serviceErr("bench", names[i], false, ports, pod{ip: fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)})
		})
		created := make([]time.Time, n)
		start := time.Now()
		parallel(b, writers, n, func(i int) error {
			created[i] = time.Now()
			_, err := east.mcs.MulticlusterV1beta1().ServiceExports("bench").Create(ctx,
				&mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: names[i]}}, metav1.CreateOptions{})
			return err
		})
		createdAll := time.Since(start)
		waitAll(ready, names)
		importAll := time.Since(start)
		rows = append(rows,
			row{"export → ServiceImport+slice in other cluster, " + tag, lat(names, created, ready), createdAll, importAll},
			row{"  of which export → committed in the broker", lat(names, created, inBroker), createdAll, importAll})

		if round == 0 {
			// West's active gateway finds the tunnel to east down, then up again.
			gw := status.Writer{Client: west.dyn, ClusterID: "west"}
			tunnel := func(st string) []time.Time {
				if err := gw.Write(ctx, status.GatewayStatus{ActiveNode: "west-gw", Epoch: 1,
					Remotes: []status.RemoteCluster{{Cluster: "east", Status: st}}}); err != nil {
					b.Fatal(err)
				}
				at := make([]time.Time, n)
				for i := range at {
					at[i] = time.Now()
				}
				return at
			}
			cut := tunnel(api.StatusError)
			waitAll(withheld, names)
			withheldAll := time.Since(cut[0])
			mended := tunnel(api.StatusConnected)
			waitAll(restored, names)
			restoredAll := time.Since(mended[0])
			rows = append(rows,
				row{"tunnel to east down → east's endpoints withheld in west", lat(names, cut, withheld), 0, withheldAll},
				row{"tunnel up again → east's endpoints back in west", lat(names, mended, restored), 0, restoredAll})
		}

		deleted := make([]time.Time, n)
		start = time.Now()
		parallel(b, writers, n, func(i int) error {
			deleted[i] = time.Now()
			return east.mcs.MulticlusterV1beta1().ServiceExports("bench").Delete(ctx, names[i], metav1.DeleteOptions{})
		})
		deletedAll := time.Since(start)
		waitAll(gone, names)
		goneAll := time.Since(start)
		rows = append(rows,
			row{"unexport → ServiceImport gone in other cluster, " + tag, lat(names, deleted, gone), deletedAll, goneAll},
			row{"  of which unexport → withdrawn from the broker", lat(names, deleted, outBroker), deletedAll, goneAll})
	}

	pct := func(d []time.Duration, p float64) time.Duration {
		return d[min(len(d)-1, int(float64(len(d))*p))].Round(time.Millisecond)
	}
	which := "the shipped defaults"
	if !shipped {
		which = fmt.Sprintf("NOT the shipped defaults, which are QPS %d burst %d, %d workers", export.DefaultQPS, export.DefaultBurst, export.DefaultWorkers)
	}
	fmt.Printf("settings: controller clients QPS %g burst %d (each of core, MCS, dynamic), %d workers per queue (%s); etcd with fsync; broker on bbolt\n",
		o.qps, o.burst, o.workers, which)
	fmt.Printf("withdrawal: from west's MeshGateway saying the tunnel to east is down (the gateway's verdict, %v after east's last probe reply, probed every %v) to east's slice of each import withheld in west\n",
		gateway.ProbeDownAfter, gateway.ProbeInterval)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "phase\texports\tp50\tp99\tmax\twrites took\tall done after\t\n")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%v\t%v\t%v\t%v\t%v\t\n", r.phase, n, pct(r.d, 0.5), pct(r.d, 0.99), r.d[n-1].Round(time.Millisecond),
			r.writes.Round(time.Millisecond), r.all.Round(time.Millisecond))
	}
	tw.Flush()
}

// benchWriters is how many writers make the burst of ServiceExports.
const benchWriters = 32

// parallel runs fn(0..n-1) on writers goroutines and fails b on the first
// error.
func parallel(b *testing.B, writers, n int, fn func(i int) error) {
	b.Helper()
	next := make(chan int)
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

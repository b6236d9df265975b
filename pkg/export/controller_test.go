package export_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/export"
)

type want struct {
	typ       mcsv1beta1.ServiceImportType
	ports     string // name/proto/port, comma-separated, in order
	clusters  string // comma-separated
	endpoints map[string][]string
	withheld  map[string]string // source cluster → reason; nil: none
	check     func(*imported) error
	notReady  string // the ServiceImport's Ready reason when it is not ready
}

func (c *cluster) wantImport(ns, name string, w want) *imported {
	c.t.Helper()
	var last *imported
	testkit.Eventually(c.t, 20*time.Second, func() error {
		im, err := c.imported(ns, name)
		if err != nil {
			return fmt.Errorf("%s: %w", c.id, err)
		}
		last = im
		return checkImport(im, w)
	})
	return last
}

func checkImport(im *imported, w want) error {
	si := im.SI
	if si.Spec.Type != w.typ {
		return fmt.Errorf("type %s, want %s", si.Spec.Type, w.typ)
	}
	var ports []string
	for _, p := range si.Spec.Ports {
		ports = append(ports, fmt.Sprintf("%s/%s/%d", p.Name, p.Protocol, p.Port))
	}
	if got := strings.Join(ports, ","); got != w.ports {
		return fmt.Errorf("ports %s, want %s", got, w.ports)
	}
	var cs []string
	for _, c := range si.Status.Clusters {
		cs = append(cs, c.Cluster)
	}
	if got := strings.Join(cs, ","); got != w.clusters {
		return fmt.Errorf("status.clusters %s, want %s", got, w.clusters)
	}
	d := im.Derived
	if d.Spec.Selector != nil || len(d.OwnerReferences) != 0 || d.Labels[export.LabelImportName] != si.Name {
		return fmt.Errorf("derived Service %s: selector %v owners %v", d.Name, d.Spec.Selector, d.OwnerReferences)
	}
	switch w.typ {
	case mcsv1beta1.ClusterSetIP:
		if len(d.Spec.ClusterIPs) == 0 || !slices.Equal(si.Spec.IPs, d.Spec.ClusterIPs) ||
			!reflect.DeepEqual(si.Spec.IPFamilies, d.Spec.IPFamilies) {
			return fmt.Errorf("ips %v families %v; derived Service has %v %v", si.Spec.IPs, si.Spec.IPFamilies, d.Spec.ClusterIPs, d.Spec.IPFamilies)
		}
	case mcsv1beta1.Headless:
		if len(si.Spec.IPs) != 0 || d.Spec.ClusterIP != corev1.ClusterIPNone {
			return fmt.Errorf("headless import has ips %v, derived clusterIP %s", si.Spec.IPs, d.Spec.ClusterIP)
		}
	}
	for _, s := range im.Slices {
		l := s.Labels
		if l[mcsv1beta1.LabelServiceName] != si.Name || l[mcsv1beta1.LabelSourceCluster] == "" ||
			l[discoveryv1.LabelManagedBy] != export.ManagedBy || l[discoveryv1.LabelServiceName] != d.Name {
			return fmt.Errorf("slice %s labels %v", s.Name, l)
		}
		if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].UID != si.UID || s.OwnerReferences[0].Kind != "ServiceImport" {
			return fmt.Errorf("slice %s owners %v", s.Name, s.OwnerReferences)
		}
	}
	if w.notReady == "" {
		if c := apimeta.FindStatusCondition(si.Status.Conditions, "Ready"); c == nil || c.Status != metav1.ConditionTrue || c.Reason != "Ready" {
			return fmt.Errorf("ServiceImport Ready condition %v", c)
		}
	}
	if !reflect.DeepEqual(im.Endpoints, w.endpoints) {
		return fmt.Errorf("endpoints %v, want %v", im.Endpoints, w.endpoints)
	}
	if w.withheld == nil {
		w.withheld = map[string]string{}
	}
	if !reflect.DeepEqual(im.Withheld, w.withheld) {
		return fmt.Errorf("withheld %v, want %v", im.Withheld, w.withheld)
	}
	if w.check != nil {
		return w.check(im)
	}
	return nil
}

func tcp(name string, port, target int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Protocol: corev1.ProtocolTCP, Port: port, TargetPort: intstr.FromInt32(target)}
}

const (
	validExported = "Conflict=False/NoConflicts Ready=True/Exported Valid=True/Valid"
	noService     = "Ready=False/Pending Valid=False/NoService"
)

func conflicted(reason string) string {
	return "Conflict=True/" + reason + " Ready=True/Exported Valid=True/Valid"
}

// TestLifecycle runs two clusters (real apiservers), a real broker and a
// controller per cluster through the whole MCS lifecycle.
func TestLifecycle(t *testing.T) {
	// Gateways go stale fast, for the withdrawal of a cluster whose
	// gateways stopped heartbeating.
	b := brokertest.Start(t, brokertest.Options{Tweak: func(c *broker.Config) { c.StaleAfter = 2 * time.Second }})
	east := startCluster(t, b, "east", "10.1.0.0/16", "10.101.0.0/16")
	west := startCluster(t, b, "west", "10.2.0.0/16", "10.102.0.0/16")
	ctx := context.Background()
	for _, c := range []*cluster{east, west} {
		c.namespace("demo")
		c.run()
	}

	t.Run("cluster properties", func(t *testing.T) {
		for _, c := range []*cluster{east, west} {
			testkit.Eventually(t, 10*time.Second, func() error {
				for name, v := range map[string]string{export.PropertyClusterID: c.id, export.PropertyClusterSetID: "test-set"} {
					p, err := c.dyn.Resource(export.ClusterPropertyGVR).Get(ctx, name, metav1.GetOptions{})
					if err != nil {
						return err
					}
					if got := p.Object["spec"].(map[string]any)["value"]; got != v {
						return fmt.Errorf("%s: %s = %v, want %s", c.id, name, got, v)
					}
				}
				return nil
			})
		}
	})

	t.Run("a controller with another cluster ID refuses to run", func(t *testing.T) {
		ctrl, err := export.New(export.Config{ClusterID: "elsewhere", Kube: east.ctrlKube, MCS: east.ctrlMCS, Dynamic: east.ctrlDyn, Broker: east.broker})
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := ctrl.Run(rctx); err == nil || !strings.Contains(err.Error(), `holds "east"`) {
			t.Fatalf("Run: %v; want a ClusterProperty mismatch", err)
		}
	})

	webPorts := []corev1.ServicePort{tcp("http", 80, 8080)}
	t.Run("export appears in both clusters", func(t *testing.T) {
		east.service("demo", "web", false, webPorts, pod{ip: "10.1.0.10"}, pod{ip: "10.1.0.11", notReady: true})
		east.export("demo", "web")
		east.wantConditions("demo", "web", validExported)
		for _, c := range []*cluster{east, west} {
			c.wantImport("demo", "web", want{typ: mcsv1beta1.ClusterSetIP, ports: "http/TCP/80", clusters: "east",
				endpoints: map[string][]string{"east": {"10.1.0.10", "10.1.0.11!"}},
				check: func(im *imported) error {
					p := im.Slices[0].Ports
					if len(p) != 1 || *p[0].Name != "http" || *p[0].Port != 8080 {
						return fmt.Errorf("slice ports %v: want the pods' port 8080 named http", p)
					}
					return nil
				}})
		}
	})

	t.Run("second exporter with the same ports: no conflict", func(t *testing.T) {
		west.service("demo", "web", false, webPorts, pod{ip: "10.2.0.10"})
		west.export("demo", "web")
		for _, c := range []*cluster{east, west} {
			c.wantConditions("demo", "web", validExported)
			c.wantImport("demo", "web", want{typ: mcsv1beta1.ClusterSetIP, ports: "http/TCP/80", clusters: "east,west",
				endpoints: map[string][]string{"east": {"10.1.0.10", "10.1.0.11!"}, "west": {"10.2.0.10"}}})
		}
	})

	// KEP-1645 as its conformance suite reads it: port sets that differ
	// merge into their union and are a conflict on every export.
	t.Run("ports that differ: the union and a conflict", func(t *testing.T) {
		udp := corev1.ServicePort{Name: "udp", Protocol: corev1.ProtocolUDP, Port: 42, TargetPort: intstr.FromInt32(42)}
		sctp := corev1.ServicePort{Name: "stcp", Protocol: corev1.ProtocolSCTP, Port: 142, TargetPort: intstr.FromInt32(142)}
		east.service("demo", "hello", false, []corev1.ServicePort{tcp("tcp", 42, 42), udp}, pod{ip: "10.1.0.40"})
		east.export("demo", "hello")
		east.wantConditions("demo", "hello", validExported)
		west.service("demo", "hello", false, []corev1.ServicePort{tcp("tcp", 42, 42), sctp}, pod{ip: "10.2.0.40"})
		west.export("demo", "hello")
		for _, c := range []*cluster{east, west} {
			c.wantConditions("demo", "hello", conflicted("PortConflict"))
			c.wantConditionMessage("demo", "hello", "Conflict", "east", "west")
			c.wantImport("demo", "hello", want{typ: mcsv1beta1.ClusterSetIP, ports: "tcp/TCP/42,udp/UDP/42,stcp/SCTP/142", clusters: "east,west",
				endpoints: map[string][]string{"east": {"10.1.0.40"}, "west": {"10.2.0.40"}}})
		}
		west.unexport("demo", "hello")
		east.wantConditions("demo", "hello", validExported)
		east.wantImport("demo", "hello", want{typ: mcsv1beta1.ClusterSetIP, ports: "tcp/TCP/42,udp/UDP/42", clusters: "east",
			endpoints: map[string][]string{"east": {"10.1.0.40"}}})
		east.unexport("demo", "hello")
		for _, c := range []*cluster{east, west} {
			testkit.Eventually(t, 20*time.Second, func() error { return c.gone("demo", "hello") })
		}
	})

	t.Run("conflicts", func(t *testing.T) {
		svcs := west.kube.CoreV1().Services("demo")
		update := func(fn func(*corev1.Service)) {
			t.Helper()
			s, err := svcs.Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			fn(s)
			if _, err := svcs.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		updateSE := func(fn func(*mcsv1beta1.ServiceExport)) { t.Helper(); west.updateExport("demo", "web", fn) }
		for _, tc := range []struct {
			reason      string
			make, clear func()
			check       func(*imported) error
		}{
			{"SessionAffinityConflict",
				func() { update(func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP }) },
				func() {
					update(func(s *corev1.Service) {
						s.Spec.SessionAffinity, s.Spec.SessionAffinityConfig = corev1.ServiceAffinityNone, nil
					})
				},
				func(im *imported) error {
					if im.SI.Spec.SessionAffinity != corev1.ServiceAffinityNone || im.Derived.Spec.SessionAffinity != corev1.ServiceAffinityNone {
						return fmt.Errorf("affinity %s/%s: the oldest export (east, None) must win", im.SI.Spec.SessionAffinity, im.Derived.Spec.SessionAffinity)
					}
					return nil
				}},
			{"InternalTrafficPolicyConflict",
				func() {
					update(func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal) })
				},
				func() {
					update(func(s *corev1.Service) {
						s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyCluster)
					})
				}, nil},
			{"TrafficDistributionConflict",
				func() { update(func(s *corev1.Service) { s.Spec.TrafficDistribution = ptr("PreferClose") }) },
				func() { update(func(s *corev1.Service) { s.Spec.TrafficDistribution = nil }) }, nil},
			{"PortConflict",
				func() {
					update(func(s *corev1.Service) { s.Spec.Ports = append(s.Spec.Ports, tcp("metrics", 9090, 9090)) })
				},
				func() { update(func(s *corev1.Service) { s.Spec.Ports = s.Spec.Ports[:1] }) },
				func(im *imported) error {
					if p := im.SI.Spec.Ports; len(p) != 2 || p[0].Name != "http" || p[1].Name != "metrics" {
						return fmt.Errorf("ports %v: want the union of http and metrics", im.SI.Spec.Ports)
					}
					return nil
				}},
			{"PortConflict",
				func() { update(func(s *corev1.Service) { s.Spec.Ports[0].Port = 81 }) },
				func() { update(func(s *corev1.Service) { s.Spec.Ports[0].Port = 80 }) },
				func(im *imported) error {
					if p := im.SI.Spec.Ports[0]; p.Name != "http" || p.Port != 80 {
						return fmt.Errorf("port %v: the oldest export's http/80 must win", p)
					}
					return nil
				}},
			{"LabelsConflict",
				func() {
					updateSE(func(se *mcsv1beta1.ServiceExport) { se.Spec.ExportedLabels = map[string]string{"tier": "web"} })
				},
				func() { updateSE(func(se *mcsv1beta1.ServiceExport) { se.Spec.ExportedLabels = nil }) }, nil},
			// Labels and annotations are the oldest export's whole set:
			// east's {team: a}, not merged with west's {team: a, tier: web}.
			{"LabelsConflict",
				func() {
					east.updateExport("demo", "web", func(se *mcsv1beta1.ServiceExport) { se.Spec.ExportedLabels = map[string]string{"team": "a"} })
					updateSE(func(se *mcsv1beta1.ServiceExport) {
						se.Spec.ExportedLabels = map[string]string{"team": "a", "tier": "web"}
					})
				},
				func() {
					east.updateExport("demo", "web", func(se *mcsv1beta1.ServiceExport) { se.Spec.ExportedLabels = nil })
					updateSE(func(se *mcsv1beta1.ServiceExport) { se.Spec.ExportedLabels = nil })
				},
				func(im *imported) error {
					if im.SI.Labels["team"] != "a" || im.SI.Labels["tier"] != "" {
						return fmt.Errorf("ServiceImport labels %v: want the oldest export's (east) whole set, team=a and no tier", im.SI.Labels)
					}
					return nil
				}},
			{"AnnotationsConflict",
				func() {
					updateSE(func(se *mcsv1beta1.ServiceExport) { se.Spec.ExportedAnnotations = map[string]string{"a": "b"} })
				},
				func() { updateSE(func(se *mcsv1beta1.ServiceExport) { se.Spec.ExportedAnnotations = nil }) },
				func(im *imported) error {
					if _, ok := im.SI.Annotations["a"]; ok {
						return fmt.Errorf("ServiceImport annotations %v: the oldest export (east) has none, so none are imported", im.SI.Annotations)
					}
					return nil
				}},
			{"SessionAffinityConflict,TrafficDistributionConflict",
				func() {
					update(func(s *corev1.Service) {
						s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
						s.Spec.TrafficDistribution = ptr("PreferClose")
					})
				},
				func() {
					update(func(s *corev1.Service) {
						s.Spec.SessionAffinity, s.Spec.SessionAffinityConfig, s.Spec.TrafficDistribution = corev1.ServiceAffinityNone, nil, nil
					})
				}, nil},
		} {
			t.Run(tc.reason, func(t *testing.T) {
				tc.make()
				for _, c := range []*cluster{east, west} {
					c.wantConditions("demo", "web", conflicted(tc.reason))
					c.wantConditionMessage("demo", "web", "Conflict", "east", "west")
				}
				if tc.check != nil {
					for _, c := range []*cluster{east, west} {
						testkit.Eventually(t, 10*time.Second, func() error {
							im, err := c.imported("demo", "web")
							if err != nil {
								return err
							}
							return tc.check(im)
						})
					}
				}
				tc.clear()
				for _, c := range []*cluster{east, west} {
					c.wantConditions("demo", "web", validExported)
				}
			})
		}
		t.Run("TypeConflict", func(t *testing.T) {
			// A Service cannot become headless in place: west replaces it.
			if err := svcs.Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			west.wantConditions("demo", "web", noService)
			west.service("demo", "web", true, []corev1.ServicePort{tcp("http", 80, 8080)}, pod{ip: "10.2.0.10", hostname: "w0"})
			for _, c := range []*cluster{east, west} {
				c.wantConditions("demo", "web", conflicted("TypeConflict"))
				c.wantImport("demo", "web", want{typ: mcsv1beta1.ClusterSetIP, ports: "http/TCP/80", clusters: "east,west",
					endpoints: map[string][]string{"east": {"10.1.0.10", "10.1.0.11!"}, "west": {"10.2.0.10/w0"}}})
			}
		})
	})

	t.Run("headless with hostnames", func(t *testing.T) {
		east.service("demo", "db", true, []corev1.ServicePort{tcp("pg", 5432, 5432)}, pod{ip: "10.1.0.20", hostname: "db-0"}, pod{ip: "10.1.0.21", hostname: "db-1"})
		east.export("demo", "db")
		east.wantConditions("demo", "db", validExported)
		for _, c := range []*cluster{east, west} {
			c.wantImport("demo", "db", want{typ: mcsv1beta1.Headless, ports: "pg/TCP/5432", clusters: "east",
				endpoints: map[string][]string{"east": {"10.1.0.20/db-0", "10.1.0.21/db-1"}}})
		}
	})

	t.Run("namespace missing then created", func(t *testing.T) {
		east.namespace("late")
		east.service("late", "api", false, []corev1.ServicePort{tcp("grpc", 9000, 9000)}, pod{ip: "10.1.0.30"})
		east.export("late", "api")
		east.wantConditions("late", "api", validExported)
		east.wantImport("late", "api", want{typ: mcsv1beta1.ClusterSetIP, ports: "grpc/TCP/9000", clusters: "east",
			endpoints: map[string][]string{"east": {"10.1.0.30"}}})
		if _, err := west.mcs.MulticlusterV1beta1().ServiceImports("late").Get(ctx, "api", metav1.GetOptions{}); err == nil {
			t.Fatal("import in a namespace that does not exist")
		}
		west.namespace("late")
		west.wantImport("late", "api", want{typ: mcsv1beta1.ClusterSetIP, ports: "grpc/TCP/9000", clusters: "east",
			endpoints: map[string][]string{"east": {"10.1.0.30"}}})
	})

	t.Run("tunnel down and up", func(t *testing.T) {
		west.tunnels.SetUp("east", false)
		// East's endpoints stay listed, all not ready, the slices saying why.
		west.wantImport("demo", "db", want{typ: mcsv1beta1.Headless, ports: "pg/TCP/5432", clusters: "east",
			endpoints: map[string][]string{"east": {"10.1.0.20/db-0!", "10.1.0.21/db-1!"}}, withheld: map[string]string{"east": "TunnelDown"}})
		west.wantImport("demo", "web", want{typ: mcsv1beta1.ClusterSetIP, ports: "http/TCP/80", clusters: "east,west",
			endpoints: map[string][]string{"east": {"10.1.0.10!", "10.1.0.11!"}, "west": {"10.2.0.10/w0"}}, withheld: map[string]string{"east": "TunnelDown"}})
		// The local cluster's view is unchanged.
		east.wantImport("demo", "db", want{typ: mcsv1beta1.Headless, ports: "pg/TCP/5432", clusters: "east",
			endpoints: map[string][]string{"east": {"10.1.0.20/db-0", "10.1.0.21/db-1"}}})
		west.tunnels.SetUp("east", true)
		west.wantImport("demo", "db", want{typ: mcsv1beta1.Headless, ports: "pg/TCP/5432", clusters: "east",
			endpoints: map[string][]string{"east": {"10.1.0.20/db-0", "10.1.0.21/db-1"}}})
	})

	t.Run("a cluster whose gateways are all stale is withdrawn", func(t *testing.T) {
		gw := api.Gateway{ClusterID: "east", Hostname: "east-gw", PrivateIP: "192.0.2.10", Port: 51820,
			PublicKey: "9kq3sNSNyH9qLAJd7lpUzsDnp8lYjQ/yuxrSpsVq1lo=", Active: true, Epoch: 1}
		if err := east.broker.RegisterGateway(ctx, gw); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = east.broker.DeleteGateway(context.Background(), "east", "east-gw") })
		// No heartbeat follows: the broker marks it stale after StaleAfter.
		west.wantImport("demo", "db", want{typ: mcsv1beta1.Headless, ports: "pg/TCP/5432", clusters: "east",
			endpoints: map[string][]string{"east": {"10.1.0.20/db-0!", "10.1.0.21/db-1!"}}, withheld: map[string]string{"east": "GatewaysStale"}})
		east.wantImport("demo", "db", want{typ: mcsv1beta1.Headless, ports: "pg/TCP/5432", clusters: "east",
			endpoints: map[string][]string{"east": {"10.1.0.20/db-0", "10.1.0.21/db-1"}}})
		if err := east.broker.Heartbeat(ctx, "east", "east-gw", nil); err != nil {
			t.Fatal(err)
		}
		// It keeps heartbeating while west is checked: one heartbeat is
		// fresh for StaleAfter only, shorter than a slow reconcile may take.
		beating := make(chan struct{})
		beat := make(chan struct{})
		go func() {
			defer close(beat)
			for {
				select {
				case <-beating:
					return
				case <-time.After(300 * time.Millisecond):
					_ = east.broker.Heartbeat(ctx, "east", "east-gw", nil)
				}
			}
		}()
		west.wantImport("demo", "db", want{typ: mcsv1beta1.Headless, ports: "pg/TCP/5432", clusters: "east",
			endpoints: map[string][]string{"east": {"10.1.0.20/db-0", "10.1.0.21/db-1"}}})
		close(beating)
		<-beat
		if err := east.broker.DeleteGateway(ctx, "east", "east-gw"); err != nil {
			t.Fatal(err)
		}
	})

	// trafficDistribution PreferClose: each cluster that exports the
	// service uses its own endpoints while any is ready, the others' only
	// when none is; the others' are withheld (not ready, labelled LocalFirst).
	t.Run("same cluster first", func(t *testing.T) {
		ports := []corev1.ServicePort{tcp("http", 80, 8080)}
		for _, c := range []*cluster{east, west} {
			s := c.service("demo", "near", false, ports, pod{ip: c.podIP(50)})
			s.Spec.TrafficDistribution = ptr(corev1.ServiceTrafficDistributionPreferClose)
			if _, err := c.kube.CoreV1().Services("demo").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			c.export("demo", "near")
		}
		local := func(c *cluster, other *cluster) want {
			return want{typ: mcsv1beta1.ClusterSetIP, ports: "http/TCP/80", clusters: "east,west",
				endpoints: map[string][]string{c.id: {c.podIP(50)}, other.id: {other.podIP(50) + "!"}},
				withheld:  map[string]string{other.id: "LocalFirst"}}
		}
		east.wantImport("demo", "near", local(east, west))
		west.wantImport("demo", "near", local(west, east))
		east.wantConditions("demo", "near", validExported)

		// East has no ready endpoint: east spills to west; west stays local.
		start := time.Now()
		east.endpoints("demo", "near", ports, pod{ip: east.podIP(50), notReady: true})
		east.wantImport("demo", "near", want{typ: mcsv1beta1.ClusterSetIP, ports: "http/TCP/80", clusters: "east,west",
			endpoints: map[string][]string{"east": {east.podIP(50) + "!"}, "west": {west.podIP(50)}}})
		t.Logf("local endpoint not ready → the other cluster's endpoints used after %s", time.Since(start).Round(time.Millisecond))
		west.wantImport("demo", "near", want{typ: mcsv1beta1.ClusterSetIP, ports: "http/TCP/80", clusters: "east,west",
			endpoints: map[string][]string{"west": {west.podIP(50)}, "east": {east.podIP(50) + "!"}}, withheld: map[string]string{"east": "LocalFirst"}})

		east.endpoints("demo", "near", ports, pod{ip: east.podIP(50)})
		east.wantImport("demo", "near", local(east, west))
		for _, c := range []*cluster{east, west} {
			c.unexport("demo", "near")
		}
		for _, c := range []*cluster{east, west} {
			testkit.Eventually(t, 20*time.Second, func() error { return c.gone("demo", "near") })
		}
	})

	t.Run("controller restarted mid-way", func(t *testing.T) {
		west.stop()
		before, err := west.imported("demo", "web")
		if err != nil {
			t.Fatal(err)
		}
		// While west's controller is down: east gains a pod for web and
		// stops exporting db; a stale object of ours is left in west.
		east.endpoints("demo", "web", webPorts, pod{ip: "10.1.0.10"}, pod{ip: "10.1.0.11", notReady: true}, pod{ip: "10.1.0.12"})
		east.unexport("demo", "db")
		// West's ServiceImport of db deleted by hand meanwhile: its derived
		// Service (no owner) must still go once west's controller is back.
		if err := west.mcs.MulticlusterV1beta1().ServiceImports("demo").Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		east.wantImport("demo", "web", want{typ: mcsv1beta1.ClusterSetIP, ports: "http/TCP/80", clusters: "east,west",
			endpoints: map[string][]string{"east": {"10.1.0.10", "10.1.0.11!", "10.1.0.12"}, "west": {"10.2.0.10/w0"}}})
		testkit.Eventually(t, 20*time.Second, func() error { return east.gone("demo", "db") })
		west.run()
		after := west.wantImport("demo", "web", want{typ: mcsv1beta1.ClusterSetIP, ports: "http/TCP/80", clusters: "east,west",
			endpoints: map[string][]string{"east": {"10.1.0.10", "10.1.0.11!", "10.1.0.12"}, "west": {"10.2.0.10/w0"}}})
		testkit.Eventually(t, 20*time.Second, func() error { return west.gone("demo", "db") })
		if after.SI.UID != before.SI.UID || after.Derived.UID != before.Derived.UID || !slices.Equal(after.SI.Spec.IPs, before.SI.Spec.IPs) {
			t.Fatal("the restarted controller replaced the ServiceImport or derived Service instead of keeping them")
		}
		if len(after.Slices) != 2 {
			t.Fatalf("%d slices after restart, want one per cluster", len(after.Slices))
		}
		west.wantConditions("demo", "web", conflicted("TypeConflict"))
	})

	t.Run("unexport withdraws the cluster's endpoints", func(t *testing.T) {
		east.unexport("demo", "web")
		for _, c := range []*cluster{east, west} {
			c.wantImport("demo", "web", want{typ: mcsv1beta1.Headless, ports: "http/TCP/80", clusters: "west",
				endpoints: map[string][]string{"west": {"10.2.0.10/w0"}}})
		}
		west.wantConditions("demo", "web", validExported) // the conflict went with east's export
		west.unexport("demo", "web")
		for _, c := range []*cluster{east, west} {
			testkit.Eventually(t, 20*time.Second, func() error { return c.gone("demo", "web") })
		}
	})

	t.Run("service deletion withdraws", func(t *testing.T) {
		if err := east.kube.CoreV1().Services("late").Delete(ctx, "api", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		east.wantConditions("late", "api", noService)
		for _, c := range []*cluster{east, west} {
			testkit.Eventually(t, 20*time.Second, func() error { return c.gone("late", "api") })
		}
		east.service("late", "api", false, []corev1.ServicePort{tcp("grpc", 9000, 9000)}, pod{ip: "10.1.0.31"})
		east.wantConditions("late", "api", validExported)
		west.wantImport("late", "api", want{typ: mcsv1beta1.ClusterSetIP, ports: "grpc/TCP/9000", clusters: "east",
			endpoints: map[string][]string{"east": {"10.1.0.31"}}})
	})

	t.Run("external name is invalid", func(t *testing.T) {
		_, err := east.kube.CoreV1().Services("demo").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "ext"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		east.export("demo", "ext")
		east.wantConditions("demo", "ext", "Ready=False/Failed Valid=False/InvalidServiceType")
		if err := west.gone("demo", "ext"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("an IP family the cluster does not serve", func(t *testing.T) {
		jr, err := b.Client("").Join(ctx, b.JoinToken("south"), api.JoinRequest{ClusterID: "south",
			PodCIDRs: []string{"10.3.0.0/16", "fd00:3::/64"}, ServiceCIDRs: []string{"10.103.0.0/16"}})
		if err != nil {
			t.Fatal(err)
		}
		south := b.Client(jr.Credential)
		err = south.PublishExport(ctx, api.Export{ClusterID: "south", Namespace: "demo", Name: "v6", Type: api.TypeClusterSetIP,
			Ports: []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}}, IPFamilies: []string{"IPv6"}, CreatedAt: time.Now().UTC(),
			Endpoints: []api.Endpoint{{Addresses: []string{"fd00:3::1"}, Ready: true, Ports: []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 8080}}}}})
		if err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 20*time.Second, func() error {
			si, err := west.mcs.MulticlusterV1beta1().ServiceImports("demo").Get(ctx, "v6", metav1.GetOptions{})
			if err != nil {
				return err
			}
			c := apimeta.FindStatusCondition(si.Status.Conditions, "Ready")
			if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "IPFamilyNotSupported" || len(si.Spec.IPs) != 0 {
				return fmt.Errorf("ServiceImport ips %v Ready %v; want IPFamilyNotSupported (the test apiserver serves IPv4 only)", si.Spec.IPs, c)
			}
			return nil
		})
		if err := south.WithdrawExport(ctx, "south", "demo", "v6"); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 20*time.Second, func() error { return west.gone("demo", "v6") })
	})

	t.Run("a cluster leaving takes its exports", func(t *testing.T) {
		if err := b.Admin().RemoveCluster(ctx, "east"); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 20*time.Second, func() error { return west.gone("late", "api") })
	})
}

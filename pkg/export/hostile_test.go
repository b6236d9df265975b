package export_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/export"
)

// slipThrough is a broker whose watch also carries records the real broker
// may refuse: what an importer meets when a hostile member's export gets
// past the broker (an older broker, a validation gap).
type slipThrough struct {
	export.Broker
	extra []api.Export
}

func (b slipThrough) Follow(ctx context.Context, onChange func(api.Snapshot)) error {
	return b.Broker.Follow(ctx, func(s api.Snapshot) {
		s.Exports = append(s.Exports, b.extra...)
		onChange(s)
	})
}

// TestImporterAppliesWhatIsValid is the attack of one exporter on the
// others' service: south exports web beside east with an endpoint port
// name and an endpoint address the apiserver refuses in an EndpointSlice.
// West's importer must still give web its ClusterSetIP and conditions and
// import east's endpoints (and south's valid ones), saying what it dropped.
func TestImporterAppliesWhatIsValid(t *testing.T) {
	b := brokertest.Start(t, brokertest.Options{})
	west := startCluster(t, b, "west", "10.2.0.0/16", "10.102.0.0/16")
	east, _ := b.Join("east", "10.1.0.0/16", "10.101.0.0/16")
	b.Join("south", "10.3.0.0/16", "10.103.0.0/16")
	ctx := context.Background()
	http := []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 8080}}
	web := func(cluster string, eps ...api.Endpoint) api.Export {
		return api.Export{ClusterID: cluster, Namespace: "demo", Name: "web", Type: api.TypeClusterSetIP,
			Ports: []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}}, IPFamilies: []string{"IPv4"},
			SessionAffinity: "None", CreatedAt: time.Now().UTC(), Endpoints: eps}
	}
	if err := east.PublishExport(ctx, web("east", api.Endpoint{Addresses: []string{"10.1.0.10"}, Ready: true, Ports: http})); err != nil {
		t.Fatal(err)
	}
	west.via = slipThrough{Broker: west.broker, extra: []api.Export{web("south",
		api.Endpoint{Addresses: []string{"10.3.0.5"}, Ready: true, Ports: []api.ServicePort{{Name: "BAD_NAME", Protocol: "TCP", Port: 8080}}},
		api.Endpoint{Addresses: []string{"127.0.0.1"}, Ready: true, Ports: http},
	)}}
	west.namespace("demo")
	west.run()

	var last string
	testkit.Eventually(t, 30*time.Second, func() error {
		im, err := west.imported("demo", "web")
		if err != nil {
			return err
		}
		si := im.SI
		if len(si.Spec.IPs) == 0 || len(im.Derived.Spec.ClusterIPs) == 0 || si.Spec.IPs[0] != im.Derived.Spec.ClusterIPs[0] {
			return fmt.Errorf("ServiceImport ips %v (derived Service %v): one exporter's bad port must not keep the service from resolving", si.Spec.IPs, im.Derived.Spec.ClusterIPs)
		}
		if got := fmt.Sprint(im.Endpoints); got != "map[east:[10.1.0.10] south:[10.3.0.5]]" {
			return fmt.Errorf("endpoints %s, want east's and south's valid one", got)
		}
		c := apimeta.FindStatusCondition(si.Status.Conditions, "Ready")
		if c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("Ready condition %v", c)
		}
		last = c.Message
		for _, w := range []string{"south", "BAD_NAME", "127.0.0.1"} {
			if !strings.Contains(c.Message, w) {
				return fmt.Errorf("Ready message %q does not say what was dropped (%q)", c.Message, w)
			}
		}
		return nil
	})
	t.Logf("Ready message: %s", last)
}

// TestImporterLeavesForeignServiceImport: a ServiceImport that another
// party created (not managed-by our controller) is not taken over when the
// clusterset exports a service of the same name: its labels and spec stay,
// no derived Service or slices are made for it, and a condition of ours on
// it says why; once the service is no longer exported, the condition goes.
func TestImporterLeavesForeignServiceImport(t *testing.T) {
	b := brokertest.Start(t, brokertest.Options{})
	west := startCluster(t, b, "west", "10.2.0.0/16", "10.102.0.0/16")
	east, _ := b.Join("east", "10.1.0.0/16", "10.101.0.0/16")
	ctx := context.Background()
	west.namespace("demo")
	mine := &mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "shared",
		Labels: map[string]string{"app.kubernetes.io/managed-by": "someone-else"}},
		Spec: mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.ClusterSetIP, IPs: []string{"10.0.0.99"},
			Ports: []mcsv1beta1.ServicePort{{Name: "grpc", Protocol: "TCP", Port: 9000}}}}
	mine, err := west.mcs.MulticlusterV1beta1().ServiceImports("demo").Create(ctx, mine, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	west.run()
	exp := api.Export{ClusterID: "east", Namespace: "demo", Name: "shared", Type: api.TypeClusterSetIP,
		Ports: []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}}, IPFamilies: []string{"IPv4"}, SessionAffinity: "None",
		CreatedAt: time.Now().UTC(), Endpoints: []api.Endpoint{{Addresses: []string{"10.1.0.10"}, Ready: true,
			Ports: []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 8080}}}}}
	if err := east.PublishExport(ctx, exp); err != nil {
		t.Fatal(err)
	}
	const cond = "tunnelmesh.io/Managed"
	testkit.Eventually(t, 20*time.Second, func() error {
		si, err := west.mcs.MulticlusterV1beta1().ServiceImports("demo").Get(ctx, "shared", metav1.GetOptions{})
		if err != nil {
			return err
		}
		c := apimeta.FindStatusCondition(si.Status.Conditions, cond)
		if c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "someone-else") {
			return fmt.Errorf("condition %s = %v, want False naming the other manager", cond, c)
		}
		return nil
	})
	// Give a controller that would take over every chance to have done it.
	time.Sleep(2 * time.Second)
	si, err := west.mcs.MulticlusterV1beta1().ServiceImports("demo").Get(ctx, "shared", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if si.Labels["app.kubernetes.io/managed-by"] != "someone-else" || len(si.Spec.Ports) != 1 || si.Spec.Ports[0].Name != "grpc" ||
		len(si.Spec.IPs) != 1 || si.Spec.IPs[0] != "10.0.0.99" || si.Generation != mine.Generation {
		t.Fatalf("the foreign ServiceImport was changed: labels %v spec %+v (generation %d → %d)", si.Labels, si.Spec, mine.Generation, si.Generation)
	}
	if _, err := west.kube.CoreV1().Services("demo").Get(ctx, export.DerivedName("shared"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a derived Service was made for a ServiceImport we do not manage (%v)", err)
	}
	sl, err := west.kube.DiscoveryV1().EndpointSlices("demo").List(ctx, metav1.ListOptions{LabelSelector: labels.Set{mcsv1beta1.LabelServiceName: "shared"}.String()})
	if err != nil || len(sl.Items) != 0 {
		t.Fatalf("slices were made for a ServiceImport we do not manage: %d (%v)", len(sl.Items), err)
	}
	if err := east.WithdrawExport(ctx, "east", "demo", "shared"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, func() error {
		si, err := west.mcs.MulticlusterV1beta1().ServiceImports("demo").Get(ctx, "shared", metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("the foreign ServiceImport must stay: %w", err)
		}
		if c := apimeta.FindStatusCondition(si.Status.Conditions, cond); c != nil {
			return fmt.Errorf("condition %s still there after the export went", cond)
		}
		return nil
	})
}

package status

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/tunnelmesh/tunnelmesh/deploy"
	"github.com/tunnelmesh/tunnelmesh/internal/kubeapi"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/k8stest"
)

func TestRemotes(t *testing.T) {
	hs := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	clusters := []api.Cluster{
		// west is translated: route agents route its mapped CIDR.
		{ID: "west", PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.98.0.0/16"},
			Translations: []api.Translation{{Real: "10.1.0.0/16", Mapped: "240.1.0.0/16"}}},
		{ID: "east", PodCIDRs: []string{"10.1.0.0/16"}, Translations: []api.Translation{{Real: "10.1.0.0/16", Mapped: "240.0.0.0/16"}}},
		{ID: "north", PodCIDRs: []string{"10.3.0.0/16"}},
	}
	gws := []api.Gateway{
		{ClusterID: "west", Hostname: "w-old", Active: true, Epoch: 3, PrivateIP: "192.168.0.9", Port: 51820},
		{ClusterID: "west", Hostname: "w-new", Active: true, Epoch: 4, PublicIP: "203.0.113.4", PrivateIP: "192.168.0.10", Port: 51820},
		{ClusterID: "west", Hostname: "w-standby", Epoch: 5},
		{ClusterID: "north", Hostname: "n1", Active: true, Epoch: 1, PrivateIP: "192.168.1.5", Port: 51821},
	}
	health := []api.PeerHealth{{Cluster: "west", Status: api.StatusConnected, RTTMillis: 1.5, LastHandshake: hs, RxBytes: 10, TxBytes: 20}}
	got := Remotes("east", clusters, gws, health)
	hst := metav1.NewTime(hs)
	want := []RemoteCluster{
		{Cluster: "north", Status: api.StatusConnecting, ActiveGateway: "n1", Epoch: 1, Endpoint: "192.168.1.5:51821", PodCIDRs: []string{"10.3.0.0/16"}},
		{Cluster: "west", Status: api.StatusConnected, ActiveGateway: "w-new", Epoch: 4, Endpoint: "203.0.113.4:51820", RTTMillis: 1.5,
			LastHandshake: &hst, RxBytes: 10, TxBytes: 20, PodCIDRs: []string{"240.1.0.0/16"}, ServiceCIDRs: []string{"10.98.0.0/16"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Remotes:\n got %+v\nwant %+v", got, want)
	}
	if r := Remotes("east", []api.Cluster{{ID: "south"}}, nil, nil); r[0].Reason != "no active gateway registered" {
		t.Fatalf("cluster with no gateway: %+v", r)
	}
}

// Install applies the CRD from deploy/gateway as a user would.
func install(t *testing.T) (*kubeapi.Env, dynamic.Interface) {
	env := kubeapi.Start(t)
	objs, err := k8stest.Files(deploy.FS, "namespace.yaml", "gateway/crd-meshgateways.yaml")
	if err != nil {
		t.Fatal(err)
	}
	k8stest.Apply(t, env.Config, objs)
	return env, dynamic.NewForConfigOrDie(env.Config)
}

func TestWriteReadBackAndPrinterColumns(t *testing.T) {
	env, dyn := install(t)
	ctx := t.Context()
	w := Writer{Client: dyn, ClusterID: "east"}
	hs := metav1.NewTime(time.Now().UTC().Truncate(time.Second))
	st := GatewayStatus{
		ActiveNode: "gw-1", Epoch: 4, PublicKey: "k", Endpoint: "192.168.0.5:51820", TunnelIP: "100.64.0.1",
		PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.96.0.0/16"}, BrokerReachable: true,
		Remotes: []RemoteCluster{
			{Cluster: "west", Status: api.StatusConnected, RTTMillis: 0.7, LastHandshake: &hs, RxBytes: 1 << 40, TxBytes: 5, PodCIDRs: []string{"10.2.0.0/16"}},
			{Cluster: "north", Status: api.StatusError, Reason: "no handshake for 2m10s"},
		},
		Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Active", Message: "gateway active", LastTransitionTime: hs}},
	}
	if err := w.Write(ctx, st); err != nil {
		t.Fatal(err)
	}
	got, err := Get(ctx, dyn, "", "east")
	if err != nil {
		t.Fatal(err)
	}
	s := got.Status
	if s.ClusterID != "east" || s.ActiveNode != "gw-1" || s.Epoch != 4 || s.Connections != "1/2" || s.Connected != 1 || s.Total != 2 || s.UpdatedAt == nil {
		t.Fatalf("read back %+v", s)
	}
	if len(s.Remotes) != 2 || s.Remotes[0].Cluster != "north" || s.Remotes[1].RxBytes != 1<<40 || !s.Remotes[1].LastHandshake.Equal(&hs) || s.Remotes[1].PodCIDRs[0] != "10.2.0.0/16" {
		t.Fatalf("remotes read back %+v", s.Remotes)
	}

	// What `kubectl get meshgateways` prints.
	raw, err := env.Client(t).Discovery().RESTClient().Get().AbsPath("/apis/tunnelmesh.io/v1alpha1/namespaces/tunnelmesh-system/meshgateways").
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var table metav1.Table
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatal(err)
	}
	var cols []string
	for _, c := range table.ColumnDefinitions {
		cols = append(cols, c.Name)
	}
	if want := []string{"Name", "Active", "Epoch", "Connected", "Updated", "Age"}; !reflect.DeepEqual(cols, want) {
		t.Fatalf("columns %v; want %v", cols, want)
	}
	if len(table.Rows) != 1 {
		t.Fatalf("rows %v", table.Rows)
	}
	cells := table.Rows[0].Cells
	if cells[0] != "east" || cells[1] != "gw-1" || cells[2] != float64(4) || cells[3] != "1/2" {
		t.Fatalf("row %v; want east gw-1 4 1/2", cells)
	}

	// A newer epoch takes over; the old active can no longer write.
	st2 := st
	st2.ActiveNode, st2.Epoch = "gw-2", 5
	if err := w.Write(ctx, st2); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, st); !errors.Is(err, ErrStale) {
		t.Fatalf("stale write: %v; want ErrStale", err)
	}
	if got, _ := Get(ctx, dyn, "", "east"); got.Status.ActiveNode != "gw-2" {
		t.Fatalf("stale write changed the status: %+v", got.Status)
	}
}

func TestCRDRejectsBadStatus(t *testing.T) {
	_, dyn := install(t)
	w := Writer{Client: dyn, ClusterID: "east"}
	err := w.Write(t.Context(), GatewayStatus{Epoch: 1, Remotes: []RemoteCluster{{Cluster: "west", Status: "up"}}})
	if err == nil {
		t.Fatal("status \"up\" accepted; the CRD schema should allow connecting|connected|error")
	}
}

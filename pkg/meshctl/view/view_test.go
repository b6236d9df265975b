package view

import (
	"bytes"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/export"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/internal/golden"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/output"
)

var now = time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC)

// fixture: east (active + standby), west (active), north (joined, no
// gateway yet); east sees west connected and has not reported north.
func fixture() *Data {
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	d := &Data{
		Now: now,
		Snapshot: api.Snapshot{
			Revision: 42,
			Clusters: []api.Cluster{
				{ID: "west", PodCIDRs: []string{"10.2.0.0/16"}, ServiceCIDRs: []string{"10.96.2.0/24"}, TunnelIP: "100.127.0.2", JoinedAt: ago(3 * time.Hour),
					Translations: []api.Translation{{Real: "10.2.0.0/16", Mapped: "240.0.0.0/16"}}}, // its service CIDR is not translated
				{ID: "east", PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.96.1.0/24"}, TunnelIP: "100.127.0.1", JoinedAt: ago(50 * time.Hour)},
				{ID: "north", PodCIDRs: []string{"10.3.0.0/16", "fd00:3::/56"}, ServiceCIDRs: []string{"10.96.3.0/24"}, TunnelIP: "100.127.0.3", JoinedAt: ago(90 * time.Second)},
			},
			Gateways: []api.Gateway{
				{ClusterID: "east", Hostname: "east-worker2", PrivateIP: "172.18.0.4", Port: 51820, Epoch: 3},
				{ClusterID: "east", Hostname: "east-worker", PrivateIP: "172.18.0.3", PublicIP: "198.51.100.7", Port: 51820, Active: true, Epoch: 3},
				{ClusterID: "west", Hostname: "west-worker", PrivateIP: "172.18.0.6", Port: 51820, Active: true, Epoch: 1, Stale: true},
			},
			Exports: []api.Export{
				{ClusterID: "west", Namespace: "demo", Name: "web", Type: api.TypeClusterSetIP, Ports: []api.ServicePort{{Protocol: "TCP", Port: 80}}, IPs: []string{"10.96.2.10"}, CreatedAt: ago(20 * time.Minute)},
				{ClusterID: "east", Namespace: "demo", Name: "web", Type: api.TypeClusterSetIP, Ports: []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}, {Protocol: "UDP", Port: 53}}, IPs: []string{"10.96.1.10"}, CreatedAt: ago(30 * time.Minute)},
				{ClusterID: "east", Namespace: "db", Name: "pg", Type: api.TypeHeadless, Endpoints: []api.Endpoint{{Addresses: []string{"10.1.0.5"}, Ready: true}, {Addresses: []string{"10.1.1.5"}}}, CreatedAt: ago(5 * time.Second)},
			},
		},
		ServiceImports: []mcsv1beta1.ServiceImport{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web", CreationTimestamp: metav1.NewTime(ago(25 * time.Minute))},
				Spec: mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.ClusterSetIP, IPs: []string{"10.96.1.200"},
					Ports: []mcsv1beta1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}, {Protocol: corev1.ProtocolUDP, Port: 53}}},
				Status: mcsv1beta1.ServiceImportStatus{Clusters: []mcsv1beta1.ClusterStatus{{Cluster: "west"}, {Cluster: "east"}}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: "pg", CreationTimestamp: metav1.NewTime(ago(4 * time.Second))},
				Spec:   mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.Headless, Ports: []mcsv1beta1.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 5432}}},
				Status: mcsv1beta1.ServiceImportStatus{Clusters: []mcsv1beta1.ClusterStatus{{Cluster: "east"}}}},
		},
		WithheldSlices: []discoveryv1.EndpointSlice{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "derived-1-west-a", Labels: map[string]string{
				mcsv1beta1.LabelServiceName: "web", mcsv1beta1.LabelSourceCluster: "west", export.LabelWithheld: export.WithheldTunnelDown},
				Annotations: map[string]string{export.AnnotationWithheld: "this cluster's active gateway reports the tunnel to west down"}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "derived-1-west-b", Labels: map[string]string{
				mcsv1beta1.LabelServiceName: "web", mcsv1beta1.LabelSourceCluster: "west", export.LabelWithheld: export.WithheldTunnelDown}}},
		},
		Status: []api.GatewayStatus{
			{ClusterID: "east", Hostname: "east-worker", Epoch: 3, LastHeartbeat: ago(2 * time.Second), Health: []api.PeerHealth{
				{Cluster: "west", Status: api.StatusConnected, RTTMillis: 1.234, LastHandshake: ago(12 * time.Second), RxBytes: 1572864, TxBytes: 307200},
			}},
			{ClusterID: "east", Hostname: "east-worker2", LastHeartbeat: ago(3 * time.Second)},
			{ClusterID: "west", Hostname: "west-worker", Epoch: 1, LastHeartbeat: ago(45 * time.Second), Health: []api.PeerHealth{
				{Cluster: "east", Status: api.StatusConnected, RTTMillis: 1.4, LastHandshake: ago(100 * time.Second), RxBytes: 307000, TxBytes: 1572000},
				{Cluster: "north", Status: api.StatusError, Reason: "no handshake for 2m10s", RxBytes: 0, TxBytes: 148},
			}},
		},
	}
	// Tightened after north joined with an IPv6 range: north is flagged.
	pol := api.Policy{AllowedCIDRs: []string{"10.0.0.0/8"}, MinPrefixLengthIPv4: 12, MinPrefixLengthIPv6: 48}
	d.Policy = &api.PolicyStatus{Policy: pol, Outside: pol.Outside(d.Snapshot.Clusters)}
	return d
}

func TestTables(t *testing.T) {
	d := fixture()
	type view func() (any, output.Grid)
	views := map[string]view{
		"clusters":    func() (any, output.Grid) { o, g := d.Clusters(); return o, g },
		"gateways":    func() (any, output.Grid) { o, g := d.Gateways(); return o, g },
		"exports":     func() (any, output.Grid) { o, g := d.Exports(); return o, g },
		"connections": func() (any, output.Grid) { o, g := d.Connections(); return o, g },
		"imports":     func() (any, output.Grid) { o, g := d.Imports(); return o, g },
	}
	for name, v := range views {
		for _, f := range output.Formats {
			t.Run(name+"."+string(f), func(t *testing.T) {
				obj, grid := v()
				var b bytes.Buffer
				if err := output.Print(&b, f, obj, grid); err != nil {
					t.Fatal(err)
				}
				golden.Assert(t, name+"."+string(f), b.Bytes())
			})
		}
	}
}

func TestGraph(t *testing.T) {
	golden.Assert(t, "graph.dot", []byte(fixture().Graph()))
	empty := &Data{Now: now}
	golden.Assert(t, "graph-empty.dot", []byte(empty.Graph()))
}

// Read with west's credential, the broker gives west's status only: east's
// gateways' links are said to be visible from east only, not "not reported".
func TestConnectionsWithClusterCredential(t *testing.T) {
	d := fixture()
	d.Viewer = "west"
	var west []api.GatewayStatus
	for _, s := range d.Status {
		if s.ClusterID == "west" {
			west = append(west, s)
		}
	}
	d.Status = west
	conns, _ := d.Connections()
	var other, own int
	for _, c := range conns {
		switch {
		case c.Cluster == "east":
			other++
			if c.Status != "unknown" || c.Reason != ReasonOtherCluster {
				t.Errorf("east's link seen from west: %+v", c)
			}
		case c.Cluster == "west":
			own++
			if c.Reason == ReasonOtherCluster {
				t.Errorf("west's own link: %+v", c)
			}
		}
	}
	if other == 0 || own != 2 {
		t.Fatalf("want east's remotes and west's 2 links: %+v", conns)
	}
	// Read with the admin credential, an unreported remote is "not reported yet".
	d = fixture()
	conns, _ = d.Connections()
	for _, c := range conns {
		if c.Cluster == "east" && c.Remote == "north" && c.Reason != ReasonNotReported {
			t.Errorf("east→north with the admin credential: %+v", c)
		}
	}
}

func TestAllIncludesImportsOnlyWithACluster(t *testing.T) {
	d := fixture()
	a, secs := d.All()
	if a.Imports != nil || len(secs) != 4 {
		t.Fatalf("no cluster read: imports %v, %d sections", a.Imports, len(secs))
	}
	d.HasCluster = true
	a, secs = d.All()
	if len(a.Imports) != 2 || len(secs) != 5 || secs[4].Title != "Imports (this cluster)" {
		t.Fatalf("cluster read: imports %v, sections %v", a.Imports, secs)
	}
}

func TestFormats(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{Bytes(0), "0B"}, {Bytes(1023), "1023B"}, {Bytes(1536), "1.5KiB"}, {Bytes(5 << 30), "5.0GiB"},
		{RTT(0), ""}, {RTT(0.5), "0.50ms"}, {RTT(12.6), "13ms"},
		{Age(now, time.Time{}), ""}, {Age(now, now.Add(-90*time.Second)), "90s"}, {Age(now, now.Add(-3*time.Hour)), "3h"}, {Age(now, now.Add(-72*time.Hour)), "3d"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

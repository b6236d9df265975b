package cmd

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcscrd "sigs.k8s.io/mcs-api/config/crd"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/export"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/access"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/brokerdeploy"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/internal/testenv"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/view"
)

// clusterset starts a real broker with two members, their active gateways
// reporting health, and one export.
func clusterset(t *testing.T) (*brokertest.Broker, string) {
	tb := brokertest.Start(t, brokertest.Options{})
	ctx := context.Background()
	east, _ := tb.Join("east", "10.1.0.0/16", "10.96.1.0/24")
	west, _ := tb.Join("west", "10.2.0.0/16", "10.96.2.0/24")
	for _, g := range []struct {
		c interface {
			RegisterGateway(context.Context, api.Gateway) error
		}
		gw   api.Gateway
		peer string
	}{
		{east, api.Gateway{ClusterID: "east", Hostname: "east-gw", PrivateIP: "172.18.0.3", Port: 51820, PublicKey: "1jM0FE1G0F5U+0v0SLIFqkO+GbRvXG8ddD1PSx34SXo=", Active: true}, "west"},
		{west, api.Gateway{ClusterID: "west", Hostname: "west-gw", PrivateIP: "172.18.0.4", Port: 51820, PublicKey: "2jM0FE1G0F5U+0v0SLIFqkO+GbRvXG8ddD1PSx34SXo=", Active: true}, "east"},
	} {
		if err := g.c.RegisterGateway(ctx, g.gw); err != nil {
			t.Fatalf("register %s: %v", g.gw.Hostname, err)
		}
	}
	if err := east.Heartbeat(ctx, "east", "east-gw", []api.PeerHealth{{Cluster: "west", Status: api.StatusConnected, RTTMillis: 0.8, LastHandshake: time.Now(), RxBytes: 2048, TxBytes: 4096}}); err != nil {
		t.Fatal(err)
	}
	if err := east.PublishExport(ctx, api.Export{ClusterID: "east", Namespace: "demo", Name: "web", Type: api.TypeClusterSetIP,
		Ports: []api.ServicePort{{Protocol: "TCP", Port: 80}}, IPs: []string{"10.96.1.10"}, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	info := filepath.Join(dir, "info.json")
	if err := brokerdeploy.WriteInfo(info, api.BrokerInfo{URL: tb.URL, CA: string(tb.CA)}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "admin"), []byte(tb.AdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return tb, dir
}

func TestShowFromFlags(t *testing.T) {
	_, dir := clusterset(t)
	flags := []string{"--broker-info", filepath.Join(dir, "info.json"), "--credential-file", filepath.Join(dir, "admin")}

	out, stderr, code := run(t, append([]string{"show", "clusters"}, flags...)...)
	if code != 0 || !strings.HasPrefix(out, "CLUSTER ") || !strings.Contains(out, "east") || !strings.Contains(out, "10.2.0.0/16") {
		t.Fatalf("show clusters: exit %d\n%s%s", code, out, stderr)
	}
	out, _, code = run(t, append([]string{"show", "connections", "-o", "json"}, flags...)...)
	var conns []view.Connection
	if code != 0 || json.Unmarshal([]byte(out), &conns) != nil {
		t.Fatalf("show connections -o json: exit %d\n%s", code, out)
	}
	found := false
	for _, c := range conns {
		if c.Cluster == "east" && c.Remote == "west" && c.Status == api.StatusConnected && c.RTTMillis == 0.8 && c.TxBytes == 4096 {
			found = true
		}
	}
	if !found {
		t.Errorf("east→west connection missing: %+v", conns)
	}
	out, _, code = run(t, append([]string{"show", "all"}, flags...)...)
	for _, want := range []string{"Clusters:", "Gateways:", "Connections:", "Exports:", "east-gw", "web"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("show all lacks %q (exit %d):\n%s", want, code, out)
		}
	}
	out, _, code = run(t, append([]string{"show", "graph"}, flags...)...)
	if code != 0 || !strings.Contains(out, `"east/east-gw" -> "west/west-gw" [label="connected\n0.80ms"`) {
		t.Errorf("show graph (exit %d):\n%s", code, out)
	}
	// A wrong credential is refused with a clear message.
	bad := filepath.Join(dir, "bad")
	_ = os.WriteFile(bad, []byte("tm-admin.nope\n"), 0o600)
	_, stderr, code = run(t, "show", "clusters", "--broker-info", filepath.Join(dir, "info.json"), "--credential-file", bad)
	if code != cli.ExitRefused || !strings.Contains(stderr, "refused the credential") {
		t.Errorf("bad credential: exit %d\n%s", code, stderr)
	}
}

// show reads the member cluster's Secret when given no broker flags.
func TestShowFromClusterSecret(t *testing.T) {
	tb, _ := clusterset(t)
	c := testenv.Start(t, "kind-east")
	_, stderr, code := run(t, "show", "clusters", "--kubeconfig", c.Kubeconfig)
	if code != cli.ExitRefused || !strings.Contains(stderr, "has not joined a clusterset") {
		t.Fatalf("not a member: exit %d\n%s", code, stderr)
	}
	_, resp := tb.Join("kind-east", "10.5.0.0/16", "10.96.5.0/24")
	ctx := t.Context()
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: defaults.Namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	m := access.Member{URL: tb.URL, CA: tb.CA, Credential: resp.Credential, ClusterID: "kind-east"}
	if _, err := c.Client.CoreV1().Secrets(defaults.Namespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: kube.BrokerSecret}, Data: m.Data()}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := run(t, "show", "gateways", "--kubeconfig", c.Kubeconfig, "-o", "yaml")
	if code != 0 || !strings.Contains(out, "hostname: east-gw") {
		t.Fatalf("show gateways via the Secret: exit %d\n%s%s", code, out, stderr)
	}
	// kind-east's credential reads kind-east's status only: the other
	// clusters' links are said to be visible from there, not "not reported".
	out, stderr, code = run(t, "show", "connections", "--kubeconfig", c.Kubeconfig, "-o", "json")
	var conns []view.Connection
	if code != 0 || json.Unmarshal([]byte(out), &conns) != nil {
		t.Fatalf("show connections via the Secret: exit %d\n%s%s", code, out, stderr)
	}
	for _, cn := range conns {
		if cn.Cluster != "kind-east" && cn.Reason != view.ReasonOtherCluster {
			t.Errorf("%s→%s read with kind-east's credential: %+v", cn.Cluster, cn.Remote, cn)
		}
	}
	if len(conns) == 0 {
		t.Error("no connections listed")
	}

	// Before the MCS CRDs are installed, show imports says the cluster is no member.
	_, stderr, code = run(t, "show", "imports", "--kubeconfig", c.Kubeconfig)
	if code != cli.ExitRefused || !strings.Contains(stderr, "no ServiceImport API") {
		t.Fatalf("show imports without the CRD: exit %d\n%s", code, stderr)
	}
	crd, err := kube.Decode(mcscrd.ServiceImportCRD, "mcs-api")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Kube.Apply(ctx, crd); err != nil {
		t.Fatal(err)
	}
	mc := mcsclient.NewForConfigOrDie(c.Kube.Config)
	si := &mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.ClusterSetIP, IPs: []string{"10.96.5.77"},
			Ports: []mcsv1beta1.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 80}}}}
	si, err = mc.MulticlusterV1beta1().ServiceImports("default").Create(ctx, si, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	si.Status.Clusters = []mcsv1beta1.ClusterStatus{{Cluster: "west"}, {Cluster: "kind-east"}}
	if _, err := mc.MulticlusterV1beta1().ServiceImports("default").UpdateStatus(ctx, si, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, stderr, code = run(t, "show", "imports", "--kubeconfig", c.Kubeconfig)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "NAMESPACE ") || len(strings.Fields(lines[1])) != 8 ||
		strings.Join(strings.Fields(lines[1])[:7], " ") != "default web ClusterSetIP 10.96.5.77 80/TCP kind-east,west <none>" {
		t.Fatalf("show imports: exit %d\n%s%s", code, out, stderr)
	}
	// West's endpoints withheld (the controller's label on their slice): said.
	sl := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "derived-web-west",
		Labels: map[string]string{mcsv1beta1.LabelServiceName: "web", mcsv1beta1.LabelSourceCluster: "west",
			discoveryv1.LabelManagedBy: export.ManagedBy, export.LabelWithheld: export.WithheldTunnelDown}},
		AddressType: discoveryv1.AddressTypeIPv4}
	if _, err := c.Kube.Client.DiscoveryV1().EndpointSlices("default").Create(ctx, sl, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, stderr, code = run(t, "show", "imports", "--kubeconfig", c.Kubeconfig)
	if code != 0 || !strings.Contains(out, "kind-east,west   west (TunnelDown)") {
		t.Fatalf("show imports with west withheld: exit %d\n%s%s", code, out, stderr)
	}
	out, _, code = run(t, "show", "all", "--kubeconfig", c.Kubeconfig)
	if code != 0 || !strings.Contains(out, "Imports (this cluster):") || !strings.Contains(out, "10.96.5.77") {
		t.Fatalf("show all via the Secret lacks the imports: exit %d\n%s", code, out)
	}
}

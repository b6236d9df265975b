package member

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tunnelmesh/tunnelmesh/deploy"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/brokersecret"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/access"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/internal/testenv"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/progress"
)

// testManifests stand in for deploy/ with a gateway DaemonSet, so the
// image check and the default wait have something to look at.
var testManifests = fstest.MapFS{
	"kustomization.yaml":         {Data: []byte("resources: [namespace.yaml, gateway]\n")},
	"namespace.yaml":             {Data: []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: tunnelmesh-system\n")},
	"gateway/kustomization.yaml": {Data: []byte("resources: [ds.yaml]\n")},
	"gateway/ds.yaml": {Data: []byte(`apiVersion: apps/v1
kind: DaemonSet
metadata: {name: tunnelmesh-gateway, namespace: tunnelmesh-system}
spec:
  selector: {matchLabels: {app: gw}}
  template:
    metadata: {labels: {app: gw}}
    spec:
      containers: [{name: gateway, image: tunnelmesh/gateway:dev}]
`)},
}

func TestObjectsOfDeploy(t *testing.T) {
	objs, err := Objects(deploy.FS)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, o := range objs {
		seen[kube.Key(o)] = true
		if o.GetKind() == "Deployment" && o.GetName() == "tunnelmesh-broker" {
			t.Error("join would install the broker")
		}
	}
	for _, k := range []string{"Namespace//tunnelmesh-system", "CustomResourceDefinition.apiextensions.k8s.io//serviceexports.multicluster.x-k8s.io"} {
		if !seen[k] {
			t.Errorf("missing %s in %v", k, seen)
		}
	}
}

func TestDefaultClusterID(t *testing.T) {
	for in, want := range map[string]string{"kind-east": "kind-east", "arn:aws:eks:eu-west-1:1234:cluster/Prod": "arn-aws-eks-eu-west-1-1234-cluster-prod", "": ""} {
		if got := DefaultClusterID(in); got != want {
			t.Errorf("DefaultClusterID(%q) = %q, want %q", in, got, want)
		}
	}
}

type fixedDetector struct{ pods, svcs []string }

func (d fixedDetector) Detect(context.Context, *kube.Cluster) ([]string, []string, error) {
	return d.pods, d.svcs, nil
}

// TestJoinErrors provokes each error a new user meets first against a real
// API server and a real broker: each gives its message, a non-zero exit
// code, and leaves every object of the cluster as it was.
func TestJoinErrors(t *testing.T) {
	tb := brokertest.Start(t, brokertest.Options{})
	tb.Join("cluster-a", "10.1.0.0/16", "10.96.1.0/24")
	other := brokertest.Start(t, brokertest.Options{})
	c := testenv.Start(t, "kind-b")
	c.AddNode(t, "b-down", false, "10.0.0.3", "tunnelmesh/gateway:dev")
	ctx := t.Context()
	admin := tb.Admin()

	good := func() JoinOptions {
		return JoinOptions{Info: api.BrokerInfo{URL: tb.URL, CA: string(tb.CA), JoinToken: tb.JoinToken("b")},
			PodCIDRs: []string{"10.2.0.0/16"}, ServiceCIDRs: []string{"10.96.2.0/24"}, Manifests: testManifests, Timeout: time.Minute}
	}
	check := func(name string, o JoinOptions, code int, want string) {
		t.Helper()
		before := c.Objects(t)
		tokensBefore, _ := admin.ListTokens(ctx)
		_, err := Join(ctx, c.Kube, o)
		var ce *cli.Error
		if !errors.As(err, &ce) {
			t.Fatalf("%s: got %v, want a cli.Error", name, err)
		}
		var b bytes.Buffer
		cli.Render(&b, err)
		if ce.Code != code || !strings.Contains(b.String(), want) {
			t.Errorf("%s: exit %d, message:\n%s\nwant exit %d and %q", name, ce.Code, b.String(), code, want)
		}
		if d := testenv.Diff(before, c.Objects(t)); d != "" {
			t.Errorf("%s changed the cluster:\n%s", name, d)
		}
		snap, _ := admin.Snapshot(ctx)
		if len(snap.Clusters) != 1 {
			t.Errorf("%s: the broker has %d clusters", name, len(snap.Clusters))
		}
		tokensAfter, _ := admin.ListTokens(ctx)
		if len(tokensAfter) > len(tokensBefore)+1 {
			t.Errorf("%s: tokens appeared", name)
		}
	}

	o := good()
	check("no ready node", o, cli.ExitRefused, "no node can be a gateway")
	c.AddNode(t, "b-plain", true, "10.0.0.2") // Ready, but without the images
	o = good()
	o.GatewayNode = "b-down"
	check("gateway node not ready", o, cli.ExitRefused, "node b-down is not Ready")
	check("images missing", good(), cli.ExitRefused, "kind load docker-image tunnelmesh/gateway:dev --name CLUSTER")
	c.AddNode(t, "b-gw", true, "10.0.0.1", "tunnelmesh/gateway:dev")
	check("images missing on another node", good(), cli.ExitRefused, "are missing on node(s) b-plain")
	// `kind load docker-image` onto b-plain:
	plain, err := c.Client.CoreV1().Nodes().Get(ctx, "b-plain", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	plain.Status.Images = append(plain.Status.Images, corev1.ContainerImage{Names: []string{"docker.io/tunnelmesh/gateway:dev"}})
	if _, err := c.Client.CoreV1().Nodes().UpdateStatus(ctx, plain, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	o = good()
	o.GatewayNode = "nope"
	check("unknown gateway node", o, cli.ExitRefused, `node "nope" does not exist`)

	o = good()
	o.Info.URL = "https://" + testenv.FreeAddr(t)
	check("broker unreachable", o, cli.ExitRefused, "cannot reach the broker at")
	o = good()
	o.Info.CA = string(other.CA)
	check("certificate mismatch", o, cli.ExitRefused, "certificate mismatch")
	o = good()
	o.Info.JoinToken = "tm-join.0123456789abcdef.bogus"
	check("wrong token", o, cli.ExitRefused, "the join token is wrong, expired or revoked")
	o = good()
	exp, err := admin.CreateTokenInfo(ctx, time.Second, "expires")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(exp.Info.ExpiresAt) + 100*time.Millisecond) // precondition: the token has expired
	o.Info.JoinToken = exp.Token
	check("expired token", o, cli.ExitRefused, "the join token is wrong, expired or revoked")
	rev, _ := admin.CreateTokenInfo(ctx, time.Hour, "revoked")
	if err := admin.RevokeToken(ctx, rev.Info.ID); err != nil {
		t.Fatal(err)
	}
	o = good()
	o.Info.JoinToken = rev.Token
	check("revoked token", o, cli.ExitRefused, "the join token is wrong, expired or revoked")

	// Overlapping a member is translated; the broker's own ranges never are.
	o = good()
	o.PodCIDRs = []string{"240.0.0.0/16"}
	check("CIDR in the mapped pool", o, cli.ExitRefused, "overlap the broker's own address ranges")
	o = good()
	o.ClusterID = "cluster-a"
	check("cluster ID taken", o, cli.ExitRefused, `cluster ID "cluster-a" is already taken`)
	o = good()
	o.PodCIDRs, o.ServiceCIDRs = nil, nil
	check("no CIDRs", o, cli.ExitRefused, "pass --pod-cidr and --service-cidr")
	o = good()
	o.PodCIDRs, o.ServiceCIDRs = nil, nil
	o.Detector = fixedDetector{pods: []string{"100.127.0.0/24"}, svcs: []string{"10.96.9.0/24"}}
	check("detected CIDR in the tunnel pool", o, cli.ExitRefused, "overlap the broker's own address ranges")
	o = good()
	o.ClusterID = "Bad_ID"
	check("invalid ID", o, cli.ExitUsage, `invalid cluster ID "Bad_ID"`)

	// Last (it changes the cluster): the gateway never gets ready.
	o = good()
	o.Waiter = blockingWaiter{}
	o.Timeout = 500 * time.Millisecond
	_, err = Join(ctx, c.Kube, o)
	var b bytes.Buffer
	cli.Render(&b, err)
	if cli.ExitCode(err) != cli.ExitTimeout || !strings.Contains(b.String(), "joined and installed, but the gateway is not ready yet") ||
		!strings.Contains(b.String(), "kubectl -n tunnelmesh-system get pods") {
		t.Errorf("wait timeout: exit %d\n%s", cli.ExitCode(err), b.String())
	}
}

type blockingWaiter struct{}

func (blockingWaiter) Wait(ctx context.Context, _ *kube.Cluster, _ string, s *progress.Step) error {
	s.Status("0/1 tunnels up")
	<-ctx.Done()
	return ctx.Err()
}

// TestJoinTwice joins for real, then again: the second run changes nothing.
func TestJoinTwice(t *testing.T) {
	tb := brokertest.Start(t, brokertest.Options{})
	tb.Join("cluster-a", "10.1.0.0/16", "10.96.1.0/24")
	c := testenv.Start(t, "kind-b")
	c.AddNode(t, "b-gw", true, "10.0.0.1", "tunnelmesh/gateway:dev")
	c.AddNode(t, "b-worker", true, "10.0.0.2", "tunnelmesh/gateway:dev")
	ctx := t.Context()

	// A stand-in for the DaemonSet controller and kubelets, for as long as
	// the test runs (a rolled DaemonSet must become ready again).
	standIn, stopStandIn := context.WithCancel(ctx)
	standInDone := make(chan struct{})
	t.Cleanup(func() { stopStandIn(); <-standInDone })
	go func() {
		defer close(standInDone)
		_ = wait.PollUntilContextCancel(standIn, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			d, err := c.Client.AppsV1().DaemonSets(defaults.Namespace).Get(ctx, "tunnelmesh-gateway", metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			st := appsv1.DaemonSetStatus{ObservedGeneration: d.Generation, DesiredNumberScheduled: 2, CurrentNumberScheduled: 2, NumberReady: 2, UpdatedNumberScheduled: 2, NumberAvailable: 2}
			if !equality.Semantic.DeepEqual(d.Status, st) {
				d.Status = st
				_, _ = c.Client.AppsV1().DaemonSets(defaults.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
			}
			return false, nil
		})
	}()
	info := api.BrokerInfo{URL: tb.URL, CA: string(tb.CA), JoinToken: tb.JoinToken("b")}
	var log bytes.Buffer
	o := JoinOptions{Info: info, Detector: fixedDetector{pods: []string{"10.2.0.0/16"}, svcs: []string{"10.96.2.0/24"}},
		Manifests: testManifests, Timeout: time.Minute, Progress: progress.New(&log, false)}
	res, err := Join(ctx, c.Kube, o)
	if err != nil {
		t.Fatalf("join: %v\n%s", err, log.String())
	}
	t.Logf("progress:\n%s", log.String())
	if !strings.HasPrefix(log.String(), `Joining context "kind-b" (`) {
		t.Errorf("the context being changed is not said first:\n%s", log.String())
	}
	if res.ClusterID != "kind-b" || res.GatewayNode != "b-gw" || res.TunnelIP == "" || res.AlreadyMember {
		t.Errorf("result %+v", res)
	}
	m, err := access.ReadMember(ctx, c.Kube)
	if err != nil || m == nil || m.ClusterID != "kind-b" || m.URL != tb.URL || string(m.CA) != string(tb.CA) || m.Credential == "" {
		t.Fatalf("member Secret: %v %+v", err, m)
	}
	// The clusterset's gossip key, as the gateway parses it.
	sec, err := c.Client.CoreV1().Secrets(defaults.Namespace).Get(ctx, kube.BrokerSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if bi, err := brokersecret.Parse(sec); err != nil || len(bi.GossipKey) != 32 {
		t.Fatalf("member Secret's gossip key: %v, %d bytes", err, len(bi.GossipKey))
	}
	if cs, err := tb.Admin().ClusterSet(ctx); err != nil || cs.GossipKey != m.GossipKey {
		t.Fatalf("member Secret holds gossip key %q, the broker's is %q (%v)", m.GossipKey, cs.GossipKey, err)
	}
	mc, _ := m.Client()
	snap, err := mc.Snapshot(ctx)
	if err != nil || len(snap.Clusters) != 2 {
		t.Fatalf("broker view with the stored credential: %v %+v", err, snap)
	}
	n, _ := c.Client.CoreV1().Nodes().Get(ctx, "b-gw", metav1.GetOptions{})
	if n.Labels[kube.GatewayLabel] != "true" {
		t.Errorf("gateway node not labelled")
	}

	before := c.Objects(t)
	log.Reset()
	o.Info.JoinToken = "tm-join.0123456789abcdef.spent" // a member needs no token
	res2, err := Join(ctx, c.Kube, o)
	if err != nil {
		t.Fatalf("second join: %v\n%s", err, log.String())
	}
	if !res2.AlreadyMember || res2.ClusterID != "kind-b" || res2.TunnelIP != res.TunnelIP {
		t.Errorf("second result %+v", res2)
	}
	if d := testenv.Diff(before, c.Objects(t)); d != "" {
		t.Errorf("second join changed the cluster:\n%s", d)
	}
	if snap2, _ := tb.Admin().Snapshot(ctx); snap2.Revision != snap.Revision {
		t.Errorf("second join changed the broker: revision %d → %d", snap.Revision, snap2.Revision)
	}

	// The gateway image rebuilt and loaded again under the same tag: the
	// nodes report its new digest, and join rolls the DaemonSet, once.
	stamp := func() (string, int64) {
		d, err := c.Client.AppsV1().DaemonSets(defaults.Namespace).Get(ctx, "tunnelmesh-gateway", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return d.Spec.Template.Annotations[kube.ImageDigestsAnnotation], d.Generation
	}
	load := func(digest string) {
		for _, name := range []string{"b-gw", "b-worker"} {
			n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			n.Status.Images[0].Names = []string{"docker.io/library/import-2026-11-22@" + digest, "docker.io/tunnelmesh/gateway:dev"}
			if _, err := c.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	st0, gen0 := stamp()
	if st0 != "" {
		t.Fatalf("stamped without digests: %q", st0)
	}
	for i, digest := range []string{"sha256:1111", "sha256:2222"} {
		load(digest)
		if _, err := Join(ctx, c.Kube, o); err != nil {
			t.Fatalf("join after loading %s: %v\n%s", digest, err, log.String())
		}
		st, gen := stamp()
		if st == "" || st == st0 || gen != gen0+1 {
			t.Fatalf("load %d (%s): stamp %q (was %q), generation %d (was %d)", i, digest, st, st0, gen, gen0)
		}
		before := c.Objects(t)
		if _, err := Join(ctx, c.Kube, o); err != nil {
			t.Fatal(err)
		}
		if d := testenv.Diff(before, c.Objects(t)); d != "" {
			t.Errorf("join with the same image content changed:\n%s", d)
		}
		st0, gen0 = st, gen
	}

	// Another clusterset's broker info is refused on a member.
	other := brokertest.Start(t, brokertest.Options{})
	o.Info = api.BrokerInfo{URL: other.URL, CA: string(other.CA), JoinToken: other.JoinToken("x")}
	_, err = Join(ctx, c.Kube, o)
	if cli.ExitCode(err) != cli.ExitRefused || !strings.Contains(err.Error(), "already a member of the clusterset of "+tb.URL) {
		t.Errorf("join to another clusterset: %v", err)
	}
}

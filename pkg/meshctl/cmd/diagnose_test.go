package cmd

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tunnelmesh/tunnelmesh/deploy"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/access"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/diagnose"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/internal/testenv"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/member"
)

// TestDiagnose gathers from a real API server and a real broker: a member
// cluster installed from deploy/, its pods, Leases and status objects as
// kubelets and the gateway would write them. One gateway node's clock runs
// 6 s ahead: diagnose fails on that check only and exits 1; with the clock
// put right it exits 0.
func TestDiagnose(t *testing.T) {
	ctx := t.Context()
	tb := brokertest.Start(t, brokertest.Options{})
	_, east := tb.Join("east", "10.1.0.0/16", "10.96.1.0/24")
	westc, _ := tb.Join("west", "10.2.0.0/16", "10.96.2.0/24")
	eastc := tb.Client(east.Credential)
	for _, g := range []struct {
		c interface {
			RegisterGateway(context.Context, api.Gateway) error
		}
		gw api.Gateway
	}{
		{eastc, api.Gateway{ClusterID: "east", Hostname: "east-gw", PrivateIP: "172.18.0.3", Port: 51820, PublicKey: "1jM0FE1G0F5U+0v0SLIFqkO+GbRvXG8ddD1PSx34SXo=", Active: true, Epoch: 1}},
		{westc, api.Gateway{ClusterID: "west", Hostname: "west-gw", PrivateIP: "172.18.0.4", Port: 51820, PublicKey: "2jM0FE1G0F5U+0v0SLIFqkO+GbRvXG8ddD1PSx34SXo=", Active: true, Epoch: 1}},
	} {
		if err := g.c.RegisterGateway(ctx, g.gw); err != nil {
			t.Fatal(err)
		}
	}

	c := testenv.Start(t, "kind-east")
	kc := []string{"--kubeconfig", c.Kubeconfig}
	_, stderr, code := run(t, append([]string{"diagnose"}, kc...)...)
	if code != cli.ExitRefused || !strings.Contains(stderr, "has not joined a clusterset") {
		t.Fatalf("not a member: exit %d\n%s", code, stderr)
	}

	objs, err := member.Objects(deploy.FS)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Kube.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	m := access.Member{URL: tb.URL, CA: tb.CA, Credential: east.Credential, ClusterID: "east"}
	mustCreate(t, func() error {
		_, err := c.Client.CoreV1().Secrets(defaults.Namespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: kube.BrokerSecret}, Data: m.Data()}, metav1.CreateOptions{})
		return err
	})
	for _, n := range []string{"east-gw", "east-gw2"} {
		nd := c.AddNode(t, n, true, "", "tunnelmesh/gateway:dev")
		nd.Labels[kube.GatewayLabel] = "true"
		if _, err := c.Client.CoreV1().Nodes().Update(ctx, nd, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		// A candidate and a route agent on each (gateway nodes).
		for _, comp := range []string{"gateway", "route-agent"} {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "tunnelmesh-" + comp + "-" + n, Labels: map[string]string{"app.kubernetes.io/component": comp}},
				Spec: corev1.PodSpec{NodeName: n, Containers: []corev1.Container{{Name: comp, Image: "tunnelmesh/gateway:dev"}}}}
			pod, err := c.Client.CoreV1().Pods(defaults.Namespace).Create(ctx, pod, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
			if _, err := c.Client.CoreV1().Pods(defaults.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The kubelets' Leases: east-gw2's clock is 6 s ahead.
	renew := func(node string, ahead time.Duration) {
		t.Helper()
		leases := c.Client.CoordinationV1().Leases("kube-node-lease")
		rt := metav1.NewMicroTime(time.Now().Add(ahead))
		l, err := leases.Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			_, err = leases.Create(ctx, &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: coordv1.LeaseSpec{RenewTime: &rt}}, metav1.CreateOptions{FieldManager: "kubelet"})
		} else {
			l.Spec.RenewTime = &rt
			_, err = leases.Update(ctx, l, metav1.UpdateOptions{FieldManager: "kubelet"})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	renew("east-gw", 0)
	renew("east-gw2", 6*time.Second)
	// The election's Lease, held by east-gw; the holder renews it while the test runs.
	holder, dur := "east-gw", int32(3)
	renewing := make(chan struct{})
	t.Cleanup(func() { <-renewing }) // t.Context() ends before cleanups run
	go func() {
		defer close(renewing)
		leases := c.Client.CoordinationV1().Leases(defaults.Namespace)
		for ctx.Err() == nil {
			rt := metav1.NewMicroTime(time.Now())
			l, err := leases.Get(ctx, "tunnelmesh-gateway", metav1.GetOptions{})
			if err != nil {
				_, _ = leases.Create(ctx, &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "tunnelmesh-gateway"},
					Spec: coordv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, RenewTime: &rt}}, metav1.CreateOptions{FieldManager: "gateway"})
			} else {
				l.Spec.RenewTime = &rt
				_, _ = leases.Update(ctx, l, metav1.UpdateOptions{FieldManager: "gateway"})
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()

	// Workloads ready as the controllers would report them.
	dss, _ := c.Client.AppsV1().DaemonSets(defaults.Namespace).List(ctx, metav1.ListOptions{})
	for i := range dss.Items {
		d := &dss.Items[i]
		d.Status.DesiredNumberScheduled, d.Status.NumberReady = 2, 2
		if _, err := c.Client.AppsV1().DaemonSets(defaults.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deps, _ := c.Client.AppsV1().Deployments(defaults.Namespace).List(ctx, metav1.ListOptions{})
	for i := range deps.Items {
		d := &deps.Items[i]
		d.Status.Replicas, d.Status.ReadyReplicas = *d.Spec.Replicas, *d.Spec.Replicas
		if _, err := c.Client.AppsV1().Deployments(defaults.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// kube-proxy and CoreDNS as kubeadm installs them, CoreDNS already serving clusterset.local.
	for name, data := range map[string]map[string]string{
		"kube-proxy": {"config.conf": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: iptables\n"},
		"coredns":    {"Corefile": ".:53 {\n    kubernetes cluster.local clusterset.local {\n       multicluster clusterset.local\n    }\n    forward . /etc/resolv.conf\n}\n"},
	} {
		mustCreate(t, func() error {
			_, err := c.Client.CoreV1().ConfigMaps("kube-system").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}, metav1.CreateOptions{})
			return err
		})
	}
	// The active gateway's status as it writes it before its first full-size
	// probe came back and while its standby's elector is not yet in
	// memberlist: west connected, a handshake 20 s ago.
	hs := metav1.NewTime(time.Now().Add(-20 * time.Second))
	w := status.Writer{Client: c.Kube.Dynamic, Namespace: defaults.Namespace, ClusterID: "east"}
	write := func(standby status.Standby, pathMTU, pathMTULost int) {
		t.Helper()
		if err := w.Write(ctx, status.GatewayStatus{ActiveNode: "east-gw", Epoch: 1,
			Remotes: []status.RemoteCluster{{Cluster: "west", Status: api.StatusConnected, Endpoint: "172.18.0.4:51820", LastHandshake: &hs,
				PathMTU: pathMTU, PathMTULost: pathMTULost}},
			Standbys:   []status.Standby{standby},
			Conditions: []metav1.Condition{{Type: diagnose.CondCIDRsMatch, Status: metav1.ConditionTrue, Reason: "Match", LastTransitionTime: metav1.Now()}}}); err != nil {
			t.Fatal(err)
		}
	}
	write(status.Standby{Node: "east-gw2", Reason: "not in the candidates' memberlist"}, 0, 0)

	results := func(wantCode int) map[string]diagnose.Finding {
		t.Helper()
		out, stderr, code := run(t, append([]string{"diagnose", "-o", "json"}, kc...)...)
		var fs []diagnose.Finding
		if err := json.Unmarshal([]byte(out), &fs); err != nil || code != wantCode {
			t.Fatalf("diagnose: exit %d (want %d), %v\n%s%s", code, wantCode, err, out, stderr)
		}
		byName := map[string]diagnose.Finding{}
		for _, f := range fs {
			byName[f.Check] = f
		}
		return byName
	}
	// expect: every check passes except those named, which give the result
	// with the detail containing the text.
	type want struct {
		result diagnose.Result
		detail string
	}
	expect := func(what string, got map[string]diagnose.Finding, except map[string]want) {
		t.Helper()
		for name, f := range got {
			w, ok := except[name]
			if !ok {
				w.result = diagnose.Pass
			}
			if f.Result != w.result || !strings.Contains(f.Detail, w.detail) {
				t.Errorf("%s: %s: %s %s (fix: %s), want %s with %q", what, name, f.Result, f.Detail, f.Fix, w.result, w.detail)
			}
		}
		for name := range except {
			if _, ok := got[name]; !ok {
				t.Errorf("%s: no %s check", what, name)
			}
		}
	}
	expect("skewed clock, standby not ready, path not measured", results(cli.ExitFailure), map[string]want{
		"clock-skew":       {diagnose.Fail, "east-gw2 +"},
		"standby-gateways": {diagnose.Warn, "standby not ready: east-gw2 (not in the candidates' memberlist)"},
		"mtu-mss":          {diagnose.Skip, "no full-size probe answered yet to west (connected)"},
	})

	// Clock put right, the standby in memberlist, the full-size probe answered:
	// what the MeshGateway CRD carries lets every check pass.
	renew("east-gw2", 0)
	write(status.Standby{Node: "east-gw2", Ready: true}, 1420, 0)
	expect("all well", results(cli.ExitOK), map[string]want{
		"standby-gateways": {diagnose.Pass, "standby ready to take over: east-gw2"},
		"mtu-mss":          {diagnose.Pass, "tunnel MTU 1420"},
	})

	// The table says the same for people.
	out, _, code := run(t, append([]string{"diagnose"}, kc...)...)
	if code != 0 || !strings.Contains(out, "PASS  wireguard-udp") || !strings.Contains(out, "PASS  mtu-mss") || !strings.Contains(out, "14 checks: 14 passed") {
		t.Errorf("diagnose table: exit %d\n%s", code, out)
	}

	// Full-size probes lost while small ones arrive: a path MTU problem.
	write(status.Standby{Node: "east-gw2", Ready: true}, 0, 1420)
	expect("full-size probes lost", results(cli.ExitFailure), map[string]want{
		"mtu-mss": {diagnose.Fail, "lost to west (1420-byte packets)"},
	})
}

func mustCreate(t *testing.T, create func() error) {
	t.Helper()
	if err := create(); err != nil {
		t.Fatal(err)
	}
}

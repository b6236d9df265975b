package diagnose

import (
	"bytes"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/node"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/internal/golden"
)

var now = time.Date(2026, 11, 22, 5, 0, 0, 0, time.UTC)

func dur(d time.Duration) *time.Duration { return &d }

func mt(t time.Time) *metav1.Time { m := metav1.NewTime(t); return &m }

// healthy is a two-member clusterset seen from east: every check passes.
func healthy() Facts {
	return Facts{
		ClusterID: "east", Now: now,
		Members: []api.Cluster{
			{ID: "east", PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.96.1.0/24"}},
			{ID: "west", PodCIDRs: []string{"10.2.0.0/16"}, ServiceCIDRs: []string{"10.96.2.0/24"}},
		},
		Gateways: []api.Gateway{
			{ClusterID: "east", Hostname: "east-worker", Active: true, Epoch: 2},
			{ClusterID: "east", Hostname: "east-worker2", Epoch: 2},
			{ClusterID: "west", Hostname: "west-worker", Active: true, Epoch: 1},
		},
		Nodes: []Node{
			{Name: "east-control-plane", Ready: true},
			{Name: "east-worker", Ready: true, Gateway: true, ClockOffset: dur(200 * time.Millisecond)},
			{Name: "east-worker2", Ready: true, Gateway: true, ClockOffset: dur(-300 * time.Millisecond)},
		},
		Pods: []Pod{
			{Name: "gw-a", Node: "east-control-plane", Component: "gateway", Ready: true},
			{Name: "gw-b", Node: "east-worker", Component: "gateway", Ready: true},
			{Name: "gw-c", Node: "east-worker2", Component: "gateway", Ready: true},
			{Name: "ctl", Node: "east-worker2", Component: "controller", Ready: true},
			{Name: "ra-a", Node: "east-control-plane", Component: "route-agent", Ready: true},
			{Name: "ra-b", Node: "east-worker", Component: "route-agent", Ready: true},
			{Name: "ra-c", Node: "east-worker2", Component: "route-agent", Ready: true},
		},
		Workloads: []Workload{{"DaemonSet", "tunnelmesh-gateway", 3, 3}, {"Deployment", "tunnelmesh-controller", 1, 1},
			{"DaemonSet", "tunnelmesh-route-agent", 3, 3}},
		GatewayArgs: []string{"k8s", "--listen-port=51820"},
		MeshGateway: &status.MeshGateway{Status: status.GatewayStatus{
			ClusterID: "east", ActiveNode: "east-worker", Epoch: 2, UpdatedAt: mt(now.Add(-3 * time.Second)),
			Remotes:    []status.RemoteCluster{{Cluster: "west", Status: api.StatusConnected, Endpoint: "172.18.0.6:51820", LastHandshake: mt(now.Add(-40 * time.Second)), PathMTU: 1420}},
			Conditions: []metav1.Condition{{Type: CondCIDRsMatch, Status: metav1.ConditionTrue, Reason: "Match"}},
			Standbys:   []status.Standby{{Node: "east-worker2", Ready: true}},
		}},
		StatusWrittenAt: now.Add(-3 * time.Second),
		Lease:           &Lease{Holder: "east-worker", Duration: 3 * time.Second, RenewedAt: now.Add(-time.Second)},
		KubeProxy:       KubeProxy{ConfigFound: true, DaemonSet: true, Mode: ""},
		DNS: DNS{CorefileFound: true, Corefile: `.:53 {
    errors
    kubernetes cluster.local clusterset.local in-addr.arpa ip6.arpa {
       pods insecure
       multicluster clusterset.local
       fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
}
`},
	}
}

func TestHealthyPasses(t *testing.T) {
	for _, f := range Run(healthy()) {
		if f.Result != Pass {
			t.Errorf("%s: %s: %s (fix: %s)", f.Check, f.Result, f.Detail, f.Fix)
		}
	}
}

func TestConditionTypeMatchesGateway(t *testing.T) {
	if CondCIDRsMatch != node.CondCIDRsMatch {
		t.Fatalf("CondCIDRsMatch %q, the gateway writes %q", CondCIDRsMatch, node.CondCIDRsMatch)
	}
}

// Each case breaks one thing; that check, and only the ones named, must
// give the result with words of the detail.
func TestEachCheckFails(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(*Facts)
		check  string
		result Result
		detail string
	}{
		{"broker down", func(f *Facts) { f.BrokerErr = "cannot reach the broker at https://b" }, "broker", Fail, "cannot reach"},
		{"not a member", func(f *Facts) { f.Members = f.Members[1:] }, "broker", Fail, `no record of cluster "east"`},
		{"pod CIDRs overlap, untranslated", func(f *Facts) { f.Members[1].PodCIDRs = []string{"10.1.128.0/17"} }, "cidr-overlap", Fail,
			`clusters "east" and "west" share mesh addresses: 10.1.0.0/16 overlaps 10.1.128.0/17`},
		{"service overlaps pod", func(f *Facts) { f.Members[1].ServiceCIDRs = []string{"10.1.5.0/24"} }, "cidr-overlap", Fail, "overlaps"},
		{"pod CIDRs overlap, both translated", func(f *Facts) {
			f.Members[1].PodCIDRs = []string{"10.1.0.0/16"}
			f.Members[0].Translations = []api.Translation{{Real: "10.1.0.0/16", Mapped: "240.0.0.0/16"}}
			f.Members[1].Translations = []api.Translation{{Real: "10.1.0.0/16", Mapped: "240.1.0.0/16"}}
			f.MeshGateway.Status.Translations = f.Members[0].Translations
		}, "cidr-overlap", Pass, "2 of the 2 member(s) are known by mapped CIDRs"},
		{"only one side of an overlap translated", func(f *Facts) {
			f.Members[1].PodCIDRs = []string{"10.1.0.0/16"}
			f.Members[1].Translations = []api.Translation{{Real: "10.1.0.0/16", Mapped: "240.1.0.0/16"}}
		}, "cidr-overlap", Fail, `cluster "west" cannot reach "east"`},
		{"translated, gateway applied it", func(f *Facts) {
			f.Members[0].Translations = []api.Translation{{Real: "10.1.0.0/16", Mapped: "240.0.0.0/16"}}
			f.MeshGateway.Status.Translations = f.Members[0].Translations
		}, "translation", Pass, "translated: 10.1.0.0/16 as 240.0.0.0/16"},
		{"translated, gateway has not applied it", func(f *Facts) {
			f.Members[0].Translations = []api.Translation{{Real: "10.1.0.0/16", Mapped: "240.0.0.0/16"}}
		}, "translation", Fail, `the broker translates 10.1.0.0/16 as 240.0.0.0/16, the active gateway applied "none"`},
		{"a remote cluster translated", func(f *Facts) {
			f.Members[1].Translations = []api.Translation{{Real: "10.2.0.0/16", Mapped: "240.1.0.0/16"}}
		}, "translation", Pass, "reached at mapped CIDRs here: west (10.2.0.0/16 as 240.1.0.0/16)"},
		{"CIDRs differ from broker", func(f *Facts) {
			f.MeshGateway.Status.Conditions[0] = metav1.Condition{Type: CondCIDRsMatch, Status: metav1.ConditionFalse, Reason: "Mismatch", Message: "pod CIDRs 10.9.0.0/16 vs 10.1.0.0/16"}
		}, "cidrs-match-broker", Fail, "Mismatch"},
		{"no route agent on a node", func(f *Facts) { f.Pods = f.Pods[:4] }, "components", Fail, "no route-agent pod on node east-control-plane"},
		{"no gateway pod on a candidate node", func(f *Facts) { f.Pods = append(f.Pods[:1:1], f.Pods[2:]...) }, "components", Fail, "no gateway pod on candidate node east-worker"},
		{"gateway pod crashing", func(f *Facts) {
			f.Pods[2].Ready, f.Pods[2].Waiting = false, "CrashLoopBackOff: back-off 40s"
		}, "components", Fail, "gw-c on east-worker2: CrashLoopBackOff"},
		{"controller not ready", func(f *Facts) { f.Workloads[1].Ready = 0 }, "components", Fail, "Deployment tunnelmesh-controller: 0/1"},
		{"not-ready node ignored", func(f *Facts) {
			f.Nodes = append(f.Nodes, Node{Name: "east-worker3"})
		}, "components", Pass, "3 Ready node"},
		{"no candidate", func(f *Facts) {
			for i := range f.Nodes {
				f.Nodes[i].Gateway = false
			}
		}, "active-gateway", Fail, "no node is labelled"},
		{"no active", func(f *Facts) { f.MeshGateway.Status.ActiveNode = "" }, "active-gateway", Fail, "no active gateway"},
		{"stale status", func(f *Facts) { f.StatusWrittenAt = now.Add(-2 * time.Minute) }, "active-gateway", Fail, "last written 2m0s ago"},
		{"no Lease", func(f *Facts) { f.Lease = nil }, "active-gateway", Fail, "has no holder"},
		{"Lease not renewed", func(f *Facts) { f.Lease.RenewedAt = now.Add(-20 * time.Second) }, "active-gateway", Fail, "last renewed 20s ago"},
		{"Lease elsewhere", func(f *Facts) { f.Lease.Holder = "east-worker2" }, "active-gateway", Warn, "held by east-worker2"},
		{"two active in broker", func(f *Facts) { f.Gateways[1].Active = true }, "active-gateway", Fail, "2 active gateways"},
		{"broker has none", func(f *Facts) { f.Gateways[0].Stale = true }, "active-gateway", Fail, "no live active gateway"},
		{"broker disagrees", func(f *Facts) { f.Gateways[0].Active, f.Gateways[1].Active = false, true }, "active-gateway", Warn, "broker's is east-worker2"},
		{"no TUN device", func(f *Facts) {
			f.Pods[0].Ready, f.Pods[0].Waiting = false, "ContainerCreating"
			f.Events = []Event{{Object: "pod/gw-a", Reason: "FailedMount", Message: `MountVolume.SetUp failed for volume "tun" : hostPath type check failed: /dev/net/tun is not a character device`}}
		}, "tun-device", Fail, "/dev/net/tun is not a character device"},
		{"old TUN event of a pod now ready", func(f *Facts) {
			f.Events = []Event{{Object: "pod/gw-b", Reason: "FailedMount", Message: `hostPath type check failed: /dev/net/tun is not a character device`}}
		}, "tun-device", Pass, "opened its TUN"},
		{"TUN open fails", func(f *Facts) {
			f.Pods[1].LastError = "Error (exit 1): open /dev/net/tun: no such file or directory"
		}, "tun-device", Fail, "gw-b on east-worker"},
		{"active pod not ready", func(f *Facts) { f.Pods[1].Ready = false }, "tun-device", Warn, "no ready gateway pod on the active node"},
		{"standby not ready", func(f *Facts) {
			f.MeshGateway.Status.Standbys[0] = status.Standby{Node: "east-worker2", Reason: "not in the candidates' memberlist"}
		}, "standby-gateways", Warn, "standby not ready: east-worker2 (not in the candidates' memberlist); a failover now waits for it"},
		{"no standby", func(f *Facts) { f.MeshGateway.Status.Standbys = nil }, "standby-gateways", Warn, "the only candidate"},
		{"MTU not measured: never PASS", func(f *Facts) { f.MeshGateway.Status.Remotes[0].PathMTU = 0 }, "mtu-mss", Skip, "not measured: no full-size probe answered yet to west (connected)"},
		{"MTU not measured: no status", func(f *Facts) { f.MeshGateway = nil }, "mtu-mss", Skip, "no MeshGateway status"},
		{"MTU not measured: stale status", func(f *Facts) { f.StatusWrittenAt = now.Add(-2 * time.Minute) }, "mtu-mss", Skip, "last written 2m0s ago"},
		{"MTU black hole", func(f *Facts) {
			f.MeshGateway.Status.Remotes[0].PathMTU, f.MeshGateway.Status.Remotes[0].PathMTULost = 0, 1420
		}, "mtu-mss", Fail, "lost to west (1420-byte packets)"},
		{"MTU too large, unmeasured", func(f *Facts) {
			f.GatewayArgs = append(f.GatewayArgs, "--mtu=1500")
			f.MeshGateway.Status.Remotes[0].PathMTU = 0
		}, "mtu-mss", Warn, "underlay MTU of at least 1580"},
		{"MTU too large, measured to work", func(f *Facts) {
			f.GatewayArgs = append(f.GatewayArgs, "--mtu=9000")
			f.MeshGateway.Status.Remotes[0].PathMTU = 9000
		}, "mtu-mss", Pass, "tunnel MTU 9000"},
		{"MTU too small", func(f *Facts) { f.GatewayArgs = append(f.GatewayArgs, "--mtu=1200") }, "mtu-mss", Fail, "below IPv6's minimum"},
		{"MTU garbage", func(f *Facts) { f.GatewayArgs = append(f.GatewayArgs, "--mtu=big") }, "mtu-mss", Fail, "invalid"},
		{"MTU measured", func(f *Facts) { f.GatewayArgs = append(f.GatewayArgs, "--mtu=1380") }, "mtu-mss", Pass, "tunnel MTU 1420"},
		{"kube-proxy ipvs", func(f *Facts) { f.KubeProxy.Mode = "ipvs" }, "kube-proxy", Warn, "ipvs"},
		{"kube-proxy nftables", func(f *Facts) { f.KubeProxy.Mode = "nftables" }, "kube-proxy", Pass, "nftables"},
		{"kube-proxy kernelspace", func(f *Facts) { f.KubeProxy.Mode = "kernelspace" }, "kube-proxy", Fail, "kernelspace"},
		{"no kube-proxy", func(f *Facts) { f.KubeProxy = KubeProxy{} }, "kube-proxy", Warn, "no kube-proxy"},
		{"CoreDNS lacks clusterset.local", func(f *Facts) {
			f.DNS.Corefile = ".:53 {\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure\n    }\n    forward . /etc/resolv.conf\n}\n"
		}, "coredns", Fail, "does not serve clusterset.local"},
		{"no CoreDNS config", func(f *Facts) { f.DNS.CorefileFound = false }, "coredns", Warn, "no ConfigMap"},
		{"NodeLocal bypass", func(f *Facts) {
			f.DNS.NodeLocal, f.DNS.NodeLocalCorefile = true, "cluster.local:53 {\n  forward . 10.96.0.10\n}\n"
		}, "nodelocal-dns", Warn, "answers pods first"},
		{"NodeLocal forwarding", func(f *Facts) {
			f.DNS.NodeLocal, f.DNS.NodeLocalCorefile = true, "clusterset.local:53 {\n  forward . 10.96.0.10\n}\n"
		}, "nodelocal-dns", Pass, "has a clusterset.local block"},
		{"UDP blocked: never a handshake", func(f *Facts) {
			f.MeshGateway.Status.Remotes[0].LastHandshake = nil
			f.MeshGateway.Status.Remotes[0].Status, f.MeshGateway.Status.Remotes[0].Reason = api.StatusError, "no handshake"
		}, "wireguard-udp", Fail, "west (172.18.0.6:51820): never a handshake"},
		{"UDP blocked since", func(f *Facts) {
			f.MeshGateway.Status.Remotes[0].LastHandshake = mt(now.Add(-10 * time.Minute))
		}, "wireguard-udp", Fail, "last handshake 9m57s ago"},
		{"handshake but probes unanswered", func(f *Facts) {
			f.MeshGateway.Status.Remotes[0].Status = api.StatusError
			f.MeshGateway.Status.Remotes[0].Reason = "handshake ok but health probes unanswered"
		}, "wireguard-udp", Warn, "west is error: handshake ok but health probes unanswered"},
		{"clocks apart", func(f *Facts) { f.Nodes[2].ClockOffset = dur(4 * time.Second) }, "clock-skew", Fail, "differ by 3.8s"},
		{"clocks a bit apart", func(f *Facts) { f.Nodes[2].ClockOffset = dur(2 * time.Second) }, "clock-skew", Warn, "differ by 1.8s"},
		{"clock off the API server", func(f *Facts) {
			f.Nodes[1].ClockOffset, f.Nodes[2].ClockOffset = dur(8*time.Second), dur(8*time.Second)
		}, "clock-skew", Warn, "more than 5s"},
		{"no lease", func(f *Facts) { f.Nodes[1].ClockOffset, f.Nodes[2].ClockOffset = nil, nil }, "clock-skew", Skip, "no gateway candidate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := healthy()
			c.break_(&f)
			var got *Finding
			for _, r := range Run(f) {
				if r.Check == c.check {
					r := r
					got = &r
				}
			}
			if got == nil {
				t.Fatalf("no finding of %s", c.check)
			}
			if got.Result != c.result || !strings.Contains(got.Detail, c.detail) {
				t.Fatalf("%s: got %s %q, want %s containing %q", c.check, got.Result, got.Detail, c.result, c.detail)
			}
			if (got.Result == Fail || got.Result == Warn) && got.Fix == "" {
				t.Errorf("%s %s without a fix", c.check, got.Result)
			}
			if n := Failed(Run(f)); c.result == Fail && n == 0 {
				t.Errorf("Failed() = %d with %s %s", n, c.check, c.result)
			}
		})
	}
}

func TestProxyMode(t *testing.T) {
	for in, want := range map[string]string{
		"apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n": "ipvs",
		"kind: KubeProxyConfiguration\nmode: \"\"\n":                                               "",
		"kind: KubeProxyConfiguration\n":                                                           "",
		"{not yaml":                                                                                "",
	} {
		if got := ProxyMode(in); got != want {
			t.Errorf("ProxyMode(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPrint(t *testing.T) {
	f := healthy()
	f.MeshGateway.Status.Remotes[0].LastHandshake = nil
	f.KubeProxy.Mode = "ipvs"
	f.Nodes[1].ClockOffset, f.Nodes[2].ClockOffset = nil, nil
	var b bytes.Buffer
	if err := Print(&b, Run(f)); err != nil {
		t.Fatal(err)
	}
	golden.Assert(t, "diagnose.txt", b.Bytes())
}

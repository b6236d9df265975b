package node

import (
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/election"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/gateway"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/brokersecret"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/discovery"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	"github.com/tunnelmesh/tunnelmesh/pkg/routeagent"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func mg(name, active string, epoch int64, local []string, remotes ...status.RemoteCluster) status.MeshGateway {
	m := status.MeshGateway{Status: status.GatewayStatus{ActiveNode: active, Epoch: epoch, PodCIDRs: local, Remotes: remotes}}
	m.Name = name
	return m
}

func TestAgentInput(t *testing.T) {
	self := routeagent.Self{Name: "w", Interface: "eth0"}
	addrs := []netip.Addr{netip.MustParseAddr("172.30.0.2")}
	b := status.RemoteCluster{Cluster: "b", PodCIDRs: []string{"10.60.0.0/16"}, ServiceCIDRs: []string{"10.96.0.0/24"}}
	c := status.RemoteCluster{Cluster: "c", PodCIDRs: []string{"10.70.0.0/16", "bad"}}
	for _, tc := range []struct {
		name         string
		view         ClusterView
		set          AgentSettings
		active       string
		local        []netip.Prefix
		remote       []netip.Prefix
		problemCount int
	}{
		{name: "no lease, no status: nothing known", view: ClusterView{}},
		{name: "holder and its status",
			view:   ClusterView{Holder: "g1", HolderAddrs: addrs, Gateways: []status.MeshGateway{mg("a", "g1", 3, []string{"10.244.0.0/16"}, b)}},
			active: "g1", local: pfx("10.244.0.0/16"), remote: pfx("10.60.0.0/16", "10.96.0.0/24")},
		{name: "new holder before it wrote the status keeps the predecessor's remotes",
			view:   ClusterView{Holder: "g2", HolderAddrs: addrs, Gateways: []status.MeshGateway{mg("a", "g1", 3, []string{"10.244.0.0/16"}, b)}},
			active: "g2", local: pfx("10.244.0.0/16"), remote: pfx("10.60.0.0/16", "10.96.0.0/24")},
		{name: "released lease: no active, remotes kept",
			view:  ClusterView{Gateways: []status.MeshGateway{mg("a", "g1", 3, []string{"10.244.0.0/16"}, b)}},
			local: pfx("10.244.0.0/16"), remote: pfx("10.60.0.0/16", "10.96.0.0/24")},
		{name: "the holder's object wins over a higher epoch; flag overrides local; bad CIDR reported",
			view: ClusterView{Holder: "g2", HolderAddrs: addrs, Gateways: []status.MeshGateway{
				mg("old", "g1", 9, []string{"10.1.0.0/16"}, b), mg("a", "g2", 4, []string{"10.244.0.0/16"}, c)}},
			set:    AgentSettings{PodCIDRs: pfx("10.245.0.0/16")},
			active: "g2", local: pfx("10.245.0.0/16"), remote: pfx("10.70.0.0/16"), problemCount: 1},
		{name: "no holder's object: highest epoch",
			view:   ClusterView{Holder: "g3", Gateways: []status.MeshGateway{mg("x", "g1", 2, nil, c), mg("y", "g2", 5, []string{"10.244.0.0/16"}, b)}},
			active: "g3", local: pfx("10.244.0.0/16"), remote: pfx("10.60.0.0/16", "10.96.0.0/24")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, problems := AgentInput(self, tc.view, tc.set)
			if in.Active.Node != tc.active || !reflect.DeepEqual(in.Local, tc.local) || !reflect.DeepEqual(in.Remote, tc.remote) || len(problems) != tc.problemCount {
				t.Fatalf("got active %q local %v remote %v problems %v", in.Active.Node, in.Local, in.Remote, problems)
			}
			if tc.active != "" && !reflect.DeepEqual(in.Active.Addresses, tc.view.HolderAddrs) {
				t.Fatalf("active addresses %v", in.Active.Addresses)
			}
		})
	}
}

func TestBuildStatus(t *testing.T) {
	cidrs := discovery.CIDRs{Pod: pfx("10.244.0.0/16"), Service: pfx("10.0.0.0/24")}
	snap := &api.Snapshot{Revision: 7, Clusters: []api.Cluster{
		{ID: "a", PodCIDRs: []string{"10.244.0.0/16"}, ServiceCIDRs: []string{"10.0.0.0/24"}, TunnelIP: "100.64.0.1"},
		{ID: "b", PodCIDRs: []string{"10.60.0.0/16"}, ServiceCIDRs: []string{"10.96.0.0/24"}},
	}, Gateways: []api.Gateway{{ClusterID: "b", Hostname: "gb", PrivateIP: "172.30.0.9", Port: 51820, Active: true, Epoch: 2}}}
	health := []api.PeerHealth{{Cluster: "b", Status: api.StatusConnected, RTTMillis: 1.5}}

	get := func(st status.GatewayStatus, typ string) metav1.Condition {
		for _, c := range st.Conditions {
			if c.Type == typ {
				return c
			}
		}
		t.Fatalf("no condition %s in %+v", typ, st.Conditions)
		return metav1.Condition{}
	}
	st := BuildStatus(StatusInput{ClusterID: "a", Node: "g1", Epoch: 4, CIDRs: cidrs, Snapshot: snap, Health: health, BrokerReachable: true})
	if st.ActiveNode != "g1" || st.Epoch != 4 || st.TunnelIP != "100.64.0.1" || len(st.Remotes) != 1 {
		t.Fatalf("status %+v", st)
	}
	r := st.Remotes[0]
	if r.Cluster != "b" || r.Status != api.StatusConnected || r.Endpoint != "172.30.0.9:51820" || !reflect.DeepEqual(r.PodCIDRs, []string{"10.60.0.0/16"}) {
		t.Fatalf("remote %+v", r)
	}
	if c := get(st, CondCIDRsMatch); c.Status != metav1.ConditionTrue {
		t.Fatalf("match condition %+v", c)
	}

	other := cidrs
	other.Service = pfx("10.0.1.0/24")
	st = BuildStatus(StatusInput{ClusterID: "a", Node: "g1", Epoch: 4, CIDRs: other, Snapshot: snap})
	if c := get(st, CondCIDRsMatch); c.Status != metav1.ConditionFalse || c.Reason != "Mismatch" || !strings.Contains(c.Message, "10.0.1.0/24") {
		t.Fatalf("mismatch not reported: %+v", c)
	}
	st = BuildStatus(StatusInput{ClusterID: "zz", CIDRs: cidrs, Snapshot: snap})
	if c := get(st, CondCIDRsMatch); c.Reason != "NotInBroker" || len(st.Remotes) != 2 {
		t.Fatalf("unknown cluster: %+v, %d remotes", c, len(st.Remotes))
	}
	st = BuildStatus(StatusInput{ClusterID: "a", CIDRs: cidrs})
	if c := get(st, CondBrokerKnown); c.Status != metav1.ConditionFalse || st.Remotes != nil {
		t.Fatalf("no snapshot: %+v", st)
	}
}

func TestParseBrokerSecret(t *testing.T) {
	s := &corev1.Secret{Data: map[string][]byte{"url": []byte("https://b:8443\n"), "ca.crt": []byte("PEM"), "credential": []byte("c"), "cluster-id": []byte("a")}}
	s.Namespace, s.Name = "tunnelmesh-system", brokersecret.Name
	bi, err := brokersecret.Parse(s)
	if err != nil || bi.URL != "https://b:8443" || bi.ClusterID != "a" || bi.Credential != "c" {
		t.Fatalf("%+v %v", bi, err)
	}
	delete(s.Data, "credential")
	s.Data["cluster-id"] = []byte(" ")
	_, err = brokersecret.Parse(s)
	if err == nil || !strings.Contains(err.Error(), "cluster-id, credential") || !strings.Contains(err.Error(), "meshctl join") {
		t.Fatalf("err = %v", err)
	}
}

func TestInternalIPs(t *testing.T) {
	n := &corev1.Node{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeHostName, Address: "n1"}, {Type: corev1.NodeInternalIP, Address: "172.30.0.2"},
		{Type: corev1.NodeExternalIP, Address: "203.0.113.1"}, {Type: corev1.NodeInternalIP, Address: "fd30::2"}}}}
	if got := InternalIPs(n); !reflect.DeepEqual(got, []netip.Addr{netip.MustParseAddr("172.30.0.2"), netip.MustParseAddr("fd30::2")}) {
		t.Fatal(got)
	}
}

func TestNodeAddrs(t *testing.T) {
	node := func(name string, addrs ...corev1.NodeAddress) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		n.Status.Addresses = addrs
		return n
	}
	in := corev1.NodeInternalIP
	got := NodeAddrs([]*corev1.Node{
		node("b", corev1.NodeAddress{Type: in, Address: "172.18.0.3"}, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.3"}),
		node("a", corev1.NodeAddress{Type: in, Address: "172.18.0.2"}, corev1.NodeAddress{Type: in, Address: "fc00::2"}),
		node("c", corev1.NodeAddress{Type: in, Address: "172.18.0.3"}), // the same address twice: once
		node("d"),
	})
	want := []netip.Addr{netip.MustParseAddr("172.18.0.2"), netip.MustParseAddr("172.18.0.3"), netip.MustParseAddr("fc00::2")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("NodeAddrs = %v, want %v", got, want)
	}
	in2, _ := AgentInput(routeagent.Self{Name: "w"}, ClusterView{Nodes: want}, AgentSettings{})
	if !reflect.DeepEqual(in2.Nodes, want) {
		t.Errorf("AgentInput passes nodes %v, want %v", in2.Nodes, want)
	}
}

// The active gateway refused b's 10.70.0.0/16 (it covers the API server):
// the status says so, and every route agent's input carries the refusal.
func TestGatewayRefusalsReachTheAgents(t *testing.T) {
	snap := &api.Snapshot{Revision: 3, Clusters: []api.Cluster{
		{ID: "a", PodCIDRs: []string{"10.244.0.0/16"}, TunnelIP: "100.64.0.1"},
		{ID: "b", PodCIDRs: []string{"10.60.0.0/16", "10.70.0.0/16"}, TunnelIP: "100.64.0.2"}}}
	refused := []gateway.RefusedCIDR{{Cluster: "b", CIDR: netip.MustParsePrefix("10.70.0.0/16"),
		Covers: netip.MustParseAddr("10.70.0.9"), What: "the local API server"}}
	st := BuildStatus(StatusInput{ClusterID: "a", Node: "g1", Epoch: 2, CIDRs: discovery.CIDRs{Pod: pfx("10.244.0.0/16")},
		Snapshot: snap, Refused: refused})
	if len(st.Remotes) != 1 || len(st.Remotes[0].Refused) != 1 || st.Remotes[0].Refused[0].CIDR != "10.70.0.0/16" {
		t.Fatalf("status remotes %+v; want b with 10.70.0.0/16 refused", st.Remotes)
	}
	m := status.MeshGateway{Status: st}
	m.Name = "a"
	in, problems := AgentInput(routeagent.Self{Name: "w"}, ClusterView{Holder: "g1", Gateways: []status.MeshGateway{m}}, AgentSettings{})
	if len(problems) != 0 || len(in.GatewayRefused) != 1 || in.GatewayRefused[0].CIDR != netip.MustParsePrefix("10.70.0.0/16") ||
		!strings.Contains(in.GatewayRefused[0].Reason, "the local API server") {
		t.Fatalf("agent input refusals %+v (%v)", in.GatewayRefused, problems)
	}
}

// The active gateway's node comes back with a new address: the agent's
// view follows it (the VXLAN FDB moves), nothing is cached.
func TestHolderAddressFollowsTheNode(t *testing.T) {
	node := func(ip string) *corev1.Node {
		n := &corev1.Node{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}}}
		n.Name = "g1"
		return n
	}
	v := viewOf("g1", nil, []*corev1.Node{node("172.18.0.2")}, nil)
	if len(v.HolderAddrs) != 1 || v.HolderAddrs[0].String() != "172.18.0.2" {
		t.Fatalf("holder addresses %v", v.HolderAddrs)
	}
	v = viewOf("g1", nil, []*corev1.Node{node("172.18.0.9")}, nil)
	if len(v.HolderAddrs) != 1 || v.HolderAddrs[0].String() != "172.18.0.9" {
		t.Fatalf("after the node came back with 172.18.0.9: holder addresses %v", v.HolderAddrs)
	}
	in, _ := AgentInput(routeagent.Self{Name: "w"}, v, AgentSettings{})
	if in.Active.Addresses[0].String() != "172.18.0.9" {
		t.Fatalf("agent input active %v", in.Active)
	}
}

func TestNameservers(t *testing.T) {
	p := t.TempDir() + "/resolv.conf"
	if err := os.WriteFile(p, []byte("# c\nnameserver 10.0.0.10\nnameserver 127.0.0.53\nsearch x\nnameserver 2001:db8::53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := gateway.Nameservers(p, t.TempDir()+"/missing")
	if len(got) != 2 || got[0].String() != "10.0.0.10" || got[1].String() != "2001:db8::53" {
		t.Fatalf("nameservers %v", got)
	}
}

// A MeshGateway not named after the cluster (planted by anyone who may
// create one: with a higher epoch, naming the holder, with remotes that
// would pull traffic) is not followed; the cluster's own is.
func TestAgentIgnoresOtherMeshGateways(t *testing.T) {
	self := routeagent.Self{Name: "w", Interface: "eth0"}
	addrs := []netip.Addr{netip.MustParseAddr("172.30.0.2")}
	ours := mg("east", "g1", 3, []string{"10.244.0.0/16"}, status.RemoteCluster{Cluster: "west", PodCIDRs: []string{"10.60.0.0/16"}})
	planted := mg("zzz", "g1", 99, []string{"10.244.0.0/16"}, status.RemoteCluster{Cluster: "evil", PodCIDRs: []string{"10.77.0.0/16"}})
	in, _ := AgentInput(self, ClusterView{Holder: "g1", HolderAddrs: addrs, Gateways: []status.MeshGateway{ours, planted}},
		AgentSettings{ClusterID: "east"})
	if !reflect.DeepEqual(in.Remote, pfx("10.60.0.0/16")) {
		t.Errorf("remote CIDRs %v; want only the cluster's own MeshGateway's, 10.60.0.0/16", in.Remote)
	}
	in, _ = AgentInput(self, ClusterView{Holder: "g1", HolderAddrs: addrs, Gateways: []status.MeshGateway{planted}}, AgentSettings{ClusterID: "east"})
	if len(in.Remote) != 0 || len(in.Local) != 0 {
		t.Errorf("from a planted MeshGateway alone: remote %v local %v; want nothing", in.Remote, in.Local)
	}
}

// TestStatusStandbys: the active lists the other candidates, a labelled one
// that memberlist does not see alive as not ready (a failover waits for it).
func TestStatusStandbys(t *testing.T) {
	st := BuildStatus(StatusInput{ClusterID: "a", Node: "g1", Candidates: []election.Candidate{
		{Name: "g1", Ready: true, Labelled: true},
		{Name: "g2", Ready: false, Labelled: true},
		{Name: "g3", Ready: true, Labelled: true},
	}})
	if len(st.Standbys) != 2 || st.Standbys[0].Node != "g2" || st.Standbys[0].Ready || !strings.Contains(st.Standbys[0].Reason, "a failover now waits for it") ||
		st.Standbys[1].Node != "g3" || !st.Standbys[1].Ready || st.Standbys[1].Reason != "" {
		t.Fatalf("standbys %+v", st.Standbys)
	}
}

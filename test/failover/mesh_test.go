package failover

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/deploy"
	"github.com/tunnelmesh/tunnelmesh/internal/kubeapi"
	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/brokersecret"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/election"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/k8stest"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/status"
	"github.com/tunnelmesh/tunnelmesh/pkg/nsenter"
	"github.com/tunnelmesh/tunnelmesh/pkg/testbed"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

const (
	ns        = defaults.Namespace
	podAIP    = "10.244.4.2"
	podBIP    = "10.60.0.2"
	tcpPort   = 7777
	udpPort   = 7778
	clusterA  = "a"
	clusterB  = "b"
	podCIDRA  = "10.244.0.0/16"
	svcCIDRA  = "10.0.0.0/24" // the test apiserver's --service-cluster-ip-range, found through its ServiceCIDR
	podCIDRB  = "10.60.0.0/16"
	svcCIDRB  = "10.96.0.0/24"
	gbIP      = "172.30.0.21"
	workerIP  = "172.30.0.13"
	candidate = "true"
)

// nodeIPs of cluster A's "nodes" (Kubernetes node name -> underlay address).
var nodeIPs = map[string]string{"a-gw1": "172.30.0.11", "a-gw2": "172.30.0.12", "a-worker": workerIP}

// nodeIPsB of cluster B's nodes when B runs in Kubernetes too.
var nodeIPsB = map[string]string{"b-gw1": "172.30.0.21", "b-gw2": "172.30.0.22", "b-worker": "172.30.0.23"}

// options of the test bed.
type options struct {
	// bInK8s: cluster B is a Kubernetes cluster like A (its own apiserver,
	// two candidates, a worker with pod B), not one gateway outside Kubernetes.
	bInK8s bool
	// gossipKey for the broker Secrets (clusterset gossip); nil: none.
	gossipKey []byte
}

// mesh is the whole test bed.
type mesh struct {
	t          testing.TB
	bed        *testbed.Bed
	bin        string
	env        *kubeapi.Env
	client     kubernetes.Interface
	dyn        dynamic.Interface
	broker     *brokertest.Broker
	kubeconfig string
	nsOf       map[string]string // node name (and "b-gw", "pod-a", "pod-b") -> namespace
	procs      map[string]*testbed.Proc
	extraArgs  []string
	podA, podB netns.NsHandle
	// Cluster B's apiserver when it runs in Kubernetes.
	envB        *kubeapi.Env
	clientB     kubernetes.Interface
	kubeconfigB string
	opts        options
	ul          *testbed.Underlay
}

// isolate takes node off the underlay (gone from the network) or back.
func (m *mesh) isolate(node string, off bool) { m.ul.Unplug(m.nsOf[node], off) }

// cutGossip drops the candidates' memberlist traffic (7947, TCP and UDP)
// between node and other in node's namespace, or lets it through again.
func (m *mesh) cutGossip(node, other string, cut bool) {
	ns := m.nsOf[node]
	if !cut {
		m.bed.MustExec(ns, "nft", "delete table inet cutgossip")
		return
	}
	ip := nodeIPs[other]
	script := "add table inet cutgossip\n" +
		"add chain inet cutgossip in { type filter hook input priority -10; }\n" +
		"add chain inet cutgossip out { type filter hook output priority -10; }\n"
	for _, proto := range []string{"udp", "tcp"} {
		for _, dir := range []string{"sport", "dport"} {
			p := fmt.Sprintf("%s %s %d", proto, dir, election.DefaultGossipPort)
			script += "add rule inet cutgossip in ip saddr " + ip + " " + p + " drop\n" +
				"add rule inet cutgossip out ip daddr " + ip + " " + p + " drop\n"
		}
	}
	m.bed.MustExec(ns, "nft", script)
}

func newMesh(t testing.TB) *mesh { return newMeshWith(t, options{}) }

func newMeshWith(t testing.TB, o options) *mesh {
	testbed.Require(t)
	m := &mesh{t: t, bed: testbed.New(t), nsOf: map[string]string{}, procs: map[string]*testbed.Proc{}, opts: o}
	m.bin = testbed.Build(t, "github.com/tunnelmesh/tunnelmesh/cmd/gateway")
	m.env = kubeapi.Start(t)
	m.client = m.env.Client(t)
	var err error
	if m.dyn, err = dynamic.NewForConfig(m.env.Config); err != nil {
		t.Fatal(err)
	}
	objs, err := k8stest.Files(deploy.FS, "namespace.yaml", "gateway/crd-meshgateways.yaml")
	if err != nil {
		t.Fatal(err)
	}
	k8stest.Apply(t, m.env.Config, objs)
	if o.bInK8s {
		m.envB = kubeapi.Start(t)
		m.clientB = m.envB.Client(t)
		k8stest.Apply(t, m.envB.Config, objs)
	}
	// A port below the ephemeral range: a broker outage restarts the broker on it.
	m.broker = brokertest.Start(t, brokertest.Options{Addr: fmt.Sprintf("127.0.0.1:%d", testkit.Ports(t, 1)[0])})

	ul := m.bed.Underlay()
	m.ul = ul
	for _, name := range []string{"a-gw1", "a-gw2", "a-worker"} {
		m.nsOf[name] = m.bed.NS(name[2:])
		ul.Attach(m.nsOf[name], nodeIPs[name]+"/24")
	}
	if o.bInK8s {
		for _, name := range []string{"b-gw1", "b-gw2", "b-worker"} {
			m.nsOf[name] = m.bed.NS("b" + name[2:])
			ul.Attach(m.nsOf[name], nodeIPsB[name]+"/24")
		}
	} else {
		m.nsOf["b-gw"] = m.bed.NS("bgw")
		ul.Attach(m.nsOf["b-gw"], gbIP+"/24")
	}
	for n, s := range m.nsOf {
		m.bed.MustExec(s, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		cidr := podCIDRA
		if strings.HasPrefix(n, "b-") {
			cidr = podCIDRB
		}
		if strings.HasPrefix(n, "a-") || o.bInK8s {
			// A CNI that masquerades every pod packet leaving the pod CIDR, as
			// flannel and kindnet do: the route agent must keep the pod's address.
			m.bed.MustExec(s, "nft", "add table inet cni")
			m.bed.MustExec(s, "nft", "add chain inet cni post { type nat hook postrouting priority srcnat; }")
			m.bed.MustExec(s, "nft", "add rule inet cni post ip saddr "+cidr+" ip daddr != "+cidr+" masquerade")
		}
	}
	m.podA = m.pod("pod-a", "a-worker", podAIP, "10.244.4.1")
	for _, g := range []string{"a-gw1", "a-gw2"} { // the CNI's route to the worker's pods
		m.bed.MustIP(m.nsOf[g], "route", "add", "10.244.4.0/24", "via", workerIP)
	}
	if o.bInK8s {
		m.podB = m.pod("pod-b", "b-worker", podBIP, "10.60.0.1")
		for _, g := range []string{"b-gw1", "b-gw2"} {
			m.bed.MustIP(m.nsOf[g], "route", "add", "10.60.0.0/24", "via", nodeIPsB["b-worker"])
		}
	} else {
		m.podB = m.pod("pod-b", "b-gw", podBIP, "10.60.0.1")
	}

	// The apiserver and the broker listen on the test's loopback; every node
	// reaches them on its own loopback through a forwarder.
	for n, s := range m.nsOf {
		if !strings.HasPrefix(n, "a-") && !strings.HasPrefix(n, "b-") {
			continue // pods
		}
		switch {
		case strings.HasPrefix(n, "a-"):
			m.forward(s, strings.TrimPrefix(m.env.URL, "https://"))
		case o.bInK8s:
			m.forward(s, strings.TrimPrefix(m.envB.URL, "https://"))
		}
		if !strings.HasSuffix(n, "-worker") { // the route agent learns everything from the cluster
			m.forward(s, m.broker.Addr)
		}
	}
	m.kubeconfig = m.writeKubeconfig("a", m.env.URL)
	if o.bInK8s {
		m.kubeconfigB = m.writeKubeconfig("b", m.envB.URL)
	}

	// Cluster A as `meshctl join` leaves it: nodes, the broker Secret.
	_, joinA := m.broker.Join(clusterA, podCIDRA, svcCIDRA)
	_, joinB := m.broker.Join(clusterB, podCIDRB, svcCIDRB)
	m.nodes(m.client, nodeIPs)
	m.brokerSecret(m.client, clusterA, joinA.Credential)
	if o.bInK8s {
		m.nodes(m.clientB, nodeIPsB)
		m.brokerSecret(m.clientB, clusterB, joinB.Credential)
		t.Cleanup(func() {
			if t.Failed() {
				m.dumpLogs()
			}
		})
		return m
	}

	// Cluster B: one gateway outside Kubernetes.
	bdir := filepath.Join(m.bed.Dir, "b-gw")
	must(t, os.MkdirAll(filepath.Join(bdir, "run"), 0o700))
	must(t, os.WriteFile(filepath.Join(bdir, "ca.crt"), m.broker.CA, 0o600))
	must(t, os.WriteFile(filepath.Join(bdir, "credential"), []byte(joinB.Credential), 0o600))
	m.procs["b-gw"] = m.startProc("b-gw", "run", "--cluster-id", clusterB,
		"--pod-cidr", podCIDRB, "--service-cidr", svcCIDRB, "--broker", m.broker.URL, "--ca-file", filepath.Join(bdir, "ca.crt"),
		"--credential-file", filepath.Join(bdir, "credential"), "--key-file", filepath.Join(bdir, "private.key"),
		"--private-ip", gbIP, "--mtu", "1420", "--wireguard", "userspace", "--run-dir", filepath.Join(bdir, "run"),
		"--metrics", "", "--log-level", "debug")
	t.Cleanup(func() {
		if t.Failed() {
			m.dumpLogs()
		}
	})
	return m
}

// nodes creates a cluster's Node objects ("*-worker" is no candidate).
func (m *mesh) nodes(c kubernetes.Interface, ips map[string]string) {
	ctx := context.Background()
	for name, ip := range ips {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
		if !strings.HasSuffix(name, "-worker") {
			n.Labels[election.CandidateLabel] = candidate
		}
		m.retry("create node "+name, func() error {
			created, err := c.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				created, err = c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			}
			if err != nil {
				return err
			}
			created.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}}
			_, err = c.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
			return err
		})
	}
}

// brokerSecret writes the Secret `meshctl join` leaves.
func (m *mesh) brokerSecret(c kubernetes.Interface, cluster, credential string) {
	data := map[string][]byte{brokersecret.KeyURL: []byte(m.broker.URL), brokersecret.KeyCA: m.broker.CA,
		brokersecret.KeyCredential: []byte(credential), brokersecret.KeyClusterID: []byte(cluster)}
	if m.opts.gossipKey != nil {
		data[brokersecret.KeyGossip] = []byte(base64.StdEncoding.EncodeToString(m.opts.gossipKey))
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: brokersecret.Name, Namespace: ns}, Data: data}
	m.retry("create the broker Secret", func() error {
		_, err := c.CoreV1().Secrets(ns).Create(context.Background(), sec, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
}

func (m *mesh) writeKubeconfig(name, url string) string {
	p := filepath.Join(m.bed.Dir, "kubeconfig-"+name)
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: %q}}]
contexts: [{name: c, context: {cluster: c, user: admin}}]
current-context: c
`, url, kubeapi.Token)
	must(m.t, os.WriteFile(p, []byte(kc), 0o600))
	return p
}

// retry repeats an apiserver call through transient errors (a fresh
// apiserver may reset connections while it finishes starting).
func (m *mesh) retry(what string, f func() error) {
	m.t.Helper()
	var err error
	for i := 0; i < 50; i++ {
		if err = f(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	m.t.Fatalf("%s: %v", what, err)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// pod makes a pod namespace behind node with ip, its gateway gw on the node.
func (m *mesh) pod(name, nodeName, ip, gw string) netns.NsHandle {
	s := m.bed.NS(name)
	m.nsOf[name] = s
	m.bed.Veth(s, "eth0", m.nsOf[nodeName], "vpod")
	m.bed.MustIP(s, "addr", "add", ip+"/24", "dev", "eth0")
	m.bed.MustIP(s, "route", "add", "default", "via", gw)
	m.bed.MustIP(m.nsOf[nodeName], "addr", "add", gw+"/24", "dev", "vpod")
	h, err := netns.GetFromName(s)
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { h.Close() })
	return h
}

// forward listens on addr inside namespace s and relays every connection to
// the same addr on the test's own loopback.
func (m *mesh) forward(s, addr string) {
	h, err := netns.GetFromName(s)
	if err != nil {
		m.t.Fatal(err)
	}
	defer h.Close()
	var ln net.Listener
	must(m.t, nsenter.Do(h, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}))
	m.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err != nil {
					return
				}
				defer u.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
				<-done
			}()
		}
	}()
}

// start runs `gateway k8s` on a node of cluster A (or of B when it runs in Kubernetes).
func (m *mesh) start(name string) {
	dir := filepath.Join(m.bed.Dir, name)
	must(m.t, os.MkdirAll(filepath.Join(dir, "run"), 0o700))
	kubeconfig, cidrs := m.kubeconfig, []string{"--pod-cidr", podCIDRA}
	if strings.HasPrefix(name, "b-") {
		kubeconfig, cidrs = m.kubeconfigB, []string{"--pod-cidr", podCIDRB, "--service-cidr", svcCIDRB}
	}
	args := append([]string{"k8s", "--kubeconfig", kubeconfig, "--node-name", name, cidrs[0], cidrs[1]}, cidrs[2:]...)
	args = append(append(args,
		"--wireguard", "userspace", "--run-dir", filepath.Join(dir, "run"), "--state-file", filepath.Join(dir, "state.json"),
		"--metrics", "", "--status-interval", "1s", "--heartbeat-interval", "2s", "--log-level", "debug"), m.extraArgs...)
	m.procs[name] = m.startProc(name, args...)
}

// startProc runs the gateway binary in the namespace of name.
func (m *mesh) startProc(name string, args ...string) *testbed.Proc {
	return m.bed.Start(m.nsOf[name], name, nil, m.bin, args...)
}

func (m *mesh) dumpLogs() {
	for _, p := range m.procs {
		select {
		case <-p.Done():
		default:
			_ = syscall.Kill(p.Pid(), syscall.SIGQUIT) // a goroutine dump in its log
		}
	}
	time.Sleep(time.Second)
	if dir := os.Getenv("FAILOVER_LOG_DIR"); dir != "" {
		for name, p := range m.procs {
			_ = os.MkdirAll(dir, 0o755)
			_ = os.WriteFile(filepath.Join(dir, name+".log"), []byte(readFile(p.Log)), 0o644)
		}
	}
	for name, p := range m.procs {
		m.t.Logf("---- %s (%s) last log:\n%s", name, p.Log, p.Tail(8000))
	}
	for n := range m.procs {
		out, _ := m.bed.IP(m.nsOf[n], "route")
		m.t.Logf("---- routes of %s:\n%s", n, out)
	}
}

// holder reads the Lease: the active node and the epoch.
func (m *mesh) holder(ctx context.Context) (string, int64, error) {
	l, err := m.client.CoordinationV1().Leases(ns).Get(ctx, election.DefaultLeaseName, metav1.GetOptions{})
	if err != nil {
		return "", 0, err
	}
	h, e := election.LeaseHolder(l)
	return h, e, nil
}

// waitHolder waits for a holder other than not (any holder when not is "").
func (m *mesh) waitHolder(timeout time.Duration, not string) (string, int64, time.Time) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		h, e, err := m.holder(ctx)
		if err == nil && h != "" && h != not {
			return h, e, time.Now()
		}
		if ctx.Err() != nil {
			m.t.Fatalf("no new Lease holder (other than %q) within %s (last: %q, %v)", not, timeout, h, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// meshGateway reads cluster A's status.
func (m *mesh) meshGateway() (*status.MeshGateway, error) {
	return status.Get(context.Background(), m.dyn, ns, clusterA)
}

// arrivals records when data arrives, for a TCP or UDP flow.
type arrivals struct {
	mu    sync.Mutex
	times []time.Time
	seqs  map[uint64]bool
	from  atomic.Value // string: the source address seen
}

func (a *arrivals) add(t time.Time, seq uint64, hasSeq bool) {
	a.mu.Lock()
	a.times = append(a.times, t)
	if hasSeq {
		a.seqs[seq] = true
	}
	a.mu.Unlock()
}

func (a *arrivals) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.times)
}

// resumedAfter is how long after t the flow moved again: the end of the
// longest silence that starts after t-200ms (the outage), minus t. When no
// silence is longer than minGap the flow never stopped, and the longest gap
// itself is returned (zero when nothing arrived).
func (a *arrivals) resumedAfter(t time.Time, minGap time.Duration) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	var best time.Duration
	var end time.Time
	for i := 1; i < len(a.times); i++ {
		if a.times[i-1].Before(t.Add(-200 * time.Millisecond)) {
			continue
		}
		if g := a.times[i].Sub(a.times[i-1]); g > best {
			best, end = g, a.times[i]
		}
	}
	if best < minGap {
		return best
	}
	return end.Sub(t)
}

// longestGapAfter is the longest silence that started after t.
func (a *arrivals) longestGapAfter(t time.Time) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	var best time.Duration
	for i := 1; i < len(a.times); i++ {
		if !a.times[i-1].Before(t) {
			best = max(best, a.times[i].Sub(a.times[i-1]))
		}
	}
	return best
}

// gapsAfter lists the silences longer than min that started after t, as
// "+start (length)" relative to t.
func (a *arrivals) gapsAfter(t time.Time, min time.Duration) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var parts []string
	for i := 1; i < len(a.times); i++ {
		if a.times[i-1].Before(t) {
			continue
		}
		if g := a.times[i].Sub(a.times[i-1]); g > min {
			parts = append(parts, fmt.Sprintf("+%.2fs (%v)", a.times[i-1].Sub(t).Seconds(), g.Round(time.Millisecond)))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// lostBetween counts sequence numbers in [from, to) never received.
func (a *arrivals) lostBetween(from, to uint64) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for s := from; s < to; s++ {
		if !a.seqs[s] {
			n++
		}
	}
	return n
}

// flows runs a TCP flow (a byte every 10 ms) and a UDP stream (a numbered
// datagram every 10 ms) from pod A to pod B until the test ends.
type flows struct {
	tcp, udp *arrivals
	udpSeq   atomic.Uint64
}

func (m *mesh) startFlows() *flows {
	f := &flows{tcp: &arrivals{seqs: map[uint64]bool{}}, udp: &arrivals{seqs: map[uint64]bool{}}}
	var ln net.Listener
	var pc net.PacketConn
	must(m.t, nsenter.Do(m.podB, func() (err error) {
		if ln, err = net.Listen("tcp", net.JoinHostPort(podBIP, fmt.Sprint(tcpPort))); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", net.JoinHostPort(podBIP, fmt.Sprint(udpPort)))
		return err
	}))
	m.t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.tcp.from.Store(c.RemoteAddr().(*net.TCPAddr).IP.String())
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						f.tcp.add(time.Now(), 0, false)
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var seq uint64
			if _, err := fmt.Sscanf(string(buf[:n]), "%d", &seq); err == nil {
				f.udp.from.Store(from.(*net.UDPAddr).IP.String())
				f.udp.add(time.Now(), seq, true)
			}
		}
	}()

	// The TCP dial succeeds once the mesh is up.
	var c net.Conn
	deadline := time.Now().Add(25 * time.Second)
	for {
		err := nsenter.Do(m.podA, func() (err error) {
			c, err = net.DialTimeout("tcp", net.JoinHostPort(podBIP, fmt.Sprint(tcpPort)), 2*time.Second)
			return err
		})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("pod A never reached pod B over TCP: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var uc net.Conn
	must(m.t, nsenter.Do(m.podA, func() (err error) {
		uc, err = net.Dial("udp", net.JoinHostPort(podBIP, fmt.Sprint(udpPort)))
		return err
	}))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	m.t.Cleanup(func() { cancel(); c.Close(); uc.Close(); wg.Wait() })
	wg.Add(2)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := c.Write([]byte{'x'}); err != nil {
				if !errors.Is(err, net.ErrClosed) {
					m.t.Logf("TCP flow ended: %v", err)
				}
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			_, _ = fmt.Fprintf(uc, "%d", f.udpSeq.Add(1))
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return f
}

// waitFlowing waits until both flows deliver.
func (f *flows) waitFlowing(t testing.TB, timeout time.Duration) {
	t.Helper()
	err := testkit.Poll(timeout, 20*time.Millisecond, func() error {
		n1, n2 := f.tcp.count(), f.udp.count()
		time.Sleep(100 * time.Millisecond)
		if f.tcp.count() == n1 || f.udp.count() == n2 {
			return fmt.Errorf("flow not moving (tcp %d, udp %d arrivals)", n1, n2)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

package diagnose

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/dns"
)

// Result of a check.
type Result string

// Results, from best to worst.
const (
	Pass Result = "pass"
	Warn Result = "warn"
	Fail Result = "fail"
	// Skip: the check could not run because something it reads is missing;
	// another check fails for that.
	Skip Result = "skip"
)

// Finding is one check's verdict.
type Finding struct {
	Check  string `json:"check"`
	Result Result `json:"result"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Thresholds the checks use.
const (
	// StatusFresh: the active gateway writes its MeshGateway every 5 s.
	StatusFresh = 30 * time.Second
	// HandshakeFresh: WireGuard re-handshakes at least every 2 min on a
	// link with keepalives; a peer without one for longer is down (the
	// gateway itself marks it so after 2m10s).
	HandshakeFresh = 3 * time.Minute
	// SkewWarn and SkewFail bound the clock spread between gateway
	// candidates: they share one WireGuard key, and a peer rejects a
	// handshake whose TAI64N timestamp is older than the last it accepted
	// for that key, so a new active gateway whose clock is behind the old
	// one's waits out the difference before its tunnels come up.
	SkewWarn = 1500 * time.Millisecond
	SkewFail = 3 * time.Second
	// LeaseGrace: the Lease is renewed every 200 ms; its renewals are
	// timed at 1 s resolution here.
	LeaseGrace = 2 * time.Second
)

// CondCIDRsMatch is the MeshGateway condition the gateway sets
// (pkg/k8s/node.CondCIDRsMatch; a test keeps them equal without linking
// the data plane into meshctl).
const CondCIDRsMatch = "CIDRsMatchBroker"

// Check is one named check.
type Check struct {
	Name string
	Run  func(Facts) Finding
}

// Checks in the order they print.
var Checks = []Check{
	{"broker", checkBroker},
	{"cidr-overlap", checkOverlap},
	{"cidrs-match-broker", checkCIDRsMatch},
	{"translation", checkTranslation},
	{"components", checkComponents},
	{"active-gateway", checkActive},
	{"standby-gateways", checkStandbys},
	{"tun-device", checkTUN},
	{"mtu-mss", checkMTU},
	{"kube-proxy", checkKubeProxy},
	{"coredns", checkCoreDNS},
	{"nodelocal-dns", checkNodeLocal},
	{"wireguard-udp", checkWireGuard},
	{"clock-skew", checkClock},
}

// Run runs every check on f.
func Run(f Facts) []Finding {
	out := make([]Finding, 0, len(Checks))
	for _, c := range Checks {
		r := c.Run(f)
		r.Check = c.Name
		out = append(out, r)
	}
	return out
}

// Failed counts the failed findings.
func Failed(fs []Finding) int {
	n := 0
	for _, f := range fs {
		if f.Result == Fail {
			n++
		}
	}
	return n
}

func pass(format string, a ...any) Finding {
	return Finding{Result: Pass, Detail: fmt.Sprintf(format, a...)}
}

func warn(fix, format string, a ...any) Finding {
	return Finding{Result: Warn, Detail: fmt.Sprintf(format, a...), Fix: fix}
}

func fail(fix, format string, a ...any) Finding {
	return Finding{Result: Fail, Detail: fmt.Sprintf(format, a...), Fix: fix}
}

func skip(format string, a ...any) Finding {
	return Finding{Result: Skip, Detail: fmt.Sprintf(format, a...)}
}

func checkBroker(f Facts) Finding {
	if f.BrokerErr != "" {
		return fail("check that the broker runs and that this host reaches it (`meshctl show clusters`); tunnels keep working meanwhile",
			"cannot read the broker: %s", f.BrokerErr)
	}
	for _, c := range f.Members {
		if c.ID == f.ClusterID {
			return pass("cluster %q is a member; the broker knows %d cluster(s)", f.ClusterID, len(f.Members))
		}
	}
	return fail("run `meshctl join` again to re-register it", "the broker has no record of cluster %q", f.ClusterID)
}

// checkOverlap runs the clusterset's address rule (api.CheckMesh, which
// the broker keeps at every join and translation) over the members: with
// translation, CIDRs may overlap as long as every cluster's mesh CIDRs
// (mapped where translated) are unique and overlap no member's real ones.
// Members restored from an old backup, or records changed by hand, are
// caught here.
func checkOverlap(f Facts) Finding {
	if f.BrokerErr != "" {
		return skip("no member list (the broker could not be read)")
	}
	var problems []string
	for _, c := range f.Members {
		for _, s := range append(append([]string{}, c.PodCIDRs...), c.ServiceCIDRs...) {
			if _, err := netip.ParsePrefix(s); err != nil {
				problems = append(problems, fmt.Sprintf("cluster %q has an invalid CIDR %q", c.ID, s))
			}
		}
	}
	problems = append(problems, api.CheckMesh(f.Members)...)
	if len(problems) > 0 {
		return fail("translate one cluster of each overlapping pair (`meshctl translate CLUSTER` with the broker's admin credential): the change rolls through the clusterset without a restart",
			"%s", strings.Join(problems, "; "))
	}
	n := 0
	for _, c := range f.Members {
		if c.Translated() {
			n++
		}
	}
	if n > 0 {
		return pass("every member has its own mesh addresses; %d of the %d member(s) are known by mapped CIDRs where theirs overlap", n, len(f.Members))
	}
	return pass("no pod or service CIDR of the %d member(s) overlaps another", len(f.Members))
}

// checkTranslation: this cluster's translation as the broker records it,
// and whether the active gateway has taken it (its MeshGateway status
// carries the translations of the broker state it applied).
func checkTranslation(f Facts) Finding {
	if f.BrokerErr != "" {
		return skip("no broker record (the broker could not be read)")
	}
	var self *api.Cluster
	for i := range f.Members {
		if f.Members[i].ID == f.ClusterID {
			self = &f.Members[i]
		}
	}
	if self == nil {
		return skip("cluster %q is not a member", f.ClusterID)
	}
	var remote []string
	for _, c := range f.Members {
		if c.ID != f.ClusterID && c.Translated() {
			remote = append(remote, fmt.Sprintf("%s (%s)", c.ID, api.DescribeTranslations(c.Translations)))
		}
	}
	others := ""
	if len(remote) > 0 {
		others = "; reached at mapped CIDRs here: " + strings.Join(remote, ", ")
	}
	if !self.Translated() {
		return pass("not translated: this cluster's pods keep their own addresses across the mesh%s", others)
	}
	if f.MeshGateway == nil {
		return skip("translated (%s) but no MeshGateway status to compare", api.DescribeTranslations(self.Translations))
	}
	if got := f.MeshGateway.Status.Translations; !slices.Equal(got, self.Translations) {
		return fail("the active gateway follows the broker's watch: check its log (`kubectl -n "+defaults.Namespace+" logs` of the active gateway pod) and that it reaches the broker",
			"the broker translates %s, the active gateway applied %q", api.DescribeTranslations(self.Translations), api.DescribeTranslations(got))
	}
	return pass("translated: %s; other clusters see this cluster's pods at their mapped addresses, so NetworkPolicies there name the mapped CIDRs%s",
		api.DescribeTranslations(self.Translations), others)
}

func checkCIDRsMatch(f Facts) Finding {
	if f.MeshGateway == nil {
		return skip("no MeshGateway status to read")
	}
	for _, c := range f.MeshGateway.Status.Conditions {
		if c.Type != CondCIDRsMatch {
			continue
		}
		if c.Status == "True" {
			return pass("the CIDRs found in the cluster equal the broker's record")
		}
		return fail("routes follow the broker's record: if the cluster's CIDRs changed, `meshctl leave` and `meshctl join` again (or pass --pod-cidr/--service-cidr)",
			"%s: %s", c.Reason, c.Message)
	}
	return skip("the active gateway has not reported a CIDR comparison yet")
}

// checkComponents: a route-agent pod ready on every Ready node, a gateway
// pod ready on every Ready candidate node, and every DaemonSet and
// Deployment of ours ready.
func checkComponents(f Facts) Finding {
	onNode := map[string]map[string]Pod{"gateway": {}, "route-agent": {}} // component -> node -> pod
	for _, p := range f.Pods {
		if m, ok := onNode[p.Component]; ok {
			m[p.Node] = p
		}
	}
	var problems []string
	for _, n := range f.Nodes {
		if !n.Ready {
			continue
		}
		need := []string{"route-agent"}
		if n.Gateway {
			need = append(need, "gateway")
		}
		for _, comp := range need {
			p, ok := onNode[comp][n.Name]
			switch {
			case !ok && comp == "gateway":
				problems = append(problems, "no gateway pod on candidate node "+n.Name)
			case !ok:
				problems = append(problems, "no route-agent pod on node "+n.Name)
			case !p.Ready:
				why := p.Waiting
				if why == "" && p.LastError != "" {
					why = "last exit: " + p.LastError
				}
				if why == "" {
					why = "not ready"
				}
				problems = append(problems, fmt.Sprintf("pod %s on %s: %s", p.Name, n.Name, why))
			}
		}
	}
	for _, w := range f.Workloads {
		if w.Desired == 0 || w.Ready < w.Desired {
			problems = append(problems, fmt.Sprintf("%s %s: %d/%d ready", w.Kind, w.Name, w.Ready, w.Desired))
		}
	}
	if len(f.Workloads) == 0 {
		problems = append(problems, "no tunnelmesh DaemonSet or Deployment in tunnelmesh-system")
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fail("kubectl -n tunnelmesh-system get pods -o wide; kubectl -n tunnelmesh-system logs POD; run `meshctl join` again if components are missing",
			"%s", strings.Join(problems, "; "))
	}
	ready := 0
	for _, n := range f.Nodes {
		if n.Ready {
			ready++
		}
	}
	return pass("gateway/route-agent pods ready on all %d Ready node(s); %d workload(s) ready", ready, len(f.Workloads))
}

// activeHosts are this cluster's active, non-stale gateways in the broker.
func activeHosts(f Facts) []string {
	var out []string
	for _, g := range f.Gateways {
		if g.ClusterID == f.ClusterID && g.Active && !g.Stale {
			out = append(out, g.Hostname)
		}
	}
	sort.Strings(out)
	return out
}

func checkActive(f Facts) Finding {
	candidates := 0
	for _, n := range f.Nodes {
		if n.Gateway {
			candidates++
		}
	}
	if candidates == 0 {
		return fail("label a node: kubectl label node NODE tunnelmesh.io/gateway=true (or run `meshctl join` again)", "no node is labelled tunnelmesh.io/gateway=true")
	}
	m := f.MeshGateway
	if m == nil || m.Status.ActiveNode == "" {
		return fail("kubectl -n tunnelmesh-system logs -l app.kubernetes.io/component=gateway (on a node labelled tunnelmesh.io/gateway=true)",
			"no active gateway: the MeshGateway %q names none", f.ClusterID)
	}
	age := f.Now.Sub(f.StatusWrittenAt)
	if f.StatusWrittenAt.IsZero() || age > StatusFresh {
		return fail("the active gateway on "+m.Status.ActiveNode+" stopped writing its status: kubectl -n tunnelmesh-system logs on that node's gateway pod",
			"MeshGateway status last written %s ago (an active gateway writes it every 5s)", age.Round(time.Second))
	}
	switch l := f.Lease; {
	case l == nil || l.Holder == "":
		return fail("kubectl -n tunnelmesh-system logs -l app.kubernetes.io/component=gateway (on a node labelled tunnelmesh.io/gateway=true)",
			"the election's Lease tunnelmesh-gateway has no holder, yet the MeshGateway names %s", m.Status.ActiveNode)
	case f.Now.Sub(l.RenewedAt) > l.Duration+LeaseGrace:
		return fail("the gateway on "+l.Holder+" stopped renewing: check that node and its gateway pod's logs; a standby takes over once memberlist or the Lease says so",
			"the Lease holder %s last renewed %s ago (lease %s)", l.Holder, f.Now.Sub(l.RenewedAt).Round(time.Second), l.Duration)
	case l.Holder != m.Status.ActiveNode:
		return warn("wait a few seconds (a failover is settling); if it persists, check both gateways' logs",
			"the Lease is held by %s but the MeshGateway names %s", l.Holder, m.Status.ActiveNode)
	}
	if f.BrokerErr == "" {
		act := activeHosts(f)
		switch {
		case len(act) == 0:
			return fail("the active gateway cannot register: check its logs and `meshctl show gateways`",
				"%s is active in the cluster but the broker has no live active gateway of %q", m.Status.ActiveNode, f.ClusterID)
		case len(act) > 1:
			return fail("the broker fences by epoch; a second active means a stale record: check `meshctl show gateways`",
				"the broker lists %d active gateways of %q: %s", len(act), f.ClusterID, strings.Join(act, ", "))
		case act[0] != m.Status.ActiveNode:
			return warn("wait a few seconds (a failover is settling); if it persists, check both gateways' logs",
				"the cluster's active gateway is %s but the broker's is %s", m.Status.ActiveNode, act[0])
		}
	}
	return pass("%s is the one active gateway (epoch %d, %d candidate node(s)), status written %s ago",
		m.Status.ActiveNode, m.Status.Epoch, candidates, age.Round(time.Second))
}

// checkTUN: the gateway opens /dev/net/tun at start and exits when it
// cannot; the DaemonSet mounts it as a CharDevice hostPath, so a node
// without it leaves the pod ContainerCreating with a FailedMount event.
func checkTUN(f Facts) Finding {
	// Events live for an hour: only those of pods still not ready count.
	notReady := map[string]bool{}
	for _, p := range f.Pods {
		if !p.Ready {
			notReady["pod/"+p.Name] = true
		}
	}
	var problems []string
	for _, e := range f.Events {
		if notReady[e.Object] && strings.Contains(e.Message, "/dev/net/tun") {
			problems = append(problems, fmt.Sprintf("%s: %s", e.Object, e.Message))
		}
	}
	for _, p := range f.Pods {
		for _, s := range []string{p.Waiting, p.LastError} {
			if strings.Contains(strings.ToLower(s), "tun") && strings.Contains(s, "/dev/net") {
				problems = append(problems, fmt.Sprintf("pod %s on %s: %s", p.Name, p.Node, s))
			}
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fail("load the tun module on the node (modprobe tun) so /dev/net/tun exists, then delete the gateway pod",
			"%s", strings.Join(problems, "; "))
	}
	m := f.MeshGateway
	if m == nil || m.Status.ActiveNode == "" {
		return skip("no active gateway to look at")
	}
	for _, p := range f.Pods {
		if p.Component == "gateway" && p.Node == m.Status.ActiveNode && p.Ready {
			return pass("the active gateway on %s runs, so it opened its TUN/WireGuard device", p.Node)
		}
	}
	return warn("kubectl -n tunnelmesh-system get pods -o wide", "no ready gateway pod on the active node %s to vouch for its device", m.Status.ActiveNode)
}

// checkStandbys: a standby the active does not see in the candidates'
// memberlist cannot take over at once; a failover then waits for it.
func checkStandbys(f Facts) Finding {
	m := f.MeshGateway
	if m == nil || f.Now.Sub(f.StatusWrittenAt) > StatusFresh {
		return skip("no fresh MeshGateway status to read the standbys from")
	}
	var ready, not []string
	for _, s := range m.Status.Standbys {
		if s.Ready {
			ready = append(ready, s.Node)
		} else {
			not = append(not, fmt.Sprintf("%s (%s)", s.Node, s.Reason))
		}
	}
	switch {
	case len(not) > 0:
		return warn("check the gateway pods on those nodes (`kubectl -n tunnelmesh-system get pods -o wide`) and that UDP/TCP 7947 passes between candidates",
			"standby not ready: %s; a failover now waits for it", strings.Join(not, ", "))
	case len(ready) == 0:
		return warn("label a second node tunnelmesh.io/gateway=true to have a standby",
			"no standby: the active gateway %s is the only candidate, so nothing takes over when it fails", m.Status.ActiveNode)
	}
	return pass("standby ready to take over: %s", strings.Join(ready, ", "))
}

// checkMTU passes only on a measurement: the active gateway sends a
// full-size don't-fragment probe through the tunnel to every remote
// cluster every ~10 s and reports whether it came back whole
// (status.remotes[].pathMTU, pathMTULost). Without one it says why it could
// not judge; a --mtu flag is checked for sense either way.
func checkMTU(f Facts) Finding {
	mtu := 0
	for _, a := range f.GatewayArgs {
		if v, ok := strings.CutPrefix(a, "--mtu="); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fail("set --mtu to a number in the gateway DaemonSet", "invalid gateway argument %q", a)
			}
			mtu = n
		}
	}
	if mtu != 0 && mtu < 1280 {
		return fail(fmt.Sprintf("set --mtu to at least 1280 (IPv6's minimum), ideally underlay MTU - %d", defaults.WireGuardOverhead), "tunnel MTU %d is below IPv6's minimum 1280", mtu)
	}
	var lost, ok, unmeasured []string
	size := 0
	if m := f.MeshGateway; m != nil {
		for _, r := range m.Status.Remotes {
			switch {
			case r.PathMTULost > 0:
				lost = append(lost, fmt.Sprintf("%s (%d-byte packets)", r.Cluster, r.PathMTULost))
			case r.PathMTU > 0:
				ok, size = append(ok, r.Cluster), r.PathMTU
			default:
				unmeasured = append(unmeasured, fmt.Sprintf("%s (%s)", r.Cluster, r.Status))
			}
		}
	}
	if len(lost) > 0 {
		return fail("lower the tunnel MTU (--mtu on the gateway DaemonSet: the smallest underlay MTU on the way - WireGuard's overhead), or let ICMP \"fragmentation needed\" through",
			"full-size packets through the tunnel are lost to %s while small ones arrive: a hop on the way carries less than the tunnel MTU plus WireGuard's overhead", strings.Join(lost, ", "))
	}
	why := ""
	switch {
	case f.MeshGateway == nil:
		why = "no MeshGateway status (no active gateway has written one)"
	case f.Now.Sub(f.StatusWrittenAt) > StatusFresh:
		why = fmt.Sprintf("the MeshGateway status was last written %s ago", f.Now.Sub(f.StatusWrittenAt).Round(time.Second))
	case len(f.MeshGateway.Status.Remotes) == 0:
		why = "no remote cluster to probe"
	case len(unmeasured) > 0:
		why = fmt.Sprintf("no full-size probe answered yet to %s (the active gateway sends one every ~10 s once a tunnel is up)", strings.Join(unmeasured, ", "))
	}
	if why == "" {
		return pass("full-size packets (tunnel MTU %d) crossed the tunnel both ways to %s, probed by the active gateway with don't-fragment within the last minute; TCP MSS clamped to it",
			size, strings.Join(ok, ", "))
	}
	if mtu > 1500-defaults.WireGuardOverhead {
		return warn(fmt.Sprintf("unless every underlay has jumbo frames, set --mtu ≤ underlay MTU - %d (%d for 1500), or drop it to let the gateway choose",
			defaults.WireGuardOverhead, 1500-defaults.WireGuardOverhead),
			"tunnel MTU %d needs an underlay MTU of at least %d, and the path is not measured: %s", mtu, mtu+defaults.WireGuardOverhead, why)
	}
	return skip("path MTU not measured: %s", why)
}

// checkKubeProxy: ClusterSetIP imports are derived Services that kube-proxy
// (or a replacement) load-balances; the route agent keeps pod sources from
// being masqueraded with a netfilter NAT chain, so kube-proxy modes built on
// netfilter are what it is made for.
func checkKubeProxy(f Facts) Finding {
	k := f.KubeProxy
	if !k.ConfigFound && !k.DaemonSet {
		return warn("make sure your kube-proxy replacement load-balances Services (ClusterSetIP imports are Services with EndpointSlices from other clusters)",
			"no kube-proxy in kube-system")
	}
	mode := k.Mode
	if mode == "" {
		mode = "iptables"
		if !k.ConfigFound {
			mode = "unknown (no ConfigMap kube-system/kube-proxy; default iptables)"
		}
	}
	switch k.Mode {
	case "", "iptables", "nftables":
		return pass("kube-proxy mode %s: netfilter, as the mesh needs (derived ClusterSetIP Services, no masquerade of remote pods)", mode)
	case "ipvs":
		return warn("iptables or nftables mode is what tunnelmesh is tested with; with ipvs, check that remote clients' pod IPs reach your pods unmasqueraded",
			"kube-proxy mode ipvs is not covered by tunnelmesh's tests")
	}
	return fail("run kube-proxy in iptables or nftables mode", "kube-proxy mode %q is not one the mesh works with (iptables, nftables)", k.Mode)
}

func checkCoreDNS(f Facts) Finding {
	if !f.DNS.CorefileFound {
		return warn("make your cluster DNS serve clusterset.local from ServiceImports (CoreDNS: `multicluster clusterset.local` in its kubernetes plugin)",
			"no ConfigMap kube-system/coredns")
	}
	_, changed, err := dns.EnableMulticluster(f.DNS.Corefile, dns.Zone)
	switch {
	case err != nil:
		return warn("add `multicluster clusterset.local` to the kubernetes plugin of the Corefile yourself", "cannot read the Corefile: %v", err)
	case changed:
		return fail("run `meshctl join` again (it edits the Corefile), or add clusterset.local with `multicluster clusterset.local` to CoreDNS's kubernetes plugin",
			"CoreDNS does not serve clusterset.local")
	}
	return pass("CoreDNS serves clusterset.local (kubernetes plugin, multicluster)")
}

func checkNodeLocal(f Facts) Finding {
	if !f.DNS.NodeLocal {
		return pass("no NodeLocal DNSCache: pods ask CoreDNS directly")
	}
	if strings.Contains(f.DNS.NodeLocalCorefile, dns.Zone) {
		return pass("NodeLocal DNSCache has a %s block", dns.Zone)
	}
	return warn("add a clusterset.local:53 block to ConfigMap kube-system/node-local-dns forwarding to kube-dns, like its cluster.local block",
		"NodeLocal DNSCache answers pods first and has no %s block: names may not resolve", dns.Zone)
}

// checkWireGuard: a WireGuard handshake needs UDP both ways between the two
// gateways' endpoints, so a recent handshake proves the port reachable.
// Ages are taken at the status write, on the gateway's own clock.
func checkWireGuard(f Facts) Finding {
	m := f.MeshGateway
	if m == nil || m.Status.ActiveNode == "" {
		return skip("no active gateway status to read")
	}
	if len(m.Status.Remotes) == 0 {
		return pass("no other member yet")
	}
	ref := f.Now
	if m.Status.UpdatedAt != nil {
		ref = m.Status.UpdatedAt.Time
	}
	var ok, problems, unhealthy []string
	for _, r := range m.Status.Remotes {
		where := r.Cluster
		if r.Endpoint != "" {
			where += " (" + r.Endpoint + ")"
		}
		switch {
		case r.LastHandshake == nil || r.LastHandshake.IsZero():
			why := r.Status
			if r.Reason != "" {
				why += ": " + r.Reason
			}
			problems = append(problems, fmt.Sprintf("%s: never a handshake (%s)", where, why))
		case ref.Sub(r.LastHandshake.Time) > HandshakeFresh:
			problems = append(problems, fmt.Sprintf("%s: last handshake %s ago", where, ref.Sub(r.LastHandshake.Time).Round(time.Second)))
		default:
			ok = append(ok, fmt.Sprintf("%s %s ago", r.Cluster, ref.Sub(r.LastHandshake.Time).Round(time.Second)))
			if r.Status != api.StatusConnected {
				unhealthy = append(unhealthy, fmt.Sprintf("%s is %s: %s", r.Cluster, r.Status, r.Reason))
			}
		}
	}
	if len(problems) > 0 {
		return fail(fmt.Sprintf("allow UDP %d (the gateways' --listen-port) both ways between the gateway nodes' endpoints (firewalls, security groups, NAT); `meshctl show gateways` lists them", defaults.ListenPort),
			"%s", strings.Join(problems, "; "))
	}
	if len(unhealthy) > 0 {
		return warn("the WireGuard port passes, but the tunnel is not healthy: `meshctl show connections` and the gateway's logs tell why",
			"recent handshakes (%s), yet %s", strings.Join(ok, ", "), strings.Join(unhealthy, "; "))
	}
	return pass("recent handshakes with every remote gateway: %s", strings.Join(ok, ", "))
}

// checkClock compares the gateway candidates' clocks (estimated from their
// kubelets' Leases, 1 s resolution) with each other and the API server.
// Other clusters' gateways are judged by running diagnose there.
func checkClock(f Facts) Finding {
	type off struct {
		node string
		d    time.Duration
	}
	var offs []off
	for _, n := range f.Nodes {
		if n.Gateway && n.ClockOffset != nil {
			offs = append(offs, off{n.Name, *n.ClockOffset})
		}
	}
	if len(offs) == 0 {
		return skip("no gateway candidate's kubelet Lease to read its clock from")
	}
	sort.Slice(offs, func(i, j int) bool { return offs[i].d < offs[j].d })
	var parts []string
	for _, o := range offs {
		parts = append(parts, fmt.Sprintf("%s %+.1fs", o.node, o.d.Seconds()))
	}
	detail := "clock vs API server: " + strings.Join(parts, ", ")
	spread := offs[len(offs)-1].d - offs[0].d
	fix := "run NTP (chrony, systemd-timesyncd) on every node; candidates share one WireGuard key and a failover waits out their clock difference"
	switch {
	case spread > SkewFail:
		return fail(fix, "gateway candidates' clocks differ by %s; %s", spread.Round(100*time.Millisecond), detail)
	case spread > SkewWarn:
		return warn(fix, "gateway candidates' clocks differ by %s; %s", spread.Round(100*time.Millisecond), detail)
	}
	for _, o := range offs {
		if o.d > 5*time.Second || o.d < -5*time.Second {
			return warn("run NTP on every node", "a gateway node's clock is off the API server's by more than 5s; %s", detail)
		}
	}
	return pass("%s (within 1s resolution)", detail)
}

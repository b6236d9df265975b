package broker_test

// Attacks of a member that holds a valid join token or cluster credential
// (issue 18): each test is the abuse, against a real broker.

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
)

// TestMemberCannotClaimRangesOutsideThePolicy: a holder of a join token
// joins with ranges that are not the clusterset's to hand out (public
// ranges, most of IPv4, a range so wide that other clusters' nodes live in
// it). Every gateway and route agent would route them into the tunnel.
func TestMemberCannotClaimRangesOutsideThePolicy(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	tb.join("west", "10.2.0.0/16", "10.102.0.0/16")
	for _, tc := range []struct{ name, pod, svc, field string }{
		{"a public DNS range", "8.8.8.0/24", "10.103.0.0/16", "podCIDRs[0]"},
		{"most of IPv4", "10.3.0.0/16", "1.0.0.0/8", "serviceCIDRs[0]"},
		{"an eighth of IPv4", "64.0.0.0/3", "10.103.0.0/16", "podCIDRs[0]"},
		{"half of 10/8, where other clusters' nodes live", "10.128.0.0/9", "10.103.0.0/16", "podCIDRs[0]"},
		{"a global IPv6 range", "2001:4860::/48", "10.103.0.0/16", "podCIDRs[0]"},
		{"all of the ULA range", "fd00::/8", "10.103.0.0/16", "podCIDRs[0]"},
	} {
		_, err := tb.client("").Join(ctx, tb.JoinToken("policy"), api.JoinRequest{ClusterID: "mallory",
			PodCIDRs: []string{tc.pod}, ServiceCIDRs: []string{tc.svc}})
		var ae *api.Error
		if !asAPI(err, &ae) || ae.Code != api.CodeOutsidePolicy || ae.Field != tc.field {
			t.Errorf("%s: join with pods %s, services %s: %v; want OutsidePolicy on %s", tc.name, tc.pod, tc.svc, err, tc.field)
		}
		if err == nil {
			if err := tb.adminClient().RemoveCluster(ctx, "mallory"); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestGatewayEndpointCannotSitInsideAMembersCIDR: east registers a gateway
// whose endpoint lies inside west's CIDRs (every gateway would then refuse
// west's CIDR, or east's traffic would loop), inside its own, or inside
// the tunnel pool; and a cluster joins with a CIDR that covers an existing
// gateway's endpoint.
func TestGatewayEndpointCannotSitInsideAMembersCIDR(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	east, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	tb.join("west", "10.2.0.0/16", "10.102.0.0/16")
	for _, tc := range []struct{ name, private, public, field, cluster string }{
		{"private IP inside west's pod CIDR", "10.2.0.7", "", "privateIP", "west"},
		{"public IP inside west's service CIDR", "192.0.2.10", "10.102.0.9", "publicIP", "west"},
		{"private IP inside its own pod CIDR", "10.1.3.4", "", "privateIP", "east"},
		{"private IP inside the tunnel pool", "100.127.0.9", "", "privateIP", ""},
	} {
		g := gateway("east", "gw", 1)
		g.PrivateIP, g.PublicIP = tc.private, tc.public
		err := east.RegisterGateway(ctx, g)
		var ae *api.Error
		if !asAPI(err, &ae) || ae.Code != api.CodeConflict || ae.Field != tc.field || ae.Cluster != tc.cluster {
			t.Errorf("%s: registration: %v; want Conflict on %s naming %q", tc.name, err, tc.field, tc.cluster)
		}
	}
	if snap, err := east.Snapshot(ctx); err != nil || len(snap.Gateways) != 0 {
		t.Errorf("refused registrations stored gateways: %+v %v", snap.Gateways, err)
	}
	// A join covering an existing gateway's endpoint.
	g := gateway("east", "gw", 1)
	g.PrivateIP, g.PublicIP = "172.20.0.5", ""
	if err := east.RegisterGateway(ctx, g); err != nil {
		t.Fatal(err)
	}
	_, err := tb.client("").Join(ctx, tb.JoinToken("cover"), api.JoinRequest{ClusterID: "north",
		PodCIDRs: []string{"172.20.0.0/16"}, ServiceCIDRs: []string{"10.103.0.0/16"}})
	var ae *api.Error
	if !asAPI(err, &ae) || ae.Code != api.CodeCIDROverlap || ae.Field != "podCIDRs[0]" || ae.Cluster != "east" {
		t.Errorf("join covering east's gateway endpoint 172.20.0.5: %v; want CIDROverlap on podCIDRs[0] naming east", err)
	}
}

// TestOneMemberCannotExhaustTheBrokersMemory: east invents gateways and
// reports health about clusters that do not exist, in heartbeats as large
// as the broker takes. Every replica would keep all of it.
func TestOneMemberCannotExhaustTheBrokersMemory(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	east, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	tb.join("west", "10.2.0.0/16", "10.102.0.0/16")
	registered := 0
	for i := range 100 {
		g := gateway("east", fmt.Sprintf("gw-%03d", i), 1)
		g.Active = false
		err := east.RegisterGateway(ctx, g)
		if err != nil {
			if code := apiCode(err); code != api.CodeQuotaExceeded {
				t.Fatalf("gateway %d refused with %v; want QuotaExceeded", i, err)
			}
			continue
		}
		registered++
	}
	if registered > broker.DefaultGatewaysPerCluster {
		t.Errorf("east registered %d gateways; want at most %d", registered, broker.DefaultGatewaysPerCluster)
	}
	invented := make([]api.PeerHealth, 0, 301)
	for i := range 300 {
		invented = append(invented, api.PeerHealth{Cluster: fmt.Sprintf("ghost-%04d", i), Status: api.StatusError})
	}
	invented = append(invented, api.PeerHealth{Cluster: "west", Status: api.StatusConnected, RTTMillis: 1})
	if err := east.Heartbeat(ctx, "east", "gw-000", invented); err != nil {
		t.Errorf("heartbeat about 300 invented clusters and west: %v", err)
	}
	if st, err := east.Status(ctx); err != nil {
		t.Fatal(err)
	} else {
		for _, s := range st {
			if len(s.Health) > 1 {
				t.Errorf("the broker keeps %d health entries of %s/%s; want only the one about west, the other cluster that exists",
					len(s.Health), s.ClusterID, s.Hostname)
			}
		}
	}
	// With two members a heartbeat has one peer to report: a MiB is not one.
	big := make([]api.PeerHealth, 0, 6000)
	for range 6000 {
		big = append(big, api.PeerHealth{Cluster: "west", Status: api.StatusConnected, Reason: strings.Repeat("x", 150)})
	}
	if err := east.Heartbeat(ctx, "east", "gw-000", big); apiCode(err) != api.CodeTooLarge {
		t.Errorf("a 1 MiB heartbeat in a clusterset of two: %v; want PayloadTooLarge", err)
	}
	// The limit grows with the clusterset: a report about 80 members with
	// long reasons (about 86 KB) is refused with 2 members, taken with 82.
	var long []api.PeerHealth
	for i := range 80 {
		long = append(long, api.PeerHealth{Cluster: fmt.Sprintf("m%02d", i), Status: api.StatusError, Reason: strings.Repeat("y", api.MaxText)})
	}
	if err := east.Heartbeat(ctx, "east", "gw-000", long); apiCode(err) != api.CodeTooLarge {
		t.Errorf("an 86 KB heartbeat in a clusterset of two: %v; want PayloadTooLarge", err)
	}
	for i := range 80 {
		tb.join(fmt.Sprintf("m%02d", i), fmt.Sprintf("10.%d.0.0/16", 10+i), fmt.Sprintf("10.%d.0.0/16", 110+i))
	}
	if err := east.Heartbeat(ctx, "east", "gw-000", long); err != nil {
		t.Errorf("an 86 KB heartbeat about 80 of 82 members: %v", err)
	}
	if st, err := east.Status(ctx); err != nil || len(st) == 0 || len(st[0].Health) != 80 {
		t.Errorf("after a heartbeat about 80 members: %+v %v; want 80 entries", st, err)
	}
}

// credentialFailures sends GET /v1/snapshot with a wrong secret for a known
// cluster ID and for unknown IDs, interleaved, and returns each kind's
// durations, sorted.
func credentialFailures(t *testing.T, b *brokertest.Broker, known string, n int) (knownIDs, unknownIDs []time.Duration) {
	t.Helper()
	hc := httpClient(t, &testBroker{ca: b.CA})
	send := func(cred string) time.Duration {
		req, _ := http.NewRequest(http.MethodGet, b.URL+"/v1/snapshot", nil)
		req.Header.Set("Authorization", "Bearer "+cred)
		start := time.Now()
		resp, err := hc.Do(req)
		d := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: %s, want 401", cred, resp.Status)
		}
		return d
	}
	send("tmc." + known + "." + strings.Repeat("W", 43)) // warm the connection
	for i := range n {
		knownIDs = append(knownIDs, send("tmc."+known+"."+strings.Repeat("A", 43)))
		unknownIDs = append(unknownIDs, send(fmt.Sprintf("tmc.nosuch-%d.%s", i, strings.Repeat("A", 43))))
	}
	sort.Slice(knownIDs, func(i, j int) bool { return knownIDs[i] < knownIDs[j] })
	sort.Slice(unknownIDs, func(i, j int) bool { return unknownIDs[i] < unknownIDs[j] })
	return knownIDs, unknownIDs
}

// TestCredentialFailuresAreNoClusterIDOracle: on a replicated store a
// wrong credential for a cluster that exists was refused at once and one
// for an unknown cluster after 2 s, so anyone could list the members. The
// distributions are compared (medians of interleaved requests), with a
// margin far above a loaded machine's noise and far below the old gap.
func TestCredentialFailuresAreNoClusterIDOracle(t *testing.T) {
	ec, dir := etcdClusterset(t)
	a := brokertest.Start(t, brokertest.Options{Dir: dir, Store: ec.Open(t, "/tm")})
	b := brokertest.Start(t, brokertest.Options{Dir: dir, Store: ec.Open(t, "/tm")})
	_, jr := a.Join("east", "10.1.0.0/16", "10.101.0.0/16")
	ctx := ctxT(t)
	testkit.Eventually(t, 20*time.Second, func() error { _, err := b.Client(jr.Credential).Snapshot(ctx); return err })
	known, unknown := credentialFailures(t, b, "east", 9)
	mk, mu := known[len(known)/2], unknown[len(unknown)/2]
	t.Logf("wrong secret of a known cluster: %v; of unknown clusters: %v", known, unknown)
	diff := mu - mk
	if diff < 0 {
		diff = -diff
	}
	if diff > 300*time.Millisecond && diff > max(mk, mu)/2 {
		t.Errorf("median refusal: known cluster %v, unknown cluster %v: the time tells which IDs exist", mk, mu)
	}
}

// TestUnauthenticatedRequestsHoldNoGoroutines: a flood of requests with
// unknown credentials on a replica of a replicated store. Each one held a
// handler goroutine for 2 s waiting for a record that no replica would
// ever write.
func TestUnauthenticatedRequestsHoldNoGoroutines(t *testing.T) {
	ec, dir := etcdClusterset(t)
	b := brokertest.Start(t, brokertest.Options{Dir: dir, Store: ec.Open(t, "/tm")})
	hc := httpClient(t, &testBroker{ca: b.CA})
	hc.Transport.(*http.Transport).MaxIdleConnsPerHost = 200
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.URL+"/v1/snapshot", nil)
			req.Header.Set("Authorization", fmt.Sprintf("Bearer tmc.flood-%d.%s", i, strings.Repeat("A", 43)))
			if resp, err := hc.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	peak := 0
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		peak = max(peak, handlersRunning("awaitReplica"))
	}
	wg.Wait()
	if peak > 0 {
		t.Errorf("%d requests with unknown credentials waited at once on a replica that is not behind its store; want none", peak)
	}
}

// TestLaggingReplicaWaitsBounded: a replica behind its store still finds
// a join token another replica just made (it waits for it), but a flood of
// unknown credentials meanwhile holds at most a bounded number of
// goroutines waiting.
func TestLaggingReplicaWaitsBounded(t *testing.T) {
	ec, dir := etcdClusterset(t)
	a := brokertest.Start(t, brokertest.Options{Dir: dir, Store: ec.Open(t, "/tm")})
	b := brokertest.Start(t, brokertest.Options{Dir: dir, Store: slowFollow{ec.Open(t, "/tm"), 1500 * time.Millisecond}})
	ctx := ctxT(t)
	tok := a.JoinToken("made on A, used on B at once")
	if _, err := b.Client("").Join(ctx, tok, api.JoinRequest{ClusterID: "east", PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.101.0.0/16"}}); err != nil {
		t.Fatalf("join on B with a token A just made: %v", err)
	}
	hc := httpClient(t, &testBroker{ca: b.CA})
	tr := hc.Transport.(*http.Transport)
	tr.ForceAttemptHTTP2 = true // one connection: the flood arrives while B is behind
	warm, _ := http.NewRequest(http.MethodGet, b.URL+"/healthz", nil)
	if resp, err := hc.Do(warm); err == nil {
		resp.Body.Close()
	}
	a.JoinToken("a commit B has not applied yet")
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, b.URL+"/v1/snapshot", nil)
			req.Header.Set("Authorization", fmt.Sprintf("Bearer tmc.flood-%d.%s", i, strings.Repeat("A", 43)))
			if resp, err := hc.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	// Counted are the goroutines waiting for the replica (in AwaitApplied
	// under awaitReplica), not those in awaitReplica at all: one turned away
	// by the full bound runs its check there too, for a moment (a CI run
	// counted 65 that way).
	peak := 0
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		peak = max(peak, goroutinesIn("broker.(*Broker).awaitReplica(", "core.(*Core).AwaitApplied("))
	}
	wg.Wait()
	t.Logf("at most %d requests waited at once", peak)
	if peak > 64 {
		t.Errorf("%d requests with unknown credentials waited at once on a lagging replica; want at most 64", peak)
	}
}

// TestExportCannotPointAtAddressesNotTheExporters: east exports endpoints
// that are not its pods — west's pods, its own service range (the API
// server's ClusterIP), a node, a public address — which every importer's
// kube-proxy would DNAT clusterset traffic to (CVE-2021-25740's pattern,
// from another cluster); and a ClusterIP outside its service CIDRs.
func TestExportCannotPointAtAddressesNotTheExporters(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	east, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	tb.join("west", "10.2.0.0/16", "10.102.0.0/16")
	ep := func(addrs ...string) api.Endpoint {
		return api.Endpoint{Addresses: addrs, Ready: true, Ports: []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 8080}}}
	}
	for _, tc := range []struct {
		name  string
		ips   []string
		ep    api.Endpoint
		field string
	}{
		{"west's pod", nil, ep("10.2.0.5"), "endpoints[0].addresses[0]"},
		{"the API server's ClusterIP", nil, ep("10.101.0.1"), "endpoints[0].addresses[0]"},
		{"a node", nil, ep("172.18.0.3"), "endpoints[0].addresses[0]"},
		{"a public address", nil, ep("8.8.8.8"), "endpoints[0].addresses[0]"},
		{"a pod and a stranger", nil, ep("10.1.0.5", "10.2.0.5"), "endpoints[0].addresses[1]"},
		{"a ClusterIP of west's", []string{"10.102.0.10"}, ep("10.1.0.5"), "ips[0]"},
	} {
		e := export("east", "shop", "cart")
		e.IPs, e.Endpoints = tc.ips, []api.Endpoint{tc.ep}
		err := east.PublishExport(ctx, e)
		var ae *api.Error
		if !asAPI(err, &ae) || ae.Code != api.CodeInvalid || ae.Field != tc.field {
			t.Errorf("%s: %v; want Invalid on %s", tc.name, err, tc.field)
		}
	}
	if snap, err := east.Snapshot(ctx); err != nil || len(snap.Exports) != 0 {
		t.Errorf("refused exports stored: %+v %v", snap.Exports, err)
	}
	ok := export("east", "shop", "cart")
	ok.IPs, ok.Endpoints = []string{"10.101.0.10"}, []api.Endpoint{ep("10.1.0.5")}
	if err := east.PublishExport(ctx, ok); err != nil {
		t.Errorf("east's own pod behind its own ClusterIP: %v", err)
	}
}

// TestEndpointPortsAreValidated: one bad endpoint port made every
// importer's EndpointSlice write fail (and the honest co-exporters'
// service never resolved).
func TestEndpointPortsAreValidated(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	east, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	for _, tc := range []struct {
		name  string
		ports []api.ServicePort
		field string
	}{
		{"a name the apiserver refuses", []api.ServicePort{{Name: "BAD_NAME", Protocol: "TCP", Port: 80}}, "endpoints[0].ports[0].name"},
		{"an unknown protocol", []api.ServicePort{{Name: "a", Protocol: "ICMP", Port: 80}}, "endpoints[0].ports[0].protocol"},
		{"port 0", []api.ServicePort{{Name: "a", Protocol: "TCP", Port: 0}}, "endpoints[0].ports[0].port"},
		{"port 70000", []api.ServicePort{{Name: "a", Protocol: "TCP", Port: 70000}}, "endpoints[0].ports[0].port"},
		{"a repeated name", []api.ServicePort{{Name: "a", Protocol: "TCP", Port: 80}, {Name: "a", Protocol: "TCP", Port: 81}}, "endpoints[0].ports[1].name"},
		{"a long appProtocol", []api.ServicePort{{Name: "a", Protocol: "TCP", Port: 80, AppProtocol: strings.Repeat("p", 300)}}, "endpoints[0].ports[0].appProtocol"},
	} {
		e := export("east", "shop", "cart")
		e.IPs = nil
		e.Endpoints = []api.Endpoint{{Addresses: []string{"10.1.0.5"}, Ready: true, Ports: tc.ports}}
		err := east.PublishExport(ctx, e)
		var ae *api.Error
		if !asAPI(err, &ae) || ae.Code != api.CodeInvalid || ae.Field != tc.field {
			t.Errorf("%s: %v; want Invalid on %s", tc.name, err, tc.field)
		}
	}
}

// TestExportTimeIsTheBrokers: east claims its export of a shared service
// was made in 1970, so that it wins every conflict against west's (type,
// ports, labels, affinity). The broker's own time of first receipt counts,
// kept across updates and restarts.
func TestExportTimeIsTheBrokers(t *testing.T) {
	dir := initDir(t)
	tb := startBroker(t, dir, "127.0.0.1:0", nil)
	ctx := ctxT(t)
	east, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	west, _ := tb.join("west", "10.2.0.0/16", "10.102.0.0/16")
	w := export("west", "shop", "cart")
	w.IPs = nil
	if err := west.PublishExport(ctx, w); err != nil {
		t.Fatal(err)
	}
	e := export("east", "shop", "cart")
	e.IPs, e.CreatedAt = nil, time.Unix(0, 0).UTC()
	if err := east.PublishExport(ctx, e); err != nil {
		t.Fatal(err)
	}
	created := func(c interface {
		Snapshot(context.Context) (*api.Snapshot, error)
	}) map[string]time.Time {
		snap, err := c.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]time.Time{}
		for _, x := range snap.Exports {
			out[x.ClusterID] = x.CreatedAt
		}
		return out
	}
	first := created(east)
	if !first["east"].After(first["west"]) {
		t.Errorf("east's export claiming 1970 is stored as made at %s, west's (sent first) at %s: east wins every conflict",
			first["east"], first["west"])
	}
	// An update keeps the time of the first receipt, whatever it claims.
	e.Ports = append(e.Ports, api.ServicePort{Name: "grpc", Protocol: "TCP", Port: 9090})
	e.CreatedAt = time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := east.PublishExport(ctx, e); err != nil {
		t.Fatal(err)
	}
	if got := created(east); !got["east"].Equal(first["east"]) {
		t.Errorf("after an update east's export is made at %s; want the first receipt's %s", got["east"], first["east"])
	}
	tb.stop()
	tb = startBroker(t, dir, "127.0.0.1:0", nil)
	if got := created(tb.client(east.Credential())); !got["east"].Equal(first["east"]) || !got["west"].Equal(first["west"]) {
		t.Errorf("after a restart: %v; want %v", got, first)
	}
}

// TestOneMemberCannotFanOutWithoutBound: east publishes more exports than
// any cluster needs (each ClusterSetIP import takes a ClusterIP in every
// importer), and one export whose endpoints each have their own ports
// (one EndpointSlice each in every importer).
func TestOneMemberCannotFanOutWithoutBound(t *testing.T) {
	tb := startBroker(t, initDir(t), "127.0.0.1:0", nil)
	ctx := ctxT(t)
	east, _ := tb.join("east", "10.1.0.0/16", "10.101.0.0/16")
	var mu sync.Mutex
	accepted, refused := 0, map[string]int{}
	var wg sync.WaitGroup
	next := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				e := export("east", "shop", fmt.Sprintf("svc-%d", i))
				e.IPs = nil
				err := east.PublishExport(ctx, e)
				mu.Lock()
				if err == nil {
					accepted++
				} else {
					refused[apiCode(err)+": "+err.Error()]++
				}
				mu.Unlock()
			}
		}()
	}
	for i := range broker.DefaultExportsPerCluster + 20 {
		next <- i
	}
	close(next)
	wg.Wait()
	if accepted > broker.DefaultExportsPerCluster {
		t.Errorf("east published %d exports; want at most %d", accepted, broker.DefaultExportsPerCluster)
	}
	for msg, n := range refused {
		if !strings.HasPrefix(msg, api.CodeQuotaExceeded) {
			t.Errorf("%d exports refused with %s; want QuotaExceeded", n, msg)
		}
	}
	e := export("east", "shop", "wide")
	e.IPs = nil
	for i := range api.MaxEndpoints {
		e.Endpoints = append(e.Endpoints, api.Endpoint{Addresses: []string{fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)}, Ready: true,
			Ports: []api.ServicePort{{Name: "p", Protocol: "TCP", Port: int32(1000 + i)}}})
	}
	if err := east.WithdrawExport(ctx, "east", "shop", "svc-0"); err != nil {
		t.Fatal(err)
	}
	err := east.PublishExport(ctx, e)
	var ae *api.Error
	if !asAPI(err, &ae) || ae.Code != api.CodeInvalid || ae.Field != "endpoints" {
		t.Errorf("one export of %d endpoints with a port set each (as many EndpointSlices in every importer): %v; want Invalid on endpoints",
			len(e.Endpoints), err)
	}
}

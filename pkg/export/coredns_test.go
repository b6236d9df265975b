package export_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/tunnelmesh/tunnelmesh/deploy"
	"github.com/tunnelmesh/tunnelmesh/internal/kubeapi"
	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	tmdns "github.com/tunnelmesh/tunnelmesh/pkg/dns"
)

// corednsBin finds the CoreDNS the project builds (tools/coredns, v1.14.2).
func corednsBin(t *testing.T) string {
	t.Helper()
	cands := []string{os.Getenv("COREDNS_BIN")}
	if d, err := kubeapi.BinDir(); err == nil {
		cands = append(cands, filepath.Join(d, "..", "..", "coredns", "coredns"))
	}
	for _, c := range cands {
		if c == "" {
			continue
		}
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() {
			return c
		}
	}
	msg := "coredns binary missing: run `make _output/coredns/coredns` or set COREDNS_BIN"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// testCorefile is kubeadm's default Corefile, less what would leave
// loopback in a test (forward to the host's resolvers and its loop probe)
// and the fixed health/ready ports; it listens on loopback only.
const testCorefile = `.:PORT {
    bind 127.0.0.1
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    reload
    loadbalance
}
`

// TestCoreDNSAnswersClusterset runs the project's CoreDNS, configured by
// pkg/dns and with only the rights of deploy/mcs (plus kubeadm's
// system:coredns rights), against the imports the controller writes, and
// checks the MCS DNS specification with a real DNS client.
func TestCoreDNSAnswersClusterset(t *testing.T) {
	bin := corednsBin(t)
	b := brokertest.Start(t, brokertest.Options{})
	east := startCluster(t, b, "east", "10.1.0.0/16", "10.101.0.0/16")
	east.namespace("demo")
	east.run()
	ctx := context.Background()

	east.service("demo", "web", false, []corev1.ServicePort{tcp("http", 80, 8080), tcp("metrics", 9090, 9090)}, pod{ip: "10.1.0.10"})
	east.export("demo", "web")
	east.service("demo", "db", true, []corev1.ServicePort{tcp("pg", 5432, 5432)},
		pod{ip: "10.1.0.20", hostname: "db-0"}, pod{ip: "10.1.0.21", hostname: "db-1"}, pod{ip: "10.1.0.22", hostname: "db-2", notReady: true})
	east.export("demo", "db")
	web := east.wantImport("demo", "web", want{typ: mcsv1beta1.ClusterSetIP, ports: "http/TCP/80,metrics/TCP/9090", clusters: "east",
		endpoints: map[string][]string{"east": {"10.1.0.10"}}})
	east.wantImport("demo", "db", want{typ: mcsv1beta1.Headless, ports: "pg/TCP/5432", clusters: "east",
		endpoints: map[string][]string{"east": {"10.1.0.20/db-0", "10.1.0.21/db-1", "10.1.0.22/db-2!"}}})
	kubeSvc, err := east.kube.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// CoreDNS's identity: kubeadm's system:coredns rights and our addition.
	applyYAML(t, east.dyn, []byte(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
  - apiGroups: [""]
    resources: ["endpoints", "services", "pods", "namespaces"]
    verbs: ["list", "watch"]
  - apiGroups: ["discovery.k8s.io"]
    resources: ["endpointslices"]
    verbs: ["list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
  - kind: ServiceAccount
    name: coredns
    namespace: kube-system
`))
	rbac, err := deploy.FS.ReadFile("mcs/coredns-rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	applyYAML(t, east.dyn, rbac)

	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: coredns, user: {token: %q, as: "system:serviceaccount:kube-system:coredns"}}]
contexts: [{name: test, context: {cluster: test, user: coredns}}]
current-context: test
`, east.env.URL, kubeapi.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	port := testkit.DualPort(t)
	corefile, changed, err := tmdns.EnableMulticluster(strings.Replace(testCorefile, "PORT", fmt.Sprint(port), 1), tmdns.Zone)
	if err != nil || !changed {
		t.Fatalf("edit Corefile: changed=%v %v", changed, err)
	}
	// The apiserver is reached with the kubeconfig, as the test runs no pod.
	corefile = strings.Replace(corefile, "       ttl 30\n", "       ttl 30\n       kubeconfig "+kubeconfig+"\n", 1)
	cfPath := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(cfPath, []byte(corefile), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "coredns.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-conf", cfPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("coredns log:\n%s\nCorefile:\n%s", b, corefile)
		}
	})
	server := fmt.Sprintf("127.0.0.1:%d", port)

	type rr struct {
		name  string
		qtype uint16
		rcode int
		want  []string // answers in a normalised text form, sorted
	}
	checks := func() []rr {
		return []rr{
			{"web.demo.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, []string{"A " + web.SI.Spec.IPs[0]}},
			{"_http._tcp.web.demo.svc.clusterset.local.", dns.TypeSRV, dns.RcodeSuccess, []string{"SRV 80 web.demo.svc.clusterset.local."}},
			{"_metrics._tcp.web.demo.svc.clusterset.local.", dns.TypeSRV, dns.RcodeSuccess, []string{"SRV 9090 web.demo.svc.clusterset.local."}},
			{"db.demo.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.1.0.20", "A 10.1.0.21"}},
			{"db-0.east.db.demo.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.1.0.20"}},
			{"db-1.east.db.demo.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.1.0.21"}},
			{"_pg._tcp.db.demo.svc.clusterset.local.", dns.TypeSRV, dns.RcodeSuccess,
				[]string{"SRV 5432 db-0.east.db.demo.svc.clusterset.local.", "SRV 5432 db-1.east.db.demo.svc.clusterset.local."}},
			{"db-2.east.db.demo.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError, nil}, // not ready
			{"web.demo.svc.clusterset.local.", dns.TypeAAAA, dns.RcodeSuccess, nil},         // NODATA: IPv4 only
			{"nope.demo.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError, nil},
			{"web.other.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError, nil},
			{"kubernetes.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A " + kubeSvc.Spec.ClusterIP}},
		}
	}
	testkit.Eventually(t, 30*time.Second, func() error { return ask(server, checks()[0]) })
	for _, c := range checks() {
		if err := ask(server, c); err != nil {
			t.Error(err)
		}
	}
	txt, err := query(server, "dns-version.clusterset.local.", dns.TypeTXT)
	if err != nil || txt.Rcode != dns.RcodeSuccess || len(txt.Answer) != 1 {
		t.Fatalf("TXT dns-version.clusterset.local: %v %v", txt, err)
	}
	// The MCS DNS specification says 1.0.0; CoreDNS answers its
	// cluster.local schema version in every zone (a divergence we record).
	t.Logf("TXT dns-version.clusterset.local = %q (MCS DNS spec: \"1.0.0\")", txt.Answer[0].(*dns.TXT).Txt)

	// Headless, exported with PreferClose by east and by west: CoreDNS in
	// east answers east's pods while one is ready, west's when none is,
	// at once (the zone is not cached: the Corefile edit).
	t.Run("headless, same cluster first", func(t *testing.T) {
		pg := []corev1.ServicePort{tcp("pg", 5432, 5432)}
		s := east.service("demo", "near", true, pg, pod{ip: "10.1.0.50", hostname: "n-0"})
		s.Spec.TrafficDistribution = ptr(corev1.ServiceTrafficDistributionPreferClose)
		if _, err := east.kube.CoreV1().Services("demo").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		east.export("demo", "near")
		west, _ := b.Join("west", "10.2.0.0/16", "10.102.0.0/16")
		if err := west.PublishExport(ctx, api.Export{ClusterID: "west", Namespace: "demo", Name: "near", Type: api.TypeHeadless,
			Ports: []api.ServicePort{{Name: "pg", Protocol: "TCP", Port: 5432}}, IPFamilies: []string{"IPv4"}, SessionAffinity: "None",
			TrafficDistribution: corev1.ServiceTrafficDistributionPreferClose, CreatedAt: time.Now().UTC(),
			Endpoints: []api.Endpoint{{Addresses: []string{"10.2.0.50"}, Hostname: "w-0", Ready: true,
				Ports: []api.ServicePort{{Name: "pg", Protocol: "TCP", Port: 5432}}}}}); err != nil {
			t.Fatal(err)
		}
		type q = struct {
			name  string
			qtype uint16
			rcode int
			want  []string
		}
		local := []q{
			{"near.demo.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.1.0.50"}},
			{"n-0.east.near.demo.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.1.0.50"}},
			{"w-0.west.near.demo.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError, nil}, // withheld
		}
		spilled := []q{
			{"near.demo.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.2.0.50"}},
			{"w-0.west.near.demo.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.2.0.50"}},
		}
		answers := func(qs []q) func() error {
			return func() error {
				for _, c := range qs {
					if err := ask(server, c); err != nil {
						return err
					}
				}
				return nil
			}
		}
		testkit.Eventually(t, 30*time.Second, answers(local))
		east.endpoints("demo", "near", pg, pod{ip: "10.1.0.50", hostname: "n-0", notReady: true})
		start := time.Now()
		testkit.Eventually(t, 30*time.Second, answers(spilled))
		t.Logf("east's pod not ready → CoreDNS answers west's after %s", time.Since(start).Round(time.Millisecond))
		east.endpoints("demo", "near", pg, pod{ip: "10.1.0.50", hostname: "n-0"})
		testkit.Eventually(t, 30*time.Second, answers(local))
		east.unexport("demo", "near")
		if err := west.WithdrawExport(ctx, "west", "demo", "near"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("answers survive a broker outage", func(t *testing.T) {
		b.Stop()
		east.endpoints("demo", "db", []corev1.ServicePort{tcp("pg", 5432, 5432)}, pod{ip: "10.1.0.20", hostname: "db-0"}, pod{ip: "10.1.0.21", hostname: "db-1"})
		time.Sleep(2 * time.Second) // give a wrong removal the chance to happen
		for _, c := range checks() {
			if err := ask(server, c); err != nil {
				t.Error(err)
			}
		}
	})
}

var spaces = regexp.MustCompile(`\s+`)

func query(server, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, server)
	return r, err
}

func ask(server string, q struct {
	name  string
	qtype uint16
	rcode int
	want  []string
}) error {
	r, err := query(server, q.name, q.qtype)
	if err != nil {
		return fmt.Errorf("%s %s: %w", dns.TypeToString[q.qtype], q.name, err)
	}
	var got []string
	for _, a := range r.Answer {
		switch v := a.(type) {
		case *dns.A:
			got = append(got, "A "+v.A.String())
		case *dns.SRV:
			got = append(got, fmt.Sprintf("SRV %d %s", v.Port, v.Target))
		default:
			got = append(got, spaces.ReplaceAllString(a.String(), " "))
		}
	}
	slices.Sort(got)
	if r.Rcode != q.rcode || !slices.Equal(got, q.want) {
		return fmt.Errorf("%s %s: rcode %s answers %v; want %s %v", dns.TypeToString[q.qtype], q.name,
			dns.RcodeToString[r.Rcode], got, dns.RcodeToString[q.rcode], q.want)
	}
	return nil
}

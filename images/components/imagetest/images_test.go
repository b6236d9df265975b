//go:build imagetest

// Package imagetest runs the component images built by `make component-images`
// together on a Docker network of their own — etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kube-proxy (iptables and nftables modes),
// CoreDNS, pause and meshnet — and checks each does its job. Needs Docker and the
// images (`make component-images`); skipped otherwise, failed under CI=true.
package imagetest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
)

const (
	etcdImage      = "registry.k8s.io/etcd:3.6.8-0"
	apiserverImage = "registry.k8s.io/kube-apiserver:v1.36.0"
	kcmImage       = "registry.k8s.io/kube-controller-manager:v1.36.0"
	schedImage     = "registry.k8s.io/kube-scheduler:v1.36.0"
	proxyImage     = "registry.k8s.io/kube-proxy:v1.36.0"
	corednsImage   = "registry.k8s.io/coredns/coredns:v1.14.2"
	pauseImage     = "registry.k8s.io/pause:3.10.2"
	meshnetImage   = "tunnelmesh/meshnet:v0.1.0"
	testToken      = "tunnelmesh-image-test-token"
)

func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func try(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// env is one test's Docker network and the containers on it.
type env struct {
	t      *testing.T
	prefix string
	net    string
	dir    string
}

func newEnv(t *testing.T) *env {
	if _, err := exec.LookPath("docker"); err != nil {
		skipOrFail(t, "docker CLI not found")
	}
	if _, err := try("docker", "info"); err != nil {
		skipOrFail(t, "no Docker engine answers (scripts/docker-engine.sh starts one)")
	}
	for _, img := range []string{etcdImage, apiserverImage, kcmImage, schedImage, proxyImage, corednsImage, pauseImage, meshnetImage} {
		if _, err := try("docker", "image", "inspect", img); err != nil {
			skipOrFail(t, "image "+img+" missing; run make component-images")
		}
	}
	e := &env{t: t, prefix: fmt.Sprintf("tmimg%d", mrand.IntN(1_000_000)), dir: t.TempDir()}
	e.net = e.prefix
	run(t, "docker", "network", "create", e.net)
	t.Cleanup(func() { _, _ = try("docker", "network", "rm", e.net) })
	return e
}

// start runs a detached container on the env's network; it is removed at cleanup,
// its logs printed first if the test failed.
func (e *env) start(name string, dockerArgs []string, image string, args ...string) string {
	e.t.Helper()
	full := e.prefix + "-" + name
	a := append([]string{"run", "-d", "--name", full, "--hostname", name, "--network", e.net}, dockerArgs...)
	a = append(append(a, image), args...)
	run(e.t, "docker", a...)
	e.t.Cleanup(func() {
		if e.t.Failed() {
			logs, _ := try("docker", "logs", "--tail", "40", full)
			e.t.Logf("--- logs of %s ---\n%s", full, logs)
		}
		_, _ = try("docker", "rm", "-f", full)
	})
	return full
}

func (e *env) ip(container string) string {
	return run(e.t, "docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	out := run(t, "go", "env", "GOMOD")
	return filepath.Dir(out)
}

func TestControlPlaneImages(t *testing.T) {
	e := newEnv(t)
	kubectl := filepath.Join(repoRoot(t), "_output/k8s/bin/kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		skipOrFail(t, "kubectl missing; run make k8s-binaries")
	}

	// Service-account signing key and a static admin token (the test API server
	// authorizes everything: it lives only on this network).
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(e.dir, "keys")
	certs := filepath.Join(e.dir, "certs")
	for _, d := range []string{keys, certs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(keys, "tokens.csv"), testToken+",admin,admin,system:masters\n")
	writeFile(t, filepath.Join(keys, "sa.key"), string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})))

	etcd := e.start("etcd", nil, etcdImage, "etcd", "--data-dir=/var/lib/etcd",
		"--listen-client-urls=http://0.0.0.0:2379", "--advertise-client-urls=http://etcd:2379")
	api := e.start("apiserver", []string{"-v", keys + ":/keys:ro", "-v", certs + ":/certs"}, apiserverImage,
		"kube-apiserver", "--etcd-servers=http://"+e.ip(etcd)+":2379",
		"--service-cluster-ip-range=10.96.0.0/16", "--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=/keys/sa.key", "--service-account-signing-key-file=/keys/sa.key",
		"--authorization-mode=AlwaysAllow", "--token-auth-file=/keys/tokens.csv", "--cert-dir=/certs", "--secure-port=6443")
	apiIP := e.ip(api)
	server := "https://" + apiIP + ":6443"
	kubeconfig := filepath.Join(e.dir, "kubeconfig")
	writeFile(t, kubeconfig, fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: anon, user: {token: %q}}]
contexts: [{name: test, context: {cluster: test, user: anon}}]
current-context: test
`, server, testToken))
	kc := func(args ...string) (string, error) {
		return try(kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	}
	testkit.Eventually(t, 90*time.Second, func() error {
		out, err := kc("get", "--raw", "/readyz")
		return testkit.Check(err == nil && out == "ok", "kube-apiserver /readyz: %s", out)
	})
	ver, err := kc("get", "--raw", "/version")
	if err != nil || !strings.Contains(ver, `"gitVersion": "v1.36.0"`) {
		t.Fatalf("apiserver version: %v %s", err, ver)
	}

	kcMount := []string{"-v", kubeconfig + ":/k/kubeconfig:ro"}

	t.Run("controller-manager and scheduler take their leases", func(t *testing.T) {
		e.start("kcm", kcMount, kcmImage, "kube-controller-manager", "--kubeconfig=/k/kubeconfig",
			"--authentication-kubeconfig=/k/kubeconfig", "--authorization-kubeconfig=/k/kubeconfig",
			"--service-account-private-key-file=", "--controllers=namespace-controller,garbage-collector-controller", "--use-service-account-credentials=false")
		e.start("sched", kcMount, schedImage, "kube-scheduler", "--kubeconfig=/k/kubeconfig",
			"--authentication-kubeconfig=/k/kubeconfig", "--authorization-kubeconfig=/k/kubeconfig")
		for _, lease := range []string{"kube-controller-manager", "kube-scheduler"} {
			testkit.Eventually(t, 90*time.Second, func() error {
				out, err := kc("-n", "kube-system", "get", "lease", lease, "-o", "jsonpath={.spec.holderIdentity}")
				return testkit.Check(err == nil && out != "", "lease "+lease+": %s", out)
			})
		}
	})

	t.Run("kube-proxy programs the kubernetes Service", func(t *testing.T) {
		for _, mode := range []string{"iptables", "nftables"} {
			// kube-proxy waits up to 30 s for its Node's InternalIP; give it one.
			nodeFile := filepath.Join(e.dir, "node-kp-"+mode+".yaml")
			writeFile(t, nodeFile, "apiVersion: v1\nkind: Node\nmetadata: {name: kp-"+mode+"}\n")
			if out, err := kc("create", "-f", nodeFile); err != nil {
				t.Fatalf("create node: %v %s", err, out)
			}
			// A documentation address: it only appears in rules inside the container.
			patch := `{"status":{"addresses":[{"type":"InternalIP","address":"192.0.2.10"}]}}`
			if out, err := kc("patch", "node", "kp-"+mode, "--subresource=status", "--type=merge", "-p", patch); err != nil {
				t.Fatalf("patch node: %v %s", err, out)
			}
			kp := e.start("kp-"+mode, append([]string{"--privileged"}, kcMount...), proxyImage,
				"kube-proxy", "--kubeconfig=/k/kubeconfig", "--hostname-override=kp-"+mode, "--proxy-mode="+mode,
				"--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0")
			dump := []string{"exec", kp, "iptables-save"}
			if mode == "nftables" {
				dump = []string{"exec", kp, "nft", "list", "table", "ip", "kube-proxy"}
			}
			testkit.Eventually(t, 90*time.Second, func() error {
				out, err := try("docker", dump...)
				return testkit.Check(err == nil && strings.Contains(out, "10.96.0.1") && strings.Contains(out, apiIP), mode+" rules for 10.96.0.1"+": %s", out)
			})
		}
	})

	t.Run("coredns answers from the API", func(t *testing.T) {
		corefile := filepath.Join(e.dir, "Corefile")
		writeFile(t, corefile, ".:53 {\n  errors\n  kubernetes cluster.local {\n    kubeconfig /k/kubeconfig test\n  }\n}\n")
		dns := e.start("coredns", append([]string{"-v", corefile + ":/etc/coredns/Corefile:ro"}, kcMount...), corednsImage,
			"-conf", "/etc/coredns/Corefile")
		dnsIP := e.ip(dns)
		nc := buildNetclient(t)
		testkit.Eventually(t, 60*time.Second, func() error {
			out, err := try(nc, "dns", "-server", dnsIP+":53", "kubernetes.default.svc.cluster.local.")
			return testkit.Check(err == nil && out == "10.96.0.1", "CoreDNS A kubernetes.default.svc.cluster.local: %s", out)
		})
	})

	t.Run("pause runs as 65535 and stops on SIGTERM", func(t *testing.T) {
		p := e.start("pause", nil, pauseImage)
		if u := run(t, "docker", "inspect", "-f", "{{.Config.User}}", p); u != "65535:65535" {
			t.Fatalf("pause user %q", u)
		}
		start := time.Now()
		run(t, "docker", "stop", "-t", "20", p)
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("pause ignored SIGTERM (stop took %v)", d)
		}
		if code := run(t, "docker", "inspect", "-f", "{{.State.ExitCode}}", p); code != "0" {
			t.Fatalf("pause exit code %s", code)
		}
	})

	t.Run("meshnet writes the CNI config, routes and masquerade", func(t *testing.T) {
		sa := filepath.Join(e.dir, "sa")
		cni := filepath.Join(e.dir, "cni")
		for _, d := range []string{sa, cni} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		// The API server's self-signed certificate is its own CA.
		crt, err := os.ReadFile(filepath.Join(certs, "apiserver.crt"))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(sa, "ca.crt"), string(crt))
		writeFile(t, filepath.Join(sa, "token"), testToken)
		writeFile(t, filepath.Join(sa, "namespace"), "kube-system")

		mn := e.start("meshnet", []string{"--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW",
			"-v", sa + ":/var/run/secrets/kubernetes.io/serviceaccount:ro", "-v", cni + ":/etc/cni/net.d",
			"-e", "NODE_NAME=node1", "-e", "POD_SUBNET=10.244.0.0/16", "-e", "SERVICE_SUBNET=10.96.0.0/16",
			"-e", "KUBERNETES_SERVICE_HOST=10.96.0.1", "-e", "KUBERNETES_SERVICE_PORT=443",
			"-e", "CONTROL_PLANE_ENDPOINT=" + apiIP + ":6443", "-e", "METRICS_ADDR=off", "-e", "NO_MASQUERADE_INTERFACES=tmesh"}, meshnetImage)
		mnIP := e.ip(mn)
		peerIP := e.ip(api) // any address on the network works as node2's InternalIP
		nodes := fmt.Sprintf(`apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Node, metadata: {name: node1}, spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24]}}
- {apiVersion: v1, kind: Node, metadata: {name: node2}, spec: {podCIDR: 10.244.2.0/24, podCIDRs: [10.244.2.0/24]}}
`)
		nodesFile := filepath.Join(e.dir, "nodes.yaml")
		writeFile(t, nodesFile, nodes)
		if out, err := kc("create", "-f", nodesFile); err != nil {
			t.Fatalf("create nodes: %v %s", err, out)
		}
		for node, ip := range map[string]string{"node1": mnIP, "node2": peerIP} {
			patch := fmt.Sprintf(`{"status":{"addresses":[{"type":"InternalIP","address":%q}]}}`, ip)
			if out, err := kc("patch", "node", node, "--subresource=status", "--type=merge", "-p", patch); err != nil {
				t.Fatalf("patch node %s: %v %s", node, err, out)
			}
		}
		pid := run(t, "docker", "inspect", "-f", "{{.State.Pid}}", mn)
		inNS := func(args ...string) (string, error) {
			return try("nsenter", append([]string{"-t", pid, "-n"}, args...)...)
		}
		testkit.Eventually(t, 60*time.Second, func() error {
			out, err := inNS("ip", "route", "show", "10.244.2.0/24")
			return testkit.Check(err == nil && strings.Contains(out, "via "+peerIP) && strings.Contains(out, "proto 79"), "route to node2's pod CIDR: %s", out)
		})
		testkit.Eventually(t, 30*time.Second, func() error {
			out, err := inNS("nft", "list", "table", "inet", "tunnelmesh-cni")
			return testkit.Check(err == nil && strings.Contains(out, "masquerade") && strings.Contains(out, "10.244.1.0/24") &&
				strings.Contains(out, "10.96.0.0/16") && strings.Contains(out, `oifname != "tmesh*"`), "masquerade table: %s", out)
		})
		// A deleted route comes back: normally at once (route events), at the latest at
		// the 30 s resync.
		if out, err := inNS("ip", "route", "del", "10.244.2.0/24"); err != nil {
			t.Fatalf("delete route: %v %s", err, out)
		}
		deleted := time.Now()
		testkit.Eventually(t, 45*time.Second, func() error {
			out, err := inNS("ip", "route", "show", "10.244.2.0/24")
			return testkit.Check(err == nil && strings.Contains(out, "via "+peerIP), "deleted route restored: %s", out)
		})
		t.Logf("deleted route restored after %v", time.Since(deleted).Round(100*time.Millisecond))
		conf, err := os.ReadFile(filepath.Join(cni, "10-tunnelmesh.conflist"))
		if err != nil || !bytes.Contains(conf, []byte(`"subnet": "10.244.1.0/24"`)) || !bytes.Contains(conf, []byte(`"type": "ptp"`)) {
			t.Fatalf("CNI config: %v\n%s", err, conf)
		}
		// tunnelmesh adds a remote cluster's CIDR: it joins the no-masquerade set live.
		if out, err := kc("-n", "kube-system", "create", "configmap", "tunnelmesh-cni", "--from-literal=noMasqueradeCIDRs=10.248.0.0/16"); err != nil {
			t.Fatalf("create configmap: %v %s", err, out)
		}
		testkit.Eventually(t, 30*time.Second, func() error {
			out, err := inNS("nft", "list", "set", "inet", "tunnelmesh-cni", "skip4")
			return testkit.Check(err == nil && strings.Contains(out, "10.248.0.0/16"), "remote CIDR in the masquerade skip set: %s", out)
		})
	})
}

func buildNetclient(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "netclient")
	run(t, "go", "build", "-o", out, "github.com/tunnelmesh/tunnelmesh/test/images/netclient")
	return out
}

package kube

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
)

func TestConnectErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: "https://" + closed, InsecureSkipTLSVerify: true}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: "x"}
	cfg.Contexts["kind-down"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	cfg.CurrentContext = "kind-down"
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, kc); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	t.Setenv("HOME", t.TempDir())
	cases := []struct {
		name string
		f    Flags
		want string
	}{
		{"no kubeconfig", Flags{}, "no kubeconfig found"},
		{"missing file", Flags{Kubeconfig: "/nonexistent/kubeconfig"}, "cannot read the kubeconfig"},
		{"unknown context", Flags{Kubeconfig: kc, Context: "kind-nope"}, `context "kind-nope" is not in the kubeconfig`},
		{"unreachable", Flags{Kubeconfig: kc}, `cannot reach the cluster of context "kind-down"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.f.Connect(t.Context())
			var ce *cli.Error
			if !errors.As(err, &ce) || ce.Code != cli.ExitRefused || !strings.Contains(ce.What, c.want) || ce.Fix == "" {
				t.Fatalf("got %v, want a refusal saying %q with a fix", err, c.want)
			}
		})
	}
}

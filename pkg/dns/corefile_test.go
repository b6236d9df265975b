package dns

import (
	"strings"
	"testing"
)

// The Corefile kubeadm writes (and kind uses) for Kubernetes 1.36.
const kubeadmCorefile = `.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
`

const kubeadmEdited = `.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa clusterset.local {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
       multicluster clusterset.local
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local clusterset.local
       disable denial cluster.local clusterset.local
    }
    loop
    reload
    loadbalance
}
`

func TestEnableMulticluster(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"kubeadm and kind default", kubeadmCorefile, kubeadmEdited},
		{"k3s style with hosts, imports and comments",
			`# managed by someone
.:53 {
    errors
    health
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa { # cluster DNS
      pods insecure
      fallthrough in-addr.arpa ip6.arpa
    }
    hosts /etc/coredns/NodeHosts {
      ttl 60
      reload 15s
      fallthrough
    }
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
    import /etc/coredns/custom/*.override
}
import /etc/coredns/custom/*.server
`,
			`# managed by someone
.:53 {
    errors
    health
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa clusterset.local { # cluster DNS
      pods insecure
      fallthrough in-addr.arpa ip6.arpa
      multicluster clusterset.local
    }
    hosts /etc/coredns/NodeHosts {
      ttl 60
      reload 15s
      fallthrough
    }
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
    import /etc/coredns/custom/*.override
}
import /etc/coredns/custom/*.server
`},
		{"a cache block without disable lines gets them; a one-line cache is left alone",
			".:53 {\n    kubernetes cluster.local\n    cache 30 {\n        prefetch 10\n    }\n}\nother:53 {\n    kubernetes cluster.local\n    cache 30\n}\n",
			".:53 {\n    kubernetes cluster.local clusterset.local {\n        multicluster clusterset.local\n    }\n    cache 30 {\n        prefetch 10\n        disable success clusterset.local\n        disable denial clusterset.local\n    }\n}\n" +
				"other:53 {\n    kubernetes cluster.local clusterset.local {\n        multicluster clusterset.local\n    }\n    cache 30\n}\n"},
		{"a disable line without zones covers every zone already",
			".:53 {\n  kubernetes cluster.local\n  cache {\n    disable denial\n  }\n}\n",
			".:53 {\n  kubernetes cluster.local clusterset.local {\n      multicluster clusterset.local\n  }\n  cache {\n    disable denial\n    disable success clusterset.local\n  }\n}\n"},
		{"kubernetes without a block",
			".:53 {\n\tkubernetes cluster.local\n\tforward . 8.8.8.8\n}\n",
			".:53 {\n\tkubernetes cluster.local clusterset.local {\n\t    multicluster clusterset.local\n\t}\n\tforward . 8.8.8.8\n}\n"},
		{"kubernetes without zones keeps the server block's",
			".:53 {\n    kubernetes {\n        pods insecure\n    }\n}\n",
			".:53 {\n    kubernetes . clusterset.local {\n        pods insecure\n        multicluster clusterset.local\n    }\n}\n"},
		{"an existing multicluster option is extended",
			".:53 {\n  kubernetes cluster.local other.local {\n    multicluster other.local\n  }\n}\n",
			".:53 {\n  kubernetes cluster.local other.local clusterset.local {\n    multicluster other.local clusterset.local\n  }\n}\n"},
		{"every server block with the plugin",
			"cluster.local:53 {\n  kubernetes cluster.local\n}\n.:53 {\n  kubernetes cluster.local {\n  }\n  forward . 1.1.1.1\n}\n",
			"cluster.local:53 {\n  kubernetes cluster.local clusterset.local {\n      multicluster clusterset.local\n  }\n}\n.:53 {\n  kubernetes cluster.local clusterset.local {\n      multicluster clusterset.local\n  }\n  forward . 1.1.1.1\n}\n"},
		{"a kubernetes word elsewhere is left alone",
			".:53 {\n    # kubernetes is below\n    template IN A kubernetes.example {\n      answer \"{{ .Name }} 60 IN A 1.2.3.4 {\"\n    }\n    kubernetes cluster.local\n}\n",
			".:53 {\n    # kubernetes is below\n    template IN A kubernetes.example {\n      answer \"{{ .Name }} 60 IN A 1.2.3.4 {\"\n    }\n    kubernetes cluster.local clusterset.local {\n        multicluster clusterset.local\n    }\n}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed, err := EnableMulticluster(tc.in, Zone)
			if err != nil {
				t.Fatal(err)
			}
			if !changed || got != tc.want {
				t.Fatalf("changed=%v got:\n%s\nwant:\n%s", changed, got, tc.want)
			}
			again, changed, err := EnableMulticluster(got, Zone)
			if err != nil || changed || again != got {
				t.Fatalf("second edit: changed=%v err=%v\n%s", changed, err, again)
			}
		})
	}
}

func TestEnableMulticlusterKeepsEveryLine(t *testing.T) {
	got, _, err := EnableMulticluster(kubeadmCorefile, Zone)
	if err != nil {
		t.Fatal(err)
	}
	out := strings.Split(got, "\n")
	for _, l := range strings.Split(kubeadmCorefile, "\n") {
		if strings.Contains(l, "kubernetes ") || strings.Contains(l, "disable ") {
			continue // the lines the edit extends
		}
		found := false
		for _, o := range out {
			if o == l {
				found = true
			}
		}
		if !found {
			t.Errorf("line %q was lost", l)
		}
	}
}

func TestEnableMulticlusterErrors(t *testing.T) {
	for name, in := range map[string]string{
		"no kubernetes plugin": ".:53 {\n    forward . /etc/resolv.conf\n}\n",
		"unclosed block":       ".:53 {\n    kubernetes cluster.local {\n      pods insecure\n",
		"one-line block":       ".:53 {\n    kubernetes cluster.local { pods insecure }\n}\n",
		"unbalanced":           ".:53 {\n}\n}\n",
	} {
		t.Run(name, func(t *testing.T) {
			if out, _, err := EnableMulticluster(in, Zone); err == nil {
				t.Fatalf("no error; got\n%s", out)
			}
		})
	}
}

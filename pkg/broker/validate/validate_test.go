package validate

import (
	"strings"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

func TestClusterID(t *testing.T) {
	for id, ok := range map[string]bool{
		"east": true, "a": true, "cluster-1": true, "": false, "East": false, "-a": false,
		"a-": false, "a.b": false, "a_b": false,
		"x23456789012345678901234567890123456789012345678901234567890123":  true,
		"x234567890123456789012345678901234567890123456789012345678901234": false,
	} {
		if got := ClusterID("clusterID", id) == nil; got != ok {
			t.Errorf("ClusterID(%q) ok=%v, want %v", id, got, ok)
		}
	}
}

func TestExportFields(t *testing.T) {
	base := func() api.Export {
		return api.Export{ClusterID: "east", Namespace: "ns", Name: "svc", Type: api.TypeClusterSetIP,
			Ports:     []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}, {Name: "dns", Protocol: "UDP", Port: 53}},
			IPs:       []string{"10.96.0.10", "fd00::a"},
			CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	}
	neg := int32(0)
	cases := []struct {
		field string
		mod   func(*api.Export)
	}{
		{"", func(*api.Export) {}},
		{"name", func(e *api.Export) { e.Name = "1svc" }},
		{"namespace", func(e *api.Export) { e.Namespace = "NS" }},
		{"ports[0].protocol", func(e *api.Export) { e.Ports[0].Protocol = "tcp" }},
		{"ports[0].port", func(e *api.Export) { e.Ports[0].Port = 0 }},
		{"ips[0]", func(e *api.Export) { e.IPs = []string{"nope"} }},
		{"ipFamilies[0]", func(e *api.Export) { e.IPFamilies = []string{"IPv5"} }},
		{"sessionAffinityTimeoutSeconds", func(e *api.Export) { e.SessionAffinityTimeoutSeconds = &neg }},
		{"labels", func(e *api.Export) { e.Labels = map[string]string{"bad key!": "x"} }},
		{"endpoints[0].addresses", func(e *api.Export) { e.Endpoints = []api.Endpoint{{}} }},
		{"endpoints[0].hostname", func(e *api.Export) {
			e.Endpoints = []api.Endpoint{{Addresses: []string{"10.0.0.1"}, Hostname: "A_b"}}
		}},
		// Same port on another protocol, and unnamed ports, are fine.
		{"", func(e *api.Export) {
			e.Ports = append(e.Ports, api.ServicePort{Protocol: "UDP", Port: 80}, api.ServicePort{Protocol: "TCP", Port: 81})
		}},
		{"", func(e *api.Export) { e.IPFamilies = []string{"IPv4", "IPv6"} }},
		{"", func(e *api.Export) { e.IPs = nil; e.IPFamilies = []string{"IPv6"} }},
		// The broker keeps its own time of first receipt; the exporter's is ignored.
		{"", func(e *api.Export) { e.CreatedAt = time.Time{} }},
		{"endpoints[0].ports[0].name", func(e *api.Export) {
			e.Endpoints = []api.Endpoint{{Addresses: []string{"10.1.0.5"}, Ports: []api.ServicePort{{Name: "BAD_NAME", Protocol: "TCP", Port: 80}}}}
		}},
		{"endpoints[0].ports[1].name", func(e *api.Export) {
			e.Endpoints = []api.Endpoint{{Addresses: []string{"10.1.0.5"},
				Ports: []api.ServicePort{{Name: "a", Protocol: "TCP", Port: 80}, {Name: "a", Protocol: "TCP", Port: 81}}}}
		}},
		{"endpoints[0].ports[1].name", func(e *api.Export) {
			e.Endpoints = []api.Endpoint{{Addresses: []string{"10.1.0.5"},
				Ports: []api.ServicePort{{Protocol: "TCP", Port: 80}, {Protocol: "UDP", Port: 81}}}}
		}},
		// Two Service ports may target one pod port.
		{"", func(e *api.Export) {
			e.Endpoints = []api.Endpoint{{Addresses: []string{"10.1.0.5"},
				Ports: []api.ServicePort{{Name: "a", Protocol: "TCP", Port: 8080}, {Name: "b", Protocol: "TCP", Port: 8080}}}}
		}},
		{"endpoints[0].ports[0].protocol", func(e *api.Export) {
			e.Endpoints = []api.Endpoint{{Addresses: []string{"10.1.0.5"}, Ports: []api.ServicePort{{Name: "a", Protocol: "ICMP", Port: 80}}}}
		}},
		{"endpoints[0].ports[0].port", func(e *api.Export) {
			e.Endpoints = []api.Endpoint{{Addresses: []string{"10.1.0.5"}, Ports: []api.ServicePort{{Name: "a", Protocol: "TCP", Port: 0}}}}
		}},
		{"ports[2]", func(e *api.Export) {
			e.Ports = append(e.Ports, api.ServicePort{Name: "web", Protocol: "TCP", Port: 80})
		}},
		{"ports[1].name", func(e *api.Export) { e.Ports[1].Name = "http" }},
		{"ips[1]", func(e *api.Export) { e.IPs = []string{"10.96.0.10", "10.96.0.11"} }},
		{"ips[1]", func(e *api.Export) { e.IPs = []string{"fd00::a", "fd00::b"} }},
		{"ips[1]", func(e *api.Export) { e.IPs = []string{"10.96.0.10", "::ffff:10.96.0.11"} }},
		{"ips[0]", func(e *api.Export) { e.IPs = []string{"fe80::1%eth0"} }},
		{"ips[0]", func(e *api.Export) {
			e.IPs = []string{"10.96.0.10", "fd00::a"}
			e.IPFamilies = []string{"IPv6", "IPv4"}
		}},
		{"ips", func(e *api.Export) { e.IPFamilies = []string{"IPv4"} }},
		{"ipFamilies[1]", func(e *api.Export) { e.IPs = nil; e.IPFamilies = []string{"IPv4", "IPv4"} }},
		{"endpoints[0].addresses[0]", func(e *api.Export) {
			e.Endpoints = []api.Endpoint{{Addresses: []string{"fe80::1%eth0"}}}
		}},
		{"endpoints[0].addresses[1]", func(e *api.Export) {
			e.Endpoints = []api.Endpoint{{Addresses: []string{"10.1.0.5", "127.0.0.1"}}}
		}},
		{"endpoints[0].addresses[0]", func(e *api.Export) { e.Endpoints = []api.Endpoint{{Addresses: []string{"169.254.1.1"}}} }},
		{"ips[0]", func(e *api.Export) { e.IPs = []string{"0.0.0.0"} }},
		{"ips[1]", func(e *api.Export) { e.IPs = []string{"10.96.0.10", "ff02::1"} }},
		{"ips[1]", func(e *api.Export) { e.IPs = []string{"10.96.0.10", "::1"} }},
	}
	for _, tc := range cases {
		e := base()
		tc.mod(&e)
		err := Export(&e)
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("valid export refused: %v", err)
		case tc.field != "" && (err == nil || err.Field != tc.field):
			t.Errorf("want error on %s, got %v", tc.field, err)
		}
	}
}

func TestCIDRsRefuseUnroutable(t *testing.T) {
	for _, tc := range []struct {
		cidr string
		want string // substring of the error; "" means accepted
	}{
		{"10.1.0.0/16", ""},
		{"fd00:10::/56", ""},
		{"100.64.0.0/10", ""},
		{"240.0.0.0/4", ""}, // reserved, yet used for pods by some providers
		{"0.0.0.0/0", "default route"},
		{"::/0", "default route"},
		{"0.0.0.0/8", "this network"},
		{"0.0.0.0/1", "this network"},
		{"127.0.0.0/8", "loopback"},
		{"127.0.0.1/32", "loopback"},
		{"169.254.0.0/16", "link-local"},
		{"169.254.169.254/32", "link-local"},
		{"224.0.0.0/4", "multicast"},
		{"239.1.0.0/16", "multicast"},
		{"128.0.0.0/1", "link-local"},
		{"::/128", "unspecified"},
		{"::1/128", "loopback"},
		{"::/64", "unspecified"},
		{"fe80::/10", "link-local"},
		{"fe80::/64", "link-local"},
		{"ff02::/16", "multicast"},
		{"::ffff:10.1.0.0/112", "write it as the IPv4 CIDR 10.1.0.0/16"},
		{"::ffff:0:0/96", "write it as the IPv4 CIDR 0.0.0.0/0"},
		{"::fffe:0:0/95", "IPv4-mapped range"},
	} {
		_, err := CIDRs("podCIDRs", []string{tc.cidr}, true)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s refused: %v", tc.cidr, err)
		case tc.want != "" && err == nil:
			t.Errorf("%s accepted", tc.cidr)
		case tc.want != "" && (err.Field != "podCIDRs[0]" || err.Code != api.CodeInvalid || !strings.Contains(err.Message, tc.want)):
			t.Errorf("%s: got %+v, want Invalid on podCIDRs[0] mentioning %q", tc.cidr, err, tc.want)
		}
	}
}

func TestGatewayFields(t *testing.T) {
	base := func() api.Gateway {
		return api.Gateway{ClusterID: "east", Hostname: "gw-1", PrivateIP: "192.0.2.1", PublicIP: "198.51.100.1",
			Port: 51820, PublicKey: "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}
	}
	for _, tc := range []struct {
		field string
		mod   func(*api.Gateway)
	}{
		{"", func(*api.Gateway) {}},
		{"", func(g *api.Gateway) { g.PublicIP = "" }},
		{"", func(g *api.Gateway) { g.PrivateIP = "fd00::1" }},
		{"publicKey", func(g *api.Gateway) { g.PublicKey = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" }},
		{"privateIP", func(g *api.Gateway) { g.PrivateIP = "0.0.0.0" }},
		{"privateIP", func(g *api.Gateway) { g.PrivateIP = "::" }},
		{"privateIP", func(g *api.Gateway) { g.PrivateIP = "fe80::1%eth0" }},
		{"privateIP", func(g *api.Gateway) { g.PrivateIP = "::ffff:192.0.2.1" }},
		{"publicIP", func(g *api.Gateway) { g.PublicIP = "0.0.0.0" }},
		{"publicIP", func(g *api.Gateway) { g.PublicIP = "::" }},
	} {
		g := base()
		tc.mod(&g)
		err := Gateway(&g)
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("valid gateway refused: %v", err)
		case tc.field != "" && (err == nil || err.Field != tc.field):
			t.Errorf("want error on %s, got %v", tc.field, err)
		}
	}
}

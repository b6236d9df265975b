package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/gateway"
	"github.com/tunnelmesh/tunnelmesh/pkg/gossip"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/election"
	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/node"
	"github.com/tunnelmesh/tunnelmesh/pkg/routeagent"
	"github.com/tunnelmesh/tunnelmesh/pkg/wg"
)

// mode is the subcommand a setting belongs to.
type mode int

const (
	modeRun  mode = 1 << iota // `gateway run`: one gateway outside Kubernetes
	modeK8s                   // `gateway k8s`: a node's roles in Kubernetes
	modeBoth = modeRun | modeK8s
)

// config is every setting of `gateway run` and `gateway k8s`: one type, its
// defaults in one place (defaultConfig), its flags and their help made from
// it (register), its checks in one place (check).
type config struct {
	// Both.
	PodCIDRs, ServiceCIDRs []string
	Interface              string
	ListenPort             int
	MTU                    int
	WireGuard              string
	RunDir                 string
	StateFile              string
	PublicIP               string
	HeartbeatInterval      time.Duration
	Metrics                string
	LogLevel               string
	// ResolvConf: the node's resolv.conf files (its DNS upstreams).
	ResolvConf []string

	// gateway run.
	ClusterID, Broker, CAFile, CredentialFile, JoinTokenFile, KeyFile, Hostname, PrivateIP string
	Epoch                                                                                  int64

	// gateway k8s.
	Kubeconfig, NodeName, Namespace             string
	NodeIPs, ReplyDevices                       []string
	GossipPort, ClustersetGossipPort            int
	LeaseDuration, RenewInterval, RenewDeadline time.Duration
	StatusInterval                              time.Duration
	AgentMode                                   string
	Role                                        string
}

// defaultConfig is the one place defaults are set; the packages' own
// defaults (election, gossip, routeagent, wg) are read from them, so the
// help states what the code does.
func defaultConfig() config {
	return config{
		Interface: defaults.Interface, ListenPort: defaults.ListenPort, WireGuard: string(wg.ModeAuto), RunDir: wg.DefaultRunDir,
		HeartbeatInterval: gateway.DefaultHeartbeatInterval, Metrics: ":9570", LogLevel: "info",
		KeyFile: "/var/lib/tunnelmesh/private.key", Epoch: 1,
		NodeName: os.Getenv("NODE_NAME"), Namespace: defaults.Namespace,
		GossipPort: election.DefaultGossipPort, ClustersetGossipPort: gossip.DefaultPort,
		LeaseDuration: election.DefaultLeaseDuration, RenewInterval: election.DefaultRenewInterval,
		RenewDeadline: election.DefaultRenewDeadline, StatusInterval: 5 * time.Second,
		AgentMode: string(routeagent.ModeVXLAN), Role: "auto",
	}
}

// defaultResolvConf is where the node's DNS upstreams are read: the host's
// file outside Kubernetes, the hostPath the DaemonSet mounts in it (the
// pod's own /etc/resolv.conf names the cluster DNS).
func defaultResolvConf(m mode) []string {
	if m == modeK8s {
		return []string{"/host/etc/resolv.conf"}
	}
	return []string{"/etc/resolv.conf"}
}

// setting is one flag: its name, where it applies, its help and the field.
type setting struct {
	name  string
	in    mode
	help  string
	field any // *string, *int, *int64, *[]string or *time.Duration
}

func (c *config) settings() []setting {
	return []setting{
		{"cluster-id", modeRun, "this cluster's ID in the clusterset (required)", &c.ClusterID},
		{"pod-cidr", modeRun, "this cluster's pod CIDR (repeatable, required)", &c.PodCIDRs},
		{"pod-cidr", modeK8s, "this cluster's pod CIDR, overriding discovery (repeatable)", &c.PodCIDRs},
		{"service-cidr", modeRun, "this cluster's service CIDR (repeatable)", &c.ServiceCIDRs},
		{"service-cidr", modeK8s, "this cluster's service CIDR, overriding discovery (repeatable)", &c.ServiceCIDRs},
		{"broker", modeRun, "broker URL, e.g. https://192.0.2.1:8443 (required)", &c.Broker},
		{"ca-file", modeRun, "PEM file with the broker's CA certificate (required)", &c.CAFile},
		{"credential-file", modeRun, "file holding this cluster's broker credential (required; written by a join with --join-token-file)", &c.CredentialFile},
		{"join-token-file", modeRun, "join token to use when --credential-file does not exist yet; the credential it yields is stored there", &c.JoinTokenFile},
		{"key-file", modeRun, "WireGuard private key file; created if missing", &c.KeyFile},
		{"epoch", modeRun, "failover epoch announced with the active registration; raise it to take over from another active gateway of the cluster", &c.Epoch},
		{"hostname", modeRun, "gateway name announced to the broker (default: the host name)", &c.Hostname},
		{"private-ip", modeRun, "underlay address (default: the local address towards the broker)", &c.PrivateIP},
		{"kubeconfig", modeK8s, "kubeconfig file (default: the pod's in-cluster configuration)", &c.Kubeconfig},
		{"role", modeK8s, "agent (the route agent: every node), candidate (a gateway candidate: labelled nodes) or auto (both, by the node's label, one account)", &c.Role},
		{"cluster-id", modeK8s, "this cluster's ID: the route agent follows only the MeshGateway of that name (required with --role agent)", &c.ClusterID},
		{"node-name", modeK8s, "this node's name (default $NODE_NAME, from the downward API)", &c.NodeName},
		{"node-ip", modeRun, "address of another node of this cluster whose host-network traffic may enter the tunnel through this gateway (repeatable; this host's own addresses always may)", &c.NodeIPs},
		{"node-ip", modeK8s, "this node's underlay address (repeatable; default: the Node's InternalIPs; in the DaemonSet: status.hostIP)", &c.NodeIPs},
		{"namespace", modeK8s, "namespace of the Lease, Secrets and MeshGateway", &c.Namespace},
		{"interface", modeBoth, "WireGuard interface name", &c.Interface},
		{"listen-port", modeBoth, "WireGuard UDP port (1-65535)", &c.ListenPort},
		{"mtu", modeRun, fmt.Sprintf("tunnel MTU (default: underlay MTU - %d)", defaults.WireGuardOverhead), &c.MTU},
		{"mtu", modeK8s, fmt.Sprintf("tunnel MTU (default: the node's underlay MTU - %d)", defaults.WireGuardOverhead), &c.MTU},
		{"wireguard", modeBoth, "WireGuard implementation: auto, kernel or userspace", &c.WireGuard},
		{"run-dir", modeBoth, "directory for the UAPI socket; another directory is bound over " + wg.DefaultRunDir + " in a private mount namespace", &c.RunDir},
		{"state-file", modeRun, "last broker state, reused when restarting during a broker outage (default: state.json next to --key-file)", &c.StateFile},
		{"state-file", modeK8s, "last broker state (keep it on a hostPath), reused when restarting during a broker outage (default: " + k8sStateFile + ")", &c.StateFile},
		{"public-ip", modeRun, "public address peers should use (default: none; peers use the private or broker-observed address)", &c.PublicIP},
		{"public-ip", modeK8s, "public address remote gateways should use (default: the node's InternalIP)", &c.PublicIP},
		{"gossip-port", modeK8s, "memberlist port of the gateway candidates (TCP and UDP)", &c.GossipPort},
		{"clusterset-gossip-port", modeK8s, "memberlist port of the active gateways of all clusters on their tunnel addresses (TCP and UDP; the same in every cluster)", &c.ClustersetGossipPort},
		{"lease-duration", modeK8s, "Lease duration (whole seconds)", &c.LeaseDuration},
		{"renew-interval", modeK8s, "Lease renewal interval", &c.RenewInterval},
		{"renew-deadline", modeK8s, "an active that cannot renew for this long steps down", &c.RenewDeadline},
		{"heartbeat-interval", modeBoth, "broker heartbeat interval", &c.HeartbeatInterval},
		{"status-interval", modeK8s, "MeshGateway status writes while active", &c.StatusInterval},
		{"agent-mode", modeK8s, "how nodes reach the active gateway node: vxlan or direct", &c.AgentMode},
		{"reply-device", modeK8s, "a CNI overlay device replies may arrive on (e.g. flannel.1), loosened like the underlay (repeatable)", &c.ReplyDevices},
		{"metrics", modeRun, "Prometheus metrics listen address; without a host: on --private-ip (0.0.0.0:PORT for every address; empty disables)", &c.Metrics},
		{"metrics", modeK8s, "Prometheus metrics listen address; without a host: on the node's address (--node-ip, else its InternalIP; 0.0.0.0:PORT for every address; empty disables)", &c.Metrics},
		{"log-level", modeBoth, "debug, info, warn or error", &c.LogLevel},
		{"resolv-conf", modeBoth, "the node's resolv.conf (repeatable): a remote CIDR covering one of its nameservers is refused", &c.ResolvConf},
	}
}

// k8sStateFile is `gateway k8s`'s state file when --state-file is empty.
const k8sStateFile = "/var/lib/tunnelmesh/state.json"

// register adds m's flags to fs, each with the field's current value as its
// default (pflag prints it in the help).
func (c *config) register(fs *pflag.FlagSet, m mode) {
	c.ResolvConf = defaultResolvConf(m)
	for _, s := range c.settings() {
		if s.in&m == 0 {
			continue
		}
		switch p := s.field.(type) {
		case *string:
			fs.StringVar(p, s.name, *p, s.help)
		case *int:
			fs.IntVar(p, s.name, *p, s.help)
		case *int64:
			fs.Int64Var(p, s.name, *p, s.help)
		case *[]string:
			fs.StringSliceVar(p, s.name, *p, s.help)
		case *time.Duration:
			fs.DurationVar(p, s.name, *p, s.help)
		default:
			panic(fmt.Sprintf("setting %s: unsupported type %T", s.name, s.field))
		}
	}
}

// parsed is what check derives from a config.
type parsed struct {
	pods, services []netip.Prefix
	nodeIPs        []netip.Addr
	agentMode      routeagent.Mode
	role           node.Role
}

// check validates c for m and fills in the defaults that depend on other
// settings; it changes nothing outside c.
func (c *config) check(m mode) (parsed, error) {
	var p parsed
	if m == modeRun {
		var missing []string
		for _, fv := range [][2]string{{"cluster-id", c.ClusterID}, {"broker", c.Broker}, {"ca-file", c.CAFile}, {"credential-file", c.CredentialFile}} {
			if fv[1] == "" {
				missing = append(missing, "--"+fv[0])
			}
		}
		if len(c.PodCIDRs) == 0 {
			missing = append(missing, "--pod-cidr")
		}
		if len(missing) > 0 {
			return p, fmt.Errorf("missing required flags: %s", strings.Join(missing, ", "))
		}
		if c.Epoch < 1 {
			return p, fmt.Errorf("--epoch %d: want 1 or more", c.Epoch)
		}
		if c.StateFile == "" {
			c.StateFile = filepath.Join(filepath.Dir(c.KeyFile), "state.json")
		}
	}
	if m == modeK8s {
		if c.NodeName == "" {
			return p, errors.New("--node-name is required (in the DaemonSet: env NODE_NAME from fieldRef spec.nodeName)")
		}
		if c.StateFile == "" {
			c.StateFile = k8sStateFile
		}
		var err error
		if p.agentMode, err = routeagent.ParseMode(c.AgentMode); err != nil {
			return p, fmt.Errorf("--agent-mode: %w", err)
		}
		if p.role, err = node.ParseRole(c.Role); err != nil {
			return p, fmt.Errorf("--role: %w", err)
		}
		if p.role == node.RoleAgent && c.ClusterID == "" {
			return p, errors.New("--role agent needs --cluster-id (the route agent follows only the cluster's own MeshGateway)")
		}
	}
	for _, s := range c.NodeIPs {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return p, fmt.Errorf("--node-ip %q: want an IP address: %w", s, err)
		}
		p.nodeIPs = append(p.nodeIPs, ip.Unmap())
	}
	if c.ListenPort < 1 || c.ListenPort > 65535 {
		return p, fmt.Errorf("--listen-port %d: want a fixed UDP port in 1-65535 (remote gateways reach this one on the port it announces; 0 would pick a random one)", c.ListenPort)
	}
	var err error
	if p.pods, err = gateway.ParsePrefixes("pod-cidr", c.PodCIDRs); err != nil {
		return p, err
	}
	if p.services, err = gateway.ParsePrefixes("service-cidr", c.ServiceCIDRs); err != nil {
		return p, err
	}
	return p, nil
}

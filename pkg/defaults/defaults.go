// Package defaults holds the names and numbers that the gateway, the
// Kubernetes packages, the export controller and meshctl must agree on.
// It is a leaf that imports nothing, rather than part of pkg/api: these
// are not the broker's wire contract, and the packages that share them
// must not import one another (or wireguard-go) to read a constant.
package defaults

const (
	// Namespace holds everything tunnelmesh runs or keeps in a member
	// cluster (DESIGN.md fixes it).
	Namespace = "tunnelmesh-system"
	// Interface is the WireGuard interface's name.
	Interface = "tmesh0"
	// ListenPort is the gateways' WireGuard UDP port.
	ListenPort = 51820
	// WireGuardOverhead is WireGuard's worst-case encapsulation overhead
	// over IPv6 (40 IPv6 + 8 UDP + 32 WireGuard): the tunnel MTU is the
	// underlay's less this, which is safe for both address families.
	WireGuardOverhead = 80
)

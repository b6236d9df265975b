// Package gateway is the gateway's data plane and its bond to the broker: a
// pure function from the local cluster's configuration and the broker's
// snapshot to the desired WireGuard peers, routes and firewall (Compute);
// the DataPlane that converges the host to one desired state, active or
// standby; the Member loop that registers and heartbeats with the role and
// epoch its caller gives; and the Engine that ties them together, probes
// each peer through the tunnel and reports health.
package gateway

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/cidr"
	"github.com/tunnelmesh/tunnelmesh/pkg/defaults"
	"github.com/tunnelmesh/tunnelmesh/pkg/nft"
	"github.com/tunnelmesh/tunnelmesh/pkg/routes"
	"github.com/tunnelmesh/tunnelmesh/pkg/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Keepalive is the persistent keepalive of every peer: it keeps NAT
// bindings open and lets the remote side learn our endpoint.
const Keepalive = 10 * time.Second

// Local is this gateway's own configuration.
type Local struct {
	ClusterID    string
	Interface    string
	PodCIDRs     []netip.Prefix
	ServiceCIDRs []netip.Prefix
	// ObservedIP is the address the broker saw for this gateway, if known;
	// a remote gateway behind the same NAT is reached on its private IP.
	// Unset, it is read from this gateway's own record (Hostname), else
	// from its cluster's active one.
	ObservedIP string
	// Hostname is this gateway's hostname in the broker's records.
	Hostname string
	// UnderlayAddrs are this gateway's own underlay addresses and
	// BrokerAddrs the broker's: a remote CIDR covering one of them (or a
	// peer's endpoint) would pull that traffic into the tunnel, so it is refused.
	UnderlayAddrs []netip.Addr
	BrokerAddrs   []netip.Addr
	// NodeAddrs are the addresses of the cluster's nodes: with the local
	// CIDRs, the only sources forwarded into the tunnel (their host-network
	// traffic is SNATed to the tunnel IP). A remote CIDR covering one is
	// refused, as is one covering APIServerAddrs (the endpoints of the
	// local API server) or DNSAddrs (this node's DNS upstreams).
	NodeAddrs      []netip.Addr
	APIServerAddrs []netip.Addr
	DNSAddrs       []netip.Addr
}

// RemotePeer is one remote cluster the gateway links to.
type RemotePeer struct {
	Cluster  string
	TunnelIP netip.Addr // probe target
	Gateway  string     // hostname of the chosen gateway
	Stale    bool       // chosen gateway is stale or not active: no better one known
	Peer     wg.Peer
}

// Desired is everything the gateway should have applied. The zero value is
// the standby shape: no peers, no tunnel address, no routes, no table.
type Desired struct {
	TunnelIP netip.Addr // local cluster's tunnel IP; invalid until the broker assigned one
	Peers    []RemotePeer
	Routes   routes.State
	Firewall nft.Desired
	// Problems lists remote clusters or CIDRs skipped and why.
	Problems []string
	// Refused are remote CIDRs left out because they cover an address the
	// gateway must reach outside the tunnel.
	Refused []RefusedCIDR
}

// RefusedCIDR is a remote cluster's CIDR that Compute left out.
type RefusedCIDR struct {
	Cluster string
	CIDR    netip.Prefix
	Covers  netip.Addr
	What    string // "this gateway's underlay address", "the broker", "the endpoint of cluster x"
}

// Standby is the desired state of a gateway that stands by: its device is
// open with the cluster's key but holds no peer and no address.
var Standby = Desired{}

// Equal reports whether d and e need the same WireGuard peers, routes and
// firewall; status-only fields (problems, staleness, hostnames) are ignored.
func (d Desired) Equal(e Desired) bool {
	if d.TunnelIP != e.TunnelIP || len(d.Peers) != len(e.Peers) || !d.Firewall.Equal(e.Firewall) ||
		!reflect.DeepEqual(d.Routes, e.Routes) {
		return false
	}
	for i := range d.Peers {
		if d.Peers[i].TunnelIP != e.Peers[i].TunnelIP || !d.Peers[i].Peer.Equal(e.Peers[i].Peer) {
			return false
		}
	}
	return true
}

// IPv6 reports whether an IPv6 CIDR or address is in play.
func (d Desired) IPv6() bool {
	for _, p := range slices.Concat(d.Firewall.Local, d.Firewall.Remote) {
		if !p.Addr().Unmap().Is4() {
			return true
		}
	}
	for _, r := range d.Routes.Routes {
		if !r.Dst.Addr().Unmap().Is4() {
			return true
		}
	}
	return d.TunnelIP.IsValid() && !d.TunnelIP.Unmap().Is4()
}

// Compute derives the desired data-plane state from the local config and the
// broker snapshot. It is pure: same inputs, same output, no I/O.
func Compute(local Local, snap api.Snapshot) Desired {
	var d Desired
	d.Firewall = nft.Desired{Interface: local.Interface, Local: slices.Concat(local.PodCIDRs, local.ServiceCIDRs)}
	for _, a := range slices.Concat(local.NodeAddrs, local.UnderlayAddrs) {
		d.Firewall.Nodes = append(d.Firewall.Nodes, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}

	gws := map[string][]api.Gateway{}
	for _, g := range snap.Gateways {
		gws[g.ClusterID] = append(gws[g.ClusterID], g)
	}
	member := false
	observedKnown := local.ObservedIP != "" // else read from the records below
	for _, c := range snap.Clusters {
		if c.ID != local.ClusterID {
			continue
		}
		member = true
		for _, t := range c.Translations {
			real, mapped, err := t.Prefixes()
			if err != nil {
				d.Problems = append(d.Problems, fmt.Sprintf("this cluster's %v; not translated", err))
				continue
			}
			d.Firewall.Translate = append(d.Firewall.Translate, nft.Translation{Real: real, Mapped: mapped})
		}
		if a, err := netip.ParseAddr(c.TunnelIP); err == nil {
			d.TunnelIP = a
			if !observedKnown {
				local.ObservedIP, observedKnown = observedSelf(local.Hostname, gws[c.ID])
			}
		}
	}
	if d.TunnelIP.IsValid() {
		d.Routes.Addresses = []routes.Address{{Dev: local.Interface, Prefix: netip.PrefixFrom(d.TunnelIP, d.TunnelIP.BitLen())}}
		if d.TunnelIP.Is4() {
			d.Firewall.SNAT4 = d.TunnelIP
		} else {
			d.Firewall.SNAT6 = d.TunnelIP
		}
	}

	if !member {
		// Removed from the clusterset (or not joined): link to nobody.
		d.Problems = append(d.Problems, fmt.Sprintf("cluster %q is not a member of the clusterset", local.ClusterID))
		return d
	}
	clusters := slices.Clone(snap.Clusters)
	sort.Slice(clusters, func(i, j int) bool { return clusters[i].ID < clusters[j].ID })
	protected := protectedAddrs(local)
	endpoints := map[string]netip.Addr{}  // remote cluster -> its chosen gateway's endpoint
	undecided := map[string]api.Gateway{} // remote cluster -> its gateway, whose endpoint needs our observed IP
	for _, c := range clusters {
		if g, ok := chooseGateway(gws[c.ID]); ok && c.ID != local.ClusterID {
			if !observedKnown && natDependent(g) {
				undecided[c.ID] = g
			} else if ep := endpoint(local, g); ep.IsValid() {
				endpoints[c.ID] = ep.Addr()
			}
		}
	}
	for _, c := range clusters {
		if c.ID == local.ClusterID {
			continue
		}
		// Private or observed address: which one depends on whether the
		// broker sees this gateway from the same address (one NAT), and it
		// has not recorded this gateway yet (its first moments). Linked a
		// moment later, never first to a guess: a handshake sent to the
		// wrong address is retried by WireGuard only after 5 s.
		if g, ok := undecided[c.ID]; ok {
			d.Problems = append(d.Problems, fmt.Sprintf("cluster %q: waiting for the broker's record of this gateway: whether it sees gateway %s from the same address decides its endpoint (private %s or observed %s)",
				c.ID, g.Hostname, g.PrivateIP, g.ObservedIP))
			continue
		}
		// A gateway endpoint inside another cluster's CIDR: routing that CIDR
		// into the tunnel would swallow the peer's own packets. The peer that
		// registered the endpoint is refused, never the other cluster's CIDR
		// (any member could otherwise cut another off mesh-wide).
		if ep, ok := endpoints[c.ID]; ok {
			if other, p, found := insideOther(clusters, local.ClusterID, c.ID, ep, protected); found {
				d.Problems = append(d.Problems, fmt.Sprintf("cluster %q: its gateway endpoint %s lies inside cluster %q's CIDR %s; this peer is refused, %q stays linked",
					c.ID, ep, other, p, other))
				continue
			}
		}
		prot := protected
		if ep, ok := endpoints[c.ID]; ok {
			prot = append(slices.Clone(protected), protected1{ep, fmt.Sprintf("the endpoint of cluster %q's gateway", c.ID)})
		}
		rp, refused, problem := remotePeer(local, d.TunnelIP, d.Firewall.Translate, c, gws[c.ID], prot)
		for _, r := range refused {
			d.Refused = append(d.Refused, r)
			d.Problems = append(d.Problems, fmt.Sprintf("cluster %q: CIDR %s covers %s (%s); refused, the rest of the cluster stays linked",
				r.Cluster, r.CIDR, r.Covers, r.What))
		}
		if problem != "" {
			d.Problems = append(d.Problems, fmt.Sprintf("cluster %q: %s", c.ID, problem))
			continue
		}
		d.Peers = append(d.Peers, rp)
		remote := slices.DeleteFunc(slices.Clone(rp.Peer.AllowedIPs), func(p netip.Prefix) bool {
			return p.Addr() == rp.TunnelIP && p.IsSingleIP()
		})
		d.Firewall.Remote = append(d.Firewall.Remote, remote...)
		for _, p := range rp.Peer.AllowedIPs {
			d.Routes.Routes = append(d.Routes.Routes, routes.Route{Dst: p, Dev: local.Interface, Src: d.TunnelIP})
		}
	}
	return d
}

// insideOther finds a cluster other than local and self whose CIDR holds a
// and is routed into the tunnel. A CIDR covering one of this cluster's
// protected addresses is refused by remotePeer and never routed, so it
// cannot swallow a peer's packets and refuses nobody.
func insideOther(clusters []api.Cluster, local, self string, a netip.Addr, prot []protected1) (string, netip.Prefix, bool) {
	for _, o := range clusters {
		if o.ID == local || o.ID == self {
			continue
		}
		for _, s := range o.MeshCIDRs() {
			p, err := cidr.Parse(s, cidr.Mask)
			if err != nil || !p.Contains(a) || coversAny(p, prot) {
				continue
			}
			return o.ID, p, true
		}
	}
	return "", netip.Prefix{}, false
}

// coversAny reports whether p holds one of the protected addresses.
func coversAny(p netip.Prefix, prot []protected1) bool {
	for _, pa := range prot {
		if p.Contains(pa.addr) {
			return true
		}
	}
	return false
}

// protected1 is an address the gateway reaches outside the tunnel.
type protected1 struct {
	addr netip.Addr
	what string
}

// protectedAddrs are this cluster's own addresses no remote CIDR may
// cover: this gateway's underlay, the broker, every node, the API server's
// endpoints and this node's DNS upstreams.
func protectedAddrs(local Local) []protected1 {
	var out []protected1
	for _, set := range []struct {
		addrs []netip.Addr
		what  string
	}{{local.UnderlayAddrs, "this gateway's underlay address"}, {local.BrokerAddrs, "the broker's address"},
		{local.NodeAddrs, "a node of this cluster"}, {local.APIServerAddrs, "the local API server"},
		{local.DNSAddrs, "a DNS upstream of this node"}} {
		for _, a := range set.addrs {
			out = append(out, protected1{a.Unmap(), set.what})
		}
	}
	return out
}

// remotePeer is cluster c as a WireGuard peer: its mesh CIDRs (mapped
// where it is translated) are its allowed IPs.
func remotePeer(local Local, localTunnel netip.Addr, xlat []nft.Translation, c api.Cluster, gws []api.Gateway, prot []protected1) (RemotePeer, []RefusedCIDR, string) {
	rp := RemotePeer{Cluster: c.ID}
	g, ok := chooseGateway(gws)
	if !ok {
		return rp, nil, "no gateway registered yet"
	}
	key, err := wgtypes.ParseKey(g.PublicKey)
	if err != nil {
		return rp, nil, fmt.Sprintf("gateway %s has an invalid public key: %v", g.Hostname, err)
	}
	rp.Gateway, rp.Stale = g.Hostname, g.Stale || !g.Active
	tip, err := netip.ParseAddr(c.TunnelIP)
	if err != nil {
		return rp, nil, fmt.Sprintf("invalid tunnel IP %q", c.TunnelIP)
	}
	if tip == localTunnel {
		return rp, nil, fmt.Sprintf("tunnel IP %s equals ours", tip)
	}
	rp.TunnelIP = tip
	allowed := []netip.Prefix{netip.PrefixFrom(tip, tip.BitLen())}
	var refused []RefusedCIDR
cidrs:
	for _, s := range c.MeshCIDRs() {
		p, err := cidr.Parse(s, cidr.Mask)
		if err != nil {
			return rp, nil, fmt.Sprintf("invalid CIDR %q", s)
		}
		for _, l := range slices.Concat(local.PodCIDRs, local.ServiceCIDRs) {
			if l.Overlaps(p) {
				return rp, nil, fmt.Sprintf("CIDR %s overlaps local CIDR %s; skipped", p, l)
			}
		}
		for _, t := range xlat {
			if t.Mapped.Overlaps(p) {
				return rp, nil, fmt.Sprintf("CIDR %s overlaps this cluster's mapped CIDR %s; skipped", p, t.Mapped)
			}
		}
		for _, pa := range prot {
			if p.Contains(pa.addr) {
				refused = append(refused, RefusedCIDR{Cluster: c.ID, CIDR: p, Covers: pa.addr, What: pa.what})
				continue cidrs
			}
		}
		allowed = append(allowed, p)
	}
	rp.Peer = wg.Peer{
		Cluster:    c.ID,
		PublicKey:  key,
		Endpoint:   endpoint(local, g),
		AllowedIPs: allowed,
		Keepalive:  Keepalive,
	}
	return rp, refused, ""
}

// observedSelf is the address the broker saw for this gateway, and whether
// it is known: its own record's (a standby registers too, so it is known
// before a failover), else its cluster's active record's. Mid-failover the
// cluster may have no active record (the old active registered as standby,
// the new one not yet as active), and a gateway that just started may not
// see its own record yet: not known then.
func observedSelf(hostname string, own []api.Gateway) (string, bool) {
	active, found := "", false
	for _, g := range own {
		switch {
		case hostname != "" && g.Hostname == hostname:
			return g.ObservedIP, true
		case g.Active && g.ObservedIP != "":
			active, found = g.ObservedIP, true
		}
	}
	return active, found
}

// chooseGateway picks the gateway whose endpoint the peer uses: the active,
// fresh one; failing that the best remaining record, so a heartbeat gap
// (a restarting gateway, a broker outage) never tears a working tunnel down.
// Among equals the highest epoch (the latest failover) wins, then the
// hostname. All candidates share the cluster's key, so only the endpoint
// depends on it.
func chooseGateway(gws []api.Gateway) (api.Gateway, bool) {
	if len(gws) == 0 {
		return api.Gateway{}, false
	}
	rank := func(g api.Gateway) int {
		switch {
		case g.Active && !g.Stale:
			return 0
		case g.Active:
			return 1
		case !g.Stale:
			return 2
		}
		return 3
	}
	best := gws[0]
	for _, g := range gws[1:] {
		rb, rg := rank(best), rank(g)
		if rg < rb || rg == rb && (g.Epoch > best.Epoch || g.Epoch == best.Epoch && g.Hostname < best.Hostname) {
			best = g
		}
	}
	return best, true
}

// natDependent: g announces no public IP and the broker saw it from another
// address than its private one, so its endpoint depends on whether the broker
// sees this gateway from that same address (one NAT: the private IP) or not
// (the observed one).
func natDependent(g api.Gateway) bool {
	return g.PublicIP == "" && g.ObservedIP != "" && g.ObservedIP != g.PrivateIP
}

// endpoint: the public IP when the gateway announces one; the private IP
// when both gateways sit behind the same public address (same site) or the
// broker saw no NAT; otherwise the address the broker observed (the NAT's
// public side — WireGuard roaming then corrects the port once the remote
// side's keepalives arrive).
func endpoint(local Local, g api.Gateway) netip.AddrPort {
	port := g.Port
	if port == 0 {
		port = defaults.ListenPort
	}
	pick := func(s string) netip.AddrPort {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.AddrPort{}
		}
		return netip.AddrPortFrom(a.Unmap(), uint16(port))
	}
	switch {
	case g.PublicIP != "":
		return pick(g.PublicIP)
	case !natDependent(g) || g.ObservedIP == local.ObservedIP:
		return pick(g.PrivateIP)
	default:
		return pick(g.ObservedIP)
	}
}

// ParsePrefixes parses CIDR flags (host bits cleared), with a clear error
// naming the flag for bad input.
func ParsePrefixes(flag string, ss []string) ([]netip.Prefix, error) {
	out, err := cidr.ParseList(ss, cidr.Mask)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flag, err)
	}
	return out, nil
}

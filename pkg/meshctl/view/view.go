// Package view turns the broker's state into what `meshctl show` prints:
// tables, the objects behind them for -o json|yaml, and a Graphviz graph.
// Everything here is pure: a Data in, text out.
package view

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/output"
)

// Data is everything show needs, read at one moment.
type Data struct {
	Snapshot api.Snapshot
	// Status is the gateways' reported liveness and health.
	Status []api.GatewayStatus
	// Viewer is the cluster whose credential read the broker ("" for the
	// admin): the broker shows a cluster credential only its own status.
	Viewer string
	// ServiceImports are this cluster's own (show imports, show all);
	// HasCluster tells whether a cluster was read at all.
	ServiceImports []mcsv1beta1.ServiceImport
	// WithheldSlices are this cluster's import slices marked withheld.
	WithheldSlices []discoveryv1.EndpointSlice
	HasCluster     bool
	// Policy is the clusterset's policy and the members outside it; nil
	// when the broker does not serve it (an older broker).
	Policy *api.PolicyStatus
	Now    time.Time
}

// Load reads the broker's state and its gateways' status.
func Load(ctx context.Context, c *brokerclient.Client) (*Data, error) {
	snap, err := c.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	d := &Data{Snapshot: *snap, Now: time.Now()}
	if p, err := api.ParseCredential(c.Credential()); err == nil && p.Prefix == api.PrefixCluster {
		d.Viewer = p.ID
	}
	if d.Status, err = c.Status(ctx); err != nil {
		return nil, fmt.Errorf("read gateway status: %w", err)
	}
	var ae *api.Error
	switch d.Policy, err = c.Policy(ctx); {
	case errors.As(err, &ae) && ae.Code == api.CodeNotFound:
		d.Policy = nil // a broker from before the clusterset policy
	case err != nil:
		return nil, fmt.Errorf("read the clusterset policy: %w", err)
	}
	return d, nil
}

func (d *Data) statuses() []api.GatewayStatus { return d.Status }

func (d *Data) status(cluster, host string) (api.GatewayStatus, bool) {
	for _, s := range d.statuses() {
		if s.ClusterID == cluster && s.Hostname == host {
			return s, true
		}
	}
	return api.GatewayStatus{}, false
}

// ClusterView is a member as `show clusters` shows it.
type ClusterView struct {
	api.Cluster
	// OutsidePolicy lists the member's CIDRs that the clusterset policy
	// does not allow (it joined under an earlier policy): flagged, not
	// removed.
	OutsidePolicy []api.PolicyViolation `json:"outsidePolicy,omitempty"`
}

// Clusters is `show clusters`: the members, whether each is inside the
// clusterset policy, and the policy under the table.
func (d *Data) Clusters() ([]ClusterView, output.Grid) {
	cs := append([]api.Cluster(nil), d.Snapshot.Clusters...)
	sort.Slice(cs, func(i, j int) bool { return cs[i].ID < cs[j].ID })
	g := output.Grid{Headers: []string{"CLUSTER", "POD CIDRS", "SERVICE CIDRS", "TUNNEL IP", "ACTIVE GATEWAY", "EXPORTS", "POLICY", "AGE"}}
	out := make([]ClusterView, 0, len(cs))
	for _, c := range cs {
		active, n := "", 0
		for _, gw := range d.Snapshot.Gateways {
			if gw.ClusterID == c.ID && gw.Active {
				active = gw.Hostname
			}
		}
		for _, e := range d.Snapshot.Exports {
			if e.ClusterID == c.ID {
				n++
			}
		}
		v := ClusterView{Cluster: c}
		policy := ""
		if d.Policy != nil {
			var outside []string
			for _, o := range d.Policy.Outside {
				if o.Cluster == c.ID {
					v.OutsidePolicy = append(v.OutsidePolicy, o)
					outside = append(outside, o.CIDR)
				}
			}
			policy = "ok"
			if len(outside) > 0 {
				policy = "outside: " + strings.Join(outside, ",")
			}
		}
		out = append(out, v)
		g.Rows = append(g.Rows, []string{c.ID, strings.Join(realAndMapped(c, c.PodCIDRs), ","), strings.Join(realAndMapped(c, c.ServiceCIDRs), ","), c.TunnelIP,
			active, strconv.Itoa(n), policy, Age(d.Now, c.JoinedAt)})
	}
	if p := d.Policy; p != nil {
		note := "Clusterset policy: " + p.Policy.String()
		if p.Default {
			note += " (the default)"
		}
		g.Notes = append(g.Notes, note)
		if len(p.Outside) > 0 {
			g.Notes = append(g.Notes, "Members outside the policy joined before it was tightened: they stay linked; the broker's admin removes them if they must go.")
		}
	}
	return out, g
}

// realAndMapped lists cidrs of c (its pod or service CIDRs), each
// translated one beside the mapped CIDR the rest of the mesh knows it by:
// "10.244.0.0/16 as 240.0.0.0/16".
func realAndMapped(c api.Cluster, cidrs []string) []string {
	ss := make([]string, 0, len(cidrs))
	for _, s := range cidrs {
		if m := c.MappedOf(s); m != "" {
			s += " as " + m
		}
		ss = append(ss, s)
	}
	return ss
}

// Gateways is `show gateways`.
func (d *Data) Gateways() ([]api.Gateway, output.Grid) {
	gws := append([]api.Gateway(nil), d.Snapshot.Gateways...)
	sort.Slice(gws, func(i, j int) bool {
		if gws[i].ClusterID != gws[j].ClusterID {
			return gws[i].ClusterID < gws[j].ClusterID
		}
		return gws[i].Hostname < gws[j].Hostname
	})
	g := output.Grid{Headers: []string{"CLUSTER", "GATEWAY", "ROLE", "ENDPOINT", "EPOCH", "HEARTBEAT", "STATE"}}
	for _, gw := range gws {
		role := "standby"
		if gw.Active {
			role = "active"
		}
		var hb time.Time
		if s, ok := d.status(gw.ClusterID, gw.Hostname); ok {
			hb = s.LastHeartbeat
		}
		state := "ok"
		if gw.Stale {
			state = "stale"
		}
		g.Rows = append(g.Rows, []string{gw.ClusterID, gw.Hostname, role, Endpoint(gw), strconv.FormatInt(gw.Epoch, 10), Ago(d.Now, hb), state})
	}
	return gws, g
}

// Endpoint is where peers send a gateway's WireGuard traffic.
func Endpoint(gw api.Gateway) string {
	ip := gw.PublicIP
	if ip == "" {
		ip = gw.PrivateIP
	}
	if ip == "" {
		return ""
	}
	if strings.Contains(ip, ":") {
		ip = "[" + ip + "]"
	}
	return fmt.Sprintf("%s:%d", ip, gw.Port)
}

// Exports is `show exports`.
func (d *Data) Exports() ([]api.Export, output.Grid) {
	es := append([]api.Export(nil), d.Snapshot.Exports...)
	sort.Slice(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.ClusterID < b.ClusterID
	})
	g := output.Grid{Headers: []string{"NAMESPACE", "NAME", "CLUSTER", "TYPE", "PORTS", "ADDRESSES", "AGE"}}
	for _, e := range es {
		var ports []string
		for _, p := range e.Ports {
			ports = append(ports, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
		}
		addrs := strings.Join(e.IPs, ",")
		if e.Type == api.TypeHeadless {
			ready := 0
			for _, ep := range e.Endpoints {
				if ep.Ready {
					ready++
				}
			}
			addrs = fmt.Sprintf("%d/%d endpoints ready", ready, len(e.Endpoints))
		}
		g.Rows = append(g.Rows, []string{e.Namespace, e.Name, e.ClusterID, e.Type, strings.Join(ports, ","), addrs, Age(d.Now, e.CreatedAt)})
	}
	return es, g
}

// Connection is one gateway's link to one remote cluster.
type Connection struct {
	Gateway       string    `json:"gateway"`
	Cluster       string    `json:"cluster"`
	Remote        string    `json:"remote"`
	Status        string    `json:"status"`
	Reason        string    `json:"reason,omitempty"`
	RTTMillis     float64   `json:"rttMillis,omitempty"`
	LastHandshake time.Time `json:"lastHandshake,omitempty"`
	RxBytes       int64     `json:"rxBytes"`
	TxBytes       int64     `json:"txBytes"`
}

// Reasons of connections whose status is unknown.
const (
	ReasonNotReported = "not reported yet"
	// ReasonOtherCluster: a cluster credential reads only its own
	// cluster's status from the broker.
	ReasonOtherCluster = "status visible from that cluster only"
)

// Connections is `show connections`: what each gateway reports of each
// remote cluster. A remote that an active gateway does not report yet is
// listed as unknown, and so is every remote of another cluster's gateway
// when a cluster credential read the broker (it cannot see their status).
func (d *Data) Connections() ([]Connection, output.Grid) {
	var out []Connection
	for _, gw := range d.Snapshot.Gateways {
		unknown := ReasonNotReported
		if d.Viewer != "" && gw.ClusterID != d.Viewer {
			unknown = ReasonOtherCluster
		}
		st, _ := d.status(gw.ClusterID, gw.Hostname)
		seen := map[string]bool{}
		for _, h := range st.Health {
			seen[h.Cluster] = true
			out = append(out, Connection{Gateway: gw.Hostname, Cluster: gw.ClusterID, Remote: h.Cluster, Status: h.Status, Reason: h.Reason,
				RTTMillis: h.RTTMillis, LastHandshake: h.LastHandshake, RxBytes: h.RxBytes, TxBytes: h.TxBytes})
		}
		if !gw.Active {
			continue
		}
		for _, c := range d.Snapshot.Clusters {
			if c.ID != gw.ClusterID && !seen[c.ID] {
				out = append(out, Connection{Gateway: gw.Hostname, Cluster: gw.ClusterID, Remote: c.ID, Status: "unknown", Reason: unknown})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Cluster != b.Cluster {
			return a.Cluster < b.Cluster
		}
		if a.Gateway != b.Gateway {
			return a.Gateway < b.Gateway
		}
		return a.Remote < b.Remote
	})
	g := output.Grid{Headers: []string{"GATEWAY", "CLUSTER", "REMOTE", "STATUS", "RTT", "LAST HANDSHAKE", "RX", "TX"}}
	for _, c := range out {
		status := c.Status
		if c.Reason != "" && c.Status != api.StatusConnected {
			status += " (" + c.Reason + ")"
		}
		g.Rows = append(g.Rows, []string{c.Gateway, c.Cluster, c.Remote, status, RTT(c.RTTMillis), Ago(d.Now, c.LastHandshake), Bytes(c.RxBytes), Bytes(c.TxBytes)})
	}
	return out, g
}

// All is `show all`: every table under a heading.
type All struct {
	Clusters    []ClusterView `json:"clusters"`
	Gateways    []api.Gateway `json:"gateways"`
	Exports     []api.Export  `json:"exports"`
	Connections []Connection  `json:"connections"`
	// Imports are this cluster's ServiceImports; absent when show read
	// the broker without a cluster (--broker-info, --broker-url).
	Imports []Import `json:"imports,omitempty"`
}

// All returns every view; the sections are in the order they print.
func (d *Data) All() (All, []Section) {
	var a All
	var cg, gg, eg, kg output.Grid
	a.Clusters, cg = d.Clusters()
	a.Gateways, gg = d.Gateways()
	a.Exports, eg = d.Exports()
	a.Connections, kg = d.Connections()
	sections := []Section{{"Clusters", cg}, {"Gateways", gg}, {"Connections", kg}, {"Exports", eg}}
	if d.HasCluster {
		var ig output.Grid
		a.Imports, ig = d.Imports()
		sections = append(sections, Section{"Imports (this cluster)", ig})
	}
	return a, sections
}

// Section is a titled table of `show all`.
type Section struct {
	Title string
	Grid  output.Grid
}

// Age formats how long ago t was, kubectl's way (5s, 3m, 2h, 4d); "" for zero.
func Age(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// Ago is Age followed by " ago"; "" for zero.
func Ago(now, t time.Time) string {
	if a := Age(now, t); a != "" {
		return a + " ago"
	}
	return ""
}

// RTT formats a round-trip time in milliseconds; "" when unknown.
func RTT(ms float64) string {
	if ms <= 0 {
		return ""
	}
	if ms < 10 {
		return fmt.Sprintf("%.2fms", ms)
	}
	return fmt.Sprintf("%.0fms", ms)
}

// Bytes formats a byte count in binary units.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

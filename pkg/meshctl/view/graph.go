package view

import (
	"fmt"
	"sort"
	"strings"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// Graph renders the clusterset as Graphviz DOT: each cluster a box of its
// gateways (active filled green, standby grey), and one edge per pair of
// clusters between their active gateways, labelled with the tunnel's status
// and RTT as the clusters' gateways report it.
func (d *Data) Graph() string {
	var b strings.Builder
	b.WriteString("digraph clusterset {\n")
	b.WriteString("  graph [rankdir=LR, fontname=\"Helvetica\", label=\"tunnelmesh clusterset\", labelloc=t];\n")
	b.WriteString("  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=11];\n")
	b.WriteString("  edge [fontname=\"Helvetica\", fontsize=10, dir=both, arrowhead=none, arrowtail=none];\n")

	clusters := append([]api.Cluster(nil), d.Snapshot.Clusters...)
	sort.Slice(clusters, func(i, j int) bool { return clusters[i].ID < clusters[j].ID })
	gws, _ := d.Gateways()
	active := map[string]string{} // cluster → node ID of its active gateway
	for _, c := range clusters {
		fmt.Fprintf(&b, "  subgraph %s {\n", quote("cluster_"+c.ID))
		fmt.Fprintf(&b, "    label=%s;\n    style=rounded; color=\"#555555\";\n",
			quote(fmt.Sprintf("%s\npods %s\nservices %s", c.ID, strings.Join(realAndMapped(c, c.PodCIDRs), ", "), strings.Join(realAndMapped(c, c.ServiceCIDRs), ", "))))
		n := 0
		for _, g := range gws {
			if g.ClusterID != c.ID {
				continue
			}
			n++
			id := c.ID + "/" + g.Hostname
			role, fill, style := "standby", "#dddddd", "rounded,filled"
			if g.Active {
				role, fill = "active", "#b7e4b0"
				active[c.ID] = id
			}
			if g.Stale {
				role += ", stale"
				style = "rounded,filled,dashed"
			}
			fmt.Fprintf(&b, "    %s [label=%s, fillcolor=%s, style=%s];\n", quote(id),
				quote(fmt.Sprintf("%s\n%s\n%s", g.Hostname, role, Endpoint(g))), quote(fill), quote(style))
		}
		if active[c.ID] == "" {
			id := c.ID + "/-"
			active[c.ID] = id
			label := "no active gateway"
			if n == 0 {
				label = "no gateway"
			}
			fmt.Fprintf(&b, "    %s [label=%s, fillcolor=\"#f4cccc\", style=\"rounded,filled,dashed\"];\n", quote(id), quote(label))
		}
		b.WriteString("  }\n")
	}
	conns, _ := d.Connections()
	report := func(from, to string) *Connection {
		for i := range conns {
			c := &conns[i]
			if c.Cluster == from && c.Remote == to && active[from] == from+"/"+c.Gateway {
				return c
			}
		}
		return nil
	}
	for i, a := range clusters {
		for _, z := range clusters[i+1:] {
			c := report(a.ID, z.ID)
			if c == nil || c.Status == "unknown" {
				if r := report(z.ID, a.ID); r != nil {
					c = r
				}
			}
			status, rtt := "unknown", ""
			if c != nil {
				status, rtt = c.Status, RTT(c.RTTMillis)
			}
			color, style := "#999999", "dotted"
			switch status {
			case api.StatusConnected:
				color, style = "#2e7d32", "solid"
			case api.StatusConnecting:
				color, style = "#ef6c00", "dashed"
			case api.StatusError:
				color, style = "#c62828", "bold"
			}
			label := status
			if rtt != "" {
				label += "\n" + rtt
			}
			fmt.Fprintf(&b, "  %s -> %s [label=%s, color=%s, fontcolor=%s, style=%s];\n",
				quote(active[a.ID]), quote(active[z.ID]), quote(label), quote(color), quote(color), style)
		}
	}
	b.WriteString("}\n")
	return b.String()
}

// quote makes s a DOT quoted string; \n stays a DOT line break.
func quote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `"`, `\"`)
	s = strings.ReplaceAll(s, "\n", `\n`)
	return `"` + s + `"`
}

package main

import (
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"
	"github.com/tunnelmesh/tunnelmesh/pkg/nodeclean"
	"github.com/tunnelmesh/tunnelmesh/pkg/routeagent"
	"github.com/tunnelmesh/tunnelmesh/pkg/sysctl"
)

func sysctlCmd() *cobra.Command {
	var (
		nodeIPs, devices []string
		ipv6, dryRun     bool
		root, recordDir  string
	)
	c := &cobra.Command{
		Use:   "sysctl",
		Short: "Set the kernel settings tunnelmesh needs on this node and print what changed (the DaemonSet's privileged init container)",
		Long: `Sets net.ipv4.ip_forward=1; a loose reverse-path filter (rp_filter 1 -> 2) on the
node's underlay device (found from --node-ip) and on --reply-device, never on "default" (the
devices tunnelmesh creates later are loosened by the gateway itself); with --ipv6, IPv6
forwarding (accept_ra 1 -> 2 first). Only settings that differ are written; each change is printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := sysctl.Config{Root: root, Forward: true, IPv6: ipv6}
			if len(nodeIPs) > 0 {
				var ips []netip.Addr
				for _, s := range nodeIPs {
					ip, err := netip.ParseAddr(s)
					if err != nil {
						return fmt.Errorf("--node-ip %q: want an IP address: %w", s, err)
					}
					ips = append(ips, ip.Unmap())
				}
				self, err := routeagent.Discover("", ips)
				if err != nil {
					return fmt.Errorf("find the underlay device holding %v: %w", nodeIPs, err)
				}
				cfg.Devices = append(cfg.Devices, self.Interface)
			}
			cfg.Devices = append(cfg.Devices, devices...)
			if recordDir != "" && !dryRun {
				// Before any change: what leave and uninstall put back (pkg/nodeclean).
				plan, err := sysctl.Set(cfg, true)
				if err != nil {
					return err
				}
				var rec []nodeclean.Setting
				for _, ch := range plan {
					rec = append(rec, nodeclean.Setting{Name: ch.Name, Before: ch.From, Set: ch.To})
				}
				if err := nodeclean.Record(recordDir, rec); err != nil {
					return err
				}
			}
			changes, err := sysctl.Set(cfg, dryRun)
			verb := "set"
			if dryRun {
				verb = "would set"
			}
			for _, ch := range changes {
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", verb, ch)
			}
			if err != nil {
				return err
			}
			if len(changes) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "kernel settings already right; nothing changed")
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.StringSliceVar(&nodeIPs, "node-ip", nil, "this node's underlay address; its device gets a loose rp_filter (in the DaemonSet: status.hostIP)")
	fl.StringSliceVar(&devices, "reply-device", nil, "a further device replies may arrive on (e.g. flannel.1) to loosen (repeatable)")
	fl.BoolVar(&ipv6, "ipv6", false, "also switch IPv6 forwarding on (for IPv6 CIDRs)")
	fl.BoolVar(&dryRun, "dry-run", false, "print what would change, change nothing")
	fl.StringVar(&recordDir, "record-dir", "", "record each setting's value before the change in this directory, for `gateway cleanup` to put back (the DaemonSet: the node's /var/lib/tunnelmesh)")
	fl.StringVar(&root, "proc-sys", "/proc/sys", "where the sysctls are")
	_ = fl.MarkHidden("proc-sys") // tests
	return c
}

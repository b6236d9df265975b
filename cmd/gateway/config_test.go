package main

import (
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/k8s/election"
)

// The help states the defaults the code uses: the flags are made from the
// one config, whose defaults are the packages' own.
func TestFlagDefaultsAreTheCodes(t *testing.T) {
	fs := k8sCmd().Flags()
	for name, want := range map[string]string{
		"renew-interval": election.DefaultRenewInterval.String(),
		"renew-deadline": election.DefaultRenewDeadline.String(),
		"lease-duration": election.DefaultLeaseDuration.String(),
		"gossip-port":    "7947",
		"listen-port":    "51820",
		"interface":      "tmesh0",
	} {
		if got := fs.Lookup(name).DefValue; got != want {
			t.Errorf("--%s default %q; want %q", name, got, want)
		}
	}
	for _, name := range []string{"listen-port", "interface", "metrics", "heartbeat-interval", "run-dir"} {
		if k, r := k8sCmd().Flags().Lookup(name), runCmd().Flags().Lookup(name); k == nil || r == nil || k.DefValue != r.DefValue {
			t.Errorf("--%s: gateway k8s and gateway run disagree (%v, %v)", name, k, r)
		}
	}
}

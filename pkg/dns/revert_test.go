package dns

import (
	"strings"
	"testing"
)

// Leave takes out exactly what join put in: edits others made to the
// Corefile since (an upgrade's new plugin, a stub domain, a changed cache)
// stay.
func TestRevert(t *testing.T) {
	edited, _, err := EnableMulticluster(kubeadmCorefile, Zone)
	if err != nil {
		t.Fatal(err)
	}
	others := func(cf string) string {
		cf = strings.Replace(cf, "    cache 30 {", "    cache 60 {", 1)
		cf = strings.Replace(cf, "    errors\n", "    errors\n    log\n", 1)
		cf = strings.Replace(cf, "       pods insecure\n", "       pods verified\n", 1)
		return cf + "example.com:53 {\n    forward . 10.0.0.10\n}\n"
	}
	for _, tc := range []struct{ name, current, want, wantErr string }{
		{name: "untouched since join", current: edited, want: kubeadmCorefile},
		{name: "others edited around ours", current: others(edited), want: others(kubeadmCorefile)},
		{name: "our line changed by someone",
			current: strings.Replace(edited, "ip6.arpa clusterset.local {", "ip6.arpa clusterset.local example.org {", 1),
			wantErr: "kubernetes cluster.local in-addr.arpa ip6.arpa clusterset.local {"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Revert(tc.current, kubeadmCorefile, edited)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
	// Every shape the edit takes is reverted exactly, with a line of others'
	// added at the top of the server block.
	for _, in := range []string{
		".:53 {\n\tkubernetes cluster.local\n\tforward . 8.8.8.8\n}\n",
		".:53 {\n    kubernetes {\n        pods insecure\n    }\n}\n",
		".:53 {\n  kubernetes cluster.local other.local {\n    multicluster other.local\n  }\n}\n",
		"cluster.local:53 {\n  kubernetes cluster.local\n}\n.:53 {\n  kubernetes cluster.local {\n  }\n  forward . 1.1.1.1\n}\n",
	} {
		ed, _, err := EnableMulticluster(in, Zone)
		if err != nil {
			t.Fatal(err)
		}
		add := func(cf string) string { return strings.Replace(cf, "{\n", "{\n    log\n", 1) }
		if got, err := Revert(add(ed), in, ed); err != nil || got != add(in) {
			t.Errorf("revert of\n%s\ngot (%v):\n%s\nwant:\n%s", ed, err, got, add(in))
		}
	}
}

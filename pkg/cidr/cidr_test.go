package cidr

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		hb   HostBits
		want string // "" with err
		err  string
	}{
		{in: " 10.244.0.0/16 ", hb: Strict, want: "10.244.0.0/16"},
		{in: "10.244.0.1/16", hb: Strict, err: "did you mean 10.244.0.0/16"},
		{in: "10.0.0.7/16", hb: Mask, want: "10.0.0.0/16"},
		{in: "::ffff:10.0.0.0/104", hb: Strict, want: "10.0.0.0/8"},
		{in: "::ffff:10.0.0.0/90", hb: Mask, err: "shorter than /96"},
		{in: "fd00::1/64", hb: Mask, want: "fd00::/64"},
		{in: "10.0.0.0/33", hb: Mask, err: "is not a CIDR"},
		{in: "bad", hb: Mask, err: "want e.g."},
	} {
		p, err := Parse(tc.in, tc.hb)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q): %v, %v; want an error saying %q", tc.in, p, err, tc.err)
			}
			continue
		}
		if err != nil || p != netip.MustParsePrefix(tc.want) {
			t.Errorf("Parse(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
	ps, err := ParseList([]string{"10.1.0.0/16", " ", "fd01::/48"}, Strict)
	if err != nil || len(ps) != 2 {
		t.Fatalf("ParseList: %v %v", ps, err)
	}
	if _, err := ParseList([]string{"10.1.0.1/16"}, Strict); !IsHostBits(err) {
		t.Fatalf("ParseList host bits: %v", err)
	}
}

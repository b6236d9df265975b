package routes

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/google/nftables/expr"
)

func TestMatchPrefix(t *testing.T) {
	tests := []struct {
		prefix     string
		off, n     uint32
		mask, data []byte
	}{
		{"10.1.0.0/16", 12, 4, []byte{255, 255, 0, 0}, []byte{10, 1, 0, 0}},
		{"10.1.2.3/20", 16, 4, []byte{255, 255, 240, 0}, []byte{10, 1, 0, 0}},
		{"198.51.100.7/32", 12, 4, []byte{255, 255, 255, 255}, []byte{198, 51, 100, 7}},
		{"fd00:1::/33", 8, 16, append([]byte{255, 255, 255, 255, 128}, make([]byte, 11)...), netip.MustParseAddr("fd00:1::").AsSlice()},
	}
	for _, tc := range tests {
		e := matchPrefix(netip.MustParsePrefix(tc.prefix), tc.off, tc.n)
		p, bw, c := e[0].(*expr.Payload), e[1].(*expr.Bitwise), e[2].(*expr.Cmp)
		if p.Offset != tc.off || p.Len != tc.n || p.Base != expr.PayloadBaseNetworkHeader {
			t.Errorf("%s: payload %+v", tc.prefix, p)
		}
		if !bytes.Equal(bw.Mask, tc.mask) || !bytes.Equal(c.Data, tc.data) {
			t.Errorf("%s: mask %v data %v, want %v %v", tc.prefix, bw.Mask, c.Data, tc.mask, tc.data)
		}
	}
}

func TestAcceptBetweenFamilies(t *testing.T) {
	v4 := acceptBetween(netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("10.2.0.0/16"))
	if c := v4[1].(*expr.Cmp); c.Data[0] != 2 { // NFPROTO_IPV4
		t.Errorf("v4 rule matches nfproto %d", c.Data[0])
	}
	if p := v4[5].(*expr.Payload); p.Offset != 16 {
		t.Errorf("v4 daddr offset %d", p.Offset)
	}
	v6 := acceptBetween(netip.MustParsePrefix("fd00:1::/64"), netip.MustParsePrefix("fd00:2::/64"))
	if p := v6[5].(*expr.Payload); p.Offset != 24 || p.Len != 16 {
		t.Errorf("v6 daddr payload %+v", p)
	}
	if _, ok := v6[len(v6)-1].(*expr.Verdict); !ok {
		t.Error("rule does not end in a verdict")
	}
}

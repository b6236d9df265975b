package auth

import (
	"strings"
	"testing"
)

func TestTokens(t *testing.T) {
	admin := NewAdmin()
	join, id := NewJoin()
	cl := NewCluster("east")
	for tok, want := range map[string]Parsed{
		admin: {Prefix: PrefixAdmin, Raw: admin},
		join:  {Prefix: PrefixJoin, ID: id, Raw: join},
		cl:    {Prefix: PrefixCluster, ID: "east", Raw: cl},
	} {
		got, err := Parse(tok)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tok, got, err, want)
		}
		if !Match(tok, Hash(tok)) || Match(tok+"x", Hash(tok)) || Match(tok, "") {
			t.Errorf("Match wrong for %q", tok)
		}
	}
	for _, bad := range []string{"", "tma", "tma.short", "tmx.a." + strings.Repeat("A", 43),
		"tmc.." + strings.Repeat("A", 43), strings.Repeat("x", 600)} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if NewAdmin() == admin {
		t.Error("two admin tokens are equal")
	}
}

func TestFromHeader(t *testing.T) {
	tok := NewAdmin()
	for h, ok := range map[string]bool{
		"Bearer " + tok:        true,
		"bearer " + tok:        true,
		"BEARER " + tok:        true,
		"bEaReR   " + tok:      true,
		" Bearer " + tok + " ": true,
		tok:                    false,
		"Basic " + tok:         false,
		"Bearer":               false,
		"Bearer ":              false,
		"Bearertma." + tok:     false,
		"Bearer x" + tok:       false,
	} {
		p, err := FromHeader(h)
		if ok != (err == nil) || ok && p.Raw != tok {
			t.Errorf("FromHeader(%q) = %+v, %v; want ok=%v", h, p, err, ok)
		}
	}
}

package auth

import (
	"strings"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

func TestTokens(t *testing.T) {
	admin := api.NewAdminCredential()
	join, id := api.NewJoinToken()
	cl := api.NewClusterCredential("east")
	for tok, want := range map[string]api.Credential{
		admin: {Prefix: api.PrefixAdmin, Raw: admin},
		join:  {Prefix: api.PrefixJoin, ID: id, Raw: join},
		cl:    {Prefix: api.PrefixCluster, ID: "east", Raw: cl},
	} {
		got, err := api.ParseCredential(tok)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tok, got, err, want)
		}
		if !Match(tok, Hash(tok)) || Match(tok+"x", Hash(tok)) || Match(tok, "") {
			t.Errorf("Match wrong for %q", tok)
		}
	}
	for _, bad := range []string{"", "tma", "tma.short", "tmx.a." + strings.Repeat("A", 43),
		"tmc.." + strings.Repeat("A", 43), strings.Repeat("x", 600)} {
		if _, err := api.ParseCredential(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if api.NewAdminCredential() == admin {
		t.Error("two admin tokens are equal")
	}
}

func TestFromHeader(t *testing.T) {
	tok := api.NewAdminCredential()
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

// Package cidr is the one parser of CIDRs given as text (flags, the
// cluster's configuration, records of the broker and the MeshGateway
// status): surrounding space trimmed, an IPv4-mapped IPv6 prefix made the
// IPv4 prefix it names, and host bits either refused (Strict) or cleared
// (Mask).
package cidr

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// HostBits says what to do with a prefix whose host bits are set.
type HostBits bool

const (
	// Strict refuses "10.0.0.1/8" (did you mean 10.0.0.0/8?): where a
	// person wrote it, a typo is likelier than intent.
	Strict HostBits = false
	// Mask clears them: "10.0.0.7/16" is 10.0.0.0/16.
	Mask HostBits = true
)

// HostBitsError is a CIDR with host bits set under Strict.
type HostBitsError struct {
	Input  string
	Masked netip.Prefix
}

func (e *HostBitsError) Error() string {
	return fmt.Sprintf("%q has host bits set; did you mean %s?", e.Input, e.Masked)
}

// Parse parses one CIDR.
func Parse(s string, hb HostBits) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR (want e.g. 10.244.0.0/16): %w", s, err)
	}
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped prefix shorter than /96", s)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	if m := p.Masked(); m != p {
		if hb == Strict {
			return netip.Prefix{}, &HostBitsError{Input: s, Masked: m}
		}
		p = m
	}
	return p, nil
}

// ParseList parses each CIDR of ss, skipping empty ones; the first bad one
// is the error.
func ParseList(ss []string, hb HostBits) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		if strings.TrimSpace(s) == "" {
			continue
		}
		p, err := Parse(s, hb)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// IsHostBits reports whether err is a HostBitsError.
func IsHostBits(err error) bool {
	var he *HostBitsError
	return errors.As(err, &he)
}

// Last is the last address of p (its host bits all set).
func Last(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

package dns

import (
	"fmt"
	"slices"
	"strings"
)

// Zone is the MCS DNS zone.
const Zone = "clusterset.local"

// EnableMulticluster returns corefile with zone added to the zones of every
// kubernetes plugin and to its `multicluster` option, and whether anything
// changed (an already configured Corefile is returned as it is). A Corefile
// without a kubernetes plugin is an error: there is nothing to extend.
func EnableMulticluster(corefile, zone string) (string, bool, error) {
	zone = strings.TrimSuffix(strings.ToLower(zone), ".")
	lines := strings.Split(corefile, "\n")
	var out []string
	depth := 0
	var serverKeys []string
	found := false
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		code, comment := splitComment(line)
		fields := strings.Fields(code)
		opens, closes := braces(code)
		if depth == 0 && opens > 0 {
			serverKeys = keysOf(fields)
		}
		if depth == 1 && len(fields) > 0 && fields[0] == "cache" && opens == 1 && closes == 0 {
			var err error
			if i, out, err = uncacheZone(lines, i, out, zone); err != nil {
				return "", false, err
			}
			continue
		}
		if depth != 1 || len(fields) == 0 || fields[0] != "kubernetes" {
			out = append(out, line)
			depth += opens - closes
			if depth < 0 {
				return "", false, fmt.Errorf("corefile line %d: unbalanced '}'", i+1)
			}
			continue
		}
		found = true
		if closes > 0 || opens > 1 {
			return "", false, fmt.Errorf("corefile line %d: a kubernetes block opened and closed on one line is not supported; put its options on lines of their own", i+1)
		}
		indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
		hasBlock := opens == 1
		zones := strings.Fields(strings.Replace(code, "{", " ", 1))[1:]
		if len(zones) == 0 {
			// Without zones the plugin takes the server block's; keep them.
			zones = slices.Clone(serverKeys)
		}
		if !containsZone(zones, zone) {
			zones = append(zones, zone)
		}
		head := indent + "kubernetes " + strings.Join(zones, " ") + " {"
		if comment != "" {
			head += " " + comment
		}
		out = append(out, head)
		if !hasBlock {
			out = append(out, indent+"    multicluster "+zone, indent+"}")
			continue
		}
		// Copy the block, extending or adding the multicluster option.
		inner := ""
		added := false
		d := 1
		for i++; i < len(lines); i++ {
			l := lines[i]
			c, cm := splitComment(l)
			f := strings.Fields(c)
			o, cl := braces(c)
			d += o - cl
			if d == 0 {
				if !added {
					if inner == "" {
						inner = indent + "    "
					}
					out = append(out, inner+"multicluster "+zone)
				}
				out = append(out, l)
				break
			}
			if inner == "" && strings.TrimSpace(l) != "" {
				inner = l[:len(l)-len(strings.TrimLeft(l, " \t"))]
			}
			if d == 1 && len(f) > 0 && f[0] == "multicluster" && !added {
				added = true
				if !containsZone(f[1:], zone) {
					l = l[:len(l)-len(strings.TrimLeft(l, " \t"))] + strings.Join(append(f, zone), " ")
					if cm != "" {
						l += " " + cm
					}
				}
			}
			out = append(out, l)
		}
		if d != 0 {
			return "", false, fmt.Errorf("corefile: the kubernetes block opened at line %d is not closed", i+1)
		}
	}
	if depth != 0 {
		return "", false, fmt.Errorf("corefile: %d unclosed '{'", depth)
	}
	if !found {
		return "", false, fmt.Errorf("corefile has no kubernetes plugin in any server block; add one (e.g. `kubernetes cluster.local in-addr.arpa ip6.arpa`) before enabling %s", zone)
	}
	res := strings.Join(out, "\n")
	return res, res != corefile, nil
}

// uncacheZone copies the cache block that opens at lines[i] to out with
// zone added to its `disable success` and `disable denial` lines (each
// added when missing), as kubeadm does for cluster.local: the kubernetes
// plugin answers from its watch, and a cached answer would keep a dead
// cluster's pods, or a withheld one's, in DNS for the cache's TTL. It
// returns the index of the block's last line.
func uncacheZone(lines []string, i int, out []string, zone string) (int, []string, error) {
	out = append(out, lines[i])
	start := i
	inner := ""
	seen := map[string]bool{}
	d := 1
	for i++; i < len(lines); i++ {
		l := lines[i]
		c, cm := splitComment(l)
		f := strings.Fields(c)
		o, cl := braces(c)
		d += o - cl
		if d == 0 {
			if inner == "" {
				inner = lines[start][:len(lines[start])-len(strings.TrimLeft(lines[start], " \t"))] + "    "
			}
			for _, kind := range []string{"success", "denial"} {
				if !seen[kind] {
					out = append(out, inner+"disable "+kind+" "+zone)
				}
			}
			return i, append(out, l), nil
		}
		if inner == "" && strings.TrimSpace(l) != "" {
			inner = l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		}
		if d == 1 && len(f) >= 2 && f[0] == "disable" && (f[1] == "success" || f[1] == "denial") && !seen[f[1]] {
			seen[f[1]] = true
			// Without zones the line disables every zone already.
			if len(f) > 2 && !containsZone(f[2:], zone) {
				l = l[:len(l)-len(strings.TrimLeft(l, " \t"))] + strings.Join(append(f, zone), " ")
				if cm != "" {
					l += " " + cm
				}
			}
		}
		out = append(out, l)
	}
	return i, out, fmt.Errorf("corefile: the cache block opened at line %d is not closed", start+1)
}

// splitComment cuts a line at a '#' that starts a comment (Corefile tokens
// may be quoted).
func splitComment(line string) (code, comment string) {
	inQuote := false
	for i, r := range line {
		switch {
		case r == '"':
			inQuote = !inQuote
		case r == '#' && !inQuote:
			return line[:i], line[i:]
		}
	}
	return line, ""
}

// braces counts the block braces of a line, ignoring quoted ones.
func braces(code string) (opens, closes int) {
	inQuote := false
	for _, r := range code {
		switch {
		case r == '"':
			inQuote = !inQuote
		case r == '{' && !inQuote:
			opens++
		case r == '}' && !inQuote:
			closes++
		}
	}
	return opens, closes
}

// keysOf returns a server block's keys (zones, with any port and scheme
// removed) from its opening line.
func keysOf(fields []string) []string {
	var keys []string
	for _, f := range fields {
		for _, k := range strings.Split(f, ",") {
			k = strings.TrimSuffix(k, "{")
			if k == "" {
				continue
			}
			if i := strings.Index(k, "://"); i >= 0 {
				k = k[i+3:]
			}
			if i := strings.LastIndex(k, ":"); i >= 0 {
				k = k[:i]
			}
			if k != "" {
				keys = append(keys, k)
			}
		}
	}
	return keys
}

func containsZone(zones []string, zone string) bool {
	return slices.ContainsFunc(zones, func(z string) bool {
		return strings.TrimSuffix(strings.ToLower(z), ".") == zone
	})
}

package dns

import (
	"fmt"
	"slices"
	"strings"
)

// Revert undoes in current the edit that turned original into edited,
// keeping every change others made since: each run of lines the edit
// replaced or added is found in current (in order) and put back as it was.
// When one is no longer there (someone changed that very line) it is an
// error naming the line, and nothing is changed. Pure.
func Revert(current, original, edited string) (string, error) {
	if current == edited {
		return original, nil
	}
	cur, orig, ed := strings.Split(current, "\n"), strings.Split(original, "\n"), strings.Split(edited, "\n")
	var out []string
	at := 0 // next unread line of cur
	for _, h := range hunks(orig, ed) {
		if len(h.edited) == 0 {
			return "", fmt.Errorf("the edit removed lines %q; cannot tell where to put them back", h.original)
		}
		i := find(cur[at:], h.edited)
		if i < 0 {
			return "", fmt.Errorf("the line %q that tunnelmesh added or changed is no longer there", strings.TrimSpace(h.edited[0]))
		}
		out = append(out, cur[at:at+i]...)
		out = append(out, h.original...)
		at += i + len(h.edited)
	}
	out = append(out, cur[at:]...)
	return strings.Join(out, "\n"), nil
}

// hunk is a run of lines of the edited text that replaced (or, with original
// empty, were added in place of nothing in) the original.
type hunk struct{ original, edited []string }

// hunks lists what changed from a to b, in order (a longest-common-subsequence
// diff; Corefiles are short).
func hunks(a, b []string) []hunk {
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []hunk
	var cur hunk
	flush := func() {
		if len(cur.original) > 0 || len(cur.edited) > 0 {
			out = append(out, cur)
		}
		cur = hunk{}
	}
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			flush()
			i, j = i+1, j+1
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			cur.edited = append(cur.edited, b[j])
			j++
		default:
			cur.original = append(cur.original, a[i])
			i++
		}
	}
	flush()
	return out
}

// find returns the index of the first run of lines equal to want, or -1.
func find(lines, want []string) int {
	for i := 0; i+len(want) <= len(lines); i++ {
		if slices.Equal(lines[i:i+len(want)], want) {
			return i
		}
	}
	return -1
}

package core

import (
	"sort"
	"strings"
)

// table is one kind of record: the committed map (base) and, in a Txn,
// the changes the transaction made on top of it (over), so that a commit
// in flight never touches what readers see. Records are immutable once
// stored: a change stores a new value.
type table[V any] struct {
	base map[string]V
	over map[string]slot[V] // nil in the committed state
}

type slot[V any] struct {
	v    V
	gone bool
}

func newTable[V any]() table[V] { return table[V]{base: map[string]V{}} }

// on returns a table that changes nothing of t's base.
func (t *table[V]) on() table[V] { return table[V]{base: t.base, over: map[string]slot[V]{}} }

func (t *table[V]) get(k string) (V, bool) {
	if s, ok := t.over[k]; ok {
		return s.v, !s.gone
	}
	v, ok := t.base[k]
	return v, ok
}

// set records v (or the key's removal) and returns how to undo it.
func (t *table[V]) set(k string, v V, gone bool) (undo func()) {
	old, had := t.over[k]
	t.over[k] = slot[V]{v: v, gone: gone}
	return func() {
		if had {
			t.over[k] = old
		} else {
			delete(t.over, k)
		}
	}
}

// keys returns the present keys with prefix, sorted.
func (t *table[V]) keys(prefix string) []string {
	var out []string
	for k := range t.base {
		if _, changed := t.over[k]; !changed && strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	for k, s := range t.over {
		if !s.gone && strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func (t *table[V]) len() int { return len(t.base) }

// count is the number of present keys, the transaction's changes included.
func (t *table[V]) count() int {
	n := len(t.base)
	for k, s := range t.over {
		_, inBase := t.base[k]
		switch {
		case s.gone && inBase:
			n--
		case !s.gone && !inBase:
			n++
		}
	}
	return n
}

// fold applies the transaction's changes to the base. The caller holds
// the state's write lock.
func (t *table[V]) fold() {
	for k, s := range t.over {
		if s.gone {
			delete(t.base, k)
		} else {
			t.base[k] = s.v
		}
	}
}

package validate

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
)

// encoding/json matches object keys to struct fields case-insensitively and
// lets a repeated key overwrite the first, so {"clusterID":"a","ClusterId":"b"}
// decodes to "b" although neither DisallowUnknownFields nor the validators
// see anything wrong. strictKeys closes that gap with one pass over the
// (already decoded, so well-formed) body, guided by the target's Go type:
// a key of a struct must be one of its JSON names exactly, and no object —
// struct or map — may repeat a key. It allocates only for escaped keys and
// for maps with many keys, so it costs far less than the decode itself.

// keyError is a refused key with the path of the object holding it.
type keyError struct {
	path []string // innermost first
	msg  string
}

func (e *keyError) field() string {
	var b strings.Builder
	for i := len(e.path) - 1; i >= 0; i-- {
		p := e.path[i]
		if b.Len() > 0 && !strings.HasPrefix(p, "[") {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}

func (e *keyError) in(seg string) *keyError {
	e.path = append(e.path, seg)
	return e
}

// strictKeys checks data against t. It is meant for bodies that decoded
// without error, but is total on any input.
func strictKeys(data []byte, t reflect.Type) *keyError {
	s := keyScanner{data: data}
	return s.value(infoOf(t))
}

type keyScanner struct {
	data []byte
	i    int
}

func (s *keyScanner) ws() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *keyScanner) peek() byte {
	s.ws()
	if s.i < len(s.data) {
		return s.data[s.i]
	}
	return 0
}

// malformed cannot happen after a successful decode; it keeps the scanner
// total on any input.
func malformed() *keyError { return &keyError{msg: "malformed JSON"} }

func (s *keyScanner) value(t *typeInfo) *keyError {
	c := s.peek()
	switch {
	case t.opaque:
	case c == '{' && t.fields != nil:
		return s.object(t.fields, nil)
	case c == '{' && t.isMap:
		return s.object(nil, t.elem)
	case c == '[' && t.isList:
		s.i++
		for n := 0; ; n++ {
			if s.peek() == ']' {
				s.i++
				return nil
			}
			if err := s.value(t.elem); err != nil {
				return err.in(fmt.Sprintf("[%d]", n))
			}
			switch s.peek() {
			case ',':
				s.i++
			case ']':
				s.i++
				return nil
			default:
				return malformed()
			}
		}
	}
	return s.skip()
}

// object walks an object whose keys are struct fields (fields != nil) or
// map keys with values of type elem.
func (s *keyScanner) object(fields map[string]*typeInfo, elem *typeInfo) *keyError {
	s.i++ // '{'
	var (
		small [16][]byte
		seen  = small[:0]
		many  map[string]struct{}
	)
	for {
		switch s.peek() {
		case '}':
			s.i++
			return nil
		case '"':
		default:
			return malformed()
		}
		key, ok := s.str()
		if !ok || s.peek() != ':' {
			return malformed()
		}
		s.i++
		// Duplicates: a linear scan for small objects, a set for big maps.
		dup := false
		if many != nil {
			_, dup = many[string(key)]
			many[string(key)] = struct{}{}
		} else {
			for _, k := range seen {
				if bytes.Equal(k, key) {
					dup = true
					break
				}
			}
			seen = append(seen, key)
			if len(seen) > len(small) {
				many = make(map[string]struct{}, 2*len(seen))
				for _, k := range seen {
					many[string(k)] = struct{}{}
				}
			}
		}
		if dup {
			return &keyError{msg: fmt.Sprintf("key %q appears twice in one object", key), path: []string{string(key)}}
		}
		vt := elem
		if fields != nil {
			f, ok := fields[string(key)]
			if !ok {
				return &keyError{msg: unknownField(fields, string(key)), path: []string{string(key)}}
			}
			vt = f
		}
		if err := s.value(vt); err != nil {
			return err.in(string(key))
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return malformed()
		}
	}
}

// str reads a string at s.i and returns its decoded value: a sub-slice of
// the input unless it holds escapes.
func (s *keyScanner) str() ([]byte, bool) {
	start := s.i
	escaped := false
	for j := start + 1; ; {
		k := bytes.IndexByte(s.data[j:], '"')
		if k < 0 {
			return nil, false
		}
		end := j + k
		// The quote is escaped when an odd number of backslashes precede it.
		n := 0
		for end-n-1 > start && s.data[end-n-1] == '\\' {
			n++
		}
		if !escaped {
			escaped = bytes.IndexByte(s.data[j:end], '\\') >= 0
		}
		if n%2 == 1 {
			j = end + 1
			continue
		}
		s.i = end + 1
		if !escaped {
			return s.data[start+1 : end], true
		}
		var out string
		if err := json.Unmarshal(s.data[start:end+1], &out); err != nil {
			return nil, false
		}
		return []byte(out), true
	}
}

// skip passes over one value of any type.
func (s *keyScanner) skip() *keyError {
	depth := 0
	for s.peek() != 0 {
		switch s.data[s.i] {
		case '"':
			if _, ok := s.str(); !ok {
				return malformed()
			}
		case '{', '[':
			depth++
			s.i++
		case '}', ']':
			if depth == 0 {
				return nil // the end of the enclosing value
			}
			depth--
			s.i++
		case ',', ':':
			if depth == 0 {
				return nil
			}
			s.i++
		default: // a number, true, false or null
			for s.i < len(s.data) && !delim(s.data[s.i]) {
				s.i++
			}
		}
		if depth == 0 {
			return nil
		}
	}
	if depth != 0 {
		return malformed()
	}
	return nil
}

func delim(c byte) bool {
	switch c {
	case ',', ':', '{', '}', '[', ']', '"', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}

func unknownField(fields map[string]*typeInfo, key string) string {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return fmt.Sprintf("unknown field %+q: JSON names are case-sensitive; did you mean %q?", key, name)
		}
	}
	return fmt.Sprintf("unknown field %+q", key)
}

// typeInfo is what the scanner needs to know of a Go type, computed once.
type typeInfo struct {
	opaque bool                 // decodes itself (time.Time, …) or is a scalar/interface
	fields map[string]*typeInfo // struct: JSON name → field type
	isMap  bool
	isList bool
	elem   *typeInfo // map value or list element
}

var (
	typeCache       sync.Map // reflect.Type → *typeInfo
	typeMu          sync.Mutex
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func infoOf(t reflect.Type) *typeInfo {
	if ti, ok := typeCache.Load(t); ok {
		return ti.(*typeInfo)
	}
	typeMu.Lock()
	defer typeMu.Unlock()
	building := map[reflect.Type]*typeInfo{}
	ti := buildInfo(t, building)
	for bt, bi := range building {
		typeCache.Store(bt, bi)
	}
	return ti
}

// buildInfo follows encoding/json's naming: the tag's name or the Go name,
// "-" omitted, untagged embedded structs flattened. building breaks cycles.
func buildInfo(t reflect.Type, building map[reflect.Type]*typeInfo) *typeInfo {
	if ti, ok := typeCache.Load(t); ok {
		return ti.(*typeInfo)
	}
	if ti, ok := building[t]; ok {
		return ti
	}
	if t.Kind() == reflect.Pointer {
		return buildInfo(t.Elem(), building) // JSON has no pointers
	}
	ti := &typeInfo{}
	building[t] = ti
	if pt := reflect.PointerTo(t); pt.Implements(jsonUnmarshaler) || pt.Implements(textUnmarshaler) {
		ti.opaque = true
		return ti
	}
	switch t.Kind() {
	case reflect.Map:
		ti.isMap, ti.elem = true, buildInfo(t.Elem(), building)
	case reflect.Slice, reflect.Array:
		ti.isList, ti.elem = true, buildInfo(t.Elem(), building)
	case reflect.Struct:
		ti.fields = map[string]*typeInfo{}
		addFields(ti.fields, t, building)
	default:
		ti.opaque = true
	}
	return ti
}

func addFields(fields map[string]*typeInfo, t reflect.Type, building map[reflect.Type]*typeInfo) {
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := sf.Type
		if sf.Anonymous && name == "" {
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				addFields(fields, ft, building)
				continue
			}
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		if _, taken := fields[name]; !taken {
			fields[name] = buildInfo(ft, building)
		}
	}
}

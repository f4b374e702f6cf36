// Package strictyaml decodes the YAML files an admin writes (the config
// file, the policy rules file) strictly: an unknown key is an error, and
// every problem in the file is reported at once, each with its key path
// and line ("listeners[1].adress: unknown key (line 9)").
//
// It is a leaf package under internal/ at the module root so that both
// cmd/mailgate (the config) and policy (the rules file) import it without
// breaking the import rule (cmd → proxy → policy/backend/guard → geo): it
// imports nothing of mailgate's.
//
// Why not yaml.v3's own strict mode: a Decoder with KnownFields(true)
// does report every problem with its line, but not the key path, and in
// Go's words ("line 3: field adress not found in type main.ListenerConfig",
// "cannot unmarshal !!int `30` into time.Duration"). Custom types cannot
// add the path, since UnmarshalYAML sees only its own node. So the
// package walks yaml.v3's nodes itself (Decode), with a budget against
// alias expansion, and lets yaml.v3 decode only the leaves.
//
// Aliases (*name) are followed, and merge keys (<<: *name, or a list of
// aliases) are expanded as YAML 1.1 defines them and as yaml.v3 does when
// it decodes into values: keys written in the mapping win over merged
// ones, and of several merged mappings the earlier wins. Policy's rules
// parser, which reads its own shapes rather than a struct, uses the same
// Parse, Resolve and Pairs (charged to one Limit per file).
package strictyaml

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is one problem in a document: the key path ("" for the whole
// document), the line and what is wrong.
type Error struct {
	Path string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	path := e.Path
	if path == "" {
		path = "(top level)"
	}
	return fmt.Sprintf("%s: %s (line %d)", path, e.Msg, e.Line)
}

// SyntaxError is a document that is not YAML at all. Its text is
// yaml.v3's ("yaml: line 3: mapping values are not allowed ...").
type SyntaxError struct {
	Line int // 0 when yaml.v3 names no line
	Msg  string
}

func (e *SyntaxError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("yaml: line %d: %s", e.Line, e.Msg)
	}
	return "yaml: " + e.Msg
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parse reads a single YAML document and returns its root node, or nil for
// an empty document (or one of comments only). A panic inside the YAML
// library becomes a *SyntaxError: a corrupt file must never take the
// process down.
func Parse(data []byte) (*yaml.Node, error) {
	doc, err := ParseDocument(data)
	if err != nil || len(doc.Content) == 0 {
		return nil, err
	}
	return doc.Content[0], nil
}

// ParseDocument is Parse for a caller that edits and writes the file
// back: it returns the document node, which holds the comments around the
// root (its Content is empty for an empty document).
func ParseDocument(data []byte) (doc *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			doc, err = nil, &SyntaxError{Msg: fmt.Sprintf("cannot parse: %v", r)}
		}
	}()
	doc = &yaml.Node{}
	if err := yaml.Unmarshal(data, doc); err != nil {
		msg := err.Error()
		if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
			n, _ := strconv.Atoi(m[1])
			return nil, &SyntaxError{Line: n, Msg: m[2]}
		}
		return nil, &SyntaxError{Msg: strings.TrimPrefix(msg, "yaml: ")}
	}
	return doc, nil
}

// Resolve follows an alias to the node it names.
func Resolve(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

// IsNull reports whether n is an empty value (`key:` or `key: null`).
func IsNull(n *yaml.Node) bool {
	n = Resolve(n)
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// Pair is one key and its value in a mapping.
type Pair struct {
	Key, Value *yaml.Node
}

// Bounds on merge expansion: a merged mapping may merge others in turn,
// and aliases make a small file name the same mapping many times.
const (
	maxMergeDepth = 16
	maxMergeNodes = 10_000
)

// A Limit bounds the work of reading one document with Pairs: each key
// looked at, merged ones included, costs one. Without a shared limit,
// many small mappings that each merge one large anchor would cost their
// product. A reader of a whole file makes one Limit and calls its Pairs.
type Limit int

// Spend charges n to l and reports whether l still covered it; a reader
// that follows an alias to a list charges the list's length.
func (l *Limit) Spend(n int) bool {
	*l -= Limit(n)
	return *l >= 0
}

// Pairs is the package's Pairs, charged to l; once l is spent, the
// mapping is cut short and an *Error with Path "<<" says so (once).
func (l *Limit) Pairs(n *yaml.Node) ([]Pair, []*Error) {
	m := merger{budget: l, seen: map[string]*yaml.Node{}}
	m.add(Resolve(n), 0)
	return m.out, m.errs
}

// Pairs returns the pairs of mapping n with merge keys expanded: first the
// keys written in n, in order, then each merged key that n does not write
// itself, the earlier merged mapping winning. A key written twice in n
// (yaml.v3 itself refuses that when it decodes into values) is reported
// as an *Error with the key as Path, and only the first is returned; a
// merge whose value is not a mapping or a list of mappings is reported
// with Path "<<". The rest of the mapping is still returned. Its work is
// bounded (see Limit).
func Pairs(n *yaml.Node) ([]Pair, []*Error) {
	l := Limit(maxMergeNodes)
	return l.Pairs(n)
}

type merger struct {
	out    []Pair
	errs   []*Error
	seen   map[string]*yaml.Node // scalar key → where it was written
	budget *Limit
}

func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge"
}

// add appends n's own keys not seen yet, then expands its merges.
func (m *merger) add(n *yaml.Node, depth int) {
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if *m.budget--; *m.budget < 0 {
			if *m.budget == -1 {
				m.errs = append(m.errs, &Error{Path: "<<", Line: k.Line, Msg: "merges expand too far"})
			}
			return
		}
		if isMerge(k) {
			merges = append(merges, v)
			continue
		}
		// Only scalar keys are tracked for precedence; a mapping or list
		// used as a key is left for the caller to refuse.
		if k.Kind == yaml.ScalarNode {
			if first := m.seen[k.Value]; first != nil {
				if depth == 0 {
					m.errs = append(m.errs, &Error{Path: k.Value, Line: k.Line,
						Msg: fmt.Sprintf("written twice (first on line %d)", first.Line)})
				}
				continue
			}
			m.seen[k.Value] = k
		}
		m.out = append(m.out, Pair{Key: k, Value: v})
	}
	for _, v := range merges {
		m.merge(v, depth)
	}
}

func (m *merger) merge(v *yaml.Node, depth int) {
	if depth >= maxMergeDepth {
		m.errs = append(m.errs, &Error{Path: "<<", Line: v.Line, Msg: "merges nest too deeply"})
		return
	}
	v = Resolve(v)
	switch v.Kind {
	case yaml.MappingNode:
		m.add(v, depth+1)
		return
	case yaml.SequenceNode:
		ok := true
		for _, item := range v.Content {
			if Resolve(item).Kind != yaml.MappingNode {
				ok = false
			}
		}
		if ok {
			for _, item := range v.Content {
				m.add(Resolve(item), depth+1)
			}
			return
		}
	}
	m.errs = append(m.errs, &Error{Path: "<<", Line: v.Line,
		Msg: "a merge takes a mapping or a list of mappings (like <<: *defaults)"})
}

// Bounds on Decode's walk: a config file is small, and aliases can make a
// small file expand exponentially (or loop) if followed blindly.
const (
	maxNodes = 100_000
	maxDepth = 32
)

// Decode decodes the YAML document data into out, a pointer to a struct,
// strictly: struct fields are matched by their `yaml` tag (with ",inline"
// followed), and every unknown key and every value of the wrong type is
// reported, as an *Error with its path, all joined. An empty value keeps
// what out holds (its defaults). A document that is not YAML is a
// *SyntaxError.
func Decode(data []byte, out any) error {
	root, err := Parse(data)
	if err != nil || root == nil {
		return err
	}
	w := walker{budget: maxNodes}
	w.walk(root, reflect.ValueOf(out).Elem(), "", 0)
	return errors.Join(w.errs...)
}

type walker struct {
	errs   []error
	budget Limit // nodes and keys left to visit
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func (w *walker) walk(n *yaml.Node, v reflect.Value, path string, depth int) {
	w.budget--
	if w.budget < 0 || depth > maxDepth {
		if w.budget == -1 || depth == maxDepth+1 {
			w.add(path, n, "config nests or expands too deeply")
		}
		return
	}
	n = Resolve(n)
	if IsNull(n) {
		return // an empty value keeps the default
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		w.leaf(n, v, path)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.add(path, n, "expected a mapping of keys")
			return
		}
		fields := yamlFields(v)
		for _, p := range w.pairs(n, path) {
			f, ok := fields[p.Key.Value]
			if !ok || p.Key.Kind != yaml.ScalarNode {
				w.add(Join(path, p.Key.Value), p.Key, "unknown key")
				continue
			}
			w.walk(p.Value, f, Join(path, p.Key.Value), depth+1)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.add(path, n, "expected a list")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			w.walk(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i), depth+1)
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.add(path, n, "expected a mapping")
			return
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		for _, p := range w.pairs(n, path) {
			kv := reflect.New(v.Type().Key()).Elem()
			if !w.leaf(p.Key, kv, path) {
				continue
			}
			ev := reflect.New(v.Type().Elem()).Elem()
			w.walk(p.Value, ev, fmt.Sprintf("%s[%s]", path, p.Key.Value), depth+1)
			v.SetMapIndex(kv, ev)
		}
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		w.walk(n, v.Elem(), path, depth+1)
	default:
		w.leaf(n, v, path)
	}
}

// pairs is Pairs with its problems reported under path.
func (w *walker) pairs(n *yaml.Node, path string) []Pair {
	ps, errs := w.budget.Pairs(n)
	for _, e := range errs {
		w.errs = append(w.errs, &Error{Path: Join(path, e.Path), Line: e.Line, Msg: e.Msg})
	}
	return ps
}

// leaf lets yaml.v3 decode a scalar and rewrites its error to name the
// key path instead of yaml's internal type names.
func (w *walker) leaf(n *yaml.Node, v reflect.Value, path string) bool {
	if n.Kind != yaml.ScalarNode && v.Kind() != reflect.Interface &&
		!reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		w.add(path, n, "expected a single value")
		return false
	}
	err := n.Decode(v.Addr().Interface())
	if err == nil {
		return true
	}
	msg := fmt.Sprintf("cannot use %q as %s", n.Value, describe(v.Type()))
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		msg = err.Error()
	}
	w.add(path, n, msg)
	return false
}

func (w *walker) add(path string, n *yaml.Node, msg string) {
	w.errs = append(w.errs, &Error{Path: path, Line: n.Line, Msg: msg})
}

func describe(t reflect.Type) string {
	switch {
	case t.String() == "time.Duration":
		return "a duration (with a unit, like 30s or 5m)"
	case t.Kind() == reflect.Bool:
		return "a boolean (true or false)"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "a whole number"
	case t.Kind() == reflect.String:
		return "a string"
	}
	return t.String()
}

// yamlFields maps the yaml key of every settable field of the struct v,
// following `yaml:",inline"` embedding.
func yamlFields(v reflect.Value) map[string]reflect.Value {
	out := map[string]reflect.Value{}
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			for k, fv := range yamlFields(v.Field(i)) {
				out[k] = fv
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		out[name] = v.Field(i)
	}
	return out
}

// Join appends key to a key path ("listeners[0]" + "name").
func Join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

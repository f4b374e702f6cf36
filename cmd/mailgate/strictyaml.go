package main

// Strict YAML decoding that reports every problem at once with its key
// path ("listeners[1].adress: unknown key (line 9)"). yaml.v3's own
// KnownFields mode stops at line numbers and mixes problems into one
// string; admins fixing a config at 3 a.m. want the path.

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// decodeStrict decodes doc into out (a pointer to a struct) and returns
// every unknown key and type problem joined, each naming its key path.
func decodeStrict(data []byte, out any) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if len(doc.Content) == 0 {
		return nil // empty file: all defaults
	}
	w := walker{budget: maxConfigNodes}
	w.walk(doc.Content[0], reflect.ValueOf(out).Elem(), "", 0)
	return errors.Join(w.errs...)
}

// Bounds on the walk: a config file is small, and aliases can make a
// small file expand exponentially (or loop) if followed blindly.
const (
	maxConfigNodes = 100_000
	maxConfigDepth = 32
)

type walker struct {
	errs   []error
	budget int // nodes left to visit
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func (w *walker) walk(n *yaml.Node, v reflect.Value, path string, depth int) {
	errs := &w.errs
	w.budget--
	if w.budget < 0 || depth > maxConfigDepth {
		if w.budget == -1 || depth == maxConfigDepth+1 {
			addErr(errs, path, n, "config nests or expands too deeply")
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value keeps the default
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		decodeLeaf(n, v, path, errs)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			addErr(errs, path, n, "expected a mapping of keys")
			return
		}
		fields := yamlFields(v)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			f, ok := fields[k.Value]
			if !ok {
				addErr(errs, join(path, k.Value), k, "unknown key")
				continue
			}
			w.walk(val, f, join(path, k.Value), depth+1)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			addErr(errs, path, n, "expected a list")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			w.walk(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i), depth+1)
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			addErr(errs, path, n, "expected a mapping")
			return
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			kv := reflect.New(v.Type().Key()).Elem()
			decodeLeaf(k, kv, path, errs)
			ev := reflect.New(v.Type().Elem()).Elem()
			w.walk(val, ev, fmt.Sprintf("%s[%s]", path, k.Value), depth+1)
			v.SetMapIndex(kv, ev)
		}
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		w.walk(n, v.Elem(), path, depth+1)
	default:
		decodeLeaf(n, v, path, errs)
	}
}

// decodeLeaf lets yaml.v3 decode a scalar and rewrites its error to name
// the key path instead of yaml's internal type names.
func decodeLeaf(n *yaml.Node, v reflect.Value, path string, errs *[]error) {
	if n.Kind != yaml.ScalarNode && v.Kind() != reflect.Interface &&
		!reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		addErr(errs, path, n, "expected a single value")
		return
	}
	err := n.Decode(v.Addr().Interface())
	if err == nil {
		return
	}
	msg := fmt.Sprintf("cannot use %q as %s", n.Value, describe(v.Type()))
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		msg = err.Error()
	}
	addErr(errs, path, n, msg)
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

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func addErr(errs *[]error, path string, n *yaml.Node, msg string) {
	if path == "" {
		path = "(top level)"
	}
	*errs = append(*errs, fmt.Errorf("%s: %s (line %d)", path, msg, n.Line))
}

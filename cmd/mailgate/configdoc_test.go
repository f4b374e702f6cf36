package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// configKeyPaths lists every key path of the config file, e.g.
// "backends.smtp.verify" and "tls.acme.domains", from the section types.
func configKeyPaths(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			out = append(out, configKeyPaths(sf.Type, prefix)...)
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		path := prefix + name
		ft := sf.Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Time]() {
			out = append(out, configKeyPaths(ft, path+".")...)
			continue
		}
		out = append(out, path)
	}
	return out
}

// Every key of the config file is documented in docs/config.md, and the
// complete example there is a valid config: the reference cannot drift
// from the code.
func TestConfigReferenceIsComplete(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	// The doc writes the common backend keys once as backends.*, and list
	// elements with [].
	norm := strings.NewReplacer("backends.imap.", "backends.*.", "backends.pop3.", "backends.*.",
		"listeners.", "listeners[].", "tls.certificates.", "tls.certificates[].")
	for _, k := range configKeyPaths(reflect.TypeFor[Config](), "") {
		k = norm.Replace(k)
		if strings.HasPrefix(k, "backends.smtp.") && !strings.Contains(text, "`"+k+"`") {
			k = "backends.*." + strings.TrimPrefix(k, "backends.smtp.")
		}
		if !strings.Contains(text, "`"+k+"`") {
			t.Errorf("docs/config.md does not document `%s`", k)
		}
	}
	m := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(text, -1)
	if len(m) == 0 {
		t.Fatal("docs/config.md has no yaml example")
	}
	for i, block := range m {
		if _, err := decodeOnly([]byte(block[1])); err != nil {
			t.Errorf("example %d in docs/config.md does not decode:\n%v", i, err)
		}
	}
}

// decodeOnly decodes strictly without validating, since examples name
// files that do not exist here.
func decodeOnly(data []byte) (*Config, error) {
	c := Config{Backends: defaultBackends()}
	return &c, decodeStrict(data, &c)
}

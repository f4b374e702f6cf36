package strictyaml

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

type listener struct {
	Name    string        `yaml:"name"`
	Port    int           `yaml:"port"`
	Timeout time.Duration `yaml:"timeout"`
	TLS     bool          `yaml:"tls"`
}

type config struct {
	Defaults  listener          `yaml:"defaults"`
	Listeners []listener        `yaml:"listeners"`
	Overrides map[string]string `yaml:"overrides"`
	Log       struct {
		Level string `yaml:"level"`
	} `yaml:"log"`
}

// Every problem is reported at once, each with its key path and line:
// what yaml.v3's KnownFields mode cannot give (see the package doc).
func TestDecodeReportsEveryProblemWithPathAndLine(t *testing.T) {
	in := "listeners:\n" +
		"  - {name: a, adress: x}\n" +
		"  - {name: b, timeout: 5, port: many}\n" +
		"log: {colour: red}\n" +
		"bogus: 1\n"
	var c config
	err := Decode([]byte(in), &c)
	want := []string{
		"listeners[0].adress: unknown key (line 2)",
		`listeners[1].timeout: cannot use "5" as a duration (with a unit, like 30s or 5m) (line 3)`,
		`listeners[1].port: cannot use "many" as a whole number (line 3)`,
		"log.colour: unknown key (line 4)",
		"bogus: unknown key (line 5)",
	}
	if err == nil || err.Error() != strings.Join(want, "\n") {
		t.Fatalf("err =\n%v\nwant\n%s", err, strings.Join(want, "\n"))
	}
	var e *Error
	if !errors.As(err, &e) || e.Path != "listeners[0].adress" || e.Line != 2 {
		t.Errorf("first error = %#v", e)
	}
}

func TestDecodeAnchorAndAlias(t *testing.T) {
	in := "defaults: &d {port: 993, timeout: 30s}\n" +
		"listeners:\n" +
		"  - *d\n" +
		"  - {name: b, port: *port}\n" +
		"overrides: {x: &port 995}\n"
	var c config
	if err := Decode([]byte(in), &c); err == nil || !strings.Contains(err.Error(), "unknown anchor") {
		// An alias before its anchor is a syntax error of yaml.v3's.
		t.Fatalf("alias before anchor: err = %v", err)
	}
	in = "defaults: &d {port: 993, timeout: 30s}\n" +
		"overrides: {x: &port 995}\n" +
		"listeners:\n" +
		"  - *d\n" +
		"  - {name: b, port: *port}\n"
	c = config{}
	if err := Decode([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Listeners) != 2 || c.Listeners[0] != (listener{Port: 993, Timeout: 30 * time.Second}) ||
		c.Listeners[1] != (listener{Name: "b", Port: 995}) {
		t.Errorf("listeners = %+v", c.Listeners)
	}
}

// Merge keys: the mapping's own keys win, then the earlier merged
// mapping; an unknown key that comes in by a merge is reported on the
// line where it is written.
func TestDecodeMergeKeys(t *testing.T) {
	in := "defaults: &d {port: 993, timeout: 30s, tls: true}\n" +
		"x: &x {port: 1, name: fromx}\n" +
		"listeners:\n" +
		"  - {<<: *d, name: a}\n" +
		"  - <<: [*x, *d]\n" +
		"    timeout: 1m\n"
	var c struct {
		C config         `yaml:",inline"`
		X map[string]any `yaml:"x"`
	}
	if err := Decode([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	want := []listener{
		{Name: "a", Port: 993, Timeout: 30 * time.Second, TLS: true},
		{Name: "fromx", Port: 1, Timeout: time.Minute, TLS: true},
	}
	if len(c.C.Listeners) != 2 || c.C.Listeners[0] != want[0] || c.C.Listeners[1] != want[1] {
		t.Errorf("listeners = %+v\nwant %+v", c.C.Listeners, want)
	}

	in = "base: &b {port: 1, prot: 2}\n" +
		"listeners:\n" +
		"  - {<<: *b}\n" +
		"  - {<<: 5}\n" +
		"  - {<<: [*b, 5]}\n"
	var c2 struct {
		C    config         `yaml:",inline"`
		Base map[string]int `yaml:"base"`
	}
	err := Decode([]byte(in), &c2)
	for _, want := range []string{
		"listeners[0].prot: unknown key (line 1)",
		"listeners[1].<<: a merge takes a mapping or a list of mappings (like <<: *defaults) (line 4)",
		"listeners[2].<<: a merge takes a mapping or a list of mappings (like <<: *defaults) (line 5)",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v\nwant %q", err, want)
		}
	}
}

func TestDecodeMergeIntoMap(t *testing.T) {
	in := "base: &b {a: '1', b: '2'}\noverrides: {<<: *b, b: '3'}\n"
	var c struct {
		C    config            `yaml:",inline"`
		Base map[string]string `yaml:"base"`
	}
	if err := Decode([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	if len(c.C.Overrides) != 2 || c.C.Overrides["a"] != "1" || c.C.Overrides["b"] != "3" {
		t.Errorf("overrides = %v", c.C.Overrides)
	}
}

// A key written twice is an error (yaml.v3 says so too when it decodes
// into values); a merged key that the mapping writes itself is not.
func TestDecodeDuplicateKey(t *testing.T) {
	var c config
	err := Decode([]byte("log:\n  level: info\n  level: debug\n"), &c)
	if err == nil || err.Error() != "log.level: written twice (first on line 2) (line 3)" {
		t.Fatalf("err = %v", err)
	}
}

// Aliases that expand exponentially, merges that nest or loop, and deep
// nesting end in an error, not a hang or a crash.
func TestDecodeBounds(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x]\n")
	for i := 1; i < 40; i++ {
		b.WriteString("a" + itoa(i) + ": &a" + itoa(i) + " [*a" + itoa(i-1) + ", *a" + itoa(i-1) + "]\n")
	}
	var deep struct {
		L [][]any `yaml:"l"`
		T tree    `yaml:"t"`
	}
	cases := []string{
		b.String() + "l: [*a39]\n",
		"l: &x [*x]\n",
		"t: " + strings.Repeat("{kids: [", 40) + strings.Repeat("]}", 40) + "\n",
	}
	for _, in := range cases {
		err := Decode([]byte(in), &deep)
		if err == nil {
			t.Errorf("no error for %.60q", in)
		}
	}
	var merges strings.Builder
	merges.WriteString("m0: &m0 {k0: 1}\n")
	for i := 1; i < 30; i++ {
		merges.WriteString("m" + itoa(i) + ": &m" + itoa(i) + " {<<: [*m" + itoa(i-1) + ", *m" + itoa(i-1) + "], k" + itoa(i) + ": 1}\n")
	}
	merges.WriteString("log: {<<: *m29}\n")
	var lc config
	err := Decode([]byte(merges.String()), &lc)
	if err == nil || !strings.Contains(err.Error(), "log.<<: merges") {
		t.Errorf("nested merges: err = %v", err)
	}
}

type tree struct {
	Kids []tree `yaml:"kids"`
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestParse(t *testing.T) {
	if n, err := Parse([]byte("# only a comment\n")); n != nil || err != nil {
		t.Errorf("comment only: %v, %v", n, err)
	}
	_, err := Parse([]byte("a: b\n c: d\n"))
	var se *SyntaxError
	if !errors.As(err, &se) || se.Line != 2 || !strings.HasPrefix(err.Error(), "yaml: line 2: ") {
		t.Errorf("syntax error = %#v (%v)", se, err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("listeners: [{name: a, port: 993}]\nlog: {level: info}\n"))
	f.Add([]byte("defaults: &d {port: 1}\nlisteners: [{<<: *d, name: a}]\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c config
		err := Decode(data, &c)
		var e *Error
		var se *SyntaxError
		if err != nil && !errors.As(err, &e) && !errors.As(err, &se) {
			t.Fatalf("error of unknown type: %v", err)
		}
		if e != nil && e.Line < 0 {
			t.Fatalf("negative line: %v", e)
		}
	})
}

// Many small mappings that each merge one large anchor share one limit:
// the work is bounded by the document, not by their product.
func TestDecodeMergesShareOneLimit(t *testing.T) {
	var b strings.Builder
	b.WriteString("a: &a {")
	for i := range 5000 {
		b.WriteString("k" + itoa(i) + ": v, ")
	}
	b.WriteString("}\nm:\n")
	for range 1000 {
		b.WriteString("  - {<<: *a}\n")
	}
	var c struct {
		A map[string]string   `yaml:"a"`
		M []map[string]string `yaml:"m"`
	}
	err := Decode([]byte(b.String()), &c)
	if err == nil || !strings.Contains(err.Error(), "expand") {
		t.Fatalf("err = %.200v", err)
	}
	if n := strings.Count(err.Error(), "\n") + 1; n > 2 {
		t.Errorf("%d errors, want the limit reported once", n)
	}
}

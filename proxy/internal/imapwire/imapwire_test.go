package imapwire

import (
	"bytes"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		in   string
		want Command
	}{
		{"a1 CAPABILITY", Command{Tag: "a1", Name: "CAPABILITY"}},
		{"x noop", Command{Tag: "x", Name: "NOOP"}},
		{"t] LOGIN alice secret", Command{Tag: "t]", Name: "LOGIN", Args: []Arg{{Kind: Atom, Value: "alice"}, {Kind: Atom, Value: "secret"}}}},
		{`a LOGIN "al\"ice" "p\\w d"`, Command{Tag: "a", Name: "LOGIN", Args: []Arg{{Kind: Quoted, Value: `al"ice`}, {Kind: Quoted, Value: `p\w d`}}}},
		{"a LOGIN \"jörg\" \"пароль\"", Command{Tag: "a", Name: "LOGIN", Args: []Arg{{Kind: Quoted, Value: "jörg"}, {Kind: Quoted, Value: "пароль"}}}},
		{"a LOGIN {5}\r\nalice {3+}\r\na b", Command{Tag: "a", Name: "LOGIN", Args: []Arg{{Kind: Literal, Value: "alice"}, {Kind: Literal, Value: "a b"}}}},
		{"a LOGIN {0}\r\n \"\"", Command{Tag: "a", Name: "LOGIN", Args: []Arg{{Kind: Literal, Value: ""}, {Kind: Quoted, Value: ""}}}},
		{"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==", Command{Tag: "a", Name: "AUTHENTICATE", Args: []Arg{{Kind: Atom, Value: "PLAIN"}, {Kind: Atom, Value: "AGFsaWNlAHNlY3JldA=="}}}},
		{"a AUTHENTICATE PLAIN =", Command{Tag: "a", Name: "AUTHENTICATE", Args: []Arg{{Kind: Atom, Value: "PLAIN"}, {Kind: Atom, Value: "="}}}},
		{`a ID ("name" "Thunderbird" "version" NIL)`, Command{Tag: "a", Name: "ID", Args: []Arg{{Kind: List, List: []Arg{{Kind: Quoted, Value: "name"}, {Kind: Quoted, Value: "Thunderbird"}, {Kind: Quoted, Value: "version"}, {Kind: Atom, Value: "NIL"}}}}}},
		{"a ID ()", Command{Tag: "a", Name: "ID", Args: []Arg{{Kind: List, List: []Arg{}}}}},
		{"a ID NIL", Command{Tag: "a", Name: "ID", Args: []Arg{{Kind: Atom, Value: "NIL"}}}},
	}
	for _, tt := range tests {
		got, err := ParseCommand([]byte(tt.in))
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseCommand(%q) = %+v, %v, want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseCommandErrors(t *testing.T) {
	tests := []struct {
		in      string
		wantTag string // "" means ErrBadTag
	}{
		{"", ""},
		{" LOGIN a b", ""},
		{"a+ LOGIN a b", ""},
		{"a{ NOOP", ""},
		{"* NOOP", ""},
		{"a", "a"},
		{"a ", "a"},
		{"a NOOP ", "a"},
		{"a LOGIN  x", "a"},
		{`a LOGIN "unterminated`, "a"},
		{`a LOGIN "bad\escape" x`, "a"},
		{"a LOGIN \"nul\x00\" x", "a"},
		{"a LOGIN \"bad\xff\" x", "a"},
		{"a LOGIN {5}\r\nabc", "a"},
		{"a LOGIN {3}abc", "a"},
		{"a LOGIN {}\r\n", "a"},
		{"a LOGIN {99999999999}\r\n", "a"},
		{"a LOGIN {4097}\r\n" + strings.Repeat("x", 4097), "a"},
		{"a LOGIN {3}\r\na\x00b x", "a"},
		{"a ID ((\"x\"))", "a"},
		{"a ID (\"x\"", "a"},
		{"a ID (\"x\"\"y\")", "a"},
		{"a LOGIN al*ce x", "a"},
		{"a LOGIN a%b x", "a"},
		{"a NOOP" + strings.Repeat(" x", MaxArgs+1), "a"},
	}
	for _, tt := range tests {
		got, err := ParseCommand([]byte(tt.in))
		if err == nil {
			t.Errorf("ParseCommand(%q) = %+v, want error", tt.in, got)
			continue
		}
		if tt.wantTag == "" {
			if !errors.Is(err, ErrBadTag) {
				t.Errorf("ParseCommand(%q) error = %v, want ErrBadTag", tt.in, err)
			}
			continue
		}
		var se *SyntaxError
		if !errors.As(err, &se) || se.Tag != tt.wantTag {
			t.Errorf("ParseCommand(%q) error = %#v, want SyntaxError with tag %q", tt.in, err, tt.wantTag)
		}
	}
}

func TestTrailingLiteral(t *testing.T) {
	tests := []struct {
		in      string
		size    int64
		nonSync bool
		ok      bool
		err     bool
	}{
		{"a LOGIN {5}", 5, false, true, false},
		{"a LOGIN {12+}", 12, true, true, false},
		{"a LOGIN x {0}", 0, false, true, false},
		{"a LOGIN x", 0, false, false, false},
		{"a LOGIN {}", 0, false, false, false},
		{"a LOGIN {+}", 0, false, false, false},
		{"}", 0, false, false, false},
		{"5}", 0, false, false, false},
		{"a LOGIN {12345678901}", 0, false, false, true},
	}
	for _, tt := range tests {
		size, nonSync, ok, err := TrailingLiteral([]byte(tt.in))
		if size != tt.size || nonSync != tt.nonSync || ok != tt.ok || (err != nil) != tt.err {
			t.Errorf("TrailingLiteral(%q) = %d, %v, %v, %v; want %d, %v, %v, err %v", tt.in, size, nonSync, ok, err, tt.size, tt.nonSync, tt.ok, tt.err)
		}
	}
}

func TestParseTag(t *testing.T) {
	for in, want := range map[string]string{"a1 LOGIN {5}": "a1", "A.b] x": "A.b]"} {
		if got, err := ParseTag([]byte(in)); got != want || err != nil {
			t.Errorf("ParseTag(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "+ x", "a\"b x", "(a x"} {
		if got, err := ParseTag([]byte(in)); err == nil {
			t.Errorf("ParseTag(%q) = %q, want error", in, got)
		}
	}
}

// encode renders cmd back to the assembled-command form ParseCommand reads.
func encode(cmd Command) string {
	var sb strings.Builder
	sb.WriteString(cmd.Tag + " " + cmd.Name)
	for _, a := range cmd.Args {
		sb.WriteByte(' ')
		encodeArg(&sb, a)
	}
	return sb.String()
}

func encodeArg(sb *strings.Builder, a Arg) {
	switch a.Kind {
	case Atom:
		sb.WriteString(a.Value)
	case List:
		sb.WriteByte('(')
		for i, e := range a.List {
			if i > 0 {
				sb.WriteByte(' ')
			}
			encodeArg(sb, e)
		}
		sb.WriteByte(')')
	default:
		sb.WriteString(Quote(a.Value))
	}
}

func depth(args []Arg) (n, d int) {
	for _, a := range args {
		n++
		if a.Kind == List {
			cn, cd := depth(a.List)
			n += cn
			d = max(d, cd+1)
		}
	}
	return n, d
}

// strip turns Literal kinds into Quoted for comparing a round trip.
func strip(args []Arg) []Arg {
	out := make([]Arg, len(args))
	for i, a := range args {
		if a.Kind == Literal {
			a.Kind = Quoted
		}
		if a.Kind == List {
			a.List = strip(a.List)
		}
		out[i] = a
	}
	return out
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"a1 CAPABILITY",
		"a LOGIN {5}\r\nalice {3+}\r\na b",
		`a ID ("name" "x" "version" NIL)`,
		`a LOGIN "al\"ice" x`,
		"a AUTHENTICATE PLAIN =",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cmd, err := ParseCommand(b)
		if err != nil {
			var se *SyntaxError
			if !errors.Is(err, ErrBadTag) && !errors.As(err, &se) {
				t.Fatalf("untyped error %T %v", err, err)
			}
			return
		}
		if _, err := ParseTag([]byte(cmd.Tag + " ")); err != nil {
			t.Fatalf("accepted invalid tag %q", cmd.Tag)
		}
		if cmd.Name == "" || cmd.Name != strings.ToUpper(cmd.Name) {
			t.Fatalf("bad name %q", cmd.Name)
		}
		n, d := depth(cmd.Args)
		if n > MaxArgs || d > MaxDepth {
			t.Fatalf("limits exceeded: %d args, depth %d", n, d)
		}
		again, err := ParseCommand([]byte(encode(cmd)))
		if err != nil {
			t.Fatalf("re-encoded %q does not parse: %v", encode(cmd), err)
		}
		if again.Tag != cmd.Tag || again.Name != cmd.Name || !reflect.DeepEqual(strip(again.Args), strip(cmd.Args)) {
			t.Fatalf("round trip changed %+v to %+v", cmd, again)
		}
	})
}

func BenchmarkParseCommand(b *testing.B) {
	cmds := [][]byte{
		[]byte(`a1 LOGIN "alice@example.org" "correct horse battery staple"`),
		[]byte("a2 LOGIN {17}\r\nalice@example.org {28+}\r\ncorrect horse battery staple"),
		[]byte(`a3 ID ("name" "Thunderbird" "version" "115.3.1" "os" "Linux")`),
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, c := range cmds {
			if _, err := ParseCommand(c); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// FuzzTrailingLiteral covers the two helpers the proxy runs on each raw
// line before a command is whole: a reported literal marker is exactly
// the line's suffix (so the proxy reads the announced number of octets,
// no more), errors are typed, and a tag is a prefix ending at a space.
func FuzzTrailingLiteral(f *testing.F) {
	for _, s := range []string{"a LOGIN {5}", "a LOGIN {5+}", "a LOGIN alice {4096}", "{0}", "a {+}", "a {12345678901}", "a }", "x LOGIN {007+}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		size, nonSync, ok, err := TrailingLiteral(line)
		if err != nil {
			var se *SyntaxError
			if ok || !errors.As(err, &se) {
				t.Fatalf("TrailingLiteral(%q): ok %v, error %T %v", line, ok, err, err)
			}
		}
		if ok {
			marker := line[bytes.LastIndexByte(line, '{'):]
			digits := strings.TrimSuffix(strings.TrimSuffix(string(marker[1:]), "}"), "+")
			n, perr := strconv.ParseInt(digits, 10, 64)
			if perr != nil || n != size || size < 0 || nonSync != bytes.HasSuffix(line, []byte("+}")) {
				t.Fatalf("TrailingLiteral(%q) = %d, %v; marker %q", line, size, nonSync, marker)
			}
		} else if err == nil && (size != 0 || nonSync) {
			t.Fatalf("TrailingLiteral(%q) = %d, %v without a marker", line, size, nonSync)
		}
		if tag, err := ParseTag(line); err == nil {
			if tag == "" || !bytes.HasPrefix(line, []byte(tag)) || (len(line) > len(tag) && line[len(tag)] != ' ') ||
				strings.ContainsAny(tag, " +{()\"\\*%\r\n\x00") {
				t.Fatalf("ParseTag(%q) = %q", line, tag)
			}
		} else if !errors.Is(err, ErrBadTag) {
			t.Fatalf("ParseTag(%q) error %v", line, err)
		}
	})
}

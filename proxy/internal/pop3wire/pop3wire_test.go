package pop3wire

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		in   string
		want Command
	}{
		{"CAPA", Command{Name: "CAPA"}},
		{"capa", Command{Name: "CAPA"}},
		{"StLs", Command{Name: "STLS"}},
		{"USER alice@example.org", Command{Name: "USER", Arg: "alice@example.org", Args: []string{"alice@example.org"}}},
		{"PASS correct horse battery", Command{Name: "PASS", Arg: "correct horse battery", Args: []string{"correct", "horse", "battery"}}},
		{"PASS  leading space", Command{Name: "PASS", Arg: " leading space", Args: []string{"", "leading", "space"}}},
		{"PASS pässwörd", Command{Name: "PASS", Arg: "pässwörd", Args: []string{"pässwörd"}}},
		// Issue #14 finding 7: more spaces than any command has arguments.
		{"PASS a b c d e f g h i j", Command{Name: "PASS", Arg: "a b c d e f g h i j", Args: strings.Split("a b c d e f g h i j", " ")}},
		{"PASS          ", Command{Name: "PASS", Arg: "         ", Args: strings.Split("         ", " ")}},
		{"AUTH PLAIN AGFsaWNlAHNlY3JldA==", Command{Name: "AUTH", Arg: "PLAIN AGFsaWNlAHNlY3JldA==", Args: []string{"PLAIN", "AGFsaWNlAHNlY3JldA=="}}},
		{"AUTH PLAIN =", Command{Name: "AUTH", Arg: "PLAIN =", Args: []string{"PLAIN", "="}}},
		{"TOP 1 10", Command{Name: "TOP", Arg: "1 10", Args: []string{"1", "10"}}},
		{"QUIT", Command{Name: "QUIT"}},
	}
	for _, tt := range tests {
		got, err := ParseCommand([]byte(tt.in))
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseCommand(%q) = %+v, %v, want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseCommandErrors(t *testing.T) {
	for _, in := range []string{
		"", "QU", "QUITX", "STARTTLS", "QU1T", " QUIT", "US3R a", "USER ", "PASS ",
		"USER a\x00b", "PASS a\rb", "NOOP\r", "\x00", "ÜSER a",
		"AUTH " + strings.Repeat("a ", maxArgs) + "a",
	} {
		got, err := ParseCommand([]byte(in))
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("ParseCommand(%q) = %+v, %v; want *SyntaxError", in, got, err)
		}
	}
}

func TestWordArgs(t *testing.T) {
	tests := []struct {
		in       string
		min, max int
		ok       bool
	}{
		{"AUTH PLAIN", 0, 2, true},
		{"AUTH", 0, 2, true},
		{"AUTH PLAIN x", 1, 2, true},
		{"AUTH PLAIN x y", 1, 2, false},
		{"AUTH  PLAIN", 1, 2, false},
		{"AUTH PLAIN ", 1, 2, false},
		{"USER a", 1, 1, true},
		{"USER", 1, 1, false},
	}
	for _, tt := range tests {
		c, err := ParseCommand([]byte(tt.in))
		if err != nil {
			if tt.ok {
				t.Errorf("ParseCommand(%q): %v", tt.in, err)
			}
			continue
		}
		if err := c.WordArgs(tt.min, tt.max); (err == nil) != tt.ok {
			t.Errorf("%q.WordArgs(%d, %d) = %v, want ok=%v", tt.in, tt.min, tt.max, err, tt.ok)
		}
	}
}

// FuzzParseCommand: no panic; a parsed command re-encodes to the input
// (modulo keyword case) and never carries a control byte a backend
// would treat as a line end.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"CAPA", "USER alice", "PASS a b c", "AUTH PLAIN AGFsaWNlAHNlY3JldA==", "STLS", "PASS x\ry"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		c, err := ParseCommand(line)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("error %T", err)
			}
			return
		}
		re := c.Name
		if c.Args != nil {
			re += " " + c.Arg
		}
		if !strings.EqualFold(re, string(line)) || strings.Join(c.Args, " ") != c.Arg {
			t.Fatalf("ParseCommand(%q) = %+v, re-encodes to %q", line, c, re)
		}
		if strings.ContainsAny(re, "\x00\r\n") || len(c.Name) < 3 || len(c.Name) > maxKeyword {
			t.Fatalf("ParseCommand(%q) = %+v", line, c)
		}
	})
}

func BenchmarkParseCommand(b *testing.B) {
	line := []byte("AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAHNlY3JldA==")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCommand(line); err != nil {
			b.Fatal(err)
		}
	}
}

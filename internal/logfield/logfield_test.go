package logfield

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// The proxy's own tests (proxy/logfield_test.go) cover the escapes; this
// pins the contract the adapters rely on: printable ASCII unchanged,
// everything else escaped, never longer than max.
func TestClean(t *testing.T) {
	for _, tt := range []struct {
		in   string
		max  int
		want string
	}{
		{"alice@example.org", 100, "alice@example.org"},
		{"a b\u00a0c", 100, `a b\u00a0c`},
		{"x\nmsg=AUTHFAILED", 100, `x\u000amsg=AUTHFAILED`},
		{"abcdef", 3, "abc"},
		{"ab\u00a0", 7, "ab"},
	} {
		if got := Clean(tt.in, tt.max); got != tt.want {
			t.Errorf("Clean(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}

// Ids match the fail2ban filters' cid=[a-z2-7]+ and differ.
func TestNewID(t *testing.T) {
	a, b := NewID(), NewID()
	if len(a) != 12 || strings.Trim(a, "abcdefghijklmnopqrstuvwxyz234567") != "" || a == b {
		t.Errorf("NewID() = %q, %q", a, b)
	}
}
func FuzzClean(f *testing.F) {
	f.Add("alice@example.org", 320)
	f.Add("a\u00a0b\u2028c\x85", 64)
	f.Fuzz(func(t *testing.T, s string, max int) {
		max = max&1023 + 1
		got := Clean(s, max)
		if len(got) > max {
			t.Fatalf("Clean(%q, %d) = %d octets", s, max, len(got))
		}
		for i := 0; i < len(got); i++ {
			if got[i] < 0x20 || got[i] >= 0x7f {
				t.Fatalf("Clean(%q) = %q: octet %#x", s, got, got[i])
			}
		}
		plain := utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r >= 0x7f || r == '\\' })
		if plain && len(s) <= max && got != s {
			t.Fatalf("Clean(%q) = %q, want it unchanged", s, got)
		}
	})
}

package logsafe

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// Printable ASCII stays; every other rune, invalid UTF-8 and the
// backslash are escaped, and a cut never ends inside an escape.
func TestField(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"alice@example.org", "alice@example.org"},
		{"a\u00a0b", `a\u00a0b`},
		{"a\r\nb\x00", `a\u000d\u000ab\u0000`},
		{`back\slash`, `back\\slash`},
		{"\U0001f600", `\U0001f600`},
		{"bad\xffutf8", `bad\xffutf8`},
	} {
		if got := Field(tt.in, 100); got != tt.want {
			t.Errorf("Field(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := Field("ab\u00a0", 7); got != "ab" {
		t.Errorf("Field cut an escape: %q, want %q", got, "ab")
	}
}

// FuzzField: whatever the input, the field is printable ASCII, at most
// max octets, and text that needed no escape comes back unchanged.
func FuzzField(f *testing.F) {
	f.Add("alice@example.org", 320)
	f.Add("a\u00a0b\u2028c\x85", 64)
	f.Fuzz(func(t *testing.T, s string, max int) {
		max = max&1023 + 1
		got := Field(s, max)
		if len(got) > max {
			t.Fatalf("Field(%q, %d) = %d octets", s, max, len(got))
		}
		for i := 0; i < len(got); i++ {
			if got[i] < 0x20 || got[i] >= 0x7f {
				t.Fatalf("Field(%q) = %q: octet %#x", s, got, got[i])
			}
		}
		plain := utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r >= 0x7f || r == '\\' })
		if plain && len(s) <= max && got != s {
			t.Fatalf("Field(%q) = %q, want it unchanged", s, got)
		}
	})
}

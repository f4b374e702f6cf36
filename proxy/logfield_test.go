package proxy

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// Client text in a log field keeps printable ASCII and escapes everything
// else, so no Unicode space or separator can split a field or a line for
// a fail2ban regex (issue #14, finding 4).
func TestSanitizeLogEscapesNonASCII(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"alice@example.org", "alice@example.org"},
		{`x : AUTHFAILED|imap 6.6.6.6|`, `x : AUTHFAILED|imap 6.6.6.6|`},
		{"a\u00a0b", `a\u00a0b`},
		{"a\u0085b", `a\u0085b`},
		{"a\u2028b", `a\u2028b`},
		{"a\u3000b", `a\u3000b`},
		{"a\r\nb\x00", `a\u000d\u000ab\u0000`},
		{"m\u00fcller", `m\u00fcller`},
		{`back\slash`, `back\\slash`},
		{"\U0001f600", `\U0001f600`},
		{"bad\xffutf8", `bad\xffutf8`},
	} {
		if got := sanitizeLog(tt.in, 100); got != tt.want {
			t.Errorf("sanitizeLog(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := sanitizeLog("ab\u00a0", 7); got != "ab" {
		t.Errorf("sanitizeLog cut an escape: %q, want %q", got, "ab")
	}
}

// FuzzSanitizeLog: whatever the input, the field is printable ASCII, at
// most max octets, and text that needed no escape comes back unchanged.
func FuzzSanitizeLog(f *testing.F) {
	f.Add("alice@example.org", 320)
	f.Add("a\u00a0b\u2028c\x85", 64)
	f.Fuzz(func(t *testing.T, s string, max int) {
		max = max&1023 + 1
		got := sanitizeLog(s, max)
		if len(got) > max {
			t.Fatalf("sanitizeLog(%q, %d) = %d octets", s, max, len(got))
		}
		for i := 0; i < len(got); i++ {
			if got[i] < 0x20 || got[i] >= 0x7f {
				t.Fatalf("sanitizeLog(%q) = %q: octet %#x", s, got, got[i])
			}
		}
		plain := utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r >= 0x7f || r == '\\' })
		if plain && len(s) <= max && got != s {
			t.Fatalf("sanitizeLog(%q) = %q, want it unchanged", s, got)
		}
	})
}

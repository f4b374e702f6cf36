package smtpwire

import (
	"errors"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		in   string
		want Command
	}{
		{"EHLO client.example.org", Command{Name: "EHLO", Arg: "client.example.org"}},
		{"ehlo [192.0.2.1]", Command{Name: "EHLO", Arg: "[192.0.2.1]"}},
		{"STARTTLS", Command{Name: "STARTTLS"}},
		{"AUTH PLAIN AGFsaWNlAHNlY3JldA==", Command{Name: "AUTH", Arg: "PLAIN AGFsaWNlAHNlY3JldA=="}},
		{"MAIL FROM:<a@example.org> SIZE=100", Command{Name: "MAIL", Arg: "FROM:<a@example.org> SIZE=100"}},
		{"QUIT", Command{Name: "QUIT"}},
		{"NOOP ", Command{Name: "NOOP", Arg: ""}},
	}
	for _, tt := range tests {
		got, err := ParseCommand([]byte(tt.in))
		if err != nil || got != tt.want {
			t.Errorf("ParseCommand(%q) = %+v, %v, want %+v", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", " EHLO x", "STARTTLSX", "HE1O x", "EHLO x\x00", "EHLO x\ry", "\x16\x03\x01", "GET / HTTP/1.1"} {
		var se *SyntaxError
		if got, err := ParseCommand([]byte(in)); !errors.As(err, &se) || se.Code != 500 {
			if in == "GET / HTTP/1.1" && err == nil && got.Name == "GET" {
				continue // a verb; the state machine rejects it as unknown
			}
			t.Errorf("ParseCommand(%q) = %+v, %v; want 500 syntax error", in, got, err)
		}
	}
}

func TestParseHelo(t *testing.T) {
	for _, ok := range []string{"client.example.org", "[192.0.2.1]", "[IPv6:2001:db8::1]", "DESKTOP-AB_12", "192.0.2.1", "bücher.example", "localhost"} {
		if got, err := ParseHelo(ok); err != nil || got != ok {
			t.Errorf("ParseHelo(%q) = %q, %v", ok, got, err)
		}
	}
	for _, bad := range []string{"", "a b", "a\tb", "a\x00", "x\x7f", "\xff", strings.Repeat("a", maxDomain+1), "a\u0085b"} {
		var se *SyntaxError
		if got, err := ParseHelo(bad); !errors.As(err, &se) || se.Code != 501 {
			t.Errorf("ParseHelo(%q) = %q, %v; want 501", bad, got, err)
		}
	}
}

func TestParseAuth(t *testing.T) {
	tests := []struct {
		in   string
		want Auth
	}{
		{"PLAIN", Auth{Mechanism: "PLAIN"}},
		{"plain AGFsaWNlAHNlY3JldA==", Auth{Mechanism: "PLAIN", Initial: "AGFsaWNlAHNlY3JldA==", HasInitial: true}},
		{"LOGIN =", Auth{Mechanism: "LOGIN", Initial: "=", HasInitial: true}},
		{"CRAM-MD5", Auth{Mechanism: "CRAM-MD5"}},
		{"SCRAM-SHA-256-PLUS", Auth{Mechanism: "SCRAM-SHA-256-PLUS"}},
	}
	for _, tt := range tests {
		if got, err := ParseAuth(tt.in); err != nil || got != tt.want {
			t.Errorf("ParseAuth(%q) = %+v, %v, want %+v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", " PLAIN", "PLAIN ", "PLAIN a b", "PL/AIN", strings.Repeat("A", maxMechanism+1), "PLAIN  x"} {
		var se *SyntaxError
		if got, err := ParseAuth(bad); !errors.As(err, &se) || se.Code != 501 {
			t.Errorf("ParseAuth(%q) = %+v, %v; want 501", bad, got, err)
		}
	}
}

// FuzzParseCommand covers the command line and both argument parsers:
// no panic, round trips, and nothing a backend would read as a line end
// or word break leaks into a HELO name or a mechanism.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"EHLO x.example", "HELO [192.0.2.1]", "AUTH PLAIN AGFsaWNlAHNlY3JldA==", "AUTH LOGIN", "STARTTLS", "MAIL FROM:<a@b>", "RSET\r"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		c, err := ParseCommand(line)
		if err != nil {
			return
		}
		if strings.ContainsAny(c.Name+c.Arg, "\x00\r\n") || c.Name == "" || len(c.Name) > maxVerb {
			t.Fatalf("ParseCommand(%q) = %+v", line, c)
		}
		if h, err := ParseHelo(c.Arg); err == nil {
			if h != c.Arg || strings.ContainsAny(h, " \t") || len(h) > maxDomain {
				t.Fatalf("ParseHelo(%q) = %q", c.Arg, h)
			}
		}
		if a, err := ParseAuth(c.Arg); err == nil {
			re := a.Mechanism
			if a.HasInitial {
				re += " " + a.Initial
			}
			if !strings.EqualFold(re, c.Arg) || strings.Contains(a.Initial, " ") {
				t.Fatalf("ParseAuth(%q) = %+v", c.Arg, a)
			}
		}
	})
}

func BenchmarkParseCommand(b *testing.B) {
	line := []byte("AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAHNlY3JldA==")
	b.ReportAllocs()
	for b.Loop() {
		c, err := ParseCommand(line)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ParseAuth(c.Arg); err != nil {
			b.Fatal(err)
		}
	}
}

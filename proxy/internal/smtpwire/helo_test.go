package smtpwire

import (
	"errors"
	"testing"
)

func TestHeloASCII(t *testing.T) {
	for in, want := range map[string]string{
		"client.example.test": "client.example.test",
		"[192.0.2.1]":         "[192.0.2.1]",
		"[IPv6:2001:db8::1]":  "[IPv6:2001:db8::1]",
		"DESKTOP-4F2_PC":      "DESKTOP-4F2_PC",
		"a+b=c":               "a+b=c", // ASCII passes as it is; xtext encodes it for XCLIENT
		"bücher.example":      "xn--bcher-kva.example",
		"Bücher.Example":      "xn--bcher-kva.example",
		"Jörg_PC":             "xn--jrg_pc-wxa",
		"пример.испытание":    "xn--e1afmkfd.xn--80akhbyknj4f",
		"zero\u200bwidth":     "zerowidth", // UTS 46 maps it away
	} {
		got, err := HeloASCII(in)
		if err != nil || got != want {
			t.Errorf("HeloASCII(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{
		"", "a b", "a\x00b", "\xff\xfe", "evil\u202eexample", "a\u0085b", "bad\u2028line",
		string(make([]byte, 256)), "ü" + longLabel(250),
	} {
		var se *SyntaxError
		if got, err := HeloASCII(in); !errors.As(err, &se) || se.Code != 501 {
			t.Errorf("HeloASCII(%q) = %q, %v; want a 501 SyntaxError", in, got, err)
		}
	}
}

func longLabel(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a'
	}
	return string(b)
}

// FuzzHeloASCII: what HeloASCII accepts, the backend can send: 1 to 255
// octets of visible ASCII; an ASCII name comes back unchanged.
func FuzzHeloASCII(f *testing.F) {
	for _, s := range []string{"client.example", "bücher.example", "[IPv6:::1]", "Jörg_PC", "evil\u202eexample", "xn--bcher-kva.example"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := HeloASCII(in)
		if err != nil {
			return
		}
		if got == "" || len(got) > 255 {
			t.Fatalf("HeloASCII(%q) = %q: bad length", in, got)
		}
		for i := 0; i < len(got); i++ {
			if got[i] <= ' ' || got[i] >= 0x7f {
				t.Fatalf("HeloASCII(%q) = %q: octet %#x", in, got, got[i])
			}
		}
		if isASCII(in) && got != in {
			t.Fatalf("HeloASCII(%q) = %q: ASCII changed", in, got)
		}
	})
}

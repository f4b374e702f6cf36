package geo

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseNetwork(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.0/24", "192.0.2.0/24"},
		{"192.0.2.7", "192.0.2.7/32"},
		{"0.0.0.0/0", "0.0.0.0/0"},
		{"2001:db8::/32", "2001:db8::/32"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"::ffff:192.0.2.7", "192.0.2.7/32"},
		{"::ffff:192.0.2.0/120", "192.0.2.0/24"},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8"},
		{"::ffff:0.0.0.0/96", "0.0.0.0/0"},
		{"::/0", "::/0"},
	} {
		got, err := ParseNetwork(tc.in)
		if err != nil || got.String() != tc.want {
			t.Errorf("ParseNetwork(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"10.1.2.3/8", `"10.1.2.3/8" has host bits set; did you mean 10.0.0.0/8?`},
		{"2001:db8::1/32", "did you mean 2001:db8::/32?"},
		{"::ffff:10.1.2.3/104", "did you mean 10.0.0.0/8?"},
		{"::ffff:10.0.0.0/88", "shorter than /96"},
		{"10.0.0.0/33", "neither a CIDR nor an address"},
		{"", "neither a CIDR nor an address"},
		{"x", "neither a CIDR nor an address"},
		{" 10.0.0.0/8", "neither a CIDR nor an address"},
		{"fe80::1%eth0", "zone"},
		{"fe80::1%eth0/64", "neither a CIDR nor an address"},
		{"10.0.0.0/08", "neither a CIDR nor an address"},
	} {
		got, err := ParseNetwork(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseNetwork(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseNetworks(t *testing.T) {
	got, err := ParseNetworks([]string{"10.0.0.0/8", "10.1.2.3/8", "::1", "nope"}, "guard.trusted_networks")
	if len(got) != 2 || got[0].String() != "10.0.0.0/8" || got[1].String() != "::1/128" {
		t.Errorf("good entries = %v", got)
	}
	for _, want := range []string{
		`guard.trusted_networks[1]: "10.1.2.3/8" has host bits set; did you mean 10.0.0.0/8?`,
		`guard.trusted_networks[3]: "nope" is neither a CIDR nor an address`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	if got, err := ParseNetworks(nil, "x"); got != nil || err != nil {
		t.Errorf("ParseNetworks(nil) = %v, %v", got, err)
	}
}

// FuzzParseNetwork checks the rule, not only that nothing panics: an
// accepted network is canonical, unmapped and zone-free, parses back to
// itself, and contains every address that was written as a bare address.
func FuzzParseNetwork(f *testing.F) {
	for _, s := range []string{"192.0.2.0/24", "10.1.2.3/8", "::ffff:10.0.0.0/104", "fe80::1%eth0", "2001:db8::1", "::ffff:1.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseNetwork(s)
		if err != nil {
			if p.IsValid() {
				t.Fatalf("ParseNetwork(%q) returned %v with error %v", s, p, err)
			}
			if strings.Contains(s, "/") {
				if q, perr := netip.ParsePrefix(s); perr == nil && !q.Addr().Is4In6() && q.Masked() == q {
					t.Fatalf("ParseNetwork(%q) refused a canonical prefix: %v", s, err)
				}
			}
			return
		}
		if !p.IsValid() || p.Masked() != p || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			t.Fatalf("ParseNetwork(%q) = %v: not canonical", s, p)
		}
		if again, err := ParseNetwork(p.String()); err != nil || again != p {
			t.Fatalf("ParseNetwork(%q) = %v, but %v parses as %v, %v", s, p, p, again, err)
		}
		if a, err := netip.ParseAddr(s); err == nil {
			if !p.Contains(a.Unmap()) || !p.IsSingleIP() {
				t.Fatalf("ParseNetwork(%q) = %v, not the address", s, p)
			}
		}
	})
}

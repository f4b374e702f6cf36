package policy

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// bigPolicy writes a user file with n users (each with a country line and,
// for every other user, an IP line) and a rules file with a few hundred
// domain and everyone rules, as a large site might have.
func bigPolicy(tb testing.TB, n int) Config {
	tb.Helper()
	dir := tb.TempDir()
	var u strings.Builder
	u.WriteString("<?php exit; ?>\n")
	ccs := []string{"FR", "DE", "RU", "GB", "BR", "JP"}
	lines := 0
	for i := 0; lines < n; i++ {
		fmt.Fprintf(&u, "user%06d@example.com|%s\n", i, ccs[i%len(ccs)])
		lines++
		if i%2 == 0 && lines < n {
			fmt.Fprintf(&u, "user%06d@example.com|192.0.%d.%d\n", i, (i>>8)&255, i&255)
			lines++
		}
	}
	var r strings.Builder
	r.WriteString("always_allow: [10.1.0.0/16, 2001:db8:ffff::/48]\nalways_deny: [KP, 203.0.113.99]\nrules:\n")
	for i := range 300 {
		fmt.Fprintf(&r, "  - users: \"@d%d.example.org\"\n    deny: [CN]\n    protocols: [imap]\n", i)
	}
	r.WriteString("  - users: \"*\"\n    deny: [private]\n")
	c := Config{
		AllowCountries: []string{"IN", "US"},
		DefaultDomain:  "example.com",
		UserFile:       filepath.Join(dir, "user-allowed.php"),
		RulesFile:      filepath.Join(dir, "rules.yaml"),
	}
	for path, data := range map[string]string{c.UserFile: u.String(), c.RulesFile: r.String()} {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return c
}

var benchReqs = []Request{
	{Login: "user050000@example.com", Protocol: IMAP, Addr: netip.MustParseAddr("81.2.69.142")}, // GB: user lines miss, default deny
	{Login: "User050001@Example.COM", Protocol: SMTP, Addr: netip.MustParseAddr("81.2.69.142")}, // mixed case
	{Login: "user050002", Protocol: POP3, Addr: netip.MustParseAddr("203.0.113.10")},            // default domain
	{Login: "stranger@other.org", Protocol: IMAP, Addr: netip.MustParseAddr("2001:db8::1")},     // no rules
	{Login: "user000002@example.com", Protocol: IMAP, Addr: netip.MustParseAddr("192.0.2.30")},  // allowed by a user line (RU)
	{Login: "x@d7.example.org", Protocol: IMAP, Addr: netip.MustParseAddr("2001:db8:ffff::1")},  // always_allow
}

// BenchmarkDecide100k: one decision with 100,000 user-file lines loaded.
func BenchmarkDecide100k(b *testing.B) {
	e, err := New(bigPolicy(b, 100_000), testGeo, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		e.Decide(benchReqs[i%len(benchReqs)])
		i++
	}
}

// BenchmarkDecideParallel100k is the same with every CPU deciding.
func BenchmarkDecideParallel100k(b *testing.B) {
	e, err := New(bigPolicy(b, 100_000), testGeo, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			e.Decide(benchReqs[i%len(benchReqs)])
			i++
		}
	})
}

// BenchmarkLoad100k: time to read and compile 100,000 user-file lines and
// the heap the compiled policy keeps (heap-MiB).
func BenchmarkLoad100k(b *testing.B) {
	c := bigPolicy(b, 100_000)
	b.ReportAllocs()
	var kept float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		e, err := New(c, testGeo, nil)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		kept = float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
		runtime.KeepAlive(e)
	}
	b.ReportMetric(kept, "heap-MiB")
}

// TestDecideNoAllocs holds the hot path to zero allocations with a big
// policy, for every request shape the benchmark uses.
func TestDecideNoAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 100,000-line policy")
	}
	e, err := New(bigPolicy(t, 100_000), testGeo, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []bool{false, true, true, false, true, true}
	for i, r := range benchReqs {
		if d := e.Decide(r); d.Allow != want[i] {
			t.Errorf("Decide(%+v) = %v by %s, want %v", r, d.Allow, d.Rule, want[i])
		}
		if n := testing.AllocsPerRun(100, func() { e.Decide(r) }); n != 0 {
			t.Errorf("Decide(%+v) allocates %v times, want 0", r, n)
		}
	}
}

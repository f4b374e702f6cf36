package policy

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzUserFile: any bytes parse without panic; warnings name real lines;
// the entries, written back, parse to the same entries with no warnings.
func FuzzUserFile(f *testing.F) {
	f.Add([]byte(legacyFile))
	f.Add([]byte("<?php die(); ?>\r\nalice|RU\r\nbob|2001:db8::1\r\n"))
	f.Add([]byte("a|b|c\n|\n\x00|\x00\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, warns := ParseUserFile(data)
		lines := bytes.Count(data, []byte("\n")) + 1
		for _, w := range warns {
			if w.Line < 1 || w.Line > lines {
				t.Fatalf("warning for line %d of %d", w.Line, lines)
			}
		}
		for _, e := range entries {
			if strings.ContainsAny(e.User, " \t\r\x00|\n") || e.User == "" {
				t.Fatalf("entry user %q kept a separator or noise", e.User)
			}
		}
		again, warns2 := ParseUserFile(FormatUserFile(entries))
		if len(warns2) != 0 {
			t.Fatalf("written entries do not parse back cleanly: %v", warns2)
		}
		if len(again) != len(entries) {
			t.Fatalf("round trip: %d entries, want %d", len(again), len(entries))
		}
		for i := range again {
			if again[i].User != entries[i].User || again[i].Target != entries[i].Target || again[i].t != entries[i].t {
				t.Fatalf("round trip: %+v, want %+v", again[i], entries[i])
			}
		}
	})
}

// FuzzRulesFile: any bytes parse or fail without panic; errors name
// file:line; a file that parses, written back, parses to the same rules.
func FuzzRulesFile(f *testing.F) {
	f.Add([]byte(rulesFile))
	f.Add([]byte("rules:\n  - users: a\n    allow: RU\n    until: 2026-12-10\n    note: \"x: y\"\n"))
	f.Add([]byte("always_deny: [KP, \"2001:db8::/32\"]\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rf, err := ParseRules("rules.yaml", data)
		if err != nil {
			for _, e := range unjoin(err) {
				if !strings.HasPrefix(e.Error(), "rules.yaml:") {
					t.Fatalf("error without file:line: %v", e)
				}
			}
			return
		}
		out, err := FormatRules(rf)
		if err != nil {
			t.Fatalf("FormatRules: %v", err)
		}
		rf2, err := ParseRules("rules.yaml", out)
		if err != nil {
			t.Fatalf("written file does not parse back: %v\n%s", err, out)
		}
		if !sameRules(rf, rf2) {
			t.Fatalf("round trip changed the rules:\n%+v\n%+v\n%s", rf, rf2, out)
		}
	})
}

// sameRules compares what two parsed rules files mean, line numbers aside.
func sameRules(a, b *RulesFile) bool {
	items := func(x, y []ListItem) bool {
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i].Value != y[i].Value || x[i].t != y[i].t {
				return false
			}
		}
		return true
	}
	if !items(a.AlwaysAllow, b.AlwaysAllow) || !items(a.AlwaysDeny, b.AlwaysDeny) || len(a.Rules) != len(b.Rules) {
		return false
	}
	for i := range a.Rules {
		x, y := &a.Rules[i], &b.Rules[i]
		if !slicesEqual(x.Users, y.Users) || x.Allow != y.Allow || !slicesEqual(x.Targets, y.Targets) ||
			!slicesEqual(x.ts, y.ts) || x.protos != y.protos || !x.Until.Equal(y.Until) || x.Note != y.Note {
			return false
		}
	}
	return true
}

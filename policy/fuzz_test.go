package policy

import (
	"bytes"
	"github.com/mailgate/mailgate/internal/errlist"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
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
			for _, e := range errlist.Split(err) {
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

// FuzzEditUserFile: on any existing user file, allow then revoke keeps
// every other line byte for byte, the result always parses as meant, and
// allow never writes an entry where PHP prints it.
func FuzzEditUserFile(f *testing.F) {
	f.Add([]byte(legacyFile), "zed", "FR")
	f.Add([]byte("<?php exit; ?>\r\nalice|RU\r\n"), "alice", "ru")
	f.Add([]byte("no newline at end"), "bob", "2001:db8::1")
	f.Add([]byte("<?php\r\n## c\r\n/*\r\nalice|RU\r\n*/ \r\n?>\r\n"), "Alice", "GB")
	f.Fuzz(func(t *testing.T, data []byte, user, place string) {
		dir := t.TempDir()
		c := Config{UserFile: dir + "/u.php"}
		if err := os.WriteFile(c.UserFile, data, 0o600); err != nil {
			t.Fatal(err)
		}
		oldEntries, oldWarn := ParseUserFile(data)
		res, err := Allow(c, Change{User: user, Target: place}, time.Now())
		if err != nil {
			return // bad user or place, or needs a rules file: refused, fine
		}
		after, _ := os.ReadFile(c.UserFile)
		entries, warns := ParseUserFile(after)
		if len(warns) != len(oldWarn) {
			t.Fatalf("allow changed the malformed lines: %v -> %v", oldWarn, warns)
		}
		if res.Changed && !insertedOneLine(data, after) {
			t.Fatalf("allow rewrote existing content:\n%q\n%q", data, after)
		}
		if res.Changed && len(phpPrinted(after, entries)) > len(phpPrinted(data, oldEntries)) {
			t.Fatalf("allow wrote an entry PHP prints:\n%q\n%q", data, after)
		}
		tg, _ := parseTarget(place)
		key := normLogin(strings.TrimSpace(user), "")
		if !slices.ContainsFunc(entries, func(e UserEntry) bool { return e.userKey("") == key && e.t == tg }) {
			t.Fatalf("allowed entry not in file:\n%q", after)
		}
		if _, err := Revoke(c, Change{User: user, Target: place}); err != nil {
			t.Fatalf("revoke: %v", err)
		}
		final, _ := os.ReadFile(c.UserFile)
		entries, _ = ParseUserFile(final)
		if slices.ContainsFunc(entries, func(e UserEntry) bool { return e.userKey("") == key && e.t == tg }) {
			t.Fatalf("revoked entry still in file:\n%q", final)
		}
	})
}

// insertedOneLine reports whether after is before with one line (and at
// most a line end completing the line before it) inserted somewhere.
func insertedOneLine(before, after []byte) bool {
	p := 0
	for p < len(before) && p < len(after) && before[p] == after[p] {
		p++
	}
	s := 0
	for s < len(before)-p && s < len(after)-p && before[len(before)-1-s] == after[len(after)-1-s] {
		s++
	}
	mid := after[p : len(after)-s]
	return p+s == len(before) && bytes.Count(mid, []byte("\n")) <= 2
}

// FuzzEditRulesFile: on any rules file that parses, an allow either is
// refused with an error or leaves a file that parses to the old rules plus
// the new one; revoking it again leaves the old rules.
func FuzzEditRulesFile(f *testing.F) {
	f.Add([]byte(rulesFile), "zed", "FR")
	f.Add([]byte(rulesForEdit), "erin", "DE")
	f.Add([]byte("# only a comment\n"), "@example.com", "10.0.0.0/8")
	f.Add([]byte("rules:\n"), "*", "any")
	f.Fuzz(func(t *testing.T, data []byte, user, place string) {
		old, err := ParseRules("r.yaml", data)
		if err != nil {
			return
		}
		dir := t.TempDir()
		c := Config{RulesFile: dir + "/r.yaml"}
		if err := os.WriteFile(c.RulesFile, data, 0o600); err != nil {
			t.Fatal(err)
		}
		res, err := Allow(c, Change{User: user, Target: place, Protocols: []Protocol{IMAP}}, time.Now())
		after, _ := os.ReadFile(c.RulesFile)
		if err != nil || !res.Changed {
			if !bytes.Equal(after, data) {
				t.Fatalf("refused or no-op allow changed the file (%v)", err)
			}
			return
		}
		got, err := ParseRules("r.yaml", after)
		if err != nil {
			t.Fatalf("written file does not parse: %v\n%s", err, after)
		}
		if len(got.Rules) != len(old.Rules)+1 {
			t.Fatalf("rules %d -> %d", len(old.Rules), len(got.Rules))
		}
		want := *old
		want.Rules = got.Rules[:len(old.Rules)]
		if !sameRules(old, &want) {
			t.Fatalf("existing rules changed:\n%s", after)
		}
	})
}

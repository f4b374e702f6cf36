package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/testwait"
)

var editNow = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func editSetup(t *testing.T, user, rules string) (Config, func() string, func() string) {
	t.Helper()
	dir := t.TempDir()
	c := Config{UserFile: filepath.Join(dir, "user-allowed.php"), RulesFile: filepath.Join(dir, "rules.yaml"), DefaultDomain: "example.com"}
	if user != "" {
		if err := os.WriteFile(c.UserFile, []byte(user), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if rules != "" {
		writeFile(t, c.RulesFile, rules)
	}
	read := func(p string) func() string {
		return func() string {
			b, err := os.ReadFile(p)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			return string(b)
		}
	}
	return c, read(c.UserFile), read(c.RulesFile)
}

const legacyForEdit = "<?php exit; ?>\r\n# travellers\r\nalice|RU\r\nbroken line\r\nbob|192.0.2.31\r\nALICE|GB\r\n"

func TestAllowRevokeUserFile(t *testing.T) {
	c, user, _ := editSetup(t, legacyForEdit, "")
	res, err := Allow(c, Change{User: "carol@example.com", Target: "fr"}, editNow)
	if err != nil || !res.Changed || res.File != c.UserFile {
		t.Fatalf("Allow = %+v, %v", res, err)
	}
	if got, want := user(), legacyForEdit+"carol@example.com|FR\r\n"; got != want {
		t.Errorf("after allow:\n%q\nwant\n%q", got, want)
	}
	if fi, _ := os.Stat(c.UserFile); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode = %v, want 0640 kept", fi.Mode().Perm())
	}
	// The same allow again (other spelling) changes nothing.
	res, err = Allow(c, Change{User: "Carol", Target: "FR"}, editNow)
	if err != nil || res.Changed {
		t.Errorf("repeated Allow = %+v, %v; want no change", res, err)
	}
	// The engine reads the result.
	noRules := c
	noRules.RulesFile = ""
	e, err := New(noRules, testGeo, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(Request{Login: "carol", Protocol: IMAP, Addr: ip("2001:db8:1::5")}); !d.Allow {
		t.Errorf("carol from FR after allow: %+v", d)
	}

	// Revoke one entry: only that line goes; comments, guard and the
	// malformed line stay byte for byte.
	rs, err := Revoke(c, Change{User: "alice@EXAMPLE.com", Target: "RU"})
	if err != nil || len(rs) == 0 || !rs[0].Changed {
		t.Fatalf("Revoke = %+v, %v", rs, err)
	}
	want := "<?php exit; ?>\r\n# travellers\r\nbroken line\r\nbob|192.0.2.31\r\nALICE|GB\r\ncarol@example.com|FR\r\n"
	if got := user(); got != want {
		t.Errorf("after revoke:\n%q\nwant\n%q", got, want)
	}
	// Revoke all of alice's entries.
	if _, err := Revoke(c, Change{User: "alice", All: true}); err != nil {
		t.Fatal(err)
	}
	if got := user(); strings.Contains(strings.ToLower(got), "alice") {
		t.Errorf("alice still in file after revoke --all:\n%s", got)
	}
	// Nothing left to revoke: no change, no error.
	rs, err = Revoke(c, Change{User: "alice", Target: "RU"})
	if err != nil || rs[0].Changed {
		t.Errorf("empty revoke = %+v, %v", rs, err)
	}
}

func TestAllowCreatesMissingFile(t *testing.T) {
	c, user, _ := editSetup(t, "", "")
	if _, err := Allow(c, Change{User: "dan", Target: "2001:db8::1"}, editNow); err != nil {
		t.Fatal(err)
	}
	if got := user(); got != "dan|2001:db8::1\n" {
		t.Errorf("new file = %q", got)
	}
}

const rulesForEdit = `# Managed by the mail team; keep this comment.
always_allow: [10.1.0.0/16]  # office
rules:
  # sales may send from anywhere
  - users: ["@sales.example.com"]
    allow: any
    protocols: [smtp]
  - users: [erin@example.com]
    allow: [FR, DE]
  - users: [erin, frank]
    allow: [DE]
  - users: [erin]
    deny: [GB]
`

func TestAllowToRulesFile(t *testing.T) {
	c, user, rules := editSetup(t, "alice|RU\n", rulesForEdit)
	until := time.Date(2026, 12, 10, 18, 0, 0, 0, time.UTC)
	res, err := Allow(c, Change{User: "alice", Target: "JP", Until: until, Protocols: []Protocol{IMAP}, Note: "ticket 42"}, editNow)
	if err != nil || !res.Changed || res.File != c.RulesFile {
		t.Fatalf("Allow = %+v, %v", res, err)
	}
	got := rules()
	for _, want := range []string{"# Managed by the mail team; keep this comment.", "# office", "# sales may send from anywhere",
		"added by mailgate allow, 2026-11-26 12:00 UTC", "2026-12-10T18:00:00Z", "ticket 42"} {
		if !strings.Contains(got, want) {
			t.Errorf("rules file lacks %q:\n%s", want, got)
		}
	}
	if user() != "alice|RU\n" {
		t.Errorf("user file changed: %q", user())
	}
	// CIDR: rules file too.
	if res, err := Allow(c, Change{User: "alice", Target: "198.51.100.0/24"}, editNow); err != nil || res.File != c.RulesFile {
		t.Fatalf("Allow CIDR = %+v, %v", res, err)
	}
	clock := editNow
	e, err := New(c, testGeo, nil, WithClock(func() time.Time { return clock }))
	if err != nil {
		t.Fatalf("edited files do not load: %v\n%s", err, rules())
	}
	if d := e.Decide(Request{Login: "alice", Protocol: IMAP, Addr: ip("198.51.100.20")}); !d.Allow {
		t.Errorf("alice from the allowed CIDR: %+v", d)
	}
	// Expiry in the past is refused; so are bad users and targets.
	for _, ch := range []Change{
		{User: "alice", Target: "JP", Until: editNow.Add(-time.Hour)},
		{User: "al ice", Target: "JP"},
		{User: "alice|x", Target: "JP"},
		{User: "alice", Target: "10.0.0.1/8"},
		{User: "alice", Target: "J"},
		{User: "*", Target: "any"},
		{User: " * ", Target: "*", Protocols: []Protocol{SMTP}},
	} {
		if _, err := Allow(c, ch, editNow); !errors.Is(err, ErrInvalid) {
			t.Errorf("Allow(%+v) = %v, want ErrInvalid", ch, err)
		}
	}
	// No rules file configured: a CIDR cannot go anywhere.
	c2 := c
	c2.RulesFile = ""
	if _, err := Allow(c2, Change{User: "alice", Target: "10.0.0.0/8"}, editNow); !errors.Is(err, ErrNoFile) {
		t.Errorf("Allow without rules file = %v, want ErrNoFile", err)
	}
}

func TestRevokeInRulesFile(t *testing.T) {
	c, _, rules := editSetup(t, "", rulesForEdit)
	c.UserFile = ""
	rs, err := Revoke(c, Change{User: "erin@example.com", Target: "DE"})
	if err != nil {
		t.Fatal(err)
	}
	detail := strings.Join(rs[0].Detail, "\n")
	if !strings.Contains(detail, "removed DE from rule") || !strings.Contains(detail, ":10: shared with other users") {
		t.Errorf("revoke detail:\n%s", detail)
	}
	rf, err := ParseRules("rules.yaml", []byte(rules()))
	if err != nil {
		t.Fatal(err)
	}
	if r := rf.Rules[1]; strings.Join(r.Targets, ",") != "FR" || r.Users[0] != "erin@example.com" {
		t.Errorf("erin's rule after revoke DE: %+v", r)
	}
	if len(rf.Rules) != 4 || strings.Join(rf.Rules[2].Targets, ",") != "DE" || rf.Rules[3].Allow {
		t.Errorf("shared or deny rules changed: %+v", rf.Rules)
	}
	if !strings.Contains(rules(), "# sales may send from anywhere") {
		t.Errorf("comment lost:\n%s", rules())
	}
	// Revoke the last target: the whole rule goes.
	if _, err := Revoke(c, Change{User: "erin", Target: "FR"}); err != nil {
		t.Fatal(err)
	}
	rf, _ = ParseRules("rules.yaml", []byte(rules()))
	if len(rf.Rules) != 3 {
		t.Errorf("after revoking erin FR: %d rules, want 3:\n%s", len(rf.Rules), rules())
	}
}

func TestEditRefusesBrokenRulesFile(t *testing.T) {
	broken := "rules:\n  - users: alice\n    allow: [NOT!]\n"
	c, _, rules := editSetup(t, "", broken)
	_, err := Allow(c, Change{User: "alice", Target: "FR", Protocols: []Protocol{SMTP}}, editNow)
	if err == nil || !strings.Contains(err.Error(), "rules.yaml:3") {
		t.Errorf("Allow on a broken file = %v, want refusal naming rules.yaml:3", err)
	}
	if rules() != broken {
		t.Errorf("broken file was rewritten:\n%s", rules())
	}
	if _, err := Revoke(c, Change{User: "alice", Target: "FR"}); err == nil {
		t.Error("Revoke on a broken rules file succeeded")
	}
}

// TestAllowSeenByWatch: the help-desk path end to end, without a restart.
func TestAllowSeenByWatch(t *testing.T) {
	c, _, _ := editSetup(t, "alice|RU\n", "rules: []\n")
	c.WatchInterval = 10 * time.Millisecond
	e, err := New(c, testGeo, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context2(t)
	defer cancel()
	go e.Watch(ctx)
	bob := Request{Login: "bob@example.com", Protocol: SMTP, Addr: ip("81.2.69.142")}
	if e.Decide(bob).Allow {
		t.Fatal("bob allowed before allow")
	}
	if _, err := Allow(c, Change{User: "bob", Target: "GB"}, editNow); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "bob allowed after mailgate allow", func() bool { return e.Decide(bob).Allow })
	if _, err := Allow(c, Change{User: "bob", Target: "81.2.69.0/24", Protocols: []Protocol{IMAP}}, editNow); err != nil {
		t.Fatal(err)
	}
	if _, err := Revoke(c, Change{User: "bob", Target: "GB"}); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "bob denied after revoke", func() bool { return !e.Decide(bob).Allow })
	bob.Protocol = IMAP
	testwait.For(t, "bob allowed for IMAP by the CIDR rule", func() bool { return e.Decide(bob).Allow })
}

func TestAllowWarnsWhenStillDenied(t *testing.T) {
	c, _, _ := editSetup(t, "", "always_deny: [KP]\nrules:\n  - users: alice\n    deny: FR\n    protocols: smtp\n")
	res, err := Allow(c, Change{User: "alice", Target: "FR"}, editNow)
	if err != nil || !res.Changed {
		t.Fatalf("Allow = %+v, %v", res, err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "for smtp by") || !strings.Contains(res.Warnings[0], "rules.yaml:3") {
		t.Errorf("warnings = %q, want one for smtp naming rules.yaml:3", res.Warnings)
	}
	res, err = Allow(c, Change{User: "bob", Target: "KP"}, editNow)
	if err != nil || len(res.Warnings) != 3 {
		t.Errorf("allow KP under always_deny: %+v, %v; want 3 warnings", res, err)
	}
	res, err = Allow(c, Change{User: "bob", Target: "GB"}, editNow)
	if err != nil || len(res.Warnings) != 0 {
		t.Errorf("plain allow: warnings %q, %v", res.Warnings, err)
	}
}

func TestEditKeepsByteOrderMark(t *testing.T) {
	c, user, _ := editSetup(t, "\xef\xbb\xbfalice|RU\nbob|GB\n", "")
	c.RulesFile = ""
	if _, err := Revoke(c, Change{User: "bob", Target: "GB"}); err != nil {
		t.Fatal(err)
	}
	if got := user(); got != "\xef\xbb\xbfalice|RU\n" {
		t.Errorf("after revoke bob: %q", got)
	}
	if _, err := Revoke(c, Change{User: "alice", Target: "RU"}); err != nil {
		t.Fatal(err)
	}
	if got := user(); got != "" {
		t.Errorf("after revoke alice: %q", got)
	}
}

package policy

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The old project's user-allowed.php, reconstructed exactly: a "<?php"
// line, "##" comments, the entries inside a "/*" ... "*/ " block (the
// closing line has a trailing space), then "?>"; with LF and with CRLF.
var wrapperFixtures = []string{"testdata/user-allowed.php", "testdata/user-allowed-crlf.php"}

// phpPrints runs the real php on path and returns what a web request for
// the file would show. The test is skipped where php-cli is missing
// (.ci/run installs it).
func phpPrints(t *testing.T, path string) string {
	t.Helper()
	php, err := exec.LookPath("php")
	if err != nil {
		t.Skip("php not installed (Debian: apt-get install php-cli)")
	}
	out, err := exec.Command(php, "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("php -f %s: %v\n%s", path, err, out)
	}
	return string(out)
}

// samePHPDecisions checks that the engine on file decides like the old
// script (phpDecide) for the logins and addresses given.
func samePHPDecisions(t *testing.T, file string, logins []string) {
	t.Helper()
	defaults := []string{"IN", "US"}
	e, _ := setup(t, Config{AllowCountries: defaults}, file, "")
	for _, login := range logins {
		for a, l := range testGeo {
			want := phpDecide(file, login, a.String(), l.Code(), defaults)
			if d := e.Decide(Request{Login: login, Protocol: IMAP, Addr: a}); d.Allow != want {
				t.Errorf("%s from %s (%s): engine %v by %s, old script %v", login, a, l.Code(), d.Allow, d.Rule, want)
			}
		}
	}
}

// TestOldProjectWrapper: the shipped file, untouched, loads without a
// single warning or check finding (so `policy check -strict` passes), PHP
// prints nothing for it, and it decides as the old script did.
func TestOldProjectWrapper(t *testing.T) {
	for _, fx := range wrapperFixtures {
		t.Run(filepath.Base(fx), func(t *testing.T) {
			if out := phpPrints(t, fx); out != "" {
				t.Fatalf("php prints %q for the fixture; it must print nothing", out)
			}
			data, err := os.ReadFile(fx)
			if err != nil {
				t.Fatal(err)
			}
			entries, warns := ParseUserFile(data)
			if len(warns) != 0 {
				t.Errorf("warnings on the untouched file: %v", warns)
			}
			if len(entries) != 3 || entries[0].Line != 6 || entries[2].User != "Carol@example.org" {
				t.Errorf("entries %+v, want alice, bob, Carol on lines 6-8", entries)
			}
			e, _ := setup(t, Config{AllowCountries: []string{"IN", "US"}}, string(data), "")
			if f := e.Check(); len(f) != 0 {
				t.Errorf("policy check findings on the untouched file: %v", f)
			}
			samePHPDecisions(t, string(data), []string{"alice@example.org", "bob@example.org", "Carol@example.org", "dave@example.org"})
		})
	}
	// The wrapper's lines are only the wrapper in a PHP file: elsewhere
	// they stay skipped lines that policy check names.
	if _, warns := ParseUserFile([]byte("/*\nalice|RU\n*/\n?>\n")); len(warns) != 3 {
		t.Errorf("wrapper lines outside a PHP file: warnings %v, want 3", warns)
	}
}

// TestAllowInsideWrapperBlock: help-desk edits of the shipped file land
// inside its comment block, keep its line endings and the spelling of
// names already in it, and leave a file PHP still prints nothing for.
func TestAllowInsideWrapperBlock(t *testing.T) {
	for _, fx := range wrapperFixtures {
		t.Run(filepath.Base(fx), func(t *testing.T) {
			orig, err := os.ReadFile(fx)
			if err != nil {
				t.Fatal(err)
			}
			eol := "\n"
			if strings.Contains(string(orig), "\r\n") {
				eol = "\r\n"
			}
			c, read, _ := editSetup(t, string(orig), "")
			c.RulesFile = ""
			c.DefaultDomain = "example.org"
			for _, ch := range []Change{
				{User: "dave@example.org", Target: "ru"},
				{User: "carol@example.org", Target: "FR"}, // file spells it Carol@
				{User: "alice", Target: "192.0.2.31"},     // default domain: alice@example.org
			} {
				if _, err := Allow(c, ch, editNow); err != nil {
					t.Fatalf("allow %v: %v", ch, err)
				}
			}
			if _, err := Revoke(c, Change{User: "bob@example.org", Target: "81.2.69.142"}); err != nil {
				t.Fatal(err)
			}
			want := strings.ReplaceAll(`<?php
## user-allowed.php: exceptions to the default countries, read by the
## mail auth script. One entry per line: user|CC or user|IP.
## Keep the entries inside the comment block below.
/*
alice@example.org|RU
Carol@example.org|GB
dave@example.org|RU
Carol@example.org|FR
alice@example.org|192.0.2.31
*/ 
?>
`, "\n", eol)
			if got := read(); got != want {
				t.Fatalf("edited file:\n%q\nwant\n%q", got, want)
			}
			if out := phpPrints(t, c.UserFile); out != "" {
				t.Errorf("php prints %q for the edited file; it must print nothing", out)
			}
			samePHPDecisions(t, read(), []string{"alice@example.org", "bob@example.org", "Carol@example.org", "dave@example.org"})
		})
	}
}

// TestAllowRefusesWherePHPWouldPrint: a PHP file with no comment block
// gets no entry written where PHP would show it; a guard that stops PHP
// on line 1 and a plain text file take entries at the end.
func TestAllowRefusesWherePHPWouldPrint(t *testing.T) {
	for _, f := range []string{"<?php\n?>\n", "<?php\n## none\n?>\nalice|RU\n", "<?php ?>\nalice|RU\n"} {
		c, read, _ := editSetup(t, f, "")
		_, err := Allow(c, Change{User: "dave", Target: "RU"}, editNow)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "printed") {
			t.Errorf("%q: allow error %v, want a refusal that says why", f, err)
		}
		if read() != f {
			t.Errorf("%q: file changed to %q", f, read())
		}
	}
	for _, f := range []string{"<?php exit; ?>\nalice|RU\n", "<?php die(); ?>\r\n", "alice|RU\n"} {
		c, read, _ := editSetup(t, f, "")
		if _, err := Allow(c, Change{User: "dave", Target: "RU"}, editNow); err != nil {
			t.Fatalf("%q: %v", f, err)
		}
		if got := read(); !strings.HasPrefix(got, f) || !strings.HasSuffix(strings.TrimRight(got, "\r\n"), "dave|RU") {
			t.Errorf("%q: edited to %q, want dave|RU at the end", f, got)
		}
	}
}

// TestEditThroughSymlink: with policy.user_file a symlink to the file the
// old script reads (the migration guide's one-file layout), an edit
// changes the target in place of the link: the link stays a link and the
// old script's file has the change.
func TestEditThroughSymlink(t *testing.T) {
	orig, err := os.ReadFile(wrapperFixtures[0])
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	target := filepath.Join(dir, "www", "user-allowed.php")
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(target, orig, 0o640); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "user-allowed.php")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	c := Config{UserFile: link}
	if _, err := Allow(c, Change{User: "dave@example.org", Target: "RU"}, editNow); err != nil {
		t.Fatal(err)
	}
	if _, err := Revoke(c, Change{User: "alice@example.org", Target: "RU"}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("%s is no longer a symlink: %v %v", link, fi, err)
	}
	got, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode().Perm())
	}
	s := string(got)
	if !strings.Contains(s, "\ndave@example.org|RU\n*/ \n?>\n") || strings.Contains(s, "alice@example.org|RU") {
		t.Errorf("target after allow and revoke through the link:\n%s", s)
	}
}

// TestCheckFindsEntriesPHPPrints: entries after the wrapper's "?>" (where
// an older mailgate allow put them) are named by policy check, since PHP
// prints them to anyone who requests the file; entries behind a one-line
// exit guard or inside the block are not.
func TestCheckFindsEntriesPHPPrints(t *testing.T) {
	orig, err := os.ReadFile(wrapperFixtures[1])
	if err != nil {
		t.Fatal(err)
	}
	leaked := string(orig) + "dave@example.org|RU\r\n"
	e, _ := setup(t, Config{}, leaked, "")
	f := e.Check()
	if len(f) != 1 || f[0].Kind != FindPHPPrints || !strings.HasSuffix(f[0].Where, ":11") {
		t.Errorf("findings %v, want one %s for line 11", f, FindPHPPrints)
	}
	for _, ok := range []string{string(orig), "<?php exit; ?>\nalice|RU\n", "alice|RU\n?>\nbob|RU\n"} {
		e, _ := setup(t, Config{}, ok, "")
		for _, f := range e.Check() {
			if f.Kind == FindPHPPrints {
				t.Errorf("%q: unexpected %v", ok, f)
			}
		}
	}
	e, _ = setup(t, Config{}, "<?php ?>\nalice|RU\n", "")
	if f := e.Check(); len(f) != 1 || f[0].Kind != FindPHPPrints {
		t.Errorf("<?php ?> without exit: findings %v, want one %s", f, FindPHPPrints)
	}
}

// A user whose name begins with "<?php" is an entry, even when it lands on
// line 1 of a written file; only a real PHP open tag there is skipped.
func TestUserFilePHPPrefixedUser(t *testing.T) {
	for _, tc := range []struct {
		data string
		want int
	}{
		{"<?phpx|RU\n", 1},
		{"<?php|RU\n", 1},
		{"<?php die(); ?>\n", 0},
		{"<?php\n/*\nalice|RU\n*/\n?>\n", 1},
		{"<?php\tx|RU\n", 0},
	} {
		entries, _ := ParseUserFile([]byte(tc.data))
		if len(entries) != tc.want {
			t.Errorf("%q: %d entries, want %d", tc.data, len(entries), tc.want)
		}
	}
}

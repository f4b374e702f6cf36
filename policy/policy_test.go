package policy

import (
	"bytes"
	"errors"
	"github.com/mailgate/mailgate/internal/errlist"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/geo"
)

// fakeGeo places a few documentation addresses in made-up countries, so
// tests do not depend on any real database.
type fakeGeo map[netip.Addr]geo.Location

func (f fakeGeo) Lookup(a netip.Addr) geo.Location {
	if l, ok := f[a]; ok {
		return l
	}
	switch {
	case a.IsLoopback():
		return geo.Location{Label: "loopback", Source: "reserved"}
	case a.IsPrivate():
		return geo.Location{Label: "private", Source: "reserved"}
	}
	return geo.Location{Label: "unknown"}
}

func cc(c string) geo.Location { return geo.Location{Country: c, Source: "fake"} }

var testGeo = fakeGeo{
	ip("203.0.113.10"):  cc("IN"),
	ip("198.51.100.20"): cc("US"),
	ip("192.0.2.30"):    cc("RU"),
	ip("192.0.2.31"):    cc("RU"),
	ip("81.2.69.142"):   cc("GB"),
	ip("2001:db8::1"):   cc("DE"),
	ip("2001:db8:1::5"): cc("FR"),
	ip("2001:db8:2::5"): cc("FR"),
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// logBuf collects log output for assertions and echoes it to t.Log.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
	t  testing.TB
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Log(strings.TrimSpace(string(p)))
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testLogger(t testing.TB) (*slog.Logger, *logBuf) {
	lb := &logBuf{t: t}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// setup writes the given files (empty content = no file) and builds an engine.
func setup(t testing.TB, c Config, userFile, rulesFile string, opts ...Option) (*Engine, *logBuf) {
	t.Helper()
	dir := t.TempDir()
	if userFile != "" {
		c.UserFile = filepath.Join(dir, "user-allowed.php")
		writeFile(t, c.UserFile, userFile)
	}
	if rulesFile != "" {
		c.RulesFile = filepath.Join(dir, "rules.yaml")
		writeFile(t, c.RulesFile, rulesFile)
	}
	log, lb := testLogger(t)
	e, err := New(c, testGeo, log, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e, lb
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

type decideCase struct {
	login string
	proto Protocol
	addr  string
	allow bool
	rule  string // suffix of Decision.Rule; "" = don't care
}

func runCases(t *testing.T, e *Engine, cases []decideCase) {
	t.Helper()
	for _, tc := range cases {
		p := tc.proto
		if p == "" {
			p = IMAP
		}
		d := e.Decide(Request{Login: tc.login, Protocol: p, Addr: ip(tc.addr)})
		if d.Allow != tc.allow || !strings.HasSuffix(d.Rule, tc.rule) {
			t.Errorf("Decide(%s, %s, %s) = allow=%v rule=%q (%s), want allow=%v rule=…%q",
				tc.login, p, tc.addr, d.Allow, d.Rule, d.Reason, tc.allow, tc.rule)
		}
	}
}

// legacyFile is a user-allowed.php as the original script read it, with
// the noise it tolerated. Line numbers matter for the assertions.
const legacyFile = "<?php exit; ?>\n" + // 1 guard
	"alice|RU\n" + // 2
	"bob | 192.0.2.31 \r\n" + // 3 spaces and CR
	"\t carol\t|\tDE\r\x00\n" + // 4 tab, CR, NUL
	"garbage line\n" + // 5 malformed: no |
	"dave|\n" + // 6 malformed: empty right
	"|FR\n" + // 7 malformed: empty user
	"eve|US|x\n" + // 8 malformed: two |
	"frank|XYZ\n" + // 9 malformed: not CC or IP
	"\n" + // 10 blank
	"# a comment\n" + // 11
	"gina|2001:db8:0:0::1\n" + // 12 IPv6, other spelling
	"helen|in" // 13 lower case country, no final newline

// TestLegacyDecisions reproduces the original PHP script case by case:
// allowed iff (user, country) or (user, IP) is listed, else iff the country
// is in the default list IN, US.
func TestLegacyDecisions(t *testing.T) {
	e, lb := setup(t, Config{AllowCountries: []string{"IN", "US"}}, legacyFile, "")
	uf := "user-allowed.php"
	runCases(t, e, []decideCase{
		// default countries for a user without exceptions
		{"zed", IMAP, "203.0.113.10", true, ruleDefault},
		{"zed", POP3, "198.51.100.20", true, ruleDefault},
		{"zed", SMTP, "192.0.2.30", false, ruleDefault},
		{"zed", IMAP, "81.2.69.142", false, ruleDefault},
		// user with an extra country
		{"alice", IMAP, "192.0.2.30", true, uf + ":2"},
		{"alice", SMTP, "192.0.2.31", true, uf + ":2"},
		{"alice", IMAP, "81.2.69.142", false, ruleDefault},
		{"alice", IMAP, "198.51.100.20", true, ruleDefault}, // defaults still apply
		// user with an extra IP (whatever its country)
		{"bob", IMAP, "192.0.2.31", true, uf + ":3"},
		{"bob", IMAP, "192.0.2.30", false, ruleDefault}, // same country, other IP
		// noise stripped
		{"carol", IMAP, "2001:db8::1", true, uf + ":4"},
		// another user's exception does not apply
		{"bob", IMAP, "2001:db8::1", false, ruleDefault},
		{"carol", IMAP, "192.0.2.31", false, ruleDefault},
		// malformed lines grant nothing
		{"dave", IMAP, "192.0.2.30", false, ruleDefault},
		{"eve", IMAP, "81.2.69.142", false, ruleDefault},
		{"frank", IMAP, "81.2.69.142", false, ruleDefault},
		{"garbageline", IMAP, "81.2.69.142", false, ruleDefault},
		// IPv6 compared by value
		{"gina", IMAP, "2001:db8::1", true, uf + ":12"},
		// mailgate differences, documented: case-insensitive names and codes
		{"ALICE", IMAP, "192.0.2.30", true, uf + ":2"},
		{"helen", IMAP, "203.0.113.10", true, uf + ":13"},
	})
	logs := lb.String()
	for _, line := range []string{"line=5", "line=6", "line=7", "line=8", "line=9"} {
		if !strings.Contains(logs, line) {
			t.Errorf("no warning naming %s; log:\n%s", line, logs)
		}
	}
	for _, line := range []string{"line=1 ", "line=10 ", "line=11 "} {
		if strings.Contains(logs, line) {
			t.Errorf("unexpected warning for %s (guard, blank, comment)", line)
		}
	}
}

func TestParseUserFileWarnings(t *testing.T) {
	entries, warns := ParseUserFile([]byte(legacyFile))
	var got []int
	for _, w := range warns {
		got = append(got, w.Line)
	}
	if want := []int{5, 6, 7, 8, 9}; !slicesEqual(got, want) {
		t.Errorf("warning lines = %v, want %v (%v)", got, want, warns)
	}
	want := []string{"alice|RU", "bob|192.0.2.31", "carol|DE", "gina|2001:db8::1", "helen|IN"}
	var have []string
	for _, e := range entries {
		have = append(have, e.User+"|"+e.Target)
	}
	if !slicesEqual(have, want) {
		t.Errorf("entries = %v, want %v", have, want)
	}
	// A guard is only a guard on line 1.
	_, warns = ParseUserFile([]byte("alice|RU\n<?php exit; ?>\n"))
	if len(warns) != 1 || warns[0].Line != 2 {
		t.Errorf("guard on line 2: warnings %v, want one for line 2", warns)
	}
	// A byte order mark before the guard or the first entry is ignored.
	for _, f := range []string{"\xef\xbb\xbf<?php exit; ?>\nalice|RU\n", "\xef\xbb\xbfalice|RU\n"} {
		entries, warns = ParseUserFile([]byte(f))
		if len(warns) != 0 || len(entries) != 1 || entries[0].User != "alice" {
			t.Errorf("BOM file %q: entries %v warnings %v", f, entries, warns)
		}
	}
	// `<?php die(); ?>` variant.
	entries, warns = ParseUserFile([]byte("<?php die(); ?>\r\nalice|RU\r\n"))
	if len(warns) != 0 || len(entries) != 1 {
		t.Errorf("die guard: entries %v warnings %v", entries, warns)
	}
}

func slicesEqual[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

const rulesFile = `# mailgate rules
always_allow:
  - 10.1.0.0/16          # office VPN
  - 2001:db8:ffff::/48   # monitoring
always_deny:
  - 203.0.113.99
  - KP
rules:
  - users: [sales@example.com, "@sales.example.com"]
    allow: any
    protocols: [smtp]
  - users: [homer@example.com]
    allow: [2001:db8:1::/48]
    protocols: imap
  - users: [alice@example.com]
    deny: [US]
  - users: ["@example.com"]
    allow: [GB]
  - users: ["@example.com"]
    deny: [IN]
  - users: [bart@example.com]
    allow: [IN]
  - users: ["*"]
    deny: [private]
  - users: [traveller@example.com]
    allow: [RU]
    until: 2026-12-10T18:00:00Z
  - users: [lisa@example.com]
    allow: [RU]
    deny: [GB]
`

func TestRulesPrecedence(t *testing.T) {
	rulesOnly := strings.Replace(rulesFile, "  - users: [lisa@example.com]\n    allow: [RU]\n    deny: [GB]\n", "", 1)
	clock := func() time.Time { return time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC) }
	e, _ := setup(t, Config{AllowCountries: []string{"IN", "US", "private"}, DefaultDomain: "example.com"},
		"alice|RU\n", rulesOnly, WithClock(clock))
	rf := "rules.yaml"
	runCases(t, e, []decideCase{
		// always_allow beats everything but always_deny
		{"alice", IMAP, "10.1.2.3", true, "rules.yaml:3"},
		{"nobody@other.org", POP3, "2001:db8:ffff::7", true, "rules.yaml:4"},
		// always_deny beats the default list and user rules
		{"zed", IMAP, "203.0.113.99", false, "rules.yaml:6"},
		// SMTP from anywhere for sales, IMAP still by default
		{"sales@example.com", SMTP, "81.2.69.142", true, rf + ":9"},
		{"jo@sales.example.com", SMTP, "192.0.2.30", true, rf + ":9"},
		{"jo@sales.example.com", IMAP, "192.0.2.30", false, ruleDefault},
		// IMAP only from home (IPv6 CIDR), not SMTP
		{"homer@example.com", IMAP, "2001:db8:1::5", true, rf + ":12"},
		{"homer", IMAP, "2001:db8:1::5", true, rf + ":12"}, // default domain
		{"homer@example.com", SMTP, "2001:db8:1::5", false, ruleDefault},
		{"homer@example.com", IMAP, "2001:db8:2::5", false, ruleDefault},
		// a deny for the user beats the default list and their user-file allow
		{"alice@example.com", IMAP, "198.51.100.20", false, rf + ":15"},
		{"Alice", IMAP, "192.0.2.30", true, "user-allowed.php:1"},
		// domain rule beats default: GB allowed, IN denied for example.com
		{"marge@example.com", IMAP, "81.2.69.142", true, rf + ":17"},
		{"marge@example.com", IMAP, "203.0.113.10", false, rf + ":19"},
		{"marge@EXAMPLE.com", IMAP, "203.0.113.10", false, rf + ":19"},
		// user rule beats domain rule
		{"bart@example.com", IMAP, "203.0.113.10", true, rf + ":21"},
		// other domains keep the default
		{"marge@other.org", IMAP, "203.0.113.10", true, ruleDefault},
		// everyone rule beats the default list (private is in it)
		{"zed", IMAP, "10.9.9.9", false, rf + ":23"},
		// expiry: valid before the date
		{"traveller@example.com", IMAP, "192.0.2.30", true, rf + ":25"},
		// loopback: not in any list, denied
		{"zed", IMAP, "127.0.0.1", false, ruleDefault},
	})
}

func TestExpiryFakeClock(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 12, 10, 17, 59, 59, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e, _ := setup(t, Config{}, "", `rules:
  - users: traveller@example.com
    allow: RU
    until: 2026-12-10T18:00:00Z
  - users: day@example.com
    allow: RU
    until: 2026-12-10
`, WithClock(clock))
	req := Request{Login: "traveller@example.com", Protocol: IMAP, Addr: ip("192.0.2.30")}
	if d := e.Decide(req); !d.Allow {
		t.Fatalf("before expiry: %+v", d)
	}
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	if d := e.Decide(req); d.Allow {
		t.Fatalf("at expiry: still allowed by %s", d.Rule)
	}
	// A date alone lasts through that day, local time.
	endOfDay := time.Date(2026, 12, 11, 0, 0, 0, 0, time.Local)
	day := Request{Login: "day@example.com", Protocol: IMAP, Addr: ip("192.0.2.30")}
	for _, tc := range []struct {
		at    time.Time
		allow bool
	}{{endOfDay.Add(-time.Second), true}, {endOfDay, false}} {
		mu.Lock()
		now = tc.at
		mu.Unlock()
		if d := e.Decide(day); d.Allow != tc.allow {
			t.Errorf("date-only until at %v: allow=%v, want %v", tc.at, d.Allow, tc.allow)
		}
	}
}

func TestDenyBeatsAllowSameUser(t *testing.T) {
	e, _ := setup(t, Config{AllowCountries: []string{"GB"}}, "", `rules:
  - users: lisa@example.com
    allow: [RU, GB]
  - users: LISA@example.com
    deny: GB
`)
	runCases(t, e, []decideCase{
		{"lisa@example.com", IMAP, "81.2.69.142", false, "rules.yaml:4"},
		{"lisa@example.com", IMAP, "192.0.2.30", true, "rules.yaml:2"},
	})
}

func TestCaseAndDefaultDomain(t *testing.T) {
	user := "Alice@Example.COM|RU\nbob|GB\nstraße@example.com|DE\nkate|GB\n"
	// Without a default domain "bob" and "bob@example.com" are different.
	e, _ := setup(t, Config{}, user, "")
	runCases(t, e, []decideCase{
		{"alice@example.com", IMAP, "192.0.2.30", true, ":1"},
		{"ALICE@EXAMPLE.COM", IMAP, "192.0.2.30", true, ":1"},
		{"alice", IMAP, "192.0.2.30", false, ""},
		{"bob", IMAP, "81.2.69.142", true, ":2"},
		{"bob@example.com", IMAP, "81.2.69.142", false, ""},
		{"STRASSE@example.com", IMAP, "2001:db8::1", false, ""},
		{"STRAßE@example.com", IMAP, "2001:db8::1", true, ":3"}, // ASCII folded, ß as is
		{"STRASSE@example.com", IMAP, "2001:db8::1", false, ""}, // no Unicode folding
		{"\u212Aate", IMAP, "81.2.69.142", false, ""},           // KELVIN SIGN is not "k"
	})
	e, _ = setup(t, Config{DefaultDomain: "Example.com"}, user, "")
	runCases(t, e, []decideCase{
		{"alice", IMAP, "192.0.2.30", true, ":1"},
		{"bob@example.com", IMAP, "81.2.69.142", true, ":2"},
		{"BOB@EXAMPLE.COM", IMAP, "81.2.69.142", true, ":2"},
		{"bob@other.org", IMAP, "81.2.69.142", false, ""},
	})
}

func TestIPv6AndMapped(t *testing.T) {
	e, _ := setup(t, Config{}, "", `always_deny: ["2001:db8:2::/48"]
rules:
  - users: "*"
    allow: ["2001:db8::/32", 192.0.2.0/24]
`)
	runCases(t, e, []decideCase{
		{"x", IMAP, "2001:db8:1::5", true, ":3"},
		{"x", IMAP, "2001:db8:2::5", false, ":1"},
		{"x", IMAP, "2001:db9::1", false, ruleDefault},
		{"x", IMAP, "::ffff:192.0.2.30", true, ":3"}, // IPv4-mapped is IPv4
		{"x", IMAP, "192.0.3.1", false, ruleDefault},
	})
}

func TestLabelsAndEmptyDefault(t *testing.T) {
	// Nothing configured: everything denied, including loopback.
	e, _ := setup(t, Config{}, "", "")
	runCases(t, e, []decideCase{
		{"x", IMAP, "127.0.0.1", false, ruleDefault},
		{"x", IMAP, "198.51.100.20", false, ruleDefault},
	})
	e, _ = setup(t, Config{AllowCountries: []string{"loopback", "us"}, AlwaysAllow: []string{"10.0.0.0/8"}, AlwaysDeny: []string{"unknown"}}, "", "")
	runCases(t, e, []decideCase{
		{"x", IMAP, "127.0.0.1", true, ruleDefault},
		{"x", IMAP, "198.51.100.20", true, ruleDefault},
		{"x", IMAP, "10.2.3.4", true, "policy.always_allow[0]"},
		{"x", IMAP, "172.16.0.1", false, ruleDefault},      // private, not allowed
		{"x", IMAP, "100.64.0.1", false, "always_deny[0]"}, // placed nowhere: unknown
	})
}

func TestConfigValidate(t *testing.T) {
	c := Config{
		AllowCountries: []string{"US", "USA!", "10.0.0.0/8"},
		DefaultDomain:  "exa mple.com",
		AlwaysAllow:    []string{"10.0.0.1/8", "FR"},
		AlwaysDeny:     []string{"any", "KP", "nonsense!"},
	}
	err := c.Validate()
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Validate = %v, want ErrInvalid", err)
	}
	for _, key := range []string{"policy.allow_countries[1]", "policy.allow_countries[2]", "policy.default_domain",
		"policy.always_allow[0]", "policy.always_allow[1]", "policy.always_deny[0]", "policy.always_deny[2]"} {
		if !strings.Contains(err.Error(), key+":") {
			t.Errorf("Validate error lacks %s:\n%v", key, err)
		}
	}
	if n := len(errlist.Split(err)); n != 7 {
		t.Errorf("Validate reported %d problems, want 7:\n%v", n, err)
	}
	good := Config{AllowCountries: []string{"in", "US", "private"}, DefaultDomain: "example.com",
		AlwaysAllow: []string{"10.0.0.0/8", "2001:db8::1"}, AlwaysDeny: []string{"KP", "192.0.2.0/24"}}
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(good) = %v", err)
	}
}

func TestNewReportsEveryFileError(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.yaml")
	writeFile(t, rules, `always_allow: [FR, 10.0.0.0/8]
rules:
  - users: [alice]
    allow: [X!Z]
    protocols: [http]
  - users: [bob]
    alow: [FR]
  - users: [carol]
    allow: FR
    deny: RU
  - users: [dan]
    allow: RU
    until: next week
colour: blue
`)
	_, err := New(Config{RulesFile: rules, AllowCountries: []string{"??"}}, testGeo, nil)
	if err == nil {
		t.Fatal("New accepted a broken rules file")
	}
	for _, want := range []string{
		"rules.yaml:1: always_allow[0]:",
		"rules.yaml:4: rules[0].allow[0]:",
		"rules.yaml:5: rules[0].protocols[0]:",
		"rules.yaml:7: rules[1].alow: unknown key",
		"rules.yaml:8: rules[2]: has both allow and deny",
		"rules.yaml:13: rules[3].until:",
		"rules.yaml:14: colour: unknown key",
		"policy.allow_countries[0]:",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// YAML syntax errors carry the line too.
	writeFile(t, rules, "rules:\n  - users: [a\n    allow: RU\n")
	_, err = New(Config{RulesFile: rules}, testGeo, nil)
	if err == nil || !strings.Contains(err.Error(), "rules.yaml:") {
		t.Errorf("syntax error = %v, want file:line", err)
	}
	// A missing file is an error at start-up.
	_, err = New(Config{UserFile: filepath.Join(dir, "missing.php")}, testGeo, nil)
	if err == nil {
		t.Error("New accepted a missing user file")
	}
}

func TestCheck(t *testing.T) {
	t.Run("dedup", testCheckDedup)
	clock := func() time.Time { return time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC) }
	e, _ := setup(t, Config{AlwaysDeny: []string{"KP", "192.0.2.0/24"}}, "alice|RU\nalice|RU\nbroken\n", `always_allow: [10.0.0.0/8]
rules:
  - users: alice
    allow: KP
  - users: alice
    deny: 10.1.0.0/16
  - users: bob
    allow: [FR]
    until: 2026-11-01T00:00:00Z
  - users: carol
    deny: any
    protocols: [imap]
  - users: carol
    allow: [DE]
    protocols: imap
  - users: carol
    allow: [DE]
    protocols: [smtp]
  - users: "@example.com"
    allow: [192.0.2.7, homenet]
  - users: dora
    allow: [FR]
    until: 2026-12-20T00:00:00Z
`, WithClock(clock))
	var got []string
	for _, f := range e.Check() {
		got = append(got, f.Where[strings.LastIndex(f.Where, "/")+1:]+" "+f.Kind)
	}
	want := []string{
		"rules.yaml:3 never-matches",  // allow KP, always_deny KP
		"rules.yaml:5 never-matches",  // deny inside always_allow
		"rules.yaml:7 expired",        // bob
		"rules.yaml:13 hidden",        // carol allow DE imap under deny any imap
		"rules.yaml:19 never-matches", // 192.0.2.7 always denied
		"rules.yaml:19 unknown-label", // homenet
		"user-allowed.php:2 hidden",   // repeat of line 1
		"user-allowed.php:3 skipped-line",
	}
	if !slicesEqual(got, want) {
		t.Errorf("Check =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestYAMLPitfalls: values YAML 1.1 would turn into booleans or dates stay
// what the admin wrote.
func TestYAMLPitfalls(t *testing.T) {
	rf, err := ParseRules("r", []byte("rules:\n  - users: [no, yes]\n    allow: [NO, ON]\n    until: 2026-12-10\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := rf.Rules[0]
	if strings.Join(r.Users, ",") != "no,yes" || strings.Join(r.Targets, ",") != "NO,ON" {
		t.Errorf("users %v targets %v, want no,yes and NO,ON", r.Users, r.Targets)
	}
}

func TestSkippedLinesLogCapped(t *testing.T) {
	_, lb := setup(t, Config{}, strings.Repeat("garbage\n", 5000)+"alice|RU\n", "")
	if n := strings.Count(lb.String(), "skipped line in user file"); n != maxFileErrors {
		t.Errorf("%d skipped-line warnings logged, want %d", n, maxFileErrors)
	}
	if !strings.Contains(lb.String(), "count=4900") {
		t.Errorf("no summary of the lines not logged")
	}
}

func TestCheckLabelTypos(t *testing.T) {
	e, _ := setup(t, Config{AllowCountries: []string{"US", "privat"}, AlwaysDeny: []string{"loopbak"}}, "", "")
	var got []string
	for _, f := range e.Check() {
		got = append(got, f.Where+" "+f.Kind)
	}
	want := []string{"policy.allow_countries[1] unknown-label", "policy.always_deny[0] unknown-label"}
	if !slicesEqual(got, want) {
		t.Errorf("Check = %v, want %v", got, want)
	}
}

// TestUnknownProtocol: for a protocol mailgate does not know, allows
// limited to protocols do not match but denies limited to protocols do
// (fail closed); protocol names match in any case.
func TestUnknownProtocol(t *testing.T) {
	e, _ := setup(t, Config{AllowCountries: []string{"GB"}}, "", `rules:
  - users: a
    allow: RU
    protocols: [imap, pop3, smtp]
  - users: b
    allow: RU
  - users: c
    deny: GB
    protocols: imap
`)
	runCases(t, e, []decideCase{
		{"a", Protocol("http"), "192.0.2.30", false, ruleDefault},
		{"b", Protocol("http"), "192.0.2.30", true, ":5"},
		{"c", Protocol("http"), "81.2.69.142", false, ":7"},
		{"c", SMTP, "81.2.69.142", true, ruleDefault},
		{"a", Protocol("IMAP"), "192.0.2.30", true, ":2"},
		{"c", Protocol("Imap"), "81.2.69.142", false, ":7"},
	})
}

// testCheckDedup: a rule with several users and places reports each
// problem once per distinct message, in a stable order.
func testCheckDedup(t *testing.T) {
	e, _ := setup(t, Config{AlwaysDeny: []string{"KP", "CU"}}, "", "rules:\n  - users: [a, b, c, d]\n    allow: [KP, CU]\n")
	var first []string
	for range 5 {
		var got []string
		for _, f := range e.Check() {
			got = append(got, f.String())
		}
		if len(got) != 2 {
			t.Fatalf("Check = %q, want one finding per place", got)
		}
		if first == nil {
			first = got
		} else if !slicesEqual(got, first) {
			t.Fatalf("Check order changed: %q then %q", first, got)
		}
	}
}

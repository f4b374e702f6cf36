package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/adapter/dovecot"
	"github.com/mailgate/mailgate/policy"
)

// The paths every page must agree on: the migration guide, README,
// policy.md, operations.md, the example configs and the systemd unit.
const (
	docConfigPath = "/etc/mailgate/mailgate.yaml"
	docUserFile   = "/etc/mailgate/policy/user-allowed.php"
	docRulesFile  = "/etc/mailgate/policy/rules.yaml"
)

// consistencyPages are the pages a migrating admin reads, relative to the
// repository root.
var consistencyPages = []string{
	"README.md", "docs/migrating-from-nginx.md", "docs/policy.md", "docs/operations.md",
	"docs/config.md", "docs/backends.md", "docs/deploy/mailgate.service",
	"docs/deploy/examples/same-host.yaml", "docs/deploy/examples/behind-haproxy.yaml",
	"docs/nginx-adapter.md",
}

// lineSuffix is the ":12" of "file:12" in policy check output.
var lineSuffix = regexp.MustCompile(`:[0-9]+$`)

func readRepo(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDocsAgreeOnPaths: every mention of the user file, the rules file or
// the config file under /etc/mailgate, and every user_file/rules_file
// value, is the one path all pages use.
func TestDocsAgreeOnPaths(t *testing.T) {
	etc := regexp.MustCompile(`/etc/mailgate/[^\s"'` + "`" + `)\],]*`)
	value := regexp.MustCompile(`(?m)\b(user_file|rules_file):\s*([^\s#,}]+)`)
	for _, page := range consistencyPages {
		text := readRepo(t, page)
		for _, p := range etc.FindAllString(text, -1) {
			p = lineSuffix.ReplaceAllString(strings.TrimRight(p, ".:;"), "")
			base := filepath.Base(p)
			switch {
			case strings.HasPrefix(base, "user-allowed") && p != docUserFile:
				t.Errorf("%s names the user file %s; every page uses %s", page, p, docUserFile)
			case strings.HasPrefix(base, "rules") && strings.HasSuffix(base, ".yaml") && p != docRulesFile:
				t.Errorf("%s names the rules file %s; every page uses %s", page, p, docRulesFile)
			case strings.HasPrefix(base, "mailgate.y") && p != docConfigPath:
				t.Errorf("%s names the config %s; every page uses %s", page, p, docConfigPath)
			}
		}
		for _, m := range value.FindAllStringSubmatch(text, -1) {
			want := map[string]string{"user_file": docUserFile, "rules_file": docRulesFile}[m[1]]
			if v := strings.Trim(m[2], `"'`); strings.HasPrefix(v, "/") && v != want {
				t.Errorf("%s: %s: %s; every page uses %s", page, m[1], v, want)
			}
		}
	}
	if unit := readRepo(t, "docs/deploy/mailgate.service"); !strings.Contains(unit, filepath.Dir(docUserFile)) ||
		!strings.Contains(unit, docConfigPath) {
		t.Errorf("the systemd unit must use %s and let mailgate allow edit %s", docConfigPath, filepath.Dir(docUserFile))
	}
}

// TestMigrationGuideConfig: the guide's YAML decodes as mailgate config
// and configures both policy files (allow --until and CIDRs need the rules
// file); every example config names both, and none lists the embedded
// database behind a file geo_update keeps fresh (it would be stale for
// good).
func TestMigrationGuideConfig(t *testing.T) {
	guide := readRepo(t, "docs/migrating-from-nginx.md")
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(guide, -1)
	if len(blocks) == 0 {
		t.Fatal("the guide has no yaml block")
	}
	var sawPolicy bool
	for _, b := range blocks {
		c, err := decodeOnly([]byte(dedent(b[1])))
		if err != nil {
			t.Errorf("guide yaml does not decode: %v\n%s", err, b[1])
			continue
		}
		if c.Policy.UserFile != "" {
			sawPolicy = true
			if c.Policy.UserFile != docUserFile || c.Policy.RulesFile != docRulesFile {
				t.Errorf("guide policy: user_file %q rules_file %q, want %s and %s", c.Policy.UserFile, c.Policy.RulesFile, docUserFile, docRulesFile)
			}
		}
	}
	if !sawPolicy {
		t.Error("the guide's config has no policy.user_file")
	}
	if strings.Contains(guide, "enable --now mailgate") {
		t.Error("the guide says not to start mailgate before the switch, yet enables it --now")
	}
	for _, f := range []string{"same-host.yaml", "behind-haproxy.yaml"} {
		c, err := parseConfig([]byte(readRepo(t, "docs/deploy/examples/"+f)))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if c.Policy.UserFile != docUserFile || c.Policy.RulesFile != docRulesFile {
			t.Errorf("%s: user_file %q rules_file %q, want %s and %s", f, c.Policy.UserFile, c.Policy.RulesFile, docUserFile, docRulesFile)
		}
		if slices.Contains(c.Geo.Databases, "embedded") && !reflect.ValueOf(c.GeoUpdate).IsZero() {
			t.Errorf("%s: lists embedded with geo_update: the embedded database is always older than max_age", f)
		}
	}
}

// dedent removes the indentation of a block inside a list item.
func dedent(s string) string {
	lines := strings.Split(s, "\n")
	ind := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		if n := len(l) - len(strings.TrimLeft(l, " ")); ind < 0 || n < ind {
			ind = n
		}
	}
	for i, l := range lines {
		if len(l) >= ind && ind > 0 {
			lines[i] = l[ind:]
		}
	}
	return strings.Join(lines, "\n")
}

// TestDocsConfigKeysExist: every dotted config key the guide, README and
// policy.md write in backticks (`policy.user_file`,
// `backends.*.forward_client`, `listeners[].protocol`) is a key of the
// config types.
func TestDocsConfigKeysExist(t *testing.T) {
	keys := map[string]bool{}
	for _, k := range configKeyPaths(reflect.TypeFor[Config](), "") {
		keys[k] = true
		for _, b := range []string{"imap", "pop3", "smtp"} {
			if rest, ok := strings.CutPrefix(k, "backends."+b+"."); ok {
				keys["backends.*."+rest] = true
			}
		}
	}
	top := map[string]bool{}
	for k := range keys {
		top[strings.SplitN(k, ".", 2)[0]] = true
	}
	ref := regexp.MustCompile("`([a-z_]+(?:\\[\\])?(?:\\.(?:[a-z_]+|\\*)(?:\\[\\])?)+)`")
	for _, page := range []string{"README.md", "docs/migrating-from-nginx.md", "docs/policy.md", "docs/nginx-adapter.md"} {
		n := 0
		for _, m := range ref.FindAllStringSubmatch(readRepo(t, page), -1) {
			k := strings.ReplaceAll(m[1], "[]", "")
			if !top[strings.SplitN(k, ".", 2)[0]] {
				continue // a file name such as `mailgate.yaml`
			}
			n++
			if !keys[k] && !hasPrefixKey(keys, k+".") {
				t.Errorf("%s: `%s` is not a config key", page, m[1])
			}
		}
		if page == "docs/migrating-from-nginx.md" && n < 20 {
			t.Errorf("%s: found only %d config keys; the pattern no longer finds them", page, n)
		}
	}
}

func hasPrefixKey(keys map[string]bool, prefix string) bool {
	for k := range keys {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// TestDocsCommandsExist: every `mailgate ...` command line in the guide,
// README and policy.md names a command mailgate has, and each flag it
// uses is one that command's -h lists.
func TestDocsCommandsExist(t *testing.T) {
	cmdRe := regexp.MustCompile(`(?m)(?:^|[` + "`" + `\s])mailgate ((?:[a-z][a-z-]*)(?: (?:test|check|update|list|add|remove))?)((?: +(?:-{1,2}[a-z-]+|[^\s` + "`" + `|]+))*)`)
	for _, page := range []string{"README.md", "docs/migrating-from-nginx.md", "docs/policy.md", "docs/nginx-adapter.md"} {
		text := readRepo(t, page)
		n := 0
		for _, m := range cmdRe.FindAllStringSubmatch(text, -1) {
			words := strings.Fields(m[1])
			if !isCommand(words[0]) {
				continue // prose: "mailgate does", "mailgate logs in"
			}
			n++
			var out, errb bytes.Buffer
			run(append(slices.Clone(words), "-h"), strings.NewReader(""), &out, &errb)
			help := out.String() + errb.String()
			if strings.Contains(help, "unknown command") || strings.Contains(help, "unknown subcommand") {
				t.Errorf("%s: `mailgate %s`: %s", page, m[1], firstLine(help))
				continue
			}
			for _, f := range strings.Fields(m[2]) {
				if !strings.HasPrefix(f, "-") || f == "-" {
					continue
				}
				name := strings.TrimLeft(f, "-")
				if !strings.Contains(help, "  -"+name) {
					t.Errorf("%s: `mailgate %s`: flag %s is not in its -h:\n%s", page, m[1]+m[2], f, help)
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no mailgate command found; the pattern no longer finds them", page)
		}
	}
}

// isCommand reports whether word is one of mailgate's commands (run's
// dispatch); prose such as "mailgate does" is not.
func isCommand(word string) bool {
	var out, errb bytes.Buffer
	run([]string{word, "-h"}, strings.NewReader(""), &out, &errb)
	return !strings.Contains(errb.String(), "unknown command")
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// TestMigrationGuideFilesExist: the repository files and pages the guide
// sends the admin to exist, the quoted headings of those pages are there,
// and the rules file the guide creates ("rules: []") loads.
func TestMigrationGuideFilesExist(t *testing.T) {
	guide := readRepo(t, "docs/migrating-from-nginx.md")
	for _, m := range regexp.MustCompile("`(docs/[^`\\s]+)`").FindAllStringSubmatch(guide, -1) {
		if _, err := os.Stat(filepath.Join("..", "..", m[1])); err != nil {
			t.Errorf("the guide names %s: %v", m[1], err)
		}
	}
	for _, m := range regexp.MustCompile(`\b([a-z0-9-]+\.md),? "([^"]+)"`).FindAllStringSubmatch(guide, -1) {
		flat := func(s string) string { return strings.Join(strings.Fields(strings.ReplaceAll(s, "`", "")), " ") }
		page := flat(readRepo(t, "docs/"+m[1]))
		if !strings.Contains(page, "# "+flat(m[2])) {
			t.Errorf("the guide points to %s, %q: no such heading", m[1], m[2])
		}
	}
	for _, m := range regexp.MustCompile(`\(?\b([a-z0-9-]+\.md)\b`).FindAllStringSubmatch(guide, -1) {
		if _, err := os.Stat(filepath.Join("..", "..", "docs", m[1])); err != nil {
			t.Errorf("the guide names %s: %v", m[1], err)
		}
	}
	if !strings.Contains(guide, "echo 'rules: []' > "+docRulesFile) {
		t.Errorf("the guide does not create %s with rules: []", docRulesFile)
	}
	if _, err := policy.ParseRules(docRulesFile, []byte("rules: []\n")); err != nil {
		t.Errorf("the guide's rules file does not load: %v", err)
	}
}

// TestDovecotPolicyDocs: docs/dovecot-policy.md's Dovecot block (which
// the integration test gives the real Dovecot as it is) and its mailgate
// section agree: Dovecot calls the address mailgate listens on, sends the
// secret in the header mailgate reads, sends every attribute the adapter
// needs, asks before the password and reports (the report, not a second
// allow, records a login), and fails closed as the page says.
func TestDovecotPolicyDocs(t *testing.T) {
	doc := readRepo(t, "docs/dovecot-policy.md")
	confs := regexp.MustCompile("(?s)```conf\n(.*?)```").FindAllStringSubmatch(doc, -1)
	yamls := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(doc, -1)
	if len(confs) != 1 || len(yamls) != 1 {
		t.Fatalf("docs/dovecot-policy.md has %d conf and %d yaml blocks, want one each", len(confs), len(yamls))
	}
	set := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(confs[0][1]), "\n") {
		k, v, ok := strings.Cut(l, " = ")
		if !ok {
			t.Fatalf("conf line %q is not key = value", l)
		}
		if _, dup := set[k]; dup {
			t.Errorf("%s set twice", k)
		}
		set[k] = v
	}
	c, err := decodeOnly([]byte(yamls[0][1]))
	if err != nil {
		t.Fatalf("the mailgate section does not decode: %v", err)
	}
	d := c.Adapters.Dovecot.WithDefaults()
	if err := d.Validate("adapters.dovecot"); err != nil {
		t.Errorf("the mailgate section: %v", err)
	}
	if want := "http://" + d.Listen + "/"; set["auth_policy_server_url"] != want {
		t.Errorf("auth_policy_server_url = %q; mailgate listens on %s, want %q", set["auth_policy_server_url"], d.Listen, want)
	}
	if !strings.HasPrefix(set["auth_policy_server_api_header"], dovecot.SecretHeader+":") {
		t.Errorf("auth_policy_server_api_header = %q; mailgate reads the secret from %s", set["auth_policy_server_api_header"], dovecot.SecretHeader)
	}
	attrs := map[string]string{}
	for _, f := range strings.Fields(set["auth_policy_request_attributes"]) {
		k, v, _ := strings.Cut(f, "=")
		attrs[k] = v
	}
	for k, v := range map[string]string{"login": "%{requested_username}", "pwhash": "%{hashed_password}",
		"remote": "%{rip}", "protocol": "%s", "session_id": "%{session}"} {
		if attrs[k] != v {
			t.Errorf("auth_policy_request_attributes: %s=%q, the adapter needs %s=%s", k, attrs[k], k, v)
		}
	}
	for k, v := range map[string]string{"auth_policy_check_before_auth": "yes", "auth_policy_check_after_auth": "no",
		"auth_policy_report_after_auth": "yes", "auth_policy_reject_on_fail": "yes"} {
		if set[k] != v {
			t.Errorf("%s = %q, the page explains %s", k, set[k], v)
		}
	}
	if set["auth_policy_hash_nonce"] == "" {
		t.Error("auth_policy_hash_nonce is not set")
	}
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// policyEnv writes a config whose geo override makes 127.0.0.2 look like
// RU (loopback only, no real database needed) and returns run().
func policyEnv(t *testing.T, userFile, rulesFile string) (dir string, runCmd func(args ...string) (int, string, string)) {
	t.Helper()
	dir = t.TempDir()
	uf := filepath.Join(dir, "user-allowed.php")
	rf := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(uf, []byte(userFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rf, []byte(rulesFile), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "mailgate.yaml")
	conf := "tls: {self_signed: true}\n" +
		"geo:\n  overrides:\n    127.0.0.2/32: RU\n    127.0.0.3/32: US\n" +
		"policy:\n  allow_countries: [US]\n  default_domain: example.com\n" +
		"  user_file: " + uf + "\n  rules_file: " + rf + "\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		full := append([]string{args[0]}, args[1:]...)
		full = append(full, "-config", cfg)
		code := run(full, strings.NewReader(""), &out, &errb)
		return code, out.String(), errb.String()
	}
}

func TestPolicyTestCommand(t *testing.T) {
	_, mg := policyEnv(t, "<?php exit; ?>\nalice|RU\n", "rules: []\n")
	code, out, errs := mg("policy", "test", "-user", "Alice@Example.com", "-ip", "127.0.0.2", "-proto", "smtp")
	if code != 0 || !strings.HasPrefix(out, "allow\n") || !strings.Contains(out, "user-allowed.php:2") || !strings.Contains(out, "RU") {
		t.Errorf("policy test alice = %d\n%s%s", code, out, errs)
	}
	code, out, errs = mg("policy", "test", "--user", "bob", "--ip", "127.0.0.2")
	if code != 1 || !strings.HasPrefix(out, "deny\n") || !strings.Contains(out, "policy.allow_countries") {
		t.Errorf("policy test bob = %d\n%s%s", code, out, errs)
	}
	code, _, errs = mg("policy", "test", "-user", "bob", "-ip", "not-an-ip")
	if code != 2 || !strings.Contains(errs, "not-an-ip") {
		t.Errorf("bad ip: %d %s", code, errs)
	}
	if code, _, _ := mg("policy", "test", "-user", "bob", "-ip", "127.0.0.2", "-proto", "http"); code != 2 {
		t.Errorf("bad proto: exit %d, want 2", code)
	}
}

func TestAllowRevokeCommands(t *testing.T) {
	dir, mg := policyEnv(t, "# help desk file\nalice|RU\n", "# rules\nrules: []\n")
	code, out, errs := mg("allow", "bob", "ru")
	if code != 0 || !strings.Contains(out, `added "bob|RU"`) {
		t.Fatalf("allow bob ru = %d\n%s%s", code, out, errs)
	}
	if code, out, _ := mg("policy", "test", "-user", "bob@example.com", "-ip", "127.0.0.2"); code != 0 {
		t.Errorf("bob after allow: %d\n%s", code, out)
	}
	// Flags after the arguments; CIDR and -until go to the rules file.
	code, out, errs = mg("allow", "carol", "127.0.0.0/29", "-proto", "imap,pop3", "-until", "2099-01-01", "-note", "ticket 7")
	if code != 0 || !strings.Contains(out, "rules.yaml") {
		t.Fatalf("allow carol = %d\n%s%s", code, out, errs)
	}
	rules, _ := os.ReadFile(filepath.Join(dir, "rules.yaml"))
	if !strings.Contains(string(rules), "# rules") || !strings.Contains(string(rules), "ticket 7") {
		t.Errorf("rules file after allow:\n%s", rules)
	}
	if code, out, _ := mg("policy", "test", "-user", "carol", "-ip", "127.0.0.2", "-proto", "pop3"); code != 0 {
		t.Errorf("carol pop3: %d\n%s", code, out)
	}
	if code, out, _ := mg("policy", "test", "-user", "carol", "-ip", "127.0.0.2", "-proto", "smtp"); code != 1 {
		t.Errorf("carol smtp: %d\n%s", code, out)
	}
	if code, out, _ := mg("policy", "test", "-user", "carol", "-ip", "127.0.0.2", "-proto", "imap", "-at", "2099-01-02"); code != 1 {
		t.Errorf("carol after expiry: %d\n%s", code, out)
	}
	code, out, errs = mg("revoke", "BOB@example.com", "RU")
	if code != 0 || !strings.Contains(out, "removed") {
		t.Errorf("revoke = %d\n%s%s", code, out, errs)
	}
	if code, _, _ := mg("policy", "test", "-user", "bob", "-ip", "127.0.0.2"); code != 1 {
		t.Errorf("bob after revoke: exit %d, want 1 (deny)", code)
	}
	user, _ := os.ReadFile(filepath.Join(dir, "user-allowed.php"))
	if string(user) != "# help desk file\nalice|RU\n" {
		t.Errorf("user file after allow+revoke = %q", user)
	}
	if code, _, _ := mg("revoke", "-all", "carol"); code != 0 {
		t.Errorf("revoke -all carol: exit %d", code)
	}
	// Usage errors.
	for _, args := range [][]string{{"allow", "bob"}, {"allow", "bob", "RU", "extra"}, {"revoke", "-all", "a", "b"}, {"allow", "bob", "RU", "-proto", "ftp"}} {
		if code, _, _ := mg(args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if code, _, errs := mg("allow", "b|ob", "RU"); code != 2 || !strings.Contains(errs, "|") {
		t.Errorf("allow b|ob: %d %s", code, errs)
	}
}

func TestPolicyCheckCommand(t *testing.T) {
	dir, mg := policyEnv(t, "alice|RU\nnonsense\n", "rules:\n  - users: bob\n    allow: FR\n    until: 2020-01-01\n")
	code, out, errs := mg("policy", "check")
	if code != 0 || !strings.Contains(out, "rules.yaml:2: expired") || !strings.Contains(out, "user-allowed.php:2: skipped-line") {
		t.Errorf("policy check = %d\n%s%s", code, out, errs)
	}
	if code, _, _ := mg("policy", "check", "-strict"); code != 1 {
		t.Errorf("policy check -strict with findings: exit %d, want 1", code)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte("rules:\n  - users: bob\n    allow: [FR, NOT!]\n  - users: carol\n    alow: FR\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errs = mg("policy", "check")
	if code != 2 || !strings.Contains(errs, "rules.yaml:3:") || !strings.Contains(errs, "rules.yaml:5:") {
		t.Errorf("policy check on broken file = %d\n%s", code, errs)
	}
}

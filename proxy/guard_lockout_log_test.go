package proxy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/testwait"
)

// TestGuardLockoutRefusalIsNoFail2banFailure: anyone can lock a login
// (lockout.after wrong passwords from anywhere). Its owner, logging in
// with the correct password from a network where it has not logged in
// before (a hotel, a phone), is then refused by the lockout. The guard
// counts the retries of that one password as one distinct failure, so it
// never bans her; but each refusal was logged as msg=AUTHFAILED with her
// address, which the shipped fail2ban filter counts line by line: five
// retries of her mail client and fail2ban banned her address, and
// everyone behind it. A lockout refusal is now logged as an event of its
// own, which the filter does not count; the client still gets the
// uniform failure.
func TestGuardLockoutRefusalIsNoFail2banFailure(t *testing.T) {
	f2b, err := exec.LookPath("fail2ban-regex")
	if err != nil {
		t.Skip("fail2ban-regex not installed (Debian: apt-get install fail2ban)")
	}
	cfg := quietGuard()
	cfg.Lockout.After = 2
	e, _, _ := startGuarded(t, cfg)

	attacker := e.dialFrom("198.51.100.9")
	attacker.expect("* OK [CAPABILITY")
	for _, guess := range []string{"guess1", "guess2"} {
		attacker.send("a LOGIN alice " + guess + "\r\n")
		attacker.expect("a NO [AUTHENTICATIONFAILED]")
	}
	testwait.For(t, "the lockout", func() bool { return strings.Contains(e.logs.String(), "msg=LOCKED") })

	const victim = "203.0.113.80"
	c := e.dialFrom(victim)
	c.expect("* OK [CAPABILITY")
	for range 5 {
		c.send("b LOGIN alice secret\r\n")
		if line := c.expect("b NO ["); !strings.HasPrefix(line, "b NO [AUTHENTICATIONFAILED]") {
			t.Fatalf("locked login: %q, want the uniform failure", line)
		}
	}
	c.send("c LOGOUT\r\n")
	c.expect("* BYE")
	testwait.For(t, "the victim's session closed", func() bool {
		return strings.Contains(e.logs.String(), "remote="+victim+" user=alice client_id=\"\" duration=")
	})

	filter, err := filepath.Abs(filepath.Join("..", "docs", "deploy", "fail2ban", "filter.d", "mailgate-stderr.conf"))
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "mail.log")
	if err := os.WriteFile(logPath, []byte(e.logs.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(f2b, "-o", "ip", logPath, filter).CombinedOutput()
	if err != nil {
		t.Fatalf("fail2ban-regex: %v\n%s", err, out)
	}
	if n := strings.Count(string(out), victim); n != 0 {
		t.Errorf("the shipped fail2ban filter counts %d failures of %s, whose password was correct", n, victim)
	}
	if !strings.Contains(string(out), "198.51.100.9") {
		t.Errorf("the attacker's wrong passwords are no longer counted:\n%s", out)
	}
}

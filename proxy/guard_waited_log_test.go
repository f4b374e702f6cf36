package proxy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/testwait"
)

// TestGuardWaitedOutIsNoFail2banFailure: an attempt that waited for the
// source's attempts in flight until its login deadline is "not counted"
// against the source (docs/bruteforce.md, "Attempts in flight are not
// failures"); it was logged as msg=AUTHFAILED all the same, which the
// shipped fail2ban filter counts, so a busy source whose own correct
// logins were merely in flight (or a user kept waiting by attempts in
// flight on the same login) was banned by fail2ban after five of them.
// The client still gets the uniform failure; the log line is one the
// shipped filter, run by the real fail2ban-regex, does not count.
func TestGuardWaitedOutIsNoFail2banFailure(t *testing.T) {
	cfg := quietGuard()
	cfg.Ban.IPAfter = 2
	e, _, ci := startGuarded(t, cfg)
	ci.hold = make(chan struct{})
	const src = "203.0.113.70"

	// Two logins from src are in flight at the backend (held), with the
	// ordinary login deadline.
	var holders []*client
	for range 2 {
		c := e.dialFrom(src)
		c.expect("* OK [CAPABILITY")
		c.send("a LOGIN alice secret\r\n")
		holders = append(holders, c)
	}
	testwait.For(t, "two logins at the backend", func() bool { return ci.calls.Load() == 2 })

	// A third, with a short login deadline, waits for them until its
	// deadline runs out.
	o := *e.srv.options()
	o.Limits.LoginTimeout, o.Limits.PreAuthIdleTimeout = time.Second, time.Second
	e.srv.Update(o)
	c := e.dialFrom(src)
	c.expect("* OK [CAPABILITY")
	c.send("b LOGIN alice secret\r\n")
	if line := c.expect("b NO ["); !strings.HasPrefix(line, "b NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("waited-out attempt: %q, want the uniform failure", line)
	}
	testwait.For(t, "the waited-out attempt's log line", func() bool { return strings.Contains(e.logs.String(), "waited") })
	close(ci.hold)
	for _, h := range holders {
		h.expect("a OK")
	}

	var line string
	for l := range strings.SplitSeq(e.logs.String(), "\n") {
		if strings.Contains(l, "waited") && strings.Contains(l, "remote="+src) {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no log line for the waited-out attempt:\n%s", e.logs.String())
	}
	if strings.Contains(line, "msg=AUTHFAILED") || strings.Contains(line, "msg=COUNTRYFAILED") {
		t.Errorf("a waited-out attempt, not counted by the guard, is logged as a failure fail2ban counts:\n%s", line)
	}

	f2b, err := exec.LookPath("fail2ban-regex")
	if err != nil {
		t.Logf("fail2ban-regex not installed; checked the line's message only")
		return
	}
	filter, err := filepath.Abs(filepath.Join("..", "docs", "deploy", "fail2ban", "filter.d", "mailgate-stderr.conf"))
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "mail.log")
	if err := os.WriteFile(logPath, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(f2b, "-o", "ip", logPath, filter).CombinedOutput()
	if err != nil {
		t.Fatalf("fail2ban-regex: %v\n%s", err, out)
	}
	if strings.Contains(string(out), src) {
		t.Errorf("the shipped fail2ban filter counts the waited-out attempt of %s:\n%s", src, line)
	}
}

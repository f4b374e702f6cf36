//go:build integration

package integration

import (
	"strings"
	"testing"
)

// TestSMTPOwnEHLORemembered: with verify: smtp-auth and XCLIENT, the
// real Postfix hears mailgate's own EHLO (which only tells the XCLIENT
// attributes) once, not before every login; every later login starts
// with XCLIENT, and Postfix still takes the client's address and login
// from it (issue #20).
func TestSMTPOwnEHLORemembered(t *testing.T) {
	hs := need(t)
	relay := startCmdRelay(t, addr(hs.subPort))
	c := newCfg(t)
	c.BackendSMTP = relay.port()
	c.Verify = "smtp-auth"
	m := startCfg(t, c)
	const from, logins = "127.0.0.27", 3
	mark := len(hs.postfixLog())
	for i := range logins {
		l := smtpDialog(t, from, m.Addr["smtps"], "", false)
		if r := l.authPlain("bob@example.test", users["bob@example.test"]); !strings.HasPrefix(r, "235") {
			t.Fatalf("login %d: AUTH = %q", i+1, r)
		}
		l.send("MAIL FROM:<bob@example.test>\r\n")
		expectCode(t, l, "250")
		l.send("RCPT TO:<alice@example.test>\r\n")
		expectCode(t, l, "250")
		l.send("QUIT\r\n")
	}
	own, client, xclient := 0, 0, 0
	for _, c := range relay.all() {
		switch {
		case c == "EHLO client.example.test":
			client++
		case strings.HasPrefix(c, "EHLO "):
			own++
		case c == "XCLIENT":
			xclient++
		}
	}
	// One own EHLO: the first login's, or the probe's for the
	// client's EHLO answer, which the logins then use.
	if own > 1 || client != logins || xclient != logins {
		t.Errorf("own EHLO %d (want 1), client EHLO %d and XCLIENT %d (want %d each); commands %q", own, client, xclient, logins, relay.all())
	}
	n := func() int {
		k := 0
		for _, l := range strings.Split(logSince(hs.postfixLog(), mark), "\n") {
			if strings.Contains(l, "client=") && strings.Contains(l, "["+from+"]") && strings.Contains(l, "sasl_username=bob@example.test") {
				k++
			}
		}
		return k
	}
	if !waitFor(func() bool { return n() == logins }, eventually) {
		t.Fatalf("Postfix logged %d sessions from %s with bob's login, want %d:\n%s", n(), from, logins, logSince(hs.postfixLog(), mark))
	}
}

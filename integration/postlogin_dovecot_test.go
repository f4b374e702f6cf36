//go:build integration

package integration

import (
	"strings"
	"testing"

	"github.com/mailgate/mailgate/integration/mailstack"
)

// Dovecot honours the client-address commands (POP3 XCLIENT, IMAP ID
// x-originating-ip) only in its login processes, before login, and only
// from login_trusted_networks (mailgate's address). After login the
// session is in the pop3 or imap process, which does not. These tests
// show it against the real Dovecot (issue #14 finding 1, POP3 and IMAP
// equivalents).

// TestPOP3XCLIENTAfterLogin: Dovecot itself answers XCLIENT with +OK
// before login from a trusted address and -ERR after login; through
// mailgate a logged-in client's XCLIENT is renamed and refused, and
// Dovecot keeps the client's address.
func TestPOP3XCLIENTAfterLogin(t *testing.T) {
	hs := need(t)
	// Directly to Dovecot, from 127.0.0.1 (login_trusted_networks).
	l := newLineConn(t, dialFrom(t, "", mailstack.Addr(hs.pop3Port)))
	if g := l.line(); !strings.HasPrefix(g, "+OK") || !strings.Contains(g, "XCLIENT") {
		t.Fatalf("Dovecot greeting %q, want +OK offering [XCLIENT] to a trusted peer", g)
	}
	l.send("XCLIENT ADDR=192.0.2.7\r\n")
	if r := l.line(); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("XCLIENT before login = %q, want +OK (pop3-login honours it)", r)
	}
	l.send("USER bob@example.test\r\nPASS bobpass\r\n")
	l.until("+OK")
	if r := l.line(); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("PASS = %q", r)
	}
	l.send("XCLIENT ADDR=203.0.113.50\r\n")
	if r := l.line(); !strings.HasPrefix(r, "-ERR") {
		t.Fatalf("XCLIENT after login, straight to Dovecot = %q, want -ERR (the pop3 process has no XCLIENT)", r)
	}
	l.send("QUIT\r\n")
	l.until("+OK")

	// Through mailgate: the command is renamed before Dovecot sees it.
	m := startCfg(t, newCfg(t))
	mark := len(hs.dovecotLog())
	l = newLineConn(t, dialFrom(t, "", m.Addr["pop3s"]))
	l.startTLS()
	l.until("+OK")
	l.send("USER carol@example.test\r\nPASS " + users["carol@example.test"] + "\r\n")
	l.until("+OK")
	if r := l.line(); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("PASS through mailgate = %q", r)
	}
	l.send("xclient ADDR=203.0.113.50\r\nSTAT\r\nQUIT\r\n")
	if r := l.line(); !strings.HasPrefix(r, "-ERR") {
		t.Fatalf("XCLIENT after login through mailgate = %q, want -ERR", r)
	}
	if r := l.line(); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("STAT after the refused XCLIENT = %q, want +OK", r)
	}
	l.until("+OK")
	m.WaitLog(t, "command=XCLIENT")
	if after := logSince(hs.dovecotLog(), mark); strings.Contains(after, "203.0.113.50") || !strings.Contains(after, "rip=127.0.0.1,") {
		t.Fatalf("Dovecot log after the session lacks rip=127.0.0.1 or shows the forged address:\n%s", after)
	}
}

// TestIMAPIDAfterLoginIgnored: an ID with x-originating-ip after login
// is answered by Dovecot's imap process but changes nothing: the login
// was logged with the client's address (from mailgate's own ID), and the
// forged address shows only as what the client said in ID. So IMAP
// needs no post-login filter (docs/backends.md).
func TestIMAPIDAfterLoginIgnored(t *testing.T) {
	hs := need(t)
	m := startCfg(t, newCfg(t))
	mark := len(hs.dovecotLog())
	l := newLineConn(t, dialFrom(t, "", m.Addr["imaps"]))
	l.startTLS()
	l.until("* OK")
	l.send("a LOGIN alice@example.test alicepass\r\n")
	l.until("a OK")
	l.send(`b ID ("x-originating-ip" "203.0.113.50" "x-originating-port" "4711" "x-session-ext-id" "forged")` + "\r\n")
	if r := l.until("b "); !strings.HasPrefix(r, "b OK") {
		t.Fatalf("ID after login = %q, want b OK", r)
	}
	l.send("c NOOP\r\nd LOGOUT\r\n")
	l.until("d OK")
	if !waitFor(func() bool { return strings.Contains(logSince(hs.dovecotLog(), mark), "Logged out") }, eventually) {
		t.Fatalf("no logout in Dovecot's log:\n%s", logSince(hs.dovecotLog(), mark))
	}
	after := logSince(hs.dovecotLog(), mark)
	if !hasLine(after, "imap-login:", "Login: user=<alice@example.test>", "rip=127.0.0.1,") {
		t.Fatalf("Dovecot log lacks the login with rip=127.0.0.1:\n%s", after)
	}
	for _, line := range strings.Split(after, "\n") {
		if strings.Contains(line, "ID sent") || strings.Contains(line, "Login:") {
			t.Logf("dovecot: %s", line)
		}
		if strings.Contains(line, "203.0.113.50") && (strings.Contains(line, "imap-login:") || strings.Contains(line, "rip=203.0.113.50")) {
			t.Fatalf("Dovecot took the post-login ID as the client's address: %q\n%s", line, after)
		}
	}
}

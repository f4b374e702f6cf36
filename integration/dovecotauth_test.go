//go:build integration

package integration

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestSMTPVerifyDovecotAuth: with verify: dovecot-auth, mailgate checks a
// submission password on the real Dovecot's auth socket (its unix and
// its TCP listener), with no IMAP login: swaks sends a message that
// arrives; a wrong password and an unknown user get the uniform 535
// 5.7.8, and Dovecot's auth log names the client's address (rip=), not
// mailgate's.
func TestSMTPVerifyDovecotAuth(t *testing.T) {
	hs := need(t)
	for _, tc := range []struct{ name, socket, from string }{
		{"unix", hs.stack.AuthSocket, "127.0.0.25"},
		{"tcp", addr(hs.stack.Auth), "127.0.0.26"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const rcpt = "alice@example.test"
			resetMailbox(t, rcpt)
			c := newCfg(t)
			c.Verify = "dovecot-auth, dovecot_auth: " + strconv.Quote(tc.socket) + ", verify_cache_ttl: 0s"
			m := startCfg(t, c)
			mark := len(hs.dovecotLog())
			msg := makeMessage("bob@example.test", rcpt, "verify dovecot-auth "+tc.name, 2000)
			if out, err := swaks(t, m.Addr["submission"], "--tls", "PLAIN", "bob@example.test", "bobpass", rcpt, msg); err != nil {
				t.Fatalf("swaks: %v\n%s", err, out)
			}
			awaitDelivery(t, m, rcpt, msg)
			// awaitDelivery reads the mailbox over IMAP as alice; the
			// submission itself must not have logged bob in over IMAP.
			if log := logSince(hs.dovecotLog(), mark); hasLine(log, "imap-login:", "Login: user=<bob@example.test>") {
				t.Fatalf("dovecot-auth mode made an IMAP login:\n%s", log)
			}
			wrong := smtpDialog(t, tc.from, m.Addr["smtps"], "", false).authPlain("bob@example.test", wrongPass)
			unknown := smtpDialog(t, tc.from, m.Addr["smtps"], "", false).authPlain("nobody@example.test", wrongPass)
			if !strings.HasPrefix(wrong, "535 5.7.8") {
				t.Fatalf("wrong password reply = %q, want 535 5.7.8", wrong)
			}
			m.sameReply(t, []string{"wrong password", "unknown user"}, wrong, unknown)
			m.WaitCount(t, "AUTHFAILED", 2)
			if !waitFor(func() bool {
				log := logSince(hs.dovecotLog(), mark)
				return hasLine(log, "auth", "bob@example.test,"+tc.from, "mismatch") && hasLine(log, "auth", "nobody@example.test,"+tc.from)
			}, 10e9) {
				t.Fatalf("Dovecot's auth log does not show both failures from %s:\n%s", tc.from, logSince(hs.dovecotLog(), mark))
			}
		})
	}
}

// TestSMTPVerifyDovecotAuthDown: with Dovecot's auth socket missing (unix)
// or refusing (TCP), a correct password gets the uniform failure, then
// 454 while the backend is known down, never 235, and mailgate's log says
// the auth service was unreachable.
func TestSMTPVerifyDovecotAuthDown(t *testing.T) {
	for _, tc := range []struct{ name, socket string }{
		{"unix", filepath.Join(t.TempDir(), "no-auth-socket")},
		{"tcp", addr(closedPort(t))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCfg(t)
			c.Verify = "dovecot-auth, dovecot_auth: " + strconv.Quote(tc.socket)
			m := startCfg(t, c)
			// As with any backend down: the first login finds it down
			// after the decision (the uniform failure), the next is told
			// to retry.
			for i, want := range []string{"535 5.7.8", "454"} {
				if r := smtpDialog(t, "", m.Addr["smtps"], "", false).authPlain("alice@example.test", "alicepass"); !strings.HasPrefix(r, want) {
					t.Fatalf("login %d, auth service down: %q, want %s", i+1, r, want)
				}
			}
			m.WaitLog(t, "dovecot-auth "+tc.socket+": dial")
		})
	}
}

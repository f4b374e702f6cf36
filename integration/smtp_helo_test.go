//go:build integration

package integration

import (
	"strings"
	"testing"
)

// TestSMTPUTF8EHLOLogsIn (issue #14 finding 3): a client whose EHLO name
// is UTF-8 logs in through mailgate to the real Postfix and may send, in
// both verify modes; Postfix sees the name as A-labels (XCLIENT HELO=
// and the replayed EHLO). Before, the backend code refused the name
// after the login decision (454), which also told a denied login with a
// travel exception from one without.
func TestSMTPUTF8EHLOLogsIn(t *testing.T) {
	hs := need(t)
	for _, mode := range []struct {
		verify string
		port   int
	}{{"imap", hs.smtpPort}, {"smtp-auth", hs.subPort}} {
		t.Run(mode.verify, func(t *testing.T) {
			c := newCfg(t)
			c.Verify, c.BackendSMTP = mode.verify, mode.port
			m := startCfg(t, c)
			l := newLineConn(t, dialFrom(t, "", m.Addr["smtps"]))
			l.startTLS()
			expectSMTP(t, l, "greeting", "220")
			l.send("EHLO Bücher.example\r\n")
			expectSMTP(t, l, "EHLO", "250")
			if r := l.authPlain("alice@example.test", "alicepass"); !strings.HasPrefix(r, "235") {
				t.Fatalf("AUTH after a UTF-8 EHLO = %q, want 235", r)
			}
			l.send("MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nRSET\r\nQUIT\r\n")
			expectSMTP(t, l, "MAIL", "250")
			expectSMTP(t, l, "RCPT", "250")
			expectSMTP(t, l, "RSET", "250")
			expectSMTP(t, l, "QUIT", "221")
		})
	}
}

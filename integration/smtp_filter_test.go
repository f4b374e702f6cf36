//go:build integration

package integration

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/integration/mailstack"
)

// expectSMTP reads one reply and fails unless its last line starts with
// prefix.
func expectSMTP(t *testing.T, l *lineConn, what, prefix string) {
	t.Helper()
	if r := l.smtpReply(); !strings.HasPrefix(r[len(r)-1], prefix) {
		t.Fatalf("%s: reply %q, want %s", what, r, prefix)
	}
}

// TestSMTPXCLIENTAfterLoginRefused (issue #14 finding 1): Postfix
// authorizes XCLIENT and XFORWARD from all of 127.0.0.0/8, clients
// included, and holds the client address mailstack.SenderLoginCheckAddr
// to reject_sender_login_mismatch. After AUTH as alice through mailgate,
// XCLIENT LOGIN=bob (in any case, pipelined with AUTH or MAIL, split
// across packets, with a forged ADDR and NAME) and XFORWARD reach
// Postfix only as unknown commands, and alice still cannot send as bob.
//
// Both verify modes: imap (Postfix port 25, XCLIENT LOGIN= from
// mailgate) and smtp-auth (Postfix submission, AUTH from mailgate).
// Postfix ignores reject_sender_login_mismatch where SASL is off (port
// 25), so there the test looks at Postfix's log instead of the RCPT reply.
func TestSMTPXCLIENTAfterLoginRefused(t *testing.T) {
	hs := need(t)
	auth := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00alicepass")) + "\r\n"
	const asBob = "MAIL FROM:<bob@example.test>\r\nRCPT TO:<alice@example.test>\r\n"
	cases := []struct {
		name   string
		writes []string // after EHLO; the first carries AUTH
	}{
		{"XCLIENT", []string{auth, "XCLIENT LOGIN=bob@example.test\r\n"}},
		{"lower case", []string{auth, "xclient login=bob@example.test\r\n"}},
		{"pipelined with AUTH", []string{auth + "XCLIENT LOGIN=bob@example.test\r\n"}},
		{"pipelined with MAIL", []string{auth, "XCLIENT LOGIN=bob@example.test\r\n" + asBob}},
		{"split across packets", []string{auth, "XCL", "IENT LOGIN=bob@exa", "mple.test\r\n"}},
		{"forged address and name", []string{auth, "XCLIENT ADDR=203.0.113.50 NAME=mail.trusted.example LOGIN=bob@example.test\r\n"}},
		{"XFORWARD", []string{auth, "XFORWARD NAME=mail.trusted.example ADDR=203.0.113.50\r\n"}},
		{"xforward lower case", []string{auth, "xforward addr=203.0.113.50\r\n"}},
	}
	for _, mode := range []struct {
		verify   string
		port     int
		rcptBob  string // reply to RCPT after MAIL FROM bob
		rcptSelf string
	}{
		{"imap", hs.smtpPort, "250", "250"},
		{"smtp-auth", hs.subPort, "553 5.7.1", "250"},
	} {
		t.Run(mode.verify, func(t *testing.T) {
			c := newCfg(t)
			c.Verify, c.BackendSMTP = mode.verify, mode.port
			m := startCfg(t, c)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					l := smtpDialog(t, mailstack.SenderLoginCheckAddr, m.Addr["smtps"], "", false)
					for i, w := range tc.writes {
						if i > 0 {
							time.Sleep(50 * time.Millisecond) // its own packet
						}
						l.send(w)
					}
					expectSMTP(t, l, "AUTH", "235")
					// Postfix: "500 5.5.2 Error: command not recognized".
					expectSMTP(t, l, "forbidden command", "500 5.5.2")
					if !strings.Contains(tc.writes[len(tc.writes)-1], "MAIL") {
						l.send(asBob)
					}
					expectSMTP(t, l, "MAIL FROM bob", "250")
					expectSMTP(t, l, "RCPT as bob", mode.rcptBob)
					l.send("QUIT\r\n")
					expectSMTP(t, l, "QUIT", "221")
				})
			}
			// The check lets alice send as herself: the refusals above
			// are reject_sender_login_mismatch, not a closed door.
			l := smtpDialog(t, mailstack.SenderLoginCheckAddr, m.Addr["smtps"], "", false)
			if r := l.authPlain("alice@example.test", "alicepass"); !strings.HasPrefix(r, "235") {
				t.Fatalf("AUTH = %q", r)
			}
			l.send("MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nRSET\r\nQUIT\r\n")
			expectSMTP(t, l, "MAIL as alice", "250")
			expectSMTP(t, l, "RCPT as alice", mode.rcptSelf)
			expectSMTP(t, l, "RSET", "250")
			expectSMTP(t, l, "QUIT", "221")

			log := m.WaitLog(t, "command=XFORWARD")
			if !strings.Contains(log, `msg="command refused after login"`) || !strings.Contains(log, "command=XCLIENT") {
				t.Fatalf("mailgate log lacks the refused-command WARN:\n%s", log)
			}
		})
	}
	// Postfix never took the client's XCLIENT or XFORWARD: no session
	// logged in as bob from the test's address, no forged address or name.
	pf := hs.postfixLog()
	if strings.Contains(pf, "203.0.113.50") || strings.Contains(pf, "mail.trusted.example") || hasLine(pf, "client=unknown["+mailstack.SenderLoginCheckAddr+"]", "sasl_username=bob@example.test") {
		t.Fatalf("postfix took the client's XCLIENT/XFORWARD:\n%s", pf)
	}
}

// TestSMTPBDATAfterLoginRefused: BDAT after login is renamed, so Postfix
// refuses it without reading a chunk; the would-be chunk is then read as
// commands by Postfix and by mailgate's filter alike, so an XCLIENT in it
// is refused too. (Straight to Postfix, a BDAT it refuses for want of
// MAIL has its chunk skipped; the test logs what Postfix does.)
func TestSMTPBDATAfterLoginRefused(t *testing.T) {
	hs := need(t)
	const chunk = "XCLIENT LOGIN=bob\r\n" // 19 octets
	direct := newLineConn(t, dialFrom(t, "", mailstack.Addr(hs.smtpPort)))
	expectSMTP(t, direct, "greeting", "220")
	direct.send("EHLO client.example.test\r\n")
	expectSMTP(t, direct, "EHLO", "250")
	direct.send("BDAT 19 LAST\r\n" + chunk + "NOOP\r\n")
	first, second := direct.smtpReply(), direct.smtpReply()
	t.Logf("Postfix straight: BDAT without MAIL: %q, then %q", first, second)

	m := startCfg(t, newCfg(t))
	l := smtpDialog(t, mailstack.SenderLoginCheckAddr, m.Addr["smtps"], "", false)
	if r := l.authPlain("alice@example.test", "alicepass"); !strings.HasPrefix(r, "235") {
		t.Fatalf("AUTH = %q", r)
	}
	l.send("MAIL FROM:<alice@example.test>\r\nBDAT 19 LAST\r\n" + chunk + "NOOP\r\n")
	expectSMTP(t, l, "MAIL", "250")
	expectSMTP(t, l, "BDAT", "500 5.5.2")
	expectSMTP(t, l, "XCLIENT in the would-be chunk", "500 5.5.2")
	expectSMTP(t, l, "NOOP", "250")
	l.send("QUIT\r\n")
	expectSMTP(t, l, "QUIT", "221")
	m.WaitLog(t, "command=BDAT")
}

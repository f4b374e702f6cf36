//go:build integration

package integration

import (
	"strings"
	"testing"
)

// TestHarnessDovecotDirect proves the harness: Python's imaplib logs in to
// Dovecot directly, Dovecot records the address forwarded through ID, and
// a message sent to Postfix arrives in the mailbox through LMTP.
func TestHarnessDovecotDirect(t *testing.T) {
	hs := need(t)
	out, err := python(t, `
import imaplib, sys
c = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
c.xatom("ID", '("x-originating-ip" "81.2.69.142")')
typ, _ = c.login("alice@example.test", "alicepass")
typ2, data = c.select("INBOX")
c.logout()
print(typ, typ2)
`, itoa(hs.imapPort))
	if err != nil {
		t.Fatalf("imaplib: %v\n%s", err, out)
	}
	if strings.TrimSpace(out) != "OK OK" {
		t.Fatalf("imaplib login/select = %q, want OK OK", out)
	}
	if !waitFor(func() bool {
		return hasLine(hs.dovecotLog(), "imap-login:", "Login: user=<alice@example.test>, method=PLAIN, rip=81.2.69.142,")
	}, eventually) {
		t.Fatalf("dovecot log lacks the forwarded address; log:\n%s", hs.dovecotLog())
	}
}

// TestHarnessPostfixToDovecot: mail submitted to Postfix with XCLIENT is
// delivered over LMTP into Dovecot, and the Postfix log names the
// forwarded client.
func TestHarnessPostfixToDovecot(t *testing.T) {
	hs := need(t)
	resetMailbox(t, "bob@example.test")
	msg := makeMessage("alice@example.test", "bob@example.test", "harness postfix", 2000)
	out, err := python(t, `
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]))
s.ehlo("proxy.test")
code, resp = s.docmd("XCLIENT", "ADDR=81.2.69.142 NAME=[UNAVAILABLE] LOGIN=alice@example.test")
assert code == 220, (code, resp)
s.ehlo("client.test")
s.sendmail("alice@example.test", ["bob@example.test"], open(sys.argv[2], "rb").read())
s.quit()
print("sent")
`, itoa(hs.smtpPort), writeTemp(t, msg))
	if err != nil {
		t.Fatalf("smtplib: %v\n%s", err, out)
	}
	if !waitFor(func() bool { return countDirect(t, "bob@example.test") == 1 }, eventually) {
		t.Fatalf("message never arrived; postfix log:\n%s", hs.postfixLog())
	}
	if !strings.Contains(hs.postfixLog(), "client=unknown[81.2.69.142]") {
		t.Errorf("postfix log lacks the XCLIENT address; log:\n%s", hs.postfixLog())
	}
}

// TestHarnessSubmissionSASL: Postfix's submission listener authenticates
// through Dovecot's auth service (the verify: smtp-auth path).
func TestHarnessSubmissionSASL(t *testing.T) {
	hs := need(t)
	out, err := python(t, `
import smtplib, sys
# The bad attempt comes from 127.0.0.21: Dovecot's auth penalty is per IP.
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), source_address=("127.0.0.21", 0))
s.ehlo("client.test")
s.user, s.password = "carol@example.test", "wrong"
try:
    s.auth("PLAIN", s.auth_plain)  # one mechanism: login() would try each
    print("bad-accepted")
except smtplib.SMTPAuthenticationError as e:
    print("bad", e.smtp_code)
s.close()
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]))
s.ehlo("client.test")
print("good", s.login("carol@example.test", "carolpass")[0])
s.quit()
`, itoa(hs.subPort))
	if err != nil {
		t.Fatalf("smtplib: %v\n%s", err, out)
	}
	if got, want := strings.TrimSpace(out), "bad 535\ngood 235"; got != want {
		t.Fatalf("submission auth = %q, want %q", got, want)
	}
}

// TestHarnessPOP3XCLIENT: Dovecot's POP3 accepts XCLIENT from loopback
// and logs the forwarded address, the way the POP3 tests expect.
func TestHarnessPOP3XCLIENT(t *testing.T) {
	hs := need(t)
	out, err := python(t, `
import poplib, sys
p = poplib.POP3("127.0.0.1", int(sys.argv[1]))
print(p.getwelcome().decode())
print(p._shortcmd("XCLIENT ADDR=81.2.69.142 PORT=40000").decode())
p.user("carol@example.test")
print(p.pass_("carolpass").decode())
p.quit()
`, itoa(hs.pop3Port))
	if err != nil {
		t.Fatalf("poplib: %v\n%s", err, out)
	}
	if !strings.Contains(out, "[XCLIENT]") || !strings.Contains(out, "+OK Updated") {
		t.Fatalf("poplib transcript lacks XCLIENT support:\n%s", out)
	}
	if !waitFor(func() bool {
		return hasLine(hs.dovecotLog(), "pop3-login:", "Login: user=<carol@example.test>, method=PLAIN, rip=81.2.69.142,")
	}, eventually) {
		t.Fatalf("dovecot log lacks the forwarded address; log:\n%s", hs.dovecotLog())
	}
}

// TestHarnessSwaks: swaks (as the SMTP tests call it) delivers through
// Postfix straight to Dovecot.
func TestHarnessSwaks(t *testing.T) {
	hs := need(t)
	resetMailbox(t, "carol@example.test")
	msg := makeMessage("alice@example.test", "carol@example.test", "harness swaks", 1000)
	out, err := runTool(t, "swaks", "--server", "127.0.0.1", "--port", itoa(hs.smtpPort),
		"--ehlo", "client.example.test", "--from", "alice@example.test", "--to", "carol@example.test",
		"--data", "@"+writeTemp(t, swaksData(msg)), "--timeout", "60")
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	if !waitFor(func() bool { return countDirect(t, "carol@example.test") == 1 }, eventually) {
		t.Fatalf("message never arrived; postfix log:\n%s", hs.postfixLog())
	}
	c := imapDial(t, addr(hs.imapPort), false, "carol@example.test", "carolpass", nil)
	got := fetchAll(t, c)
	_, body, _ := strings.Cut(string(msg), "\r\n\r\n")
	if len(got) != 1 || !strings.HasSuffix(string(got[0]), "\r\n\r\n"+body) {
		t.Fatalf("delivered message does not end with the sent body: %q", got)
	}
}

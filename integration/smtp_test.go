//go:build integration

package integration

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

// awaitDelivery waits until a message with msg's Message-ID is in user's
// INBOX, reads it back through mailgate's IMAPS listener, and checks that
// the body and every header we wrote arrived unchanged (Postfix and
// Dovecot add Received, Return-Path and Delivered-To on top).
func awaitDelivery(t *testing.T, m *Mailgate, user string, msg []byte) {
	t.Helper()
	hs := need(t)
	hdr, body, ok := bytes.Cut(msg, []byte("\r\n\r\n"))
	if !ok {
		t.Fatal("test message has no header/body separator")
	}
	var msgID []byte
	for _, line := range bytes.Split(hdr, []byte("\r\n")) {
		if bytes.HasPrefix(line, []byte("Message-ID:")) {
			msgID = line
		}
	}
	var got []byte
	find := func() bool {
		c := imapDial(t, m.Addr["imaps"], true, user, users[user], nil)
		defer c.Logout()
		for _, b := range fetchAll(t, c) {
			if bytes.Contains(b, msgID) {
				got = b
				return true
			}
		}
		return false
	}
	if !waitFor(func() bool { return countDirect(t, user) > 0 && find() }, 60*time.Second) {
		t.Fatalf("%s never arrived in %s; postfix log:\n%s", msgID, user, hs.postfixLog())
	}
	gotHdr, gotBody, _ := bytes.Cut(got, []byte("\r\n\r\n"))
	if !bytes.Equal(gotBody, body) {
		t.Fatalf("delivered body differs: %d bytes, want %d", len(gotBody), len(body))
	}
	for _, line := range bytes.Split(hdr, []byte("\r\n")) {
		if !bytes.Contains(gotHdr, line) {
			t.Errorf("delivered header lacks %q; got headers:\n%s", line, gotHdr)
		}
	}
}

// swaks sends msg from alice to rcpt through the listener at address with
// the given TLS mode ("--tls-on-connect" or "--tls") and SASL mechanism.
func swaks(t *testing.T, address, tlsFlag, mech, user, pass, rcpt string, msg []byte) (string, error) {
	t.Helper()
	host, port := splitPort(t, address)
	return runTool(t, "swaks", "--server", host, "--port", port, tlsFlag,
		"--auth", mech, "--auth-user", user, "--auth-password", pass,
		"--ehlo", "client.example.test", "--from", user, "--to", rcpt,
		"--data", "@"+writeTemp(t, swaksData(msg)), "--timeout", "60")
}

// swaksData returns msg as swaks wants it: swaks ends DATA with
// CRLF "." CRLF itself, so a final CRLF in the file would add a line.
func swaksData(msg []byte) []byte { return bytes.TrimSuffix(msg, []byte("\r\n")) }

// TestSMTPSwaksImplicitAndStartTLS: swaks submits through SMTPS (PLAIN)
// and submission with STARTTLS (LOGIN); both messages reach Dovecot via
// Postfix and LMTP and read back unchanged through mailgate's IMAP.
func TestSMTPSwaksImplicitAndStartTLS(t *testing.T) {
	const rcpt = "bob@example.test"
	resetMailbox(t, rcpt)
	m := startCfg(t, newCfg(t))
	for _, tc := range []struct{ listener, flag, mech string }{
		{"smtps", "--tls-on-connect", "PLAIN"},
		{"submission", "--tls", "LOGIN"},
	} {
		msg := makeMessage("alice@example.test", rcpt, "swaks via "+tc.listener, 5000)
		if out, err := swaks(t, m.Addr[tc.listener], tc.flag, tc.mech, "alice@example.test", "alicepass", rcpt, msg); err != nil {
			t.Fatalf("swaks via %s: %v\n%s", tc.listener, err, out)
		}
		awaitDelivery(t, m, rcpt, msg)
	}
}

// TestSMTPSmtplib: Python's smtplib through SMTPS and through submission
// with STARTTLS, including an 8BITMIME/SMTPUTF8 message and one of 25 MB.
func TestSMTPSmtplib(t *testing.T) {
	const rcpt = "carol@example.test"
	resetMailbox(t, rcpt)
	m := startCfg(t, newCfg(t))
	_, smtps := splitPort(t, m.Addr["smtps"])
	_, sub := splitPort(t, m.Addr["submission"])

	// SMTPUTF8 with an ASCII envelope and headers and an 8-bit body:
	// Dovecot's LMTP does not offer SMTPUTF8, so Postfix would bounce a
	// message that really needs it; the UTF-8 header message goes without
	// the SMTPUTF8 parameter, as 8BITMIME.
	utf8Body := makeMessage("alice@example.test", rcpt, "smtputf8 body", 200)
	utf8Body = append(utf8Body, []byte("Grüße aus Köln ✓\r\n")...)
	utf8Hdr := bytes.Replace(makeMessage("alice@example.test", rcpt, "eightbit", 200),
		[]byte("Subject: eightbit"), []byte("Subject: eightbit Grüße ✓"), 1)
	utf8Hdr = append(utf8Hdr, []byte("Körper ✓\r\n")...)
	big := makeMessage("alice@example.test", rcpt, "twenty-five megabytes", 25<<20)

	out, err := python(t, `
import smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
rcpt = "carol@example.test"
s = smtplib.SMTP_SSL("127.0.0.1", int(sys.argv[1]), context=ctx, timeout=120)
s.ehlo("client.example.test")
assert s.has_extn("smtputf8") and s.has_extn("8bitmime"), s.esmtp_features
s.login("alice@example.test", "alicepass")
s.sendmail("alice@example.test", [rcpt], open(sys.argv[3], "rb").read(), mail_options=["SMTPUTF8", "BODY=8BITMIME"])
s.sendmail("alice@example.test", [rcpt], open(sys.argv[4], "rb").read(), mail_options=["BODY=8BITMIME"])
s.quit()
s = smtplib.SMTP("127.0.0.1", int(sys.argv[2]), timeout=120)
s.ehlo("client.example.test")
assert not s.has_extn("auth"), "AUTH offered before STARTTLS"
s.starttls(context=ctx)
s.ehlo("client.example.test")
s.login("alice@example.test", "alicepass")
s.sendmail("alice@example.test", [rcpt], open(sys.argv[5], "rb").read())
s.quit()
print("sent")
`, smtps, sub, writeTemp(t, utf8Body), writeTemp(t, utf8Hdr), writeTemp(t, big))
	if err != nil || strings.TrimSpace(out) != "sent" {
		t.Fatalf("smtplib: %v\n%s", err, out)
	}
	awaitDelivery(t, m, rcpt, utf8Body)
	awaitDelivery(t, m, rcpt, utf8Hdr)
	awaitDelivery(t, m, rcpt, big)
}

// smtpDialog is a raw SMTP client over one of mailgate's listeners.
func smtpDialog(t *testing.T, laddr, address, proxySrc string, starttls bool) *lineConn {
	t.Helper()
	l := newLineConn(t, dialFrom(t, laddr, address))
	if proxySrc != "" {
		l.send(proxyHeader(proxySrc, address))
	}
	if !starttls {
		l.startTLS()
	}
	if g := l.smtpReply(); !strings.HasPrefix(g[0], "220") {
		t.Fatalf("greeting = %q, want 220", g)
	}
	if starttls {
		l.send("EHLO client.example.test\r\n")
		l.smtpReply()
		l.send("STARTTLS\r\n")
		if r := l.smtpReply(); !strings.HasPrefix(r[0], "220") {
			t.Fatalf("STARTTLS = %q, want 220", r)
		}
		l.startTLS()
	}
	l.send("EHLO client.example.test\r\n")
	if r := l.smtpReply(); !strings.HasPrefix(r[0], "250") {
		t.Fatalf("EHLO = %q, want 250", r)
	}
	return l
}

// authPlain sends AUTH PLAIN with an initial response and returns the
// reply's last line.
func (l *lineConn) authPlain(user, pass string) string {
	l.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)) + "\r\n")
	r := l.smtpReply()
	return r[len(r)-1]
}

// TestSMTPFailuresLookAlike: wrong password and denied countries all get
// the same 535 5.7.8 reply, and denials are logged as COUNTRYFAILED.
func TestSMTPFailuresLookAlike(t *testing.T) {
	m := startCfg(t, newCfg(t))
	wrong := smtpDialog(t, badSMTP, m.Addr["smtps"], "", false).authPlain("alice@example.test", wrongPass)
	if !strings.HasPrefix(wrong, "535 5.7.8") {
		t.Fatalf("wrong password reply = %q, want 535 5.7.8", wrong)
	}
	denied := smtpDialog(t, ruLocal, m.Addr["smtps"], "", false).authPlain("carol@example.test", users["carol@example.test"])
	proxied := smtpDialog(t, "", m.Addr["smtps-lb"], addrRU, false).authPlain("carol@example.test", users["carol@example.test"])
	m.sameReply(t, []string{"wrong password", "denied (127.0.0.2)", "denied (PROXY " + addrRU + ")"}, wrong, denied, proxied)
	m.WaitCount(t, "COUNTRYFAILED", 2)
}

// TestSMTPBackendDown: with Postfix's port closed a correct login gets
// the uniform 535 once (it finds the backend down after the decision),
// then is told to retry (454).
func TestSMTPBackendDown(t *testing.T) {
	c := newCfg(t)
	c.BackendSMTP = closedPort(t)
	m := startCfg(t, c)
	// The first login finds the backend down after the decision: the
	// uniform failure. The next, the backend known down: 454.
	for i, want := range []string{"535", "454"} {
		l := smtpDialog(t, "", m.Addr["smtps"], "", false)
		r := l.authPlain("alice@example.test", "alicepass")
		if !strings.HasPrefix(r, want) {
			t.Fatalf("login %d, backend down: %q, want %s", i+1, r, want)
		}
	}
}

// TestSMTPPipelinedBeforeAuth: MAIL, RCPT and DATA pipelined before AUTH
// are each refused with 530, in order, and nothing reaches Postfix.
func TestSMTPPipelinedBeforeAuth(t *testing.T) {
	m := startCfg(t, newCfg(t))
	l := smtpDialog(t, "", m.Addr["smtps"], "", false)
	l.send("MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
	for _, cmd := range []string{"MAIL", "RCPT", "DATA"} {
		r := l.smtpReply()
		if !strings.HasPrefix(r[0], "530") {
			t.Fatalf("reply to pipelined %s before AUTH = %q, want 530", cmd, r)
		}
	}
	l.send("QUIT\r\n")
	if r := l.smtpReply(); !strings.HasPrefix(r[0], "221") {
		t.Fatalf("QUIT = %q, want 221", r)
	}
}

// TestSMTPForwardsClientToPostfix: through the PROXY listener, Postfix's
// log shows the client's address and login received via XCLIENT.
func TestSMTPForwardsClientToPostfix(t *testing.T) {
	hs := need(t)
	const rcpt = "bob@example.test"
	resetMailbox(t, rcpt)
	m := startCfg(t, newCfg(t))
	l := smtpDialog(t, "", m.Addr["smtps-lb"], addrGB, false)
	if r := l.authPlain("alice@example.test", "alicepass"); !strings.HasPrefix(r, "235") {
		t.Fatalf("AUTH = %q, want 235", r)
	}
	msg := makeMessage("alice@example.test", rcpt, "xclient forwarding", 1000)
	l.send("MAIL FROM:<alice@example.test>\r\n")
	expectCode(t, l, "250")
	l.send("RCPT TO:<" + rcpt + ">\r\n")
	expectCode(t, l, "250")
	l.send("DATA\r\n")
	expectCode(t, l, "354")
	l.send(string(msg) + ".\r\n")
	expectCode(t, l, "250")
	l.send("QUIT\r\n")
	expectCode(t, l, "221")
	awaitDelivery(t, m, rcpt, msg)
	if !hasLine(hs.postfixLog(), "client=unknown["+addrGB+"]", "sasl_username=alice@example.test") {
		t.Fatalf("postfix log lacks client=unknown[%s] with sasl_username=alice@example.test:\n%s", addrGB, hs.postfixLog())
	}
}

func expectCode(t *testing.T, l *lineConn, code string) {
	t.Helper()
	if r := l.smtpReply(); !strings.HasPrefix(r[len(r)-1], code) {
		t.Fatalf("reply = %q, want %s", r, code)
	}
}

// TestSMTPVerifySMTPAuth: with verify: smtp-auth, mailgate checks the
// password by AUTH at Postfix's submission listener (Dovecot SASL): a
// good login delivers, a wrong one gets 535 5.7.8.
func TestSMTPVerifySMTPAuth(t *testing.T) {
	hs := need(t)
	const rcpt = "alice@example.test"
	resetMailbox(t, rcpt)
	c := newCfg(t)
	c.Verify = "smtp-auth"
	c.BackendSMTP = hs.subPort
	m := startCfg(t, c)
	msg := makeMessage("bob@example.test", rcpt, "verify smtp-auth", 2000)
	if out, err := swaks(t, m.Addr["submission"], "--tls", "PLAIN", "bob@example.test", "bobpass", rcpt, msg); err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	awaitDelivery(t, m, rcpt, msg)
	if r := smtpDialog(t, badSMTPAuth, m.Addr["smtps"], "", false).authPlain("bob@example.test", wrongPass); !strings.HasPrefix(r, "535 5.7.8") {
		t.Fatalf("wrong password reply = %q, want 535 5.7.8", r)
	}
}

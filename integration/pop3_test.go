//go:build integration

package integration

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"
)

// pop3LoginRaw connects to a POP3 listener (optionally from laddr, with a
// PROXY header naming proxySrc), sends USER and PASS and returns the
// reply to PASS exactly as received.
func pop3LoginRaw(t *testing.T, laddr, address, proxySrc, user, pass string) string {
	t.Helper()
	l := newLineConn(t, dialFrom(t, laddr, address))
	if proxySrc != "" {
		l.send(proxyHeader(proxySrc, address))
	}
	l.startTLS()
	if g := l.line(); !strings.HasPrefix(g, "+OK") {
		t.Fatalf("greeting = %q, want +OK", g)
	}
	l.send("USER " + user + "\r\n")
	if r := l.line(); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("USER reply = %q, want +OK", r)
	}
	l.send("PASS " + pass + "\r\n")
	return l.line()
}

// TestPOP3RetrieveLargeAndDelete: poplib over POP3S retrieves a 10 MB
// message byte for byte, deletes it, and the deletion is visible through
// IMAP after QUIT.
func TestPOP3RetrieveLargeAndDelete(t *testing.T) {
	const user = "bob@example.test"
	resetMailbox(t, user)
	msg := makeMessage("alice@example.test", user, "pop3 ten megabytes", 10<<20)
	appendDirect(t, user, msg)
	m := startCfg(t, newCfg(t))
	_, port := splitPort(t, m.Addr["pop3s"])
	out, err := python(t, `
import poplib, ssl, sys, hashlib
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
poplib._MAXLINE = 1 << 20
p = poplib.POP3_SSL("127.0.0.1", int(sys.argv[1]), context=ctx)
p.user(sys.argv[2])
p.pass_(sys.argv[3])
count, size = p.stat()
resp, lines, octets = p.retr(1)
body = b"\r\n".join(lines) + b"\r\n"
print(count, size, hashlib.sha256(body).hexdigest())
p.dele(1)
print(p.quit().decode())
`, port, user, users[user])
	if err != nil {
		t.Fatalf("poplib: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := fmt.Sprintf("1 %d %x", len(msg), sha256.Sum256(msg))
	if len(lines) != 2 || lines[0] != want || !strings.HasPrefix(lines[1], "+OK") {
		t.Fatalf("poplib output = %q, want %q then +OK", out, want)
	}
	if n := countDirect(t, user); n != 0 {
		t.Fatalf("after DELE and QUIT the INBOX holds %d messages, want 0", n)
	}
}

// TestPOP3Curl: curl retrieves a message over POP3S.
func TestPOP3Curl(t *testing.T) {
	const user = "carol@example.test"
	resetMailbox(t, user)
	msg := makeMessage("alice@example.test", user, "pop3 curl", 4000)
	appendDirect(t, user, msg)
	m := startCfg(t, newCfg(t))
	out, err := runTool(t, "curl", "-sS", "-k", "--max-time", "60", "pop3s://"+m.Addr["pop3s"]+"/1", "-u", user+":"+users[user])
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	if out != string(msg) {
		t.Fatalf("curl retrieved %d bytes, want the %d stored", len(out), len(msg))
	}
	if n := countDirect(t, user); n != 1 {
		t.Fatalf("RETR without DELE left %d messages, want 1", n)
	}
}

// TestPOP3FailuresLookAlike: wrong password and denied countries get the
// same -ERR [AUTH] reply; denials never reach Dovecot.
func TestPOP3FailuresLookAlike(t *testing.T) {
	hs := need(t)
	m := startCfg(t, newCfg(t))
	wrong := pop3LoginRaw(t, badPOP3, m.Addr["pop3s"], "", "alice@example.test", wrongPass)
	if !strings.HasPrefix(wrong, "-ERR [AUTH]") {
		t.Fatalf("wrong password reply = %q, want -ERR [AUTH]", wrong)
	}
	mark := len(hs.dovecotLog())
	denied := pop3LoginRaw(t, ruLocal, m.Addr["pop3s"], "", "carol@example.test", users["carol@example.test"])
	proxied := pop3LoginRaw(t, "", m.Addr["pop3s-lb"], addrCN, "carol@example.test", users["carol@example.test"])
	m.sameReply(t, []string{"wrong password", "denied (127.0.0.2)", "denied (PROXY " + addrCN + ")"}, wrong, denied, proxied)
	m.WaitCount(t, "COUNTRYFAILED", 2)
	if !hasLine(m.Log(), "COUNTRYFAILED", "remote="+addrCN, "country=CN") {
		t.Errorf("no COUNTRYFAILED line with remote=%s and country=CN; log:\n%s", addrCN, m.Log())
	}
	time.Sleep(500 * time.Millisecond)
	if after := logSince(hs.dovecotLog(), mark); strings.Contains(after, "carol@example.test") || strings.Contains(after, addrCN) || strings.Contains(after, ruLocal) {
		t.Fatalf("Dovecot was contacted for a denied login:\n%s", after)
	}
}

// TestPOP3BackendDown: with Dovecot's POP3 port closed, a correct login
// gets the uniform failure once (it finds the backend down after the
// decision), then -ERR [SYS/TEMP].
func TestPOP3BackendDown(t *testing.T) {
	c := newCfg(t)
	c.BackendPOP3 = closedPort(t)
	m := startCfg(t, c)
	// The first login finds the backend down after the decision: the
	// uniform failure. The next, the backend known down: SYS/TEMP.
	reply := pop3LoginRaw(t, "", m.Addr["pop3s"], "", "alice@example.test", "alicepass")
	if !strings.HasPrefix(reply, "-ERR [AUTH]") {
		t.Fatalf("first login, backend down: %q, want -ERR [AUTH]", reply)
	}
	reply = pop3LoginRaw(t, "", m.Addr["pop3s"], "", "alice@example.test", "alicepass")
	if !strings.HasPrefix(reply, "-ERR [SYS/TEMP]") {
		t.Fatalf("next login, backend known down: %q, want -ERR [SYS/TEMP]", reply)
	}
}

// TestPOP3ProxyProtocolForwardsClient: Dovecot logs the address from the
// PROXY header, passed on with POP3 XCLIENT.
func TestPOP3ProxyProtocolForwardsClient(t *testing.T) {
	hs := need(t)
	m := startCfg(t, newCfg(t))
	reply := pop3LoginRaw(t, "", m.Addr["pop3s-lb"], addrGB, "alice@example.test", "alicepass")
	if !strings.HasPrefix(reply, "+OK") {
		t.Fatalf("login via PROXY from %s = %q, want +OK", addrGB, reply)
	}
	want := "Login: user=<alice@example.test>, method=PLAIN, rip=" + addrGB + ","
	if !waitFor(func() bool { return hasLine(hs.dovecotLog(), "pop3-login:", want) }, eventually) {
		t.Fatalf("dovecot log lacks a pop3-login line with %q:\n%s", want, hs.dovecotLog())
	}
}

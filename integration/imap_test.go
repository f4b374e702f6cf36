//go:build integration

package integration

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
)

// imapLoginRaw connects to an IMAP listener (optionally from laddr, with a
// PROXY header naming proxySrc), logs in with LOGIN and returns the
// tagged reply line exactly as received.
func imapLoginRaw(t *testing.T, laddr, address, proxySrc, user, pass string) string {
	t.Helper()
	l := newLineConn(t, dialFrom(t, laddr, address))
	if proxySrc != "" {
		l.send(proxyHeader(proxySrc, address))
	}
	l.startTLS()
	if g := l.line(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting = %q, want * OK", g)
	}
	l.send("a1 LOGIN " + imapQuote(user) + " " + imapQuote(pass) + "\r\n")
	return l.until("a1 ")
}

func imapQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// TestIMAPSessionThroughSplice: go-imap's client over IMAPS logs in,
// SELECTs, APPENDs a 10 MB message and FETCHes it back byte for byte,
// sees a message delivered by a second session while in IDLE, and logs
// out.
func TestIMAPSessionThroughSplice(t *testing.T) {
	const user = "alice@example.test"
	resetMailbox(t, user)
	m := startCfg(t, newCfg(t))

	exists := make(chan uint32, 16)
	c := imapDial(t, m.Addr["imaps"], true, user, users[user], &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					exists <- *d.NumMessages
				}
			},
		},
	})
	m.WaitLog(t, "AUTHPASS")
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("select: %v", err)
	}

	big := makeMessage("alice@example.test", user, "ten megabytes", 10<<20)
	app := c.Append("INBOX", int64(len(big)), nil)
	if _, err := app.Write(big); err != nil {
		t.Fatal(err)
	}
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Wait(); err != nil {
		t.Fatalf("append 10 MB: %v", err)
	}
	got := fetchAll(t, c)
	if len(got) != 1 || !bytes.Equal(got[0], big) {
		t.Fatalf("fetched %d messages; first equal to the appended one: %v", len(got), len(got) == 1 && bytes.Equal(got[0], big))
	}
	drain(exists)

	idle, err := c.Idle()
	if err != nil {
		t.Fatalf("idle: %v", err)
	}
	// A second session through mailgate delivers while the first idles.
	c2 := imapDial(t, m.Addr["imaps"], true, user, users[user], nil)
	small := makeMessage("bob@example.test", user, "during idle", 500)
	app2 := c2.Append("INBOX", int64(len(small)), nil)
	app2.Write(small)
	app2.Close()
	if _, err := app2.Wait(); err != nil {
		t.Fatalf("append from second session: %v", err)
	}
	select {
	case n := <-exists:
		if n != 2 {
			t.Errorf("EXISTS during IDLE = %d, want 2", n)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no EXISTS through the splice while idling")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatalf("idle done: %v", err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatalf("logout: %v", err)
	}
}

func drain(ch chan uint32) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// TestIMAPPythonImaplib: Python's imaplib over implicit TLS and over the
// STARTTLS listener.
func TestIMAPPythonImaplib(t *testing.T) {
	m := startCfg(t, newCfg(t))
	_, implicitPort := splitPort(t, m.Addr["imaps"])
	_, starttlsPort := splitPort(t, m.Addr["imap"])
	out, err := python(t, `
import imaplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
c = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[1]), ssl_context=ctx)
r = [c.login("bob@example.test", "bobpass")[0], c.select("INBOX")[0], c.logout()[0]]
c = imaplib.IMAP4("127.0.0.1", int(sys.argv[2]))
assert "STARTTLS" in c.capabilities, c.capabilities
c.starttls(ssl_context=ctx)
r += [c.login("bob@example.test", "bobpass")[0], c.select("INBOX")[0], c.logout()[0]]
print(" ".join(r))
`, implicitPort, starttlsPort)
	if err != nil {
		t.Fatalf("imaplib: %v\n%s", err, out)
	}
	if got, want := strings.TrimSpace(out), "OK OK BYE OK OK BYE"; got != want {
		t.Fatalf("imaplib results = %q, want %q", got, want)
	}
}

// TestIMAPCurl: curl lists the mailboxes and fetches a message over IMAPS.
func TestIMAPCurl(t *testing.T) {
	const user = "carol@example.test"
	resetMailbox(t, user)
	msg := makeMessage("alice@example.test", user, "curl fetch", 3000)
	appendDirect(t, user, msg)
	m := startCfg(t, newCfg(t))

	out, err := runTool(t, "curl", "-sS", "-k", "--max-time", "60", "imaps://"+m.Addr["imaps"]+"/", "-u", user+":"+users[user])
	if err != nil {
		t.Fatalf("curl list: %v", err)
	}
	if !strings.Contains(out, "INBOX") || !strings.Contains(out, "Trash") {
		t.Fatalf("curl mailbox list lacks INBOX/Trash:\n%s", out)
	}
	out, err = runTool(t, "curl", "-sS", "-k", "--max-time", "60", "imaps://"+m.Addr["imaps"]+"/INBOX;MAILINDEX=1", "-u", user+":"+users[user])
	if err != nil {
		t.Fatalf("curl fetch: %v", err)
	}
	if out != string(msg) {
		t.Fatalf("curl fetched %d bytes, want the %d stored (equal: false)", len(out), len(msg))
	}
}

// TestIMAPFailuresLookAlike: a wrong password, a login from a denied
// country via a local address and one via the PROXY listener all get the
// same reply; the denials are logged as COUNTRYFAILED and never reach
// Dovecot.
func TestIMAPFailuresLookAlike(t *testing.T) {
	hs := need(t)
	m := startCfg(t, newCfg(t))

	wrong := imapLoginRaw(t, badIMAP, m.Addr["imaps"], "", "alice@example.test", wrongPass)
	if !strings.HasPrefix(wrong, "a1 NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("wrong password reply = %q, want a1 NO [AUTHENTICATIONFAILED]", wrong)
	}
	m.WaitLog(t, "AUTHFAILED")
	if !hasLine(m.Log(), "AUTHFAILED", "remote="+badIMAP, "user=alice@example.test") {
		t.Errorf("no AUTHFAILED line with remote=%s and the user; log:\n%s", badIMAP, m.Log())
	}

	mark := len(hs.dovecotLog())
	denied := imapLoginRaw(t, ruLocal, m.Addr["imaps"], "", "carol@example.test", users["carol@example.test"])
	proxied := imapLoginRaw(t, "", m.Addr["imaps-lb"], addrRU, "carol@example.test", users["carol@example.test"])
	m.sameReply(t, []string{"wrong password", "denied (127.0.0.2)", "denied (PROXY " + addrRU + ")"}, wrong, denied, proxied)
	m.WaitCount(t, "COUNTRYFAILED", 2)
	// fail2ban reads the client address from these lines.
	for _, remote := range []string{ruLocal, addrRU} {
		if !hasLine(m.Log(), "COUNTRYFAILED", "remote="+remote, "user=carol@example.test", "country=RU") {
			t.Errorf("no COUNTRYFAILED line with remote=%s, the user and country=RU; log:\n%s", remote, m.Log())
		}
	}
	time.Sleep(500 * time.Millisecond) // let Dovecot write anything it got
	if after := logSince(hs.dovecotLog(), mark); strings.Contains(after, "carol@example.test") || strings.Contains(after, addrRU) || strings.Contains(after, ruLocal) {
		t.Fatalf("Dovecot was contacted for a denied login:\n%s", after)
	}
}

// TestIMAPBackendDown: with Dovecot's port closed, a correct login is
// answered promptly, not hung: the first, which finds the backend down
// after the policy decision, with the uniform failure (a reply that
// depended on the decision would tell a denied login from an allowed
// one); from then on, the backend known down before any decision, every
// login, allowed or denied, with the temporary failure.
func TestIMAPBackendDown(t *testing.T) {
	c := newCfg(t)
	c.BackendIMAP = closedPort(t)
	m := startCfg(t, c)
	reply := imapLoginRaw(t, "", m.Addr["imaps"], "", "alice@example.test", "alicepass")
	if !strings.HasPrefix(reply, "a1 NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("first login, backend down: %q, want a1 NO [AUTHENTICATIONFAILED]", reply)
	}
	allowed := imapLoginRaw(t, "", m.Addr["imaps"], "", "alice@example.test", "alicepass")
	denied := imapLoginRaw(t, ruLocal, m.Addr["imaps"], "", "carol@example.test", "carolpass")
	if !strings.HasPrefix(allowed, "a1 NO [UNAVAILABLE]") {
		t.Fatalf("next login, backend known down: %q, want a1 NO [UNAVAILABLE]", allowed)
	}
	m.sameReply(t, []string{"allowed", "denied"}, allowed, denied)
}

// TestIMAPProxyProtocolForwardsClient: a login through the PROXY listener
// from a GB address succeeds and Dovecot logs that address (IMAP ID).
func TestIMAPProxyProtocolForwardsClient(t *testing.T) {
	hs := need(t)
	m := startCfg(t, newCfg(t))
	reply := imapLoginRaw(t, "", m.Addr["imaps-lb"], addrGB, "bob@example.test", "bobpass")
	if !strings.HasPrefix(reply, "a1 OK") {
		t.Fatalf("login via PROXY from %s = %q, want a1 OK", addrGB, reply)
	}
	want := "Login: user=<bob@example.test>, method=PLAIN, rip=" + addrGB + ","
	if !waitFor(func() bool { return hasLine(hs.dovecotLog(), "imap-login:", want) }, eventually) {
		t.Fatalf("dovecot log lacks an imap-login line with %q:\n%s", want, hs.dovecotLog())
	}
}

// TestIMAPTLSCertificateFromFiles: with tls.certificates naming a PEM
// certificate and key, IMAPS presents exactly that certificate (the client
// verifies it against its own root, no InsecureSkipVerify), and a login
// works over it.
func TestIMAPTLSCertificateFromFiles(t *testing.T) {
	hs := need(t)
	certPEM, keyPEM, pool := testCertificate(t, "mail.example.test")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	m := startMailgate(t, func(port int) string {
		return fmt.Sprintf(`hostname: mail.example.test
listeners:
  - {name: imaps, protocol: imap, address: "127.0.0.1:%d", tls: implicit}
backends:
  imap: {address: "127.0.0.1:%d", tls: none, forward_client: true}
tls:
  certificates: [{cert: %q, key: %q}]
geo:
  overrides: {"127.0.0.1/32": GB}
policy:
  allow_countries: [GB]
`, port, hs.imapPort, certFile, keyFile)
	})
	tc := &tls.Config{RootCAs: pool, ServerName: "mail.example.test"}
	conn, err := tls.Dial("tcp", m.Addr["imaps"], tc)
	if err != nil {
		t.Fatalf("TLS with the configured certificate: %v", err)
	}
	st := conn.ConnectionState()
	conn.Close()
	if st.Version < tls.VersionTLS12 {
		t.Errorf("negotiated TLS version %x, want 1.2 or later", st.Version)
	}
	c, err := imapclient.DialTLS(m.Addr["imaps"], &imapclient.Options{TLSConfig: tc})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice@example.test", "alicepass").Wait(); err != nil {
		t.Fatalf("login over verified TLS: %v", err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestIMAPPlaintextLoginRefused: on the STARTTLS listener with an empty
// plaintext_from, the pre-TLS capabilities say LOGINDISABLED and a LOGIN
// sent in clear is refused without reaching Dovecot (RFC 9051 6.2.3).
func TestIMAPPlaintextLoginRefused(t *testing.T) {
	hs := need(t)
	m := startCfg(t, newCfg(t))
	l := newLineConn(t, dialFrom(t, "", m.Addr["imap"]))
	if g := l.line(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting = %q, want * OK", g)
	}
	l.send("a0 CAPABILITY\r\n")
	caps := l.until("* CAPABILITY")
	l.until("a0 ")
	if !strings.Contains(caps, "LOGINDISABLED") || !strings.Contains(caps, "STARTTLS") || strings.Contains(caps, "AUTH=PLAIN") {
		t.Errorf("pre-TLS capabilities = %q, want STARTTLS and LOGINDISABLED, no AUTH=PLAIN", caps)
	}
	mark := len(hs.dovecotLog())
	l.send("a1 LOGIN " + imapQuote("carol@example.test") + " " + imapQuote(users["carol@example.test"]) + "\r\n")
	if r := l.until("a1 "); strings.HasPrefix(r, "a1 OK") {
		t.Fatalf("plaintext LOGIN = %q, want it refused", r)
	}
	time.Sleep(500 * time.Millisecond)
	if after := logSince(hs.dovecotLog(), mark); strings.Contains(after, "carol@example.test") {
		t.Fatalf("Dovecot was contacted for a plaintext login:\n%s", after)
	}
}

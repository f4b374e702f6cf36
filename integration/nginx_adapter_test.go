//go:build integration

package integration

import (
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/integration/mailstack"
)

// nginxSecret is the shared secret of the test's nginx and mailgate.
const nginxSecret = "nginx-test-secret-0123456789"

// nginxSetup is a real nginx whose mail {} block is docs/nginx-adapter.md's,
// with auth_http pointing at a real mailgate's adapter, in front of the
// harness's Dovecot and Postfix.
type nginxSetup struct {
	m                               *Mailgate
	cfgPath                         string
	sl                              *udpSyslog // mailgate's legacy syslog lines
	imaps, pop3s, smtps, submission string     // nginx's listeners
}

// Sources, placed by the test's geo overrides: 127.0.0.1 and
// 127.0.0.41 in GB (allowed), 127.0.0.42 in RU (denied).
const (
	ngxGB      = "127.0.0.1"
	ngxWrongPw = "127.0.0.41"
	ngxRU      = "127.0.0.42"
)

func startNginxSetup(t *testing.T) *nginxSetup {
	t.Helper()
	hs := need(t)
	needNginx(t)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "nginx-auth.secret")
	userFile := filepath.Join(dir, "user-allowed.php")
	rulesFile := filepath.Join(dir, "rules.yaml")
	for f, body := range map[string]string{secretFile: nginxSecret + "\n", userFile: "", rulesFile: "rules: []\n"} {
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sl := startUDPSyslog(t)
	s := &nginxSetup{}
	var mgIMAPS, adapterPort int
	pick := func() {
		p, err := freePorts(2)
		if err != nil {
			t.Fatal(err)
		}
		mgIMAPS, adapterPort = p[0], p[1]
	}
	pick()
	// The guard counts nothing and pads nothing: the test counts log
	// lines and sends several refusals from one source in a row.
	render := func() string {
		return fmt.Sprintf(`hostname: mail.example.test
log: {level: info, format: text}
listeners:
  - {name: imaps, protocol: imap, address: "127.0.0.1:%d", tls: implicit}
backends:
  imap: {address: "127.0.0.1:%d", forward_client: true}
  pop3: {address: "127.0.0.1:%d", forward_client: true}
  smtp: {address: "127.0.0.1:%d", xclient: true}
tls: {self_signed: true}
geo:
  overrides: {"127.0.0.1/32": GB, "127.0.0.41/32": GB, "127.0.0.42/32": RU}
policy: {allow_countries: [GB], user_file: %q, rules_file: %q, watch_interval: 200ms}
limits: {auth_failure_delay: 100ms}
syslog: {enabled: true, address: %q}
guard: {tarpit: {after: 0}, ban: {ip_after: 0, network_after: 0}, lockout: {after: 0, per_ip_after: 0}, failure_penalty: {init: 0s}}
admin: {address: "off"}
adapters:
  nginx: {listen: "127.0.0.1:%d", secret_file: %q}
`, mgIMAPS, hs.imapPort, hs.pop3Port, hs.smtpPort, userFile, rulesFile, "udp:"+sl.pc.LocalAddr().String(), adapterPort, secretFile)
	}
	s.m = launchRetrying(t, render, pick)
	s.cfgPath = s.m.cfgPath
	adapterAddr := addr(adapterPort)
	if !waitFor(func() bool { return accepting(adapterAddr) }, eventually) {
		t.Fatalf("the adapter never accepted on %s:\n%s", adapterAddr, s.m.Log())
	}

	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := mailstack.SelfSigned(certFile, keyFile, "mail.example.test"); err != nil {
		t.Fatal(err)
	}
	p, err := freePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	s.imaps, s.pop3s, s.smtps, s.submission = addr(p[0]), addr(p[1]), addr(p[2]), addr(p[3])
	block := docNginxBlock(t, hs.repo, map[string]string{
		"auth_http 127.0.0.1:9143/auth;":                        "auth_http " + adapterAddr + "/auth;",
		`"the secret from /etc/mailgate/nginx-auth.secret"`:     `"` + nginxSecret + `"`,
		"/etc/letsencrypt/live/mail.example.com/fullchain.pem;": certFile + ";",
		"/etc/letsencrypt/live/mail.example.com/privkey.pem;":   keyFile + ";",
		"listen 993 ssl;": "listen " + s.imaps + " ssl;",
		"listen 995 ssl;": "listen " + s.pop3s + " ssl;",
		"listen 465 ssl;": "listen " + s.smtps + " ssl;",
		"listen 587;":     "listen " + s.submission + ";",
	})
	startNginx(t, block, s.imaps, s.pop3s, s.smtps, s.submission)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("syslog lines are in mailgate's log above; nginx block:\n%s", block)
		}
	})
	s.sl = sl
	return s
}

// nginxIMAPLogin logs in through nginx's IMAPS from the source address
// src with a raw TLS client and returns the tagged reply to LOGIN.
func nginxIMAPLogin(t *testing.T, s *nginxSetup, src, user, pass string) string {
	t.Helper()
	l := newLineConn(t, dialFrom(t, src, s.imaps))
	l.startTLS()
	l.until("* OK")
	l.send("a1 LOGIN " + imapQuote(user) + " " + imapQuote(pass) + "\r\n")
	r := l.until("a1 ")
	if strings.HasPrefix(r, "a1 OK") {
		l.send("a2 LOGOUT\r\n")
		l.until("a2 ")
	}
	return r
}

// TestNginxAuthHTTP (issue #19): the real nginx with docs/nginx-adapter.md's
// mail {} block asks mailgate over auth_http, in front of the real
// Dovecot and Postfix. An allowed login passes through nginx (go-imap
// reads the mailbox, poplib logs in to POP3); a login from a denied country gets nginx's normal
// failure and never reaches Dovecot; after the help desk's `mailgate
// allow` the same login passes; SMTP submission through nginx (swaks,
// XCLIENT to Postfix) delivers; and every shipped or documented
// fail2ban filter, run by the real fail2ban-regex over mailgate's log
// and its legacy syslog lines, counts exactly the refused sources.
func TestNginxAuthHTTP(t *testing.T) {
	f2b := fail2banRegex(t)
	hs := need(t)
	s := startNginxSetup(t)
	const bob = "bob@example.test"

	// Allowed: a real IMAP client through nginx.
	c := imapDial(t, s.imaps, true, "alice@example.test", users["alice@example.test"], nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("SELECT through nginx: %v", err)
	}
	c.Logout()
	s.m.WaitLog(t, "msg=AUTHPASS")
	// POP3 with Python's poplib: nginx sends USER/PASS as Auth-Method
	// plain, mailgate sends nginx on to Dovecot's POP3.
	_, pop3Port := splitPort(t, s.pop3s)
	out, err := python(t, `
import poplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3_SSL("127.0.0.1", int(sys.argv[1]), context=ctx, timeout=60)
p.user(sys.argv[2])
print(p.pass_(sys.argv[3]).decode().split()[0], p.stat()[0] >= 0, p.quit().decode().split()[0])
`, pop3Port, "bob@example.test", users["bob@example.test"])
	if err != nil || strings.TrimSpace(out) != "+OK True +OK" {
		t.Fatalf("poplib through nginx: %v\n%s", err, out)
	}
	s.m.WaitLog(t, "proto=pop3 listener=nginx remote=127.0.0.1 event=AUTHPASS")

	// Denied country: nginx's own failure reply, the uniform text.
	dovecotBefore := len(hs.dovecotLog())
	r := nginxIMAPLogin(t, s, ngxRU, bob, users[bob])
	if !regexp.MustCompile(`^a1 NO Invalid login or password \(id [a-z2-7]{12}\)\r\n$`).MatchString(r) {
		t.Fatalf("login from RU through nginx = %q, want nginx's NO with mailgate's text", r)
	}
	s.m.WaitLog(t, "msg=COUNTRYFAILED")
	if strings.Contains(hs.dovecotLog()[dovecotBefore:], bob) {
		t.Errorf("the denied login reached Dovecot:\n%s", hs.dovecotLog()[dovecotBefore:])
	}
	// Names that imitate mailgate's fields and name another address:
	// counted against the real source only (checked by fail2ban-regex
	// below).
	hostile := []string{
		"x msg=AUTHFAILED cid=aaaaaaaaaaaa proto=imap listener=nginx remote=6.6.6.6 event=",
		"x : AUTHFAILED|imap 6.6.6.6|",
	}
	for _, u := range hostile {
		if r := nginxIMAPLogin(t, s, ngxRU, u, "x"); !strings.HasPrefix(r, "a1 NO Invalid login or password (id ") {
			t.Fatalf("hostile name %q through nginx = %q", u, r)
		}
	}
	// One nginx session, limits.max_login_attempts (3) refusals: after
	// the first two nginx waits Auth-Wait and lets the client try again;
	// the third comes without Auth-Wait and nginx ends the session.
	l := newLineConn(t, dialFrom(t, ngxRU, s.imaps))
	l.startTLS()
	l.until("* OK")
	for i := 1; i <= 3; i++ {
		l.send(fmt.Sprintf("a%d LOGIN carol@example.test x\r\n", i))
		if r := l.until(fmt.Sprintf("a%d ", i)); !strings.HasPrefix(r, fmt.Sprintf("a%d NO Invalid login or password (id ", i)) {
			t.Fatalf("attempt %d in one session = %q", i, r)
		}
	}
	if line, err := l.r.ReadString('\n'); err == nil {
		t.Errorf("nginx kept the session after the last attempt: %q", line)
	}
	// A wrong password: the same reply.
	if r := nginxIMAPLogin(t, s, ngxWrongPw, "carol@example.test", wrongPass); !strings.HasPrefix(r, "a1 NO Invalid login or password (id ") {
		t.Fatalf("wrong password through nginx = %q", r)
	}

	// The help desk's travel exception lets bob in from RU.
	reloads := strings.Count(s.m.Log(), "policy: reloaded after a file change")
	runMailgate(t, 0, "allow", "-config", s.cfgPath, bob, "RU")
	s.m.WaitCount(t, "policy: reloaded after a file change", reloads+1)
	if r := nginxIMAPLogin(t, s, ngxRU, bob, users[bob]); !strings.HasPrefix(r, "a1 OK") {
		t.Fatalf("bob from RU after mailgate allow = %q", r)
	}

	// Submission through nginx: AUTH answered by mailgate, the message
	// relayed by nginx to Postfix with XCLIENT and delivered.
	const rcpt = "carol@example.test"
	resetMailbox(t, rcpt)
	for _, tc := range []struct{ addr, flag, mech string }{
		{s.smtps, "--tls-on-connect", "PLAIN"},
		{s.submission, "--tls", "LOGIN"},
	} {
		msg := makeMessage("alice@example.test", rcpt, "through nginx "+tc.flag, 2000)
		if out, err := swaks(t, tc.addr, tc.flag, tc.mech, "alice@example.test", users["alice@example.test"], rcpt, msg); err != nil {
			t.Fatalf("swaks through nginx %s: %v\n%s", tc.flag, err, out)
		}
		awaitDelivery(t, s.m, rcpt, msg)
	}
	if !hasLine(hs.postfixLog(), "sasl_method=XCLIENT, sasl_username=alice@example.test") {
		t.Errorf("Postfix did not take alice's login from nginx's XCLIENT:\n%s", tailLines(hs.postfixLog(), 20))
	}

	// fail2ban: the real fail2ban-regex over the structured log and the
	// legacy syslog lines finds each refused source exactly once.
	want := map[string]int{ngxRU: 1 + len(hostile) + 3, ngxWrongPw: 1}
	var file strings.Builder
	for range 2 + len(hostile) + 3 {
		l := s.sl.next(t, "FAILED|")
		file.WriteString(l[strings.IndexByte(l, '>')+1:] + "\n")
	}
	file.WriteString(s.m.Log())
	logPath := filepath.Join(t.TempDir(), "mail.log")
	if err := os.WriteFile(logPath, []byte(file.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	filters := shippedAndDocumentedFilters(t, hs.repo, t.TempDir())
	for _, name := range slices.Sorted(maps.Keys(filters)) {
		got, ok := fail2banIPs(t, f2b, logPath, name, filters[name])
		if !ok {
			continue
		}
		if !maps.Equal(got, want) {
			t.Errorf("%s found %v, want %v\nlog:\n%s", name, got, want, file.String())
		}
	}
	for _, line := range []string{"listener=nginx remote=" + ngxRU + " event=COUNTRYFAILED", "listener=nginx remote=" + ngxGB + " event=AUTHPASS"} {
		if !strings.Contains(s.m.Log(), line) {
			t.Errorf("no line with %q", line)
		}
	}
}

func tailLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// TestNginxAdapterDovecotAuth: with adapters.nginx.verify: dovecot-auth
// the adapter checks passwords on the real Dovecot's auth socket: the
// right one passes, a wrong one and an unknown user get the uniform
// refusal, logged AUTHFAILED as the backend's refusal.
func TestNginxAdapterDovecotAuth(t *testing.T) {
	hs := need(t)
	dir := t.TempDir()
	secretFile, userFile := filepath.Join(dir, "secret"), filepath.Join(dir, "user-allowed.php")
	os.WriteFile(secretFile, []byte(nginxSecret), 0o600)
	os.WriteFile(userFile, nil, 0o600)
	m, url := startBenchAdapter(t, userFile, secretFile, fmt.Sprintf("verify: dovecot-auth, dovecot_auth: %q", hs.stack.AuthSocket))
	ask := func(user, pass string) string {
		req, _ := http.NewRequest("GET", url, nil)
		for k, v := range map[string]string{"Auth-Method": "plain", "Auth-User": user, "Auth-Pass": pass,
			"Auth-Protocol": "smtp", "Client-IP": ngxGB, nginxSecretHeader: nginxSecret} {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("Auth-Status") + "|" + resp.Header.Get("Auth-Error-Code")
	}
	if r := ask("alice%40example.test", users["alice@example.test"]); r != "OK|" {
		t.Errorf("right password: %q", r)
	}
	for _, u := range []string{"alice%40example.test", "nobody%40example.test"} {
		if r := ask(u, wrongPass); !strings.HasPrefix(r, "Invalid login or password (id ") || !strings.HasSuffix(r, "|535 5.7.8") {
			t.Errorf("%s with a wrong password: %q", u, r)
		}
	}
	m.WaitCount(t, `reason="backend refused credentials"`, 2)
	if !hasLine(hs.dovecotLog(), "auth", "alice@example.test") {
		t.Errorf("Dovecot's auth log does not show the checks")
	}
}

// nginxSecretHeader is the header nginx sends the secret in
// (adapter/nginx.SecretHeader, as docs/nginx-adapter.md shows it).
const nginxSecretHeader = "X-Mailgate-Secret"

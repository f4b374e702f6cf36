//go:build integration

package integration

import (
	"strings"
	"testing"
)

// TestBackendProxyProtocolDovecot: with backends.imap.proxy_protocol v1
// and v2, mailgate opens each backend connection to Dovecot's haproxy
// listener with a PROXY header, and Dovecot's login line names the
// client's address (rip=127.0.0.25), not mailgate's (127.0.0.1).
func TestBackendProxyProtocolDovecot(t *testing.T) {
	hs := need(t)
	for _, v := range []string{"v1", "v2"} {
		t.Run(v, func(t *testing.T) {
			c := newCfg(t)
			c.BackendIMAP = hs.stack.IMAPHAProxy
			m := launchRetrying(t, func() string {
				return strings.Replace(c.YAML(), "tls: none, forward_client: true}", "tls: none, forward_client: true, proxy_protocol: "+v+"}", 1)
			}, func() { c.pickPorts(t) })
			const from = "127.0.0.25"
			mark := len(hs.dovecotLog())
			if r := imapLoginRaw(t, from, m.Addr["imaps"], "", "carol@example.test", users["carol@example.test"]); !strings.HasPrefix(r, "a1 OK") {
				t.Fatalf("login through PROXY %s backend: %q", v, r)
			}
			if !waitFor(func() bool {
				return hasLine(logSince(hs.dovecotLog(), mark), "imap-login:", "Login: user=<carol@example.test>", "rip="+from+",")
			}, 10e9) {
				t.Fatalf("Dovecot's log does not show rip=%s:\n%s", from, logSince(hs.dovecotLog(), mark))
			}
		})
	}
}

// TestBackendProxyProtocolPostfix: with backends.smtp.proxy_protocol v1
// and v2 (verify: smtp-auth, no XCLIENT), Postfix's haproxy submission
// listener logs the client's address for the session and its login, not
// mailgate's. mailgate's own EHLO probe goes as PROXY UNKNOWN (v1) or
// LOCAL (v2), which Postfix logs as mailgate's address.
func TestBackendProxyProtocolPostfix(t *testing.T) {
	hs := need(t)
	for _, v := range []string{"v1", "v2"} {
		t.Run(v, func(t *testing.T) {
			c := newCfg(t)
			c.BackendSMTP = hs.stack.SubmissionHAProxy
			c.Verify = "smtp-auth"
			m := launchRetrying(t, func() string {
				return strings.Replace(c.YAML(), "verify: smtp-auth, xclient: true}", "verify: smtp-auth, xclient: false, proxy_protocol: "+v+"}", 1)
			}, func() { c.pickPorts(t) })
			const from = "127.0.0.26"
			mark := len(hs.postfixLog())
			l := smtpDialog(t, from, m.Addr["smtps"], "", false)
			if r := l.authPlain("bob@example.test", users["bob@example.test"]); !strings.HasPrefix(r, "235") {
				t.Fatalf("AUTH through PROXY %s backend: %q", v, r)
			}
			l.send("MAIL FROM:<bob@example.test>\r\n")
			expectCode(t, l, "250")
			l.send("RCPT TO:<alice@example.test>\r\n")
			expectCode(t, l, "250")
			l.send("QUIT\r\n")
			if !waitFor(func() bool {
				log := logSince(hs.postfixLog(), mark)
				return hasLine(log, "submission-haproxy/smtpd", "connect from", "["+from+"]") &&
					hasLine(log, "submission-haproxy/smtpd", "client=", "["+from+"]", "sasl_username=bob@example.test")
			}, 10e9) {
				t.Fatalf("Postfix's log does not show the session from %s:\n%s", from, logSince(hs.postfixLog(), mark))
			}
			// mailgate's own EHLO probe announces itself (PROXY UNKNOWN,
			// LOCAL) and shows as localhost; the user's session never does.
			if log := logSince(hs.postfixLog(), mark); hasLine(log, "submission-haproxy/smtpd", "client=localhost[127.0.0.1]") {
				t.Fatalf("Postfix saw the session as mailgate's:\n%s", log)
			}
		})
	}
}

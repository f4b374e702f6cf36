package proxy

import (
	"context"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/testwait"
	"github.com/mailgate/mailgate/policy"
)

const smtpProto = policy.SMTP

// smtpLimits are fastLimits without the greeting delay, which tests of
// the early-talker check set themselves.
func smtpLimits() Limits {
	l := fastLimits()
	l.GreetingDelay = -1
	return l
}

// dialSMTP connects and reads the greeting.
func (e *testEnv) dialSMTP() *client {
	c := e.dial()
	c.expect("220 mx.test ESMTP")
	return c
}

// ehlo sends EHLO and returns the keywords after the first line.
func (c *client) ehlo(name string) []string {
	c.t.Helper()
	c.send("EHLO " + name + "\r\n")
	first := c.expect("250")
	if first != "250-mx.test" && first != "250 mx.test" {
		c.t.Fatalf("EHLO first line %q", first)
	}
	var kws []string
	for more := first[3] == '-'; more; {
		l := c.expect("250")
		kws = append(kws, l[4:])
		more = l[3] == '-'
	}
	return kws
}

func TestSMTPEHLO(t *testing.T) {
	backendExts := []string{"PIPELINING", "SIZE 10240000", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8"}
	tests := []struct {
		name    string
		l       Listener
		want    []string
		notWant []string
	}{
		{"starttls", Listener{TLS: tlsStartTLS}, append([]string{"STARTTLS"}, backendExts...), []string{"AUTH PLAIN LOGIN"}},
		{"starttls plaintext allowed", Listener{TLS: tlsStartTLS, PlaintextFrom: loopbackPrefixes()}, []string{"STARTTLS", "AUTH PLAIN LOGIN"}, nil},
		{"none plaintext allowed", Listener{}, []string{"AUTH PLAIN LOGIN"}, []string{"STARTTLS"}},
		{"none", Listener{TLS: tlsNone}, backendExts, []string{"STARTTLS", "AUTH PLAIN LOGIN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.l.Protocol = smtpProto
			e := startServer(t, tt.l, smtpLimits())
			c := e.dialSMTP()
			kws := c.ehlo("client.example")
			for _, w := range tt.want {
				if !slices.Contains(kws, w) {
					t.Errorf("EHLO %q lacks %q", kws, w)
				}
			}
			for _, w := range tt.notWant {
				if slices.Contains(kws, w) {
					t.Errorf("EHLO %q has %q", kws, w)
				}
			}
			// Never the backend's own AUTH, STARTTLS, VRFY, ETRN or
			// XCLIENT: only mailgate's. CHUNKING neither: BDAT is refused
			// after login (smtpfilter.go).
			for _, bad := range []string{"VRFY", "ETRN", "XCLIENT NAME ADDR", "AUTH PLAIN", "AUTH", "CHUNKING"} {
				if slices.Contains(kws, bad) {
					t.Errorf("EHLO %q passes backend keyword %q", kws, bad)
				}
			}
			if n := len(slices.DeleteFunc(slices.Clone(kws), func(s string) bool { return s != "STARTTLS" })); n > 1 {
				t.Errorf("STARTTLS %d times", n)
			}
		})
	}
}

// Without the backend's list, only what mailgate itself does is offered.
func TestSMTPEHLOBackendDown(t *testing.T) {
	e := startServer(t, Listener{Protocol: smtpProto}, smtpLimits())
	e.smtp.setCaps(nil, context.DeadlineExceeded)
	c := e.dialSMTP()
	if kws := c.ehlo("x"); !slices.Equal(kws, []string{"AUTH PLAIN LOGIN"}) {
		t.Errorf("EHLO with backend down %q", kws)
	}
	// SIZE with a small backend limit is passed on as is.
	e.smtp.setCaps([]string{"SIZE 1000"}, nil)
	if kws := c.ehlo("x"); !slices.Equal(kws, []string{"SIZE 1000", "AUTH PLAIN LOGIN"}) {
		t.Errorf("EHLO %q", kws)
	}
}

func TestSMTPHELO(t *testing.T) {
	e := startServer(t, Listener{Protocol: smtpProto}, smtpLimits())
	c := e.dialSMTP()
	c.send("HELO legacy\r\n")
	c.expect("250 mx.test")
	c.send("AUTH PLAIN " + enc64("\x00alice\x00secret") + "\r\n")
	c.expect("235 2.7.0 Authentication successful")
	if bc := e.smtp.lastClient(); bc.Helo != "legacy" || bc.HeloCmd != "HELO" {
		t.Errorf("backend client %+v", bc)
	}
}

func TestSMTPAuthPipelined(t *testing.T) {
	e := startServer(t, Listener{Protocol: smtpProto}, smtpLimits())
	c := e.dialSMTP()
	// RFC 2920: a client may send the whole group in one write.
	c.send("EHLO client.example\r\nAUTH PLAIN " + enc64("\x00alice\x00secret") + "\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<x@example.net>\r\nDATA\r\n")
	c.expect("250-mx.test")
	for l := c.line(); strings.HasPrefix(l, "250-"); l = c.line() {
	}
	c.expect("235 2.7.0 Authentication successful")
	c.expect("250 echo MAIL FROM:<alice@example.org>")
	c.expect("250 echo RCPT TO:<x@example.net>")
	c.expect("250 echo DATA")
	bc := e.smtp.lastClient()
	if bc.Helo != "client.example" || bc.HeloCmd != "EHLO" || bc.Addr.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("backend client %+v", bc)
	}
	if got := e.smtp.loginList(); !slices.Equal(got, []string{"alice\x00secret"}) {
		t.Errorf("backend logins %q", got)
	}
	if r := e.auth.requests(); len(r) != 1 || r[0].Protocol != smtpProto {
		t.Errorf("policy requests %+v", r)
	}
	testwait.For(t, "AUTHPASS", func() bool { return strings.Contains(e.logs.String(), "msg=AUTHPASS") })
	if l := e.logs.String(); !strings.Contains(l, "proto=smtp") || strings.Contains(l, "secret") || strings.Contains(l, enc64("\x00alice\x00secret")) {
		t.Errorf("log lacks proto=smtp or shows credentials:\n%s", l)
	}
}

func TestSMTPAuth(t *testing.T) {
	plain := enc64("\x00alice\x00secret")
	tests := []struct {
		name   string
		dialog []string // client line, expected reply prefix, alternating
		ok     bool
	}{
		{"plain initial", []string{"AUTH PLAIN " + plain, "235 2.7.0"}, true},
		{"plain lower case", []string{"auth plain " + plain, "235 2.7.0"}, true},
		{"plain no initial", []string{"AUTH PLAIN", "334 ", plain, "235 2.7.0"}, true},
		{"login", []string{"AUTH LOGIN", "334 VXNlcm5hbWU6", enc64("alice"), "334 UGFzc3dvcmQ6", enc64("secret"), "235 2.7.0"}, true},
		{"login initial", []string{"AUTH LOGIN " + enc64("alice"), "334 UGFzc3dvcmQ6", enc64("secret"), "235 2.7.0"}, true},
		{"plain empty initial", []string{"AUTH PLAIN =", "501 5.5.2"}, false},
		{"login empty initial", []string{"AUTH LOGIN =", "501 5.5.2"}, false},
		{"cancel initial", []string{"AUTH PLAIN *", "501 5.0.0 Authentication cancelled"}, false},
		{"cancel", []string{"AUTH PLAIN", "334 ", "*", "501 5.0.0 Authentication cancelled"}, false},
		{"cancel login", []string{"AUTH LOGIN", "334 ", enc64("alice"), "334 ", "*", "501 5.0.0"}, false},
		{"bad base64", []string{"AUTH PLAIN", "334 ", "%%%", "501 5.5.2 Cannot decode response"}, false},
		{"bad initial base64", []string{"AUTH PLAIN AGFsaWNl", "501 5.5.2 Cannot decode response"}, false},
		{"unsupported", []string{"AUTH CRAM-MD5", "504 5.5.4"}, false},
		{"syntax", []string{"AUTH", "501 5.5.4"}, false},
		{"injection", []string{"AUTH PLAIN " + enc64("\x00alice\x00secret\r\nRCPT TO:<x@y>"), "501 5.5.2"}, false},
		{"wrong password", []string{"AUTH PLAIN " + enc64("\x00alice\x00bad"), "535 5.7.8 Authentication credentials invalid"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startServer(t, Listener{Protocol: smtpProto}, smtpLimits())
			c := e.dialSMTP()
			c.ehlo("x")
			for i := 0; i < len(tt.dialog); i += 2 {
				c.send(tt.dialog[i] + "\r\n")
				c.expect(tt.dialog[i+1])
			}
			if tt.ok {
				c.send("MAIL FROM:<a@b>\r\n")
				c.expect("250 echo MAIL FROM:<a@b>")
				return
			}
			// The session goes on after any failure.
			c.send("NOOP\r\n")
			c.expect("250 2.0.0 OK")
			if n := len(e.smtp.loginList()); n != 0 {
				t.Errorf("%d backend logins", n)
			}
		})
	}
}

func TestSMTPAuthBeforeEHLO(t *testing.T) {
	e := startServer(t, Listener{Protocol: smtpProto}, smtpLimits())
	c := e.dialSMTP()
	c.send("AUTH PLAIN " + enc64("\x00alice\x00secret") + "\r\n")
	c.expect("503 5.5.1")
	c.send("EHLO bad name\r\n")
	c.expect("501 5.5.4")
	c.send("AUTH PLAIN " + enc64("\x00alice\x00secret") + "\r\n")
	c.expect("503 5.5.1")
}

func TestSMTPNeedsAuth(t *testing.T) {
	e := startServer(t, Listener{Protocol: smtpProto}, Limits{MaxErrors: 100, GreetingDelay: -1})
	c := e.dialSMTP()
	c.ehlo("x")
	for _, cmd := range []string{"MAIL FROM:<a@b>", "RCPT TO:<a@b>", "DATA", "VRFY root", "mail from:<a@b>"} {
		c.send(cmd + "\r\n")
		c.expect("530 5.7.0 Authentication required")
	}
	for _, tt := range []struct{ in, want string }{
		{"NOOP", "250 2.0.0 OK"},
		{"NOOP anything", "250 2.0.0 OK"},
		{"RSET", "250 2.0.0 OK"},
		{"RSET x", "501 5.5.4"},
		{"HELP", "500 5.5.2"},
		{"STARTTLS", "502 5.5.1"},
		{"X\x00Y", "500 5.5.2"},
		{"EHLO " + strings.Repeat("a", 600), "500 5.5.2 Error: line too long"},
	} {
		c.send(tt.in + "\r\n")
		c.expect(tt.want)
	}
	// 512 octets with CRLF is still a command line (RFC 5321 4.5.3.1.4).
	c.send("NOOP " + strings.Repeat("a", 512-len("NOOP \r\n")) + "\r\n")
	c.expect("250 2.0.0 OK")
	c.send("NOOP " + strings.Repeat("a", 513-len("NOOP \r\n")) + "\r\n")
	c.expect("500 5.5.2 Error: line too long")
}

// A wrong password and a denied country get the same reply.
func TestSMTPUniformFailure(t *testing.T) {
	e := startServer(t, Listener{Protocol: smtpProto}, smtpLimits())
	idRE := regexp.MustCompile(`\(id [a-z2-7]+\)$`)
	var replies []string
	for _, cred := range []string{"\x00alice\x00wrong", "\x00bob\x00secret"} {
		c := e.dialSMTP()
		c.ehlo("x")
		c.send("AUTH PLAIN " + enc64(cred) + "\r\n")
		replies = append(replies, idRE.ReplaceAllString(c.expect("535 5.7.8 "), ""))
	}
	if replies[0] != replies[1] {
		t.Errorf("replies differ: %q", replies)
	}
	testwait.For(t, "log lines", func() bool {
		l := e.logs.String()
		return strings.Contains(l, "msg=AUTHFAILED") && strings.Contains(l, "msg=COUNTRYFAILED")
	})
}

func TestSMTPBackendUnavailable(t *testing.T) {
	e := startServer(t, Listener{Protocol: smtpProto}, smtpLimits())
	e.smtp.setUnavailable(true)
	c := e.dialSMTP()
	c.ehlo("x")
	c.send("AUTH PLAIN " + enc64("\x00alice\x00secret") + "\r\n")
	// After the decision the uniform reply; then the backend is known down.
	c.expect("535 5.7.8 Authentication credentials invalid (id ")
	c.send("AUTH PLAIN " + enc64("\x00alice\x00secret") + "\r\n")
	c.expect("454 4.7.0 Temporary authentication failure (id ")
	c.send("QUIT\r\n")
	c.expect("221 2.0.0")
	c.expectClosed()
}

func TestSMTPStartTLS(t *testing.T) {
	e := startServer(t, Listener{Protocol: smtpProto, TLS: tlsStartTLS}, smtpLimits())
	c := e.dialSMTP()
	c.ehlo("x")
	c.send("AUTH PLAIN " + enc64("\x00alice\x00secret") + "\r\n")
	c.expect("530 5.7.0 Must issue a STARTTLS command first")
	c.send("STARTTLS now\r\n")
	c.expect("501 5.5.4")
	c.send("STARTTLS\r\n")
	c.expect("220 2.0.0 Ready to start TLS")
	c.startTLS()
	// State is reset (RFC 3207 4.2): EHLO again before AUTH.
	c.send("AUTH PLAIN " + enc64("\x00alice\x00secret") + "\r\n")
	c.expect("503 5.5.1")
	kws := c.ehlo("after.tls")
	if slices.Contains(kws, "STARTTLS") || !slices.Contains(kws, "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO after STARTTLS %q", kws)
	}
	c.send("STARTTLS\r\n")
	c.expect("502 5.5.1")
	c.send("AUTH PLAIN " + enc64("\x00alice\x00secret") + "\r\n")
	c.expect("235 2.7.0")
	if bc := e.smtp.lastClient(); bc.Helo != "after.tls" {
		t.Errorf("backend got EHLO name %q", bc.Helo)
	}
}

// Commands sent along with STARTTLS are discarded (RFC 3207 6,
// CVE-2011-0411): none of them is answered after the handshake.
func TestSMTPStartTLSInjection(t *testing.T) {
	e := startServer(t, Listener{Protocol: smtpProto, TLS: tlsStartTLS, PlaintextFrom: loopbackPrefixes()}, smtpLimits())
	c := e.dialSMTP()
	c.ehlo("x")
	c.send("STARTTLS\r\nAUTH PLAIN " + enc64("\x00alice\x00secret") + "\r\nMAIL FROM:<evil@x>\r\n")
	c.expect("220 2.0.0 Ready to start TLS")
	c.startTLS()
	c.send("NOOP\r\n")
	c.expect("250 2.0.0 OK")
	if n := len(e.smtp.loginList()); n != 0 {
		t.Errorf("injected AUTH reached the backend %d times", n)
	}
}

func TestSMTPImplicitTLS(t *testing.T) {
	e := startServer(t, Listener{Protocol: smtpProto, TLS: tlsImplicit}, smtpLimits())
	c := e.dial()
	c.startTLS()
	c.expect("220 mx.test ESMTP")
	kws := c.ehlo("x")
	if slices.Contains(kws, "STARTTLS") || !slices.Contains(kws, "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO on implicit TLS %q", kws)
	}
	c.send("AUTH LOGIN\r\n" + enc64("alice") + "\r\n" + enc64("secret") + "\r\n")
	c.expect("334 VXNlcm5hbWU6")
	c.expect("334 UGFzc3dvcmQ6")
	c.expect("235 2.7.0")
}

func TestSMTPEarlyTalker(t *testing.T) {
	lim := smtpLimits()
	lim.GreetingDelay = 2 * time.Second // ample for the bytes to arrive
	e := startServer(t, Listener{Protocol: smtpProto}, lim)
	c := e.dial()
	c.send("EHLO hasty\r\n")
	c.expect("554 5.5.0")
	c.expectClosed()
	testwait.For(t, "log", func() bool { return strings.Contains(e.logs.String(), "early talker") })

	// A PROXY header from an untrusted peer is refused as such.
	c = e.dial()
	c.send("PROXY TCP4 203.0.113.9 127.0.0.1 1 587\r\n")
	c.expectClosed()
	testwait.For(t, "log", func() bool { return strings.Contains(e.logs.String(), "PROXY header from untrusted peer") })
}

// A client that waits gets its greeting after the delay.
func TestSMTPGreetingDelay(t *testing.T) {
	lim := smtpLimits()
	lim.GreetingDelay = 10 * time.Millisecond
	e := startServer(t, Listener{Protocol: smtpProto}, lim)
	c := e.dialSMTP()
	c.send("QUIT\r\n")
	c.expect("221")
}

func TestSMTPForeignProtocol(t *testing.T) {
	e := startServer(t, Listener{Protocol: smtpProto}, smtpLimits())
	c := e.dialSMTP()
	c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.expect("421 4.7.0 mx.test Error: not an SMTP client")
	c.expectClosed()
}

// BDAT's chunk follows it unasked (RFC 3030 2): after refusing it the
// session cannot tell data from commands, so it ends; the chunk's
// "commands" are never run.
func TestSMTPBDATBeforeAuth(t *testing.T) {
	e := startServer(t, Listener{Protocol: smtpProto}, smtpLimits())
	c := e.dialSMTP()
	c.ehlo("x")
	chunk := "AUTH PLAIN " + enc64("\x00alice\x00secret") + "\r\n"
	c.send("BDAT " + strconv.Itoa(len(chunk)) + " LAST\r\n" + chunk)
	c.expect("530 5.7.0 Authentication required")
	c.expectClosed()
	if n := len(e.smtp.loginList()); n != 0 {
		t.Errorf("chunk data ran as AUTH: %d backend logins", n)
	}
}

// A trusted balancer's PROXY header (v2 here) is read before the
// early-talker wait and is not early talk; the client address it names
// reaches policy and the backend (for XCLIENT ADDR/PORT). Commands sent
// along with the header, before the greeting, are still early talk.
func TestSMTPTrustedProxyHeader(t *testing.T) {
	lim := smtpLimits()
	lim.GreetingDelay = 100 * time.Millisecond
	l := Listener{Protocol: smtpProto, TLS: tlsNone, ProxyFrom: loopbackPrefixes(),
		PlaintextFrom: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}
	src, dst := netip.MustParseAddrPort("203.0.113.9:4444"), netip.MustParseAddrPort("127.0.0.1:587")
	e := startServer(t, l, lim)

	c := e.dial()
	c.send(string(proxyV2(src, dst)))
	c.expect("220 mx.test ESMTP")
	c.ehlo("client.example")
	c.send("AUTH PLAIN " + enc64("\x00alice\x00secret") + "\r\n")
	c.expect("235 2.7.0")
	if r := e.auth.requests(); len(r) != 1 || r[0].Addr != src.Addr() || r[0].Protocol != smtpProto {
		t.Errorf("policy requests %+v", r)
	}
	if bc := e.smtp.lastClient(); bc.Addr != src || bc.Local != dst || bc.Helo != "client.example" {
		t.Errorf("backend client %+v", bc)
	}

	early := e.dial()
	early.send(string(proxyV2(src, dst)) + "EHLO x\r\n")
	early.expect("554 5.5.0")
	early.expectClosed()
}

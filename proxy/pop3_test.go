package proxy

import (
	"encoding/base64"
	"errors"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/testwait"
)

func enc64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// dialPOP3 connects and reads the greeting.
func (e *testEnv) dialPOP3() *client {
	c := e.dial()
	c.expect("+OK mx.test mailgate POP3 ready")
	return c
}

func TestPOP3Capa(t *testing.T) {
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	tests := []struct {
		name    string
		l       Listener
		want    []string
		notWant []string
	}{
		{"stls", Listener{TLS: tlsStartTLS}, []string{"STLS", "PIPELINING", "RESP-CODES", "AUTH-RESP-CODE", "TOP", "UIDL", "EXPIRE NEVER"}, []string{"USER", "SASL PLAIN LOGIN"}},
		{"stls plaintext allowed", Listener{TLS: tlsStartTLS, PlaintextFrom: loopback}, []string{"STLS", "USER", "SASL PLAIN LOGIN", "TOP"}, nil},
		{"none", Listener{TLS: tlsNone}, []string{"PIPELINING", "TOP"}, []string{"STLS", "USER", "SASL PLAIN LOGIN"}},
		{"none plaintext allowed", Listener{}, []string{"USER", "SASL PLAIN LOGIN", "TOP", "UIDL"}, []string{"STLS"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.l.Protocol = pop3Proto
			e := startServer(t, tt.l, fastLimits())
			c := e.dialPOP3()
			c.send("CAPA\r\n")
			c.expect("+OK")
			caps := c.multiline()
			for _, w := range tt.want {
				if !slices.Contains(caps, w) {
					t.Errorf("CAPA %q lacks %q", caps, w)
				}
			}
			for _, w := range tt.notWant {
				if slices.Contains(caps, w) {
					t.Errorf("CAPA %q has %q", caps, w)
				}
			}
			// The backend's own pre-login and identifying lines and
			// lines that would break the response never pass.
			for _, bad := range []string{"SASL PLAIN", "IMPLEMENTATION Dovecot", "UTF8", "LANG", "bad\x01line", ".dot"} {
				if slices.Contains(caps, bad) {
					t.Errorf("CAPA %q passes backend line %q", caps, bad)
				}
			}
			if n := strings.Count(strings.Join(caps, "\n"), "RESP-CODES"); n != 1 {
				t.Errorf("RESP-CODES %d times in %q", n, caps)
			}
		})
	}
}

func TestPOP3CapaBackendDown(t *testing.T) {
	e := startServer(t, Listener{Protocol: pop3Proto}, fastLimits())
	e.pop3.setCaps(nil, errors.New("backend: unavailable"))
	c := e.dialPOP3()
	c.send("CAPA\r\n")
	c.expect("+OK")
	caps := c.multiline()
	if !slices.Contains(caps, "USER") || slices.Contains(caps, "TOP") {
		t.Errorf("CAPA with backend down = %q", caps)
	}
}

func TestPOP3UserPass(t *testing.T) {
	e := startServer(t, Listener{Protocol: pop3Proto}, fastLimits())
	c := e.dialPOP3()
	c.send("USER alice\r\n")
	c.expect("+OK")
	c.send("PASS secret\r\n")
	c.expect("+OK Logged in, 2 messages")
	c.send("STAT\r\n")
	c.expect("+OK echo STAT")
	if got := e.pop3.loginList(); !slices.Equal(got, []string{"alice\x00secret"}) {
		t.Errorf("backend logins %q", got)
	}
	bc := e.pop3.lastClient()
	if bc.Addr.Addr() != netip.MustParseAddr("127.0.0.1") || bc.Session == "" {
		t.Errorf("backend client %+v", bc)
	}
	if r := e.auth.requests(); len(r) != 1 || r[0].Protocol != pop3Proto || r[0].Login != "alice" {
		t.Errorf("policy requests %+v", r)
	}
	testwait.For(t, "AUTHPASS log", func() bool { return strings.Contains(e.logs.String(), "msg=AUTHPASS") })
	if l := e.logs.String(); !strings.Contains(l, "proto=pop3") || strings.Contains(l, "secret") {
		t.Errorf("log lacks proto=pop3 or has the password:\n%s", l)
	}
}

// A password may contain spaces (RFC 1939 7): PASS takes the whole rest.
func TestPOP3PassWithSpaces(t *testing.T) {
	e := startServer(t, Listener{Protocol: pop3Proto}, fastLimits())
	c := e.dialPOP3()
	c.send("USER carol\r\nPASS pass with spaces\r\n")
	c.expect("+OK")
	c.expect("+OK Logged in")
}

// Pipelined commands (RFC 2449 6.6) are answered in order, and what
// follows the login goes to the backend in order.
func TestPOP3Pipelining(t *testing.T) {
	e := startServer(t, Listener{Protocol: pop3Proto}, fastLimits())
	c := e.dialPOP3()
	c.send("NOOP\r\nBOGS\r\nUSER alice\r\nPASS wrong\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nLIST\r\nQUIT\r\n")
	c.expect("+OK")
	c.expect("-ERR Unknown command")
	c.expect("+OK")
	c.expect("-ERR [AUTH] Authentication failed")
	c.expect("+OK")
	c.expect("+OK Logged in")
	c.expect("+OK echo STAT")
	c.expect("+OK echo LIST")
	c.expect("+OK echo QUIT")
}

func TestPOP3PassWithoutUser(t *testing.T) {
	e := startServer(t, Listener{Protocol: pop3Proto}, fastLimits())
	c := e.dialPOP3()
	c.send("PASS secret\r\n")
	c.expect("-ERR No USER given")
	// Any other command between USER and PASS forgets the name.
	c.send("USER alice\r\nNOOP\r\nPASS secret\r\n")
	c.expect("+OK")
	c.expect("+OK")
	c.expect("-ERR No USER given")
	if n := len(e.pop3.loginList()); n != 0 {
		t.Errorf("%d backend logins", n)
	}
}

// A wrong password and a denied country get the same reply; the log
// tells them apart.
func TestPOP3UniformFailure(t *testing.T) {
	e := startServer(t, Listener{Protocol: pop3Proto}, fastLimits())
	idRE := regexp.MustCompile(`\(id [a-z2-7]+\)$`)
	var replies []string
	for _, login := range []string{"USER alice\r\nPASS wrong\r\n", "USER bob\r\nPASS secret\r\n", "USER nobody\r\nPASS x\r\n"} {
		c := e.dialPOP3()
		c.send(login)
		c.expect("+OK")
		r := c.expect("-ERR [AUTH] Authentication failed (id ")
		replies = append(replies, idRE.ReplaceAllString(r, ""))
	}
	if replies[0] != replies[1] || replies[1] != replies[2] {
		t.Errorf("replies differ: %q", replies)
	}
	testwait.For(t, "log lines", func() bool {
		l := e.logs.String()
		return strings.Count(l, "msg=AUTHFAILED") == 2 && strings.Count(l, "msg=COUNTRYFAILED") == 1
	})
	if got := e.pop3.loginList(); len(got) != 0 {
		t.Errorf("backend logins %q", got)
	}
}

func TestPOP3BackendUnavailable(t *testing.T) {
	e := startServer(t, Listener{Protocol: pop3Proto}, fastLimits())
	e.pop3.setUnavailable(true)
	c := e.dialPOP3()
	c.send("USER alice\r\nPASS secret\r\n")
	c.expect("+OK")
	// After the decision the uniform reply; then the backend is known down.
	c.expect("-ERR [AUTH] Authentication failed (id ")
	c.send("USER alice\r\nPASS secret\r\n")
	c.expect("+OK")
	c.expect("-ERR [SYS/TEMP] Service temporarily unavailable (id ")
	c.send("NOOP\r\n")
	c.expect("+OK")
}

func TestPOP3Auth(t *testing.T) {
	plain := enc64("\x00alice\x00secret")
	tests := []struct {
		name   string
		dialog []string // client line, then expected reply prefix, alternating
		ok     bool
	}{
		{"plain with initial response", []string{"AUTH PLAIN " + plain, "+OK Logged in"}, true},
		{"plain lower case", []string{"auth plain " + plain, "+OK Logged in"}, true},
		{"plain without initial response", []string{"AUTH PLAIN", "+ ", plain, "+OK Logged in"}, true},
		{"login", []string{"AUTH LOGIN", "+ VXNlcm5hbWU6", enc64("alice"), "+ UGFzc3dvcmQ6", enc64("secret"), "+OK Logged in"}, true},
		{"login with initial response", []string{"AUTH LOGIN " + enc64("alice"), "+ UGFzc3dvcmQ6", enc64("secret"), "+OK Logged in"}, true},
		{"plain authzid", []string{"AUTH PLAIN " + enc64("alice\x00alice\x00secret"), "+OK Logged in"}, true},
		{"plain empty initial response", []string{"AUTH PLAIN =", "-ERR Invalid SASL response"}, false},
		{"plain other authzid", []string{"AUTH PLAIN " + enc64("admin\x00alice\x00secret"), "-ERR Invalid SASL response"}, false},
		{"cancel initial", []string{"AUTH PLAIN *", "-ERR Authentication cancelled"}, false},
		{"plain cancel", []string{"AUTH PLAIN", "+ ", "*", "-ERR Authentication cancelled"}, false},
		{"login cancel at password", []string{"AUTH LOGIN", "+ ", enc64("alice"), "+ ", "*", "-ERR Authentication cancelled"}, false},
		{"bad base64", []string{"AUTH PLAIN", "+ ", "not base64!", "-ERR Invalid SASL response"}, false},
		{"bad initial base64", []string{"AUTH PLAIN AGFsaWNl AHNlY3JldA==", "-ERR AUTH needs"}, false},
		{"unsupported", []string{"AUTH CRAM-MD5", "-ERR Unsupported authentication mechanism"}, false},
		{"crlf injection", []string{"AUTH PLAIN " + enc64("\x00alice\x00secret\r\nDELE 1"), "-ERR Invalid SASL response"}, false},
		{"wrong password", []string{"AUTH PLAIN " + enc64("\x00alice\x00nope"), "-ERR [AUTH] Authentication failed"}, false},
		{"list mechanisms", []string{"AUTH", "+OK", "", "PLAIN"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startServer(t, Listener{Protocol: pop3Proto}, fastLimits())
			c := e.dialPOP3()
			for i := 0; i < len(tt.dialog); i += 2 {
				if tt.dialog[i] != "" {
					c.send(tt.dialog[i] + "\r\n")
				}
				c.expect(tt.dialog[i+1])
			}
			if tt.ok {
				c.send("UIDL\r\n")
				c.expect("+OK echo UIDL")
				return
			}
			// The session goes on after any failure.
			c.send("NOOP\r\n")
			for {
				if l := c.line(); l == "+OK" {
					break
				}
			}
			if n := len(e.pop3.loginList()); n != 0 {
				t.Errorf("%d backend logins", n)
			}
		})
	}
}

func TestPOP3PlaintextRefusedBeforeSTLS(t *testing.T) {
	e := startServer(t, Listener{Protocol: pop3Proto, TLS: tlsStartTLS}, fastLimits())
	c := e.dialPOP3()
	for _, cmd := range []string{"USER alice", "PASS secret", "AUTH PLAIN " + enc64("\x00alice\x00secret")} {
		c.send(cmd + "\r\n")
		c.expect("-ERR [AUTH] Plaintext authentication disallowed; use STLS first")
	}
	c.send("STLS\r\n")
	c.expect("+OK Begin TLS")
	c.startTLS()
	c.send("CAPA\r\n")
	c.expect("+OK")
	if caps := c.multiline(); slices.Contains(caps, "STLS") || !slices.Contains(caps, "USER") {
		t.Errorf("CAPA after STLS %q", caps)
	}
	c.send("STLS\r\n")
	c.expect("-ERR STLS not available")
	c.send("USER alice\r\nPASS secret\r\n")
	c.expect("+OK")
	c.expect("+OK Logged in")
}

// Bytes sent with STLS before the handshake are dropped, never run
// (RFC 2595 4, CVE-2011-0411), and a pending USER is forgotten.
func TestPOP3STLSInjection(t *testing.T) {
	e := startServer(t, Listener{Protocol: pop3Proto, TLS: tlsStartTLS,
		PlaintextFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, fastLimits())
	c := e.dialPOP3()
	c.send("USER alice\r\nSTLS\r\nPASS secret\r\n")
	c.expect("+OK")
	c.expect("+OK Begin TLS")
	c.startTLS()
	c.send("PASS secret\r\n")
	c.expect("-ERR No USER given")
	testwait.For(t, "discard log", func() bool { return strings.Contains(e.logs.String(), "discarded bytes pipelined after STARTTLS") })
}

func TestPOP3STLSNotOffered(t *testing.T) {
	for _, l := range []Listener{{Protocol: pop3Proto}, {Protocol: pop3Proto, TLS: tlsImplicit}} {
		e := startServer(t, l, fastLimits())
		c := e.dial()
		if l.TLS == tlsImplicit {
			c.startTLS()
		}
		c.expect("+OK mx.test")
		c.send("STLS\r\n")
		c.expect("-ERR STLS not available")
		if l.TLS == tlsImplicit {
			c.send("USER alice\r\nPASS secret\r\n")
			c.expect("+OK")
			c.expect("+OK Logged in")
		}
	}
}

func TestPOP3Syntax(t *testing.T) {
	e := startServer(t, Listener{Protocol: pop3Proto}, Limits{MaxErrors: 100, AuthFailureDelay: time.Millisecond})
	c := e.dialPOP3()
	for _, tt := range []struct{ in, want string }{
		{"CAPA x", "-ERR CAPA takes no arguments"},
		{"NOOP x", "-ERR NOOP takes no arguments"},
		{"USER", "-ERR USER needs a name"},
		{"USER ", "-ERR Syntax error"},
		{"XY", "-ERR Syntax error"},
		{"STARTTLS", "-ERR Syntax error"},
		{"APOP alice 0123456789abcdef", "-ERR Unknown command"},
		{"RETR 1", "-ERR Unknown command"},
		{"AUTH  PLAIN", "-ERR AUTH needs"},
		{"USER a\x00b", "-ERR Syntax error"},
		{"USER " + strings.Repeat("a", 250), "-ERR Command line too long"},
		{"\x16\x03\x01", "-ERR Syntax error"},
	} {
		c.send(tt.in + "\r\n")
		c.expect(tt.want)
	}
	// A bare LF ends a line too; the reply keeps CRLF.
	c.send("NOOP\n")
	c.expect("+OK")
	// 255 octets with CRLF is the limit (RFC 2449 4).
	c.send("USER " + strings.Repeat("a", 255-len("USER \r\n")) + "\r\n")
	c.expect("+OK")
	// AUTH lines may be longer (RFC 5034 4).
	c.send("AUTH PLAIN " + enc64("\x00alice\x00"+strings.Repeat("p", 400)) + "\r\n")
	c.expect("-ERR [AUTH] Authentication failed")
}

func TestPOP3Quit(t *testing.T) {
	e := startServer(t, Listener{Protocol: pop3Proto}, fastLimits())
	c := e.dialPOP3()
	c.send("QUIT\r\nNOOP\r\n")
	c.expect("+OK mx.test mailgate signing off")
	c.expectClosed()
}

// An untrusted PROXY header is the first line the server sees; the
// session is closed without an answer to it.
func TestPOP3UntrustedProxyHeader(t *testing.T) {
	e := startServer(t, Listener{Protocol: pop3Proto}, fastLimits())
	c := e.dialPOP3()
	c.send("PROXY TCP4 203.0.113.9 127.0.0.1 1234 110\r\nUSER alice\r\n")
	c.expectClosed()
}

// A trusted PROXY header makes the client foreign: policy and the
// backend see its address, and PlaintextFrom applies to it.
func TestPOP3TrustedProxyHeader(t *testing.T) {
	e := startServer(t, Listener{Protocol: pop3Proto, TLS: tlsNone,
		ProxyFrom:     []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		PlaintextFrom: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}, fastLimits())
	c := e.dial()
	c.send("PROXY TCP4 203.0.113.9 127.0.0.1 1234 110\r\n")
	c.expect("+OK mx.test")
	c.send("USER alice\r\nPASS secret\r\n")
	c.expect("+OK")
	c.expect("+OK Logged in")
	if r := e.auth.requests(); len(r) != 1 || r[0].Addr != netip.MustParseAddr("203.0.113.9") {
		t.Errorf("policy requests %+v", r)
	}
	if bc := e.pop3.lastClient(); bc.Addr != netip.MustParseAddrPort("203.0.113.9:1234") {
		t.Errorf("backend client %+v", bc)
	}
}

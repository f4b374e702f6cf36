package proxy

import (
	"encoding/base64"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/testwait"
)

func TestGreetingCapabilities(t *testing.T) {
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	tests := []struct {
		name    string
		l       Listener
		want    []string
		notWant []string
	}{
		{"starttls", Listener{TLS: tlsStartTLS}, []string{"IMAP4rev1", "SASL-IR", "LITERAL+", "ID", "STARTTLS", "LOGINDISABLED"}, []string{"AUTH="}},
		{"starttls plaintext allowed", Listener{TLS: tlsStartTLS, PlaintextFrom: loopback}, []string{"STARTTLS", "AUTH=PLAIN", "AUTH=LOGIN"}, []string{"LOGINDISABLED"}},
		{"none", Listener{TLS: tlsNone}, []string{"LOGINDISABLED"}, []string{"AUTH=", "STARTTLS"}},
		{"none plaintext allowed", Listener{TLS: tlsNone, PlaintextFrom: loopback}, []string{"AUTH=PLAIN", "AUTH=LOGIN", "SASL-IR"}, []string{"LOGINDISABLED", "STARTTLS"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startServer(t, tt.l, fastLimits())
			c := e.dial()
			g := c.expect("* OK [CAPABILITY ")
			if !strings.HasSuffix(g, "] mx.test mailgate ready") {
				t.Errorf("greeting %q lacks hostname", g)
			}
			c.send("a CAPABILITY\r\n")
			caps := c.expect("* CAPABILITY ")
			c.expect("a OK")
			for _, s := range [][]string{{g}, {caps}} {
				for _, w := range tt.want {
					if !strings.Contains(s[0], " "+w) {
						t.Errorf("%q lacks %s", s[0], w)
					}
				}
				for _, w := range tt.notWant {
					if strings.Contains(s[0], w) {
						t.Errorf("%q has %s", s[0], w)
					}
				}
			}
		})
	}
}

func TestImplicitTLSLogin(t *testing.T) {
	checkNoLeak(t)
	e := startServer(t, Listener{TLS: tlsImplicit}, fastLimits())
	c := e.dial()
	c.nc.Close()
	c = e.dial()
	c.startTLS()
	g := c.expect("* OK [CAPABILITY ")
	if strings.Contains(g, "STARTTLS") || strings.Contains(g, "LOGINDISABLED") || !strings.Contains(g, "AUTH=PLAIN") {
		t.Errorf("implicit TLS greeting %q", g)
	}
	c.send("a LOGIN alice secret\r\n")
	c.expect("a OK [CAPABILITY IMAP4rev1 IDLE] Logged in")
	c.send("b LOGOUT\r\n")
	c.expect("* ECHO b LOGOUT")
	c.expect("* BYE bye")
}

func TestPipelinedCommandsAnsweredInOrder(t *testing.T) {
	e := startServer(t, Listener{}, fastLimits())
	c := e.dialGreeted()
	c.send("a NOOP\r\nb CAPABILITY\r\nc ID NIL\r\nd BOGUS\r\ne NOOP\r\n")
	c.expect("a OK NOOP")
	c.expect("* CAPABILITY ")
	c.expect("b OK CAPABILITY")
	c.expect(`* ID ("name" "mailgate")`)
	c.expect("c OK ID")
	c.expect("d BAD ")
	c.expect("e OK NOOP")
}

func TestLoginPipelinedBytesReachBackendFirst(t *testing.T) {
	checkNoLeak(t)
	e := startServer(t, Listener{}, fastLimits())
	e.imap.buffered = "* OK [ALERT] backend says hi\r\n"
	c := e.dialGreeted()
	c.send("a LOGIN alice secret\r\nb SELECT INBOX\r\nc NOOP\r\n")
	c.expect("a OK [CAPABILITY IMAP4rev1 IDLE] Logged in")
	c.expect("* OK [ALERT] backend says hi")
	c.expect("* ECHO b SELECT INBOX")
	c.expect("* ECHO c NOOP")
	for _, want := range []string{"b SELECT INBOX", "c NOOP"} {
		if got := <-e.imap.lines; got != want {
			t.Fatalf("backend got %q, want %q", got, want)
		}
	}
	if got := e.imap.loginList(); len(got) != 1 || got[0] != "alice\x00secret" {
		t.Errorf("backend logins %q", got)
	}
	c.send("z LOGOUT\r\n")
	c.expect("* ECHO z LOGOUT")
	c.expect("* BYE")
	c.expectClosed()
}

func TestLoginArgumentForms(t *testing.T) {
	tests := []struct {
		name, user, pass string
		dialog           []string // client sends [0], then reads "+" for each later element before sending it
	}{
		{"quoted escapes", `al"ice`, `p\w d`, []string{`a LOGIN "al\"ice" "p\\w d"` + "\r\n"}},
		{"utf8 quoted", "jörg", "пароль", []string{"a LOGIN \"jörg\" \"пароль\"\r\n"}},
		{"non-sync literals", "alice", "a b\"c", []string{"a LOGIN {5+}\r\nalice {5+}\r\na b\"c\r\n"}},
		{"sync literals", "alice", "x\ty", []string{"a LOGIN {5}\r\n", "alice {3}\r\n", "x\ty\r\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startServer(t, Listener{}, fastLimits())
			e.imap.users = map[string]string{tt.user: tt.pass}
			c := e.dialGreeted()
			for i, s := range tt.dialog {
				if i > 0 {
					c.expect("+ ")
				}
				c.send(s)
			}
			c.expect("a OK [CAPABILITY")
			if got := e.imap.loginList(); len(got) != 1 || got[0] != tt.user+"\x00"+tt.pass {
				t.Errorf("backend logins %q", got)
			}
		})
	}
}

func saslB64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestAuthenticate(t *testing.T) {
	e := startServer(t, Listener{}, fastLimits())

	t.Run("PLAIN SASL-IR", func(t *testing.T) {
		c := e.dialGreeted()
		c.send("a AUTHENTICATE PLAIN " + saslB64("\x00alice\x00secret") + "\r\n")
		c.expect("a OK [CAPABILITY")
	})
	t.Run("PLAIN continuation", func(t *testing.T) {
		c := e.dialGreeted()
		c.send("a authenticate plain\r\n")
		if got := c.line(); got != "+ " {
			t.Fatalf("continuation %q, want %q", got, "+ ")
		}
		c.send(saslB64("alice\x00alice\x00secret") + "\r\n")
		c.expect("a OK [CAPABILITY")
	})
	t.Run("LOGIN challenges", func(t *testing.T) {
		c := e.dialGreeted()
		c.send("a AUTHENTICATE LOGIN\r\n")
		c.expect("+ " + saslB64("Username:"))
		c.send(saslB64("alice") + "\r\n")
		c.expect("+ " + saslB64("Password:"))
		c.send(saslB64("secret") + "\r\n")
		c.expect("a OK [CAPABILITY")
	})
	t.Run("LOGIN with initial response", func(t *testing.T) {
		c := e.dialGreeted()
		c.send("a AUTHENTICATE LOGIN " + saslB64("alice") + "\r\n")
		c.expect("+ " + saslB64("Password:"))
		c.send(saslB64("secret") + "\r\n")
		c.expect("a OK [CAPABILITY")
	})
	t.Run("empty initial response then cancel", func(t *testing.T) {
		c := e.dialGreeted()
		c.send("a AUTHENTICATE PLAIN =\r\n")
		// An empty PLAIN message is malformed.
		c.expect("a BAD ")
		c.send("b AUTHENTICATE PLAIN\r\n")
		c.expect("+ ")
		c.send("*\r\n")
		c.expect("b BAD Authentication cancelled")
		c.send("c NOOP\r\n")
		c.expect("c OK")
	})
	t.Run("unsupported mechanism and bad base64", func(t *testing.T) {
		c := e.dialGreeted()
		c.send("a AUTHENTICATE CRAM-MD5\r\n")
		c.expect("a NO ")
		c.send("b AUTHENTICATE PLAIN !!!\r\n")
		c.expect("b BAD ")
	})
	if n := len(e.auth.requests()); n != 4 {
		t.Errorf("%d policy decisions, want 4 (one per completed exchange)", n)
	}
}

func TestDeniedAndWrongPasswordLookTheSame(t *testing.T) {
	e := startServer(t, Listener{}, fastLimits())
	e.imap.users["bob"] = "right"
	c := e.dialGreeted()
	c.send("a LOGIN alice wrong\r\n")
	wrong := c.line()
	c.send("a LOGIN bob right\r\n")
	denied := c.line()
	if wrong != denied {
		t.Errorf("wrong password %q != denied %q", wrong, denied)
	}
	if !strings.HasPrefix(wrong, "a NO [AUTHENTICATIONFAILED] Authentication failed (id ") {
		t.Errorf("failure reply %q", wrong)
	}
	if got := e.imap.loginList(); len(got) != 0 {
		t.Errorf("denied login reached the backend: %q", got)
	}
	c.send("b LOGIN alice secret\r\n")
	c.expect("b OK [CAPABILITY")
	c.nc.Close()
	testwait.For(t, "session closed", func() bool { return strings.Contains(e.logs.String(), "session closed") })
	logs := e.logs.String()
	wantLines := [][]string{
		{"level=WARN msg=AUTHFAILED ", "event=AUTHFAILED user=alice country=loopback country_name=Loopback rule=test:2 reason=\"backend refused credentials\" mech=LOGIN"},
		{"level=WARN msg=COUNTRYFAILED ", "event=COUNTRYFAILED user=bob country=RU country_name=Russia rule=test:1 reason=\"country RU not allowed\" mech=LOGIN"},
		{"level=INFO msg=AUTHPASS ", "event=AUTHPASS user=alice"},
		{`msg="session closed"`, "user=alice", "bytes_in=", "bytes_out=", "reason=closed"},
	}
	for _, want := range wantLines {
		found := false
		for _, l := range strings.Split(logs, "\n") {
			ok := strings.Contains(l, "cid=") && strings.Contains(l, "proto=imap") && strings.Contains(l, "remote=127.0.0.1")
			for _, w := range want {
				ok = ok && strings.Contains(l, w)
			}
			found = found || ok
		}
		if !found {
			t.Errorf("no log line with %q", want)
		}
	}
	for _, secret := range []string{"wrong", "right", "secret"} {
		if strings.Contains(logs, secret) {
			t.Errorf("log contains password %q", secret)
		}
	}
}

func TestBackendUnavailable(t *testing.T) {
	e := startServer(t, Listener{}, fastLimits())
	e.imap.unavailable = true
	c := e.dialGreeted()
	// The first failure comes after the decision: the uniform reply. Then
	// the backend is known down, and every attempt gets UNAVAILABLE.
	c.send("a LOGIN alice secret\r\n")
	c.expect("a NO [AUTHENTICATIONFAILED] ")
	c.send("b LOGIN alice secret\r\n")
	c.expect("b NO [UNAVAILABLE] ")
	c.send("c NOOP\r\n")
	c.expect("c OK")
	testwait.For(t, "error log", func() bool { return strings.Contains(e.logs.String(), `msg="backend unavailable"`) })
}

func TestInvalidCredentialsNeverReachBackend(t *testing.T) {
	e := startServer(t, Listener{}, Limits{MaxLoginAttempts: 10, MaxErrors: 10, AuthFailureDelay: 1})
	c := e.dialGreeted()
	c.send("a LOGIN {7+}\r\nal\r\nice x\r\n")
	c.expect("a NO [AUTHENTICATIONFAILED]")
	c.send("b LOGIN \"\" x\r\n")
	c.expect("b NO [AUTHENTICATIONFAILED]")
	c.send("c LOGIN " + strings.Repeat("u", 321) + " x\r\n")
	c.expect("c NO [AUTHENTICATIONFAILED]")
	// Acting as another user is not supported: a SASL error, no login.
	c.send("d AUTHENTICATE PLAIN " + saslB64("mallory\x00alice\x00secret") + "\r\n")
	c.expect("d BAD ")
	if n := len(e.auth.requests()); n != 0 {
		t.Errorf("%d policy decisions for invalid credentials", n)
	}
	if n := len(e.imap.loginList()); n != 0 {
		t.Errorf("%d backend logins", n)
	}
}

func TestHungBackendIsBoundedByLoginDeadline(t *testing.T) {
	lim := fastLimits()
	lim.LoginTimeout = 300 * time.Millisecond
	lim.PreAuthIdleTimeout = 300 * time.Millisecond
	e := startServer(t, Listener{}, lim)
	e.imap.slow = true
	c := e.dialGreeted()
	c.send("a LOGIN alice secret\r\n")
	c.expect("a NO [AUTHENTICATIONFAILED] ")
	c.expect("* BYE Autologout")
	c.expectClosed()
}

func TestClientIDIsLoggedSanitized(t *testing.T) {
	e := startServer(t, Listener{}, fastLimits())
	c := e.dialGreeted()
	c.send("a ID (\"name\" \"Thunder\x01bird\" \"version\" \"115.0\" \"os\" NIL)\r\n")
	c.expect(`* ID ("name" "mailgate")`)
	c.expect("a OK ID")
	c.send("b ID (\"name\")\r\nc ID (name \"x\")\r\nd ID ((\"a\" \"b\"))\r\n")
	c.expect("b BAD ")
	c.expect("c BAD ")
	c.expect("d BAD ")
	c.send("e LOGIN alice secret\r\n")
	c.expect("e OK")
	testwait.For(t, "AUTHPASS", func() bool { return strings.Contains(e.logs.String(), "client_id=Thunder\\u0001bird/115.0") })
}

// Every refusal waits the same AuthFailureDelay before its reply, whatever
// the cause, so timing cannot tell a denied place from a wrong password.
// Only the lower bound is asserted: a slow machine can only make it later.
func TestFailureDelayAppliesToEveryRefusal(t *testing.T) {
	lim := fastLimits()
	lim.AuthFailureDelay = 300 * time.Millisecond
	lim.MaxLoginAttempts = 10
	e := startServer(t, Listener{}, lim)
	e.imap.users["bob"] = "right"
	c := e.dialGreeted()
	for _, tt := range []struct{ why, cmd string }{
		{"wrong password", "a LOGIN alice wrong"},
		{"denied country", "a LOGIN bob right"},
		{"unknown user", "a LOGIN nobody x"},
		{"unusable name", `a LOGIN "" x`},
		{"SASL wrong password", "a AUTHENTICATE PLAIN " + saslB64("\x00alice\x00wrong")},
	} {
		start := time.Now()
		c.send(tt.cmd + "\r\n")
		c.expect("a NO [AUTHENTICATIONFAILED] Authentication failed")
		if d := time.Since(start); d < lim.AuthFailureDelay {
			t.Errorf("%s: answered after %s, before the %s failure delay", tt.why, d, lim.AuthFailureDelay)
		}
	}
}

package proxy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/testwait"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/proxy/internal/imapwire"
)

// Every limit that ends a session before login, for IMAP, POP3 and SMTP,
// through the one fixture (startServer). The cases are keyed by the
// goodbye reasons table (goodbyeReasons): a reason added there without a
// case here fails TestLimitsEndSessions.

// protoDialog is how the limit cases speak one protocol: each command
// is one line without CRLF, each reply a prefix of the line expected.
type protoDialog struct {
	// prepare runs after the greeting (SMTP: EHLO, needed before AUTH).
	prepare func(c *client)
	// noop is a harmless command (numbered, for IMAP tags) and its reply.
	noop func(i int) (cmd, reply string)
	// bad is a command that counts as an error, and its reply.
	bad func(i int) (cmd, reply string)
	// login is one login attempt (i numbers it) and the replies to a
	// failed one.
	login func(i int, user, pass string) (cmds string, failed []string)
	// longest is the longest line the protocol still answers, and its
	// reply; one octet more ends the session (errLineTooLong).
	longest func() (line, reply string)
	// goodbyes are the exact last lines, by close reason.
	goodbyes map[error]string
}

var protoDialogs = map[policy.Protocol]protoDialog{
	policy.IMAP: {
		prepare: func(*client) {},
		noop:    func(i int) (string, string) { return fmt.Sprintf("n%d NOOP", i), fmt.Sprintf("n%d OK", i) },
		bad: func(i int) (string, string) {
			switch i {
			case 1:
				return "", "* BAD " // an empty line
			case 2:
				return "GET / HTTP/1.1", "GET BAD " // another protocol
			}
			return fmt.Sprintf("e%d SELECT INBOX", i), fmt.Sprintf("e%d BAD ", i) // not before login
		},
		login: func(i int, user, pass string) (string, []string) {
			return fmt.Sprintf("l%d LOGIN %s %s", i, user, pass), []string{fmt.Sprintf("l%d NO [AUTHENTICATIONFAILED]", i)}
		},
		longest: func() (string, string) {
			return "a " + strings.Repeat("x", imapwire.MaxLine-len("a \r\n")), "a BAD "
		},
		goodbyes: map[error]string{
			errShutdown:        "* BYE Server shutting down",
			errIdleTimeout:     "* BYE Autologout; idle for too long",
			errLoginTimeout:    "* BYE Autologout; idle for too long",
			errTooManyErrors:   "* BYE Too many invalid commands",
			errTooManyCommands: "* BYE Too many commands before login",
			errTooManyAttempts: "* BYE Too many login failures",
			errLineTooLong:     "* BYE Command line too long",
		},
	},
	policy.POP3: {
		prepare: func(*client) {},
		noop:    func(int) (string, string) { return "NOOP", "+OK" },
		bad:     func(i int) (string, string) { return "BAD" + string(rune('A'+i)), "-ERR Unknown" },
		login: func(i int, user, pass string) (string, []string) {
			if i%2 == 1 { // both ways of logging in count
				return "AUTH PLAIN " + enc64("\x00"+user+"\x00"+pass), []string{"-ERR [AUTH] Authentication failed"}
			}
			return "USER " + user + "\r\nPASS " + pass, []string{"+OK", "-ERR [AUTH] Authentication failed"}
		},
		longest: func() (string, string) {
			// RFC 5034 4: AUTH lines may exceed 255 octets, up to the
			// SASL line limit.
			return "AUTH PLAIN " + strings.Repeat("A", maxSASLLine-len("AUTH PLAIN \r\n")), "-ERR Invalid initial response"
		},
		goodbyes: map[error]string{
			errShutdown:        "-ERR [SYS/TEMP] Server shutting down",
			errIdleTimeout:     "-ERR Disconnected for inactivity",
			errLoginTimeout:    "-ERR Disconnected for inactivity",
			errTooManyErrors:   "-ERR Too many invalid commands",
			errTooManyCommands: "-ERR Too many commands before login",
			errTooManyAttempts: "-ERR [AUTH] Too many login failures",
			errLineTooLong:     "-ERR Command line too long",
		},
	},
	policy.SMTP: {
		prepare: func(c *client) { c.ehlo("client.example") },
		noop:    func(int) (string, string) { return "NOOP", "250 " },
		bad: func(i int) (string, string) {
			if i == 0 {
				return "MAIL FROM:<a@example.org>", "530 5.7.0" // not before AUTH
			}
			return "BOGUS", "500 5.5.2"
		},
		login: func(_ int, user, pass string) (string, []string) {
			return "AUTH PLAIN " + enc64("\x00"+user+"\x00"+pass), []string{"535 5.7.8"}
		},
		longest: func() (string, string) {
			// RFC 4954 4: 12288 octets for an AUTH line.
			return "AUTH PLAIN " + strings.Repeat("A", maxSASLLine-len("AUTH PLAIN \r\n")), "501 5.5.2"
		},
		goodbyes: map[error]string{
			errShutdown:        "421 4.3.2 Service shutting down",
			errIdleTimeout:     "421 4.4.2 mx.test Error: timeout exceeded",
			errLoginTimeout:    "421 4.4.2 mx.test Error: timeout exceeded",
			errTooManyErrors:   "421 4.7.0 mx.test Error: too many errors",
			errTooManyCommands: "421 4.7.0 mx.test Error: too many commands before authentication",
			errTooManyAttempts: "421 4.7.0 mx.test Error: too many authentication failures",
			errLineTooLong:     "421 4.7.0 mx.test Error: line too long",
		},
	},
}

// limitCase sets one limit low and drives a session of protocol d into
// it; the test then expects the goodbye for the case's reason (read by
// drive and returned, or read next), the close and the reason in the
// "session closed" log line.
type limitCase struct {
	set   func(l *Limits)
	drive func(t *testing.T, e *testEnv, c *client, d protoDialog) (goodbye string)
}

var limitCases = map[error]limitCase{
	errTooManyCommands: {
		set: func(l *Limits) { l.MaxCommands = 3 },
		drive: func(t *testing.T, e *testEnv, c *client, d protoDialog) string {
			// SMTP's EHLO in prepare is the first command.
			n := 3
			if e.lst.Protocol == policy.SMTP {
				n = 2
			}
			var cmds []string
			for i := range n + 1 {
				cmd, _ := d.noop(i)
				cmds = append(cmds, cmd)
			}
			c.send(strings.Join(cmds, "\r\n") + "\r\n")
			for i := range n {
				_, reply := d.noop(i)
				c.expect(reply)
			}
			return ""
		},
	},
	errTooManyErrors: {
		set: func(l *Limits) { l.MaxErrors = 3 },
		drive: func(t *testing.T, e *testEnv, c *client, d protoDialog) string {
			var cmds []string
			for i := range 3 {
				cmd, _ := d.bad(i)
				cmds = append(cmds, cmd)
			}
			noop, _ := d.noop(0) // never answered
			c.send(strings.Join(append(cmds, noop), "\r\n") + "\r\n")
			for i := range 3 {
				_, reply := d.bad(i)
				c.expect(reply)
			}
			return ""
		},
	},
	errTooManyAttempts: {
		set: func(l *Limits) { l.MaxLoginAttempts = 2 },
		drive: func(t *testing.T, e *testEnv, c *client, d protoDialog) string {
			// A wrong password and a policy denial count the same; the
			// right password pipelined after them is never tried.
			l0, f0 := d.login(0, "alice", "wrong")
			l1, f1 := d.login(1, "bob", "secret")
			l2, _ := d.login(2, "alice", "secret")
			c.send(l0 + "\r\n" + l1 + "\r\n" + l2 + "\r\n")
			for _, r := range append(f0, f1...) {
				c.expect(r)
			}
			t.Cleanup(func() {
				if n := len(e.imap.loginList()) + len(e.pop3.loginList()) + len(e.smtp.loginList()); n != 0 {
					t.Errorf("%d backend logins after the last attempt", n)
				}
			})
			return ""
		},
	},
	errLineTooLong: {
		drive: func(t *testing.T, e *testEnv, c *client, d protoDialog) string {
			// The longest line is still answered and the session goes on.
			line, reply := d.longest()
			c.send(line + "\r\n")
			c.expect(reply)
			cmd, reply := d.noop(0)
			c.send(cmd + "\r\n")
			c.expect(reply)
			// One octet more, of any command, ends it.
			c.send(line + "A\r\n")
			return ""
		},
	},
	errIdleTimeout: {
		set: func(l *Limits) { l.PreAuthIdleTimeout = 50 * time.Millisecond },
		drive: func(t *testing.T, e *testEnv, c *client, d protoDialog) string {
			return "" // nothing to do: the goodbye comes by itself
		},
	},
	errLoginTimeout: {
		set: func(l *Limits) {
			l.PreAuthIdleTimeout = time.Hour // only the login deadline can end this
			l.LoginTimeout = 300 * time.Millisecond
			l.MaxCommands = 1000
		},
		drive: func(t *testing.T, e *testEnv, c *client, d protoDialog) string {
			// A busy client that never logs in: NOOPs until the
			// goodbye, which the test reads.
			for i := 0; ; i++ {
				cmd, reply := d.noop(i)
				c.send(cmd + "\r\n")
				l := c.line()
				if !strings.HasPrefix(l, reply) {
					return l
				}
				time.Sleep(20 * time.Millisecond)
			}
		},
	},
	// Not a limit, but a goodbye every protocol says.
	errShutdown: {
		drive: func(t *testing.T, e *testEnv, c *client, d protoDialog) string {
			cmd, reply := d.noop(0)
			c.send(cmd + "\r\n")
			c.expect(reply)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := e.srv.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			return ""
		},
	},
}

func TestLimitsEndSessions(t *testing.T) {
	for _, reason := range goodbyeReasons {
		lc, ok := limitCases[reason]
		if !ok {
			t.Errorf("goodbye reason %q has no case in limitCases", reason)
			continue
		}
		for _, p := range []policy.Protocol{policy.IMAP, policy.POP3, policy.SMTP} {
			t.Run(string(p)+"/"+strings.ReplaceAll(reason.Error(), " ", "_"), func(t *testing.T) {
				t.Parallel()
				lim := fastLimits()
				lim.GreetingDelay = -1 // no early-talker check: commands are pipelined
				if lc.set != nil {
					lc.set(&lim)
				}
				e := startServer(t, Listener{Protocol: p}, lim)
				d := protoDialogs[p]
				c := e.dialGreeted()
				d.prepare(c)
				got := lc.drive(t, e, c, d)
				if got == "" {
					got = c.line()
				}
				want := d.goodbyes[reason]
				if want == "" {
					t.Fatalf("protoDialogs[%s].goodbyes has no line for %q", p, reason)
				}
				if got != want {
					t.Fatalf("goodbye %q, want %q (%s)", got, want, reason)
				}
				c.expectClosed()
				c.nc.Close() // ends the lingering close of a session with unread input
				testwait.For(t, "the close reason in the log", func() bool {
					return strings.Contains(e.logs.String(), fmt.Sprintf("reason=%q", reason.Error()))
				})
			})
		}
	}
}

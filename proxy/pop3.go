package proxy

// POP3 before login (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034
// AUTH, RFC 3206 response codes).
//
// # Implementation notes
//
// Only the AUTHORIZATION state exists here (RFC 1939 4): after a
// successful login the backend's +OK goes to the client and the bytes are
// spliced, so the backend runs TRANSACTION and UPDATE. Everything shared
// with IMAP and SMTP (line reading with deadlines, limits, STARTTLS
// mechanics, the login decision and its logging, SASL rounds, splice)
// lives in conn.go and authflow.go; this file is only POP3.
//
// One command is read, answered and logged before the next is read, so
// pipelined commands (RFC 2449 6.6) are answered in order; bytes that
// follow a successful PASS or AUTH stay in the connection's reader and
// reach the backend first during the splice.
//
// Every failed login, whatever the cause, is "-ERR [AUTH] ..." after the
// same delay; a backend outage is "-ERR [SYS/TEMP] ..." (RFC 3206 4, 5).

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/proxy/internal/pop3wire"
	"github.com/mailgate/mailgate/proxy/internal/sasl"
)

// pop3CapaTimeout bounds asking the backend for its capabilities during
// CAPA (the backend caches them, so this is rarely a network round trip).
const pop3CapaTimeout = 5 * time.Second

// pop3Handler plugs POP3 into the shared connection code.
type pop3Handler struct{}

// pop3Session is the per-connection POP3 state.
type pop3Session struct {
	c *conn
	// user is the name from USER, waiting for PASS (RFC 1939 7); empty
	// when no USER is pending. Any command but USER clears it.
	user string
}

// pop3Goodbyes: -ERR before closing; [SYS/TEMP] and [AUTH] as RFC 3206
// defines them.
var pop3Goodbyes = []goodbye{
	{errShutdown, "-ERR [SYS/TEMP] Server shutting down"},
	{errIdleTimeout, "-ERR Disconnected for inactivity"},
	{errLoginTimeout, "-ERR Disconnected for inactivity"},
	{errTooManyErrors, "-ERR Too many invalid commands"},
	{errTooManyCommands, "-ERR Too many commands before login"},
	{errTooManyAttempts, "-ERR [AUTH] Too many login failures"},
	{errLineTooLong, "-ERR Command line too long"},
}

func (pop3Handler) goodbye(c *conn, reason error) string { return goodbyeFor(reason, pop3Goodbyes) }

func (pop3Handler) serve(c *conn) (*backend.Session, error) {
	s := &pop3Session{c: c}
	// RFC 1939 4. No APOP timestamp: APOP needs the clear-text password
	// on our side, which a proxy does not have.
	if err := c.writeLine(fmt.Sprintf("+OK %s mailgate POP3 ready", c.srv.options().Hostname)); err != nil {
		return nil, err
	}
	for {
		sess, err := s.next()
		if sess != nil || err != nil {
			return sess, err
		}
	}
}

// next reads, checks and runs one command.
func (s *pop3Session) next() (*backend.Session, error) {
	c := s.c
	line, err := c.readCommandLine()
	if err != nil {
		return nil, err
	}
	cmd, perr := pop3wire.ParseCommand(line)
	if perr != nil {
		c.log.Debug("malformed command", "err", perr)
		return nil, s.errCounted("Syntax error")
	}
	if cmd.Name != "AUTH" && len(line)+2 > pop3wire.MaxLine {
		return nil, s.errCounted("Command line too long")
	}
	c.log.Debug("command", "name", cmd.Name)
	// RFC 1939 7: PASS is valid only right after a successful USER; any
	// other command forgets the pending name.
	pending := s.user
	s.user = ""
	switch cmd.Name {
	case "CAPA":
		return nil, s.handleCapa(cmd)
	case "NOOP":
		return nil, s.handleNoop(cmd)
	case "QUIT":
		return nil, s.handleQuit(cmd)
	case "STLS":
		return nil, s.handleSTLS(cmd)
	case "USER":
		return nil, s.handleUser(cmd)
	case "PASS":
		return s.handlePass(cmd, pending)
	case "AUTH":
		return s.handleAuth(cmd)
	}
	// APOP, the TRANSACTION commands and anything else.
	return nil, s.errCounted("Unknown command or not allowed before login")
}

// reply writes one response line.
func (s *pop3Session) reply(format string, a ...any) error {
	return s.c.writeLine(fmt.Sprintf(format, a...))
}

// errCounted answers -ERR and counts a protocol error.
func (s *pop3Session) errCounted(text string) error { return s.c.replyCounted("-ERR " + text) }

// noArgs answers -ERR for a command that takes no arguments but got some.
func (s *pop3Session) noArgs(cmd pop3wire.Command) (bool, error) {
	if cmd.Args != nil {
		return false, s.errCounted(cmd.Name + " takes no arguments")
	}
	return true, nil
}

// pop3BackendCapabilities are the CAPA tags passed on from the backend
// (RFC 2449 6): those about the TRANSACTION state that follows the
// splice. Pre-login ones (USER, SASL, STLS, APOP, UTF8) are ours to
// answer or not offered; IMPLEMENTATION would name the backend's
// software; anything unknown might need a command we would refuse.
var pop3BackendCapabilities = map[string]bool{
	"TOP": true, "UIDL": true, "EXPIRE": true, "LOGIN-DELAY": true,
}

// capabilities lists the CAPA lines (RFC 2449 5, 6): mailgate's own
// pre-login ones, then the backend's post-login ones (TOP, UIDL, ...).
func (s *pop3Session) capabilities() []string {
	c := s.c
	var caps []string
	if c.loginAllowed() {
		// RFC 2595 4: no USER or SASL PLAIN where they may not be used.
		caps = append(caps, "USER", "SASL "+strings.Join(sasl.Mechanisms(), " "))
	}
	if c.startTLSOffered() {
		caps = append(caps, "STLS")
	}
	caps = append(caps, "PIPELINING", "RESP-CODES", "AUTH-RESP-CODE")
	o := c.srv.options()
	if o.POP3 == nil {
		return caps
	}
	ctx, cancel := context.WithTimeout(c.ctx, pop3CapaTimeout)
	defer cancel()
	be, err := o.POP3.Capabilities(ctx)
	if err != nil {
		c.log.Warn("POP3 backend capabilities unavailable", "err", err)
		return caps
	}
	for _, line := range be {
		tag, _, _ := strings.Cut(line, " ")
		if !validCapaLine(line) || !pop3BackendCapabilities[strings.ToUpper(tag)] {
			continue
		}
		caps = append(caps, line)
	}
	return caps
}

// validCapaLine: a capability line we may repeat to the client is short,
// printable ASCII and cannot end the multi-line response early.
func validCapaLine(l string) bool {
	if l == "" || len(l) > pop3wire.MaxLine-2 || l[0] == '.' {
		return false
	}
	for i := 0; i < len(l); i++ {
		if l[i] < 0x20 || l[i] > 0x7e {
			return false
		}
	}
	return true
}

func (s *pop3Session) handleCapa(cmd pop3wire.Command) error {
	if ok, err := s.noArgs(cmd); !ok {
		return err
	}
	// RFC 2449 5: a multi-line response, ended by ".".
	var b strings.Builder
	b.WriteString("+OK Capability list follows\r\n")
	for _, l := range s.capabilities() {
		b.WriteString(l + "\r\n")
	}
	b.WriteString(".\r\n")
	return s.c.write(b.String())
}

func (s *pop3Session) handleNoop(cmd pop3wire.Command) error {
	if ok, err := s.noArgs(cmd); !ok {
		return err
	}
	return s.reply("+OK")
}

func (s *pop3Session) handleQuit(cmd pop3wire.Command) error {
	if ok, err := s.noArgs(cmd); !ok {
		return err
	}
	// RFC 1939 6: QUIT in AUTHORIZATION ends the session, no UPDATE.
	if err := s.reply("+OK %s mailgate signing off", s.c.srv.options().Hostname); err != nil {
		return err
	}
	return errLogout
}

// handleSTLS runs STLS (RFC 2595 4). After the handshake all state from
// before it is forgotten; no new greeting is sent.
func (s *pop3Session) handleSTLS(cmd pop3wire.Command) error {
	c := s.c
	if ok, err := s.noArgs(cmd); !ok {
		return err
	}
	if !c.startTLSOffered() {
		return s.errCounted("STLS not available")
	}
	if err := s.reply("+OK Begin TLS negotiation"); err != nil {
		return err
	}
	// The pending USER, if any, was already forgotten in next.
	return c.startTLS()
}

// refusePlaintext answers USER, PASS or AUTH when credentials may not be
// sent yet (RFC 2595 4; RFC 3206 [AUTH]).
func (s *pop3Session) refusePlaintext() error {
	text := "Plaintext authentication disallowed without TLS"
	if s.c.ln.TLS == tlsStartTLS {
		text = "Plaintext authentication disallowed; use STLS first"
	}
	return s.errCounted("[AUTH] " + text)
}

// handleUser remembers the name for PASS (RFC 1939 7). The name is the
// whole argument; it is checked with the password at PASS.
func (s *pop3Session) handleUser(cmd pop3wire.Command) error {
	if !s.c.loginAllowed() {
		return s.refusePlaintext()
	}
	if cmd.Arg == "" {
		return s.errCounted("USER needs a name")
	}
	s.user = cmd.Arg
	return s.reply("+OK")
}

// handlePass logs in with the pending USER name and the whole argument
// as password: RFC 1939 7 lets passwords contain spaces.
func (s *pop3Session) handlePass(cmd pop3wire.Command, user string) (*backend.Session, error) {
	if !s.c.loginAllowed() {
		return nil, s.refusePlaintext()
	}
	if user == "" {
		return nil, s.errCounted("No USER given")
	}
	if cmd.Arg == "" {
		return nil, s.errCounted("PASS needs a password")
	}
	return s.finishLogin(loginAttempt{mech: "USER", user: user, pass: cmd.Arg})
}

// handleAuth runs AUTH [mechanism [initial-response]] (RFC 5034 4). A
// bare AUTH lists the mechanisms, as the pre-RFC 5034 clients that send
// it expect (Dovecot and Cyrus do the same).
func (s *pop3Session) handleAuth(cmd pop3wire.Command) (*backend.Session, error) {
	c := s.c
	if err := cmd.WordArgs(0, 2); err != nil {
		return nil, s.errCounted("AUTH needs a mechanism and an optional initial response")
	}
	if len(cmd.Args) == 0 {
		return nil, c.write("+OK\r\n" + strings.Join(sasl.Mechanisms(), "\r\n") + "\r\n.\r\n")
	}
	if !c.loginAllowed() {
		return nil, s.refusePlaintext()
	}
	var initial string
	if len(cmd.Args) == 2 {
		initial = cmd.Args[1]
	}
	// RFC 5034 4: challenges are "+ " and base64; "*" cancels and the
	// server answers -ERR.
	a, ok, err := c.saslLogin(strings.ToUpper(cmd.Args[0]), initial, len(cmd.Args) == 2, "+ ", saslReplies{
		unsupported: "-ERR Unsupported authentication mechanism",
		cancelled:   "-ERR Authentication cancelled",
		badInitial:  "-ERR Invalid initial response",
		malformed:   "-ERR Invalid SASL response",
	})
	if !ok {
		return nil, err
	}
	return s.finishLogin(a)
}

// finishLogin runs the shared login flow and answers. Every failure cause
// gets the same -ERR [AUTH]; only the session id differs between sessions.
func (s *pop3Session) finishLogin(a loginAttempt) (*backend.Session, error) {
	c := s.c
	dial := func(ctx context.Context, o *Options, bc backend.Client, user, pass string) (*backend.Session, error) {
		if o.POP3 == nil {
			return nil, errors.New("proxy: no POP3 backend configured")
		}
		return o.POP3.Login(ctx, bc, user, pass)
	}
	return c.loginAndAnswer(a, dial, loginReplies{
		passed: func(sess *backend.Session) error {
			// The backend's own +OK (it may carry a message count or a
			// [LOGIN-DELAY]); a generic one if it said nothing usable.
			reply := string(sess.Reply)
			if !strings.HasPrefix(reply, "+OK") || !strings.HasSuffix(reply, "\r\n") {
				reply = "+OK Logged in\r\n"
			}
			return c.write(reply)
		},
		// RFC 3206 4: AUTH, the credentials (or the place) are wrong.
		failed: "-ERR [AUTH] Authentication failed",
		// RFC 3206 5: SYS/TEMP, the client may try again later.
		unavailable: "-ERR [SYS/TEMP] Service temporarily unavailable",
	})
}

package proxy

// IMAP before login (RFC 9051, RFC 3501).
//
// # Implementation notes
//
// Only the not-authenticated state exists here: after a successful login
// the backend's own tagged OK goes to the client and the bytes are
// spliced, so the backend runs the authenticated state. The commands of
// this state are CAPABILITY, NOOP, LOGOUT (any state, RFC 9051 6.1), ID
// (RFC 2971), STARTTLS, LOGIN and AUTHENTICATE (RFC 9051 6.2); anything
// else is a counted BAD. One command is read, answered and logged before
// the next is read, so pipelined commands are answered in order.
//
// Reading a command: a line ending in {n} or {n+} announces a literal
// (RFC 9051 4.3, RFC 7888). The size is checked before anything is read:
// a synchronizing literal over the limit is refused with a tagged BAD and
// no "+" (the client then sends nothing more for that command, RFC 9051
// 7.5); a non-synchronizing one is already on its way and cannot be
// skipped safely, so it gets BAD and BYE.

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/proxy/internal/imapwire"
)

// imapHandler plugs IMAP into the shared connection code.
type imapHandler struct{}

// imapSession is the per-connection IMAP state.
type imapSession struct {
	c *conn
	// buf assembles one command: lines joined by CRLF, literals inline.
	buf []byte
}

// errLiteralTooBig is returned by readCommand for a literal over
// imapwire.MaxLiteral (or a command over imapwire.MaxCommand).
type errLiteralTooBig struct {
	tag     string // "" when the line had no valid tag
	nonSync bool   // the client is sending it anyway
}

func (e *errLiteralTooBig) Error() string { return "literal too big" }

// errPlaintextLiteral is returned by readCommand for a synchronizing
// literal in LOGIN where logins are not allowed yet (LOGINDISABLED): we
// refuse before the "+", so the client never sends the name or password
// in the clear.
type errPlaintextLiteral struct{ tag string }

func (e *errPlaintextLiteral) Error() string { return "LOGIN literal before TLS" }

// errLiteralTooBigClose ends the session after a non-synchronizing literal
// we refused (its octets are already on the wire).
var errLiteralTooBigClose = errors.New("non-synchronizing literal too big")

// imapCapabilities lists the pre-auth capabilities (RFC 9051 7.2.2): what
// mailgate itself implements before login. After login the backend's own
// [CAPABILITY] in its tagged OK replaces them.
func (s *imapSession) capabilities() string {
	c := s.c
	caps := []string{"IMAP4rev1", "SASL-IR", "LITERAL+", "ID"}
	if c.startTLSOffered() {
		caps = append(caps, "STARTTLS")
	}
	if c.loginAllowed() {
		caps = append(caps, "AUTH=PLAIN", "AUTH=LOGIN")
	} else {
		// RFC 9051 6.2.3: LOGIN (and AUTHENTICATE) refused until TLS.
		caps = append(caps, "LOGINDISABLED")
	}
	return strings.Join(caps, " ")
}

// imapGoodbyes: untagged BYE before closing (RFC 9051 7.1.5).
var imapGoodbyes = []goodbye{
	{errShutdown, "* BYE Server shutting down"},
	{errIdleTimeout, "* BYE Autologout; idle for too long"},
	{errLoginTimeout, "* BYE Autologout; idle for too long"},
	{errTooManyErrors, "* BYE Too many invalid commands"},
	{errTooManyCommands, "* BYE Too many commands before login"},
	{errTooManyAttempts, "* BYE Too many login failures"},
	{errLineTooLong, "* BYE Command line too long"},
	{errLiteralTooBigClose, "* BYE Literal too big"},
}

func (imapHandler) goodbye(c *conn, reason error) string { return goodbyeFor(reason, imapGoodbyes) }

func (imapHandler) serve(c *conn) (*backend.Session, error) {
	s := &imapSession{c: c}
	if err := c.writeLine(fmt.Sprintf("* OK [CAPABILITY %s] %s mailgate ready", s.capabilities(), c.srv.options().Hostname)); err != nil {
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
func (s *imapSession) next() (*backend.Session, error) {
	c := s.c
	raw, err := s.readCommand()
	var big *errLiteralTooBig
	if errors.As(err, &big) {
		if err := c.countCommand(); err != nil {
			return nil, err
		}
		if big.nonSync {
			s.bad(big.tag, "Literal too big")
			return nil, errLiteralTooBigClose
		}
		return nil, s.badCounted(big.tag, "Literal too big")
	}
	var plain *errPlaintextLiteral
	if errors.As(err, &plain) {
		if err := c.countCommand(); err != nil {
			return nil, err
		}
		return nil, s.refusePlaintext(plain.tag)
	}
	if err != nil {
		return nil, err
	}
	if err := c.countCommand(); err != nil {
		return nil, err
	}
	cmd, perr := imapwire.ParseCommand(raw)
	if perr != nil {
		c.log.Debug("malformed command", "err", perr)
		return nil, s.badCounted(cmd.Tag, "Syntax error")
	}
	c.log.Debug("command", "tag", cmd.Tag, "name", cmd.Name)
	switch cmd.Name {
	case "CAPABILITY":
		return nil, s.handleCapability(cmd)
	case "NOOP":
		return nil, s.handleNoop(cmd)
	case "LOGOUT":
		return nil, s.handleLogout(cmd)
	case "ID":
		return nil, s.handleID(cmd)
	case "STARTTLS":
		return nil, s.handleStartTLS(cmd)
	case "LOGIN":
		return s.handleLogin(cmd)
	case "AUTHENTICATE":
		return s.handleAuthenticate(cmd)
	}
	// Every other command, valid or not, is unknown before login.
	return nil, s.badCounted(cmd.Tag, "Unknown command or not allowed before login")
}

// readCommand reads one command: its first line, and for each literal
// the literal's octets and the line that follows.
func (s *imapSession) readCommand() ([]byte, error) {
	c := s.c
	s.buf = s.buf[:0]
	for literals := 0; ; literals++ {
		line, err := c.readLine(imapwire.MaxLine)
		if err != nil {
			return nil, err
		}
		if len(s.buf)+len(line) > imapwire.MaxCommand {
			return nil, errLineTooLong
		}
		s.buf = append(s.buf, line...)
		size, nonSync, ok, err := imapwire.TrailingLiteral(line)
		if err == nil && !ok {
			return s.buf, nil
		}
		// Each literal is an argument, so MaxArgs also bounds how many
		// "+" continuations one command can make us send.
		if err != nil || size > imapwire.MaxLiteral || int64(len(s.buf))+size+2 > imapwire.MaxCommand ||
			literals >= imapwire.MaxArgs {
			tag, _ := imapwire.ParseTag(s.buf)
			return nil, &errLiteralTooBig{tag: tag, nonSync: nonSync}
		}
		if !nonSync && !c.loginAllowed() && partialCommandName(s.buf) == "LOGIN" {
			tag, _ := imapwire.ParseTag(s.buf)
			return nil, &errPlaintextLiteral{tag: tag}
		}
		if !nonSync {
			// RFC 9051 7.5: the client waits for this before sending.
			if err := c.writeLine("+ Ready for literal data"); err != nil {
				return nil, err
			}
		}
		s.buf = append(s.buf, '\r', '\n')
		n := len(s.buf)
		s.buf = append(s.buf, make([]byte, size)...)
		if err := c.readFull(s.buf[n:]); err != nil {
			return nil, err
		}
	}
}

// partialCommandName returns the upper-case name of a command whose
// first line has been read, or "" when the line has no tag and name.
func partialCommandName(b []byte) string {
	tag, err := imapwire.ParseTag(b)
	if err != nil || len(b) == len(tag) {
		return ""
	}
	name, _, _ := strings.Cut(string(b[len(tag)+1:]), " ")
	return strings.ToUpper(name)
}

// reply writes one response line.
func (s *imapSession) reply(format string, a ...any) error {
	return s.c.writeLine(fmt.Sprintf(format, a...))
}

// bad writes a BAD reply, tagged when the tag is known.
func (s *imapSession) bad(tag, text string) error {
	if tag == "" {
		return s.reply("* BAD %s", text)
	}
	return s.reply("%s BAD %s", tag, text)
}

// badCounted writes a BAD reply and counts a protocol error.
func (s *imapSession) badCounted(tag, text string) error {
	if err := s.bad(tag, text); err != nil {
		return err
	}
	return s.c.countError()
}

// noArgs answers BAD for a command that takes no arguments but got some.
func (s *imapSession) noArgs(cmd imapwire.Command) (bool, error) {
	if len(cmd.Args) > 0 {
		return false, s.badCounted(cmd.Tag, cmd.Name+" takes no arguments")
	}
	return true, nil
}

func (s *imapSession) handleCapability(cmd imapwire.Command) error {
	if ok, err := s.noArgs(cmd); !ok {
		return err
	}
	if err := s.reply("* CAPABILITY %s", s.capabilities()); err != nil {
		return err
	}
	return s.reply("%s OK CAPABILITY completed", cmd.Tag)
}

func (s *imapSession) handleNoop(cmd imapwire.Command) error {
	if ok, err := s.noArgs(cmd); !ok {
		return err
	}
	return s.reply("%s OK NOOP completed", cmd.Tag)
}

func (s *imapSession) handleLogout(cmd imapwire.Command) error {
	if ok, err := s.noArgs(cmd); !ok {
		return err
	}
	// RFC 9051 6.1.3: untagged BYE, then the tagged OK.
	if err := s.reply("* BYE Logging out"); err != nil {
		return err
	}
	if err := s.reply("%s OK LOGOUT completed", cmd.Tag); err != nil {
		return err
	}
	return errLogout
}

package proxy

// SMTP submission before authentication (RFC 5321, RFC 6409 submission,
// RFC 8314 implicit TLS, RFC 3207 STARTTLS, RFC 4954 AUTH, RFC 2920
// PIPELINING, RFC 3463 enhanced status codes).
//
// # Implementation notes
//
// Only the pre-AUTH part of a session runs here. After AUTH succeeds the
// backend session (package backend: verified, past XCLIENT, with the
// client's EHLO replayed) is ready for MAIL FROM; we answer 235 and
// splice, so the backend runs the mail transaction. Everything shared
// with IMAP and POP3 (line reading with deadlines, limits, STARTTLS
// mechanics, the login decision and its logging, SASL rounds, splice)
// lives in conn.go and authflow.go; this file is only SMTP.
//
// One command is read, answered and logged before the next is read, so
// pipelined commands (RFC 2920 3.1) are answered in order; bytes that
// follow a successful AUTH (typically MAIL FROM, RCPT TO, DATA) stay in
// the connection's reader and reach the backend first during the splice.
//
// EHLO advertises only what the backend will really offer after the
// splice (SMTPBackend.Extensions, filtered to the extensions that make
// sense for a submission client), plus AUTH and STARTTLS, which mailgate
// itself implements. A wrong password and a denied country both get 535
// after the same delay; a backend outage gets 454 (RFC 4954 6).

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/proxy/internal/proxyproto"
	"github.com/mailgate/mailgate/proxy/internal/sasl"
	"github.com/mailgate/mailgate/proxy/internal/smtpwire"
)

const (
	// DefaultGreetingDelay is the early-talker wait (Limits.GreetingDelay)
	// before the 220 greeting: long enough to catch bots that send at
	// once, short enough that a person sending a mail does not notice.
	DefaultGreetingDelay = time.Second
	// smtpExtensionsTimeout bounds asking the backend for its EHLO
	// keywords (the backend caches them; rarely a network round trip).
	smtpExtensionsTimeout = 5 * time.Second
)

// errEarlyTalker, errNotSMTP and errBDATBeforeAuth end a session at once.
var (
	errEarlyTalker    = errors.New("client sent data before the greeting")
	errNotSMTP        = errors.New("client speaks another protocol")
	errBDATBeforeAuth = errors.New("BDAT before authentication")
)

// smtpHandler plugs SMTP into the shared connection code.
type smtpHandler struct{}

// smtpSession is the per-connection SMTP state.
type smtpSession struct {
	c *conn
	// helo is the client's EHLO/HELO name and heloCmd the verb it used;
	// both are passed to the backend, which replays them. Empty until a
	// successful EHLO or HELO, and again after STARTTLS (RFC 3207 4.2).
	helo, heloCmd string
}

// goodbye: 421 before closing (RFC 5321 3.8), with our host name as
// Postfix words it.
func (smtpHandler) goodbye(c *conn, reason error) string {
	host := c.srv.options().Hostname
	return goodbyeFor(reason, []goodbye{
		{errShutdown, "421 4.3.2 Service shutting down"},
		{errIdleTimeout, "421 4.4.2 " + host + " Error: timeout exceeded"},
		{errLoginTimeout, "421 4.4.2 " + host + " Error: timeout exceeded"},
		{errTooManyErrors, "421 4.7.0 " + host + " Error: too many errors"},
		{errTooManyCommands, "421 4.7.0 " + host + " Error: too many commands before authentication"},
		{errTooManyAttempts, "421 4.7.0 " + host + " Error: too many authentication failures"},
		// RFC 5321 4.5.3.1.4 names 500 for this; we also close, so 421.
		{errLineTooLong, "421 4.7.0 " + host + " Error: line too long"},
	})
}

func (smtpHandler) serve(c *conn) (*backend.Session, error) {
	s := &smtpSession{c: c}
	host := c.srv.options().Hostname
	if err := s.checkEarlyTalker(); err != nil {
		if errors.Is(err, errEarlyTalker) {
			c.log.Info("early talker refused")
			// RFC 5321 3.1: 554 instead of 220, then we close.
			c.writeLine("554 5.5.0 " + host + " Error: SMTP protocol synchronization")
		}
		return nil, err
	}
	// RFC 5321 4.3.1; "ESMTP" tells the client EHLO is supported.
	if err := c.writeLine("220 " + host + " ESMTP mailgate"); err != nil {
		return nil, err
	}
	for {
		sess, err := s.next()
		if sess != nil || err != nil {
			return sess, err
		}
	}
}

// checkEarlyTalker waits GreetingDelay for bytes that should not come
// yet. A PROXY header from an untrusted peer shows up here too and gets
// its own close reason.
func (s *smtpSession) checkEarlyTalker() error {
	c := s.c
	d := c.lim.GreetingDelay
	if d == 0 {
		d = DefaultGreetingDelay
	}
	if d < 0 {
		return nil
	}
	c.nc.SetReadDeadline(time.Now().Add(d))
	if c.srv.closing.Load() {
		return errShutdown
	}
	_, err := c.br.Peek(1)
	if err == nil {
		if p, _ := c.br.Peek(min(c.br.Buffered(), 12)); !inPrefixes(c.remote.Addr(), c.ln.ProxyFrom) && proxyproto.LooksLikeHeader(p) {
			return errUntrustedProxy
		}
		return errEarlyTalker
	}
	if err = c.readErr(err); errors.Is(err, errIdleTimeout) {
		return nil // silence: the client waits, as it should
	}
	return err
}

// smtpNeedsAuth are the commands of a mail transaction (and the address
// probes) that a submission server refuses before AUTH (RFC 6409 4.3,
// RFC 4954 6: 530 5.7.0).
var smtpNeedsAuth = map[string]bool{
	"MAIL": true, "RCPT": true, "DATA": true, "VRFY": true, "EXPN": true, "ETRN": true,
}

// smtpForeign are first words of other protocols; a client sending them
// is not a mail client (or is a cross-protocol attack through a browser)
// and is disconnected at once, as Postfix does (smtpd_forbidden_commands).
var smtpForeign = map[string]bool{
	"CONNECT": true, "GET": true, "POST": true, "PUT": true, "HEAD": true, "OPTIONS": true,
}

// next reads, checks and runs one command.
func (s *smtpSession) next() (*backend.Session, error) {
	c := s.c
	line, err := c.readCommandLine()
	if err != nil {
		return nil, err
	}
	cmd, perr := smtpwire.ParseCommand(line)
	if perr != nil {
		c.log.Debug("malformed command", "err", perr)
		return nil, s.replyCounted("500 5.5.2 Error: command not recognized")
	}
	if cmd.Name != "AUTH" && len(line)+2 > smtpwire.MaxLine {
		return nil, s.replyCounted("500 5.5.2 Error: line too long")
	}
	c.log.Debug("command", "name", cmd.Name)
	switch {
	case smtpForeign[cmd.Name]:
		c.writeLine("421 4.7.0 " + c.srv.options().Hostname + " Error: not an SMTP client; closing")
		return nil, errNotSMTP
	case cmd.Name == "BDAT":
		// RFC 3030 2: the chunk's octets follow the command at once,
		// unasked; after refusing BDAT we cannot tell them from
		// commands, so the session ends.
		c.writeLine("530 5.7.0 Authentication required")
		return nil, errBDATBeforeAuth
	case smtpNeedsAuth[cmd.Name]:
		return nil, s.replyCounted("530 5.7.0 Authentication required")
	}
	switch cmd.Name {
	case "EHLO", "HELO":
		return nil, s.handleHelo(cmd)
	case "STARTTLS":
		return nil, s.handleStartTLS(cmd)
	case "AUTH":
		return s.handleAuth(cmd)
	case "NOOP":
		// RFC 5321 4.1.1.9: NOOP may carry a string; it is ignored.
		return nil, s.reply("250 2.0.0 OK")
	case "RSET":
		return nil, s.handleRset(cmd)
	case "QUIT":
		return nil, s.handleQuit(cmd)
	}
	return nil, s.replyCounted("500 5.5.2 Error: command not recognized")
}

// reply writes one reply line.
func (s *smtpSession) reply(line string) error { return s.c.writeLine(line) }

// replyCounted writes an error reply and counts a protocol error.
func (s *smtpSession) replyCounted(line string) error { return s.c.replyCounted(line) }

// smtpBackendExtensions are the EHLO keywords passed on from the backend:
// those about the mail transaction that follows AUTH. The backend's AUTH,
// STARTTLS, XCLIENT, ETRN, VRFY and the like are never repeated.
// CHUNKING (and BINARYMIME, which needs BDAT, RFC 3030 3) are not
// either: the splice filter refuses BDAT (smtpwire.SMTPRefusedAfterLogin).
var smtpBackendExtensions = map[string]bool{
	"SIZE": true, "8BITMIME": true, "SMTPUTF8": true, "PIPELINING": true, "ENHANCEDSTATUSCODES": true,
	"DSN": true,
}

// extensions lists the EHLO keywords to advertise (RFC 5321 4.1.1.1).
func (s *smtpSession) extensions() []string {
	c := s.c
	var exts []string
	if o := c.srv.options(); o.SMTP != nil {
		ctx, cancel := context.WithTimeout(c.ctx, smtpExtensionsTimeout)
		be, err := o.SMTP.Extensions(ctx)
		cancel()
		if err != nil {
			c.log.Warn("SMTP backend extensions unavailable", "err", err)
		}
		for _, e := range be {
			kw, _, _ := strings.Cut(e, " ")
			if smtpBackendExtensions[strings.ToUpper(kw)] && validEHLOLine(e) {
				exts = append(exts, e)
			}
		}
	}
	if c.loginAllowed() {
		// RFC 4954 4: AUTH only where credentials may be sent.
		exts = append(exts, "AUTH "+strings.Join(sasl.Mechanisms(), " "))
	}
	if c.startTLSOffered() {
		exts = append(exts, "STARTTLS")
	}
	return exts
}

// validEHLOLine: an extension line we may repeat is short printable
// ASCII (RFC 5321 4.1.1.1 ehlo-line).
func validEHLOLine(l string) bool {
	if l == "" || len(l) > smtpwire.MaxLine-len("250-\r\n") {
		return false
	}
	for i := 0; i < len(l); i++ {
		if l[i] < 0x20 || l[i] > 0x7e {
			return false
		}
	}
	return true
}

// handleHelo runs EHLO or HELO (RFC 5321 4.1.1.1). Either resets any
// transaction state; here there is none but the name.
func (s *smtpSession) handleHelo(cmd smtpwire.Command) error {
	c := s.c
	// The backend gets the name in ASCII (A-labels for a UTF-8 name), so
	// nothing about it can fail there after the login decision.
	name, err := smtpwire.HeloASCII(cmd.Arg)
	if err != nil {
		return s.replyCounted("501 5.5.4 Syntax: " + cmd.Name + " hostname")
	}
	s.helo, s.heloCmd = name, cmd.Name
	host := c.srv.options().Hostname
	if cmd.Name == "HELO" {
		return s.reply("250 " + host)
	}
	var b strings.Builder
	exts := s.extensions()
	b.WriteString("250")
	if len(exts) > 0 {
		b.WriteByte('-')
	} else {
		b.WriteByte(' ')
	}
	b.WriteString(host + "\r\n")
	for i, e := range exts {
		sep := "-"
		if i == len(exts)-1 {
			sep = " "
		}
		b.WriteString("250" + sep + e + "\r\n")
	}
	return c.write(b.String())
}

// handleStartTLS runs STARTTLS (RFC 3207 4). After the handshake the
// session is as new: the client must send EHLO again (RFC 3207 4.2), and
// bytes it sent with STARTTLS are gone (conn.startTLS).
func (s *smtpSession) handleStartTLS(cmd smtpwire.Command) error {
	c := s.c
	if cmd.Arg != "" {
		return s.replyCounted("501 5.5.4 Syntax: STARTTLS")
	}
	if !c.startTLSOffered() {
		return s.replyCounted("502 5.5.1 Error: command not implemented")
	}
	if err := s.reply("220 2.0.0 Ready to start TLS"); err != nil {
		return err
	}
	s.helo, s.heloCmd = "", ""
	return c.startTLS()
}

func (s *smtpSession) handleRset(cmd smtpwire.Command) error {
	if cmd.Arg != "" {
		return s.replyCounted("501 5.5.4 Syntax: RSET")
	}
	return s.reply("250 2.0.0 OK")
}

func (s *smtpSession) handleQuit(cmd smtpwire.Command) error {
	if cmd.Arg != "" {
		return s.replyCounted("501 5.5.4 Syntax: QUIT")
	}
	if err := s.reply("221 2.0.0 Bye"); err != nil {
		return err
	}
	return errLogout
}

// handleAuth runs AUTH mechanism [initial-response] (RFC 4954 4).
func (s *smtpSession) handleAuth(cmd smtpwire.Command) (*backend.Session, error) {
	c := s.c
	if s.helo == "" {
		// RFC 4954 4: AUTH is an ESMTP command; the backend also needs
		// the client's name to replay.
		return nil, s.replyCounted("503 5.5.1 Error: send HELO/EHLO first")
	}
	if !c.loginAllowed() {
		if c.ln.TLS == tlsStartTLS {
			// RFC 3207 4: the server may require STARTTLS first.
			return nil, s.replyCounted("530 5.7.0 Must issue a STARTTLS command first")
		}
		// RFC 4954 6.
		return nil, s.replyCounted("538 5.7.11 Encryption required for requested authentication mechanism")
	}
	a, err := smtpwire.ParseAuth(cmd.Arg)
	if err != nil {
		return nil, s.replyCounted("501 5.5.4 Syntax: AUTH mechanism [initial-response]")
	}
	// RFC 4954 4: challenges are "334 " and base64; a cancelled AUTH
	// ("*") is answered with 501.
	la, ok, err := c.saslLogin(a.Mechanism, a.Initial, a.HasInitial, "334 ", saslReplies{
		unsupported: "504 5.5.4 Unrecognized authentication type",
		cancelled:   "501 5.0.0 Authentication cancelled",
		badInitial:  "501 5.5.2 Cannot decode response",
		malformed:   "501 5.5.2 Cannot decode response",
	})
	if !ok {
		return nil, err
	}
	return s.finishLogin(la)
}

// finishLogin runs the shared login flow and answers. Every failure cause
// gets the same 535; only the session id differs between sessions.
func (s *smtpSession) finishLogin(a loginAttempt) (*backend.Session, error) {
	c := s.c
	helo, heloCmd := s.helo, s.heloCmd
	dial := func(ctx context.Context, o *Options, bc backend.Client, user, pass string) (*backend.Session, error) {
		if o.SMTP == nil {
			return nil, errors.New("proxy: no SMTP backend configured")
		}
		bc.Helo, bc.HeloCmd = helo, heloCmd
		return o.SMTP.Login(ctx, bc, user, pass)
	}
	return c.loginAndAnswer(a, dial, loginReplies{
		// The backend is past its own EHLO and ready for MAIL FROM.
		passed: func(*backend.Session) error { return s.reply("235 2.7.0 Authentication successful") },
		// RFC 4954 6: 535 5.7.8 for bad credentials, and here for a
		// denied place too, so the two cannot be told apart.
		failed: "535 5.7.8 Authentication credentials invalid",
		// RFC 4954 6: temporary; the client may retry later.
		unavailable: "454 4.7.0 Temporary authentication failure",
	})
}

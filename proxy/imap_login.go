package proxy

import (
	"context"
	"errors"
	"strings"

	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/proxy/internal/imapwire"
)

// maxSASLSteps bounds the challenges of one SASL exchange (saslExchange,
// every protocol); LOGIN needs two, PLAIN one.
const maxSASLSteps = 4

// handleLogin runs LOGIN userid password (RFC 9051 6.2.3).
func (s *imapSession) handleLogin(cmd imapwire.Command) (*backend.Session, error) {
	if len(cmd.Args) != 2 || !cmd.Args[0].IsString() || !cmd.Args[1].IsString() {
		return nil, s.badCounted(cmd.Tag, "LOGIN needs a user name and a password")
	}
	if !s.c.loginAllowed() {
		return nil, s.refusePlaintext(cmd.Tag)
	}
	return s.finishLogin(cmd.Tag, loginAttempt{mech: "LOGIN", user: cmd.Args[0].Value, pass: cmd.Args[1].Value})
}

// refusePlaintext answers LOGIN or AUTHENTICATE under LOGINDISABLED
// (RFC 9051 6.2.3; RFC 5530 PRIVACYREQUIRED).
func (s *imapSession) refusePlaintext(tag string) error {
	text := "Login disabled without TLS"
	if s.c.ln.TLS == tlsStartTLS {
		text = "Login disabled; use STARTTLS first"
	}
	if err := s.reply("%s NO [PRIVACYREQUIRED] %s", tag, text); err != nil {
		return err
	}
	return s.c.countError()
}

// handleAuthenticate runs AUTHENTICATE mechanism [initial-response] (RFC
// 9051 6.2.2, RFC 4959 SASL-IR).
func (s *imapSession) handleAuthenticate(cmd imapwire.Command) (*backend.Session, error) {
	c := s.c
	if len(cmd.Args) < 1 || len(cmd.Args) > 2 || cmd.Args[0].Kind != imapwire.Atom ||
		(len(cmd.Args) == 2 && cmd.Args[1].Kind != imapwire.Atom) {
		return nil, s.badCounted(cmd.Tag, "AUTHENTICATE needs a mechanism and an optional initial response")
	}
	if !c.loginAllowed() {
		return nil, s.refusePlaintext(cmd.Tag)
	}
	var initial string
	if len(cmd.Args) == 2 {
		initial = cmd.Args[1].Value
	}
	// RFC 9051 7.5: challenges are "+ " and base64; RFC 9051 6.2.2: "*"
	// cancels and the server answers BAD.
	a, ok, err := c.saslLogin(strings.ToUpper(cmd.Args[0].Value), initial, len(cmd.Args) == 2, "+ ", saslReplies{
		unsupported: cmd.Tag + " NO Unsupported authentication mechanism",
		cancelled:   cmd.Tag + " BAD Authentication cancelled",
		badInitial:  cmd.Tag + " BAD Invalid initial response",
		malformed:   cmd.Tag + " BAD Invalid SASL response",
	})
	if !ok {
		return nil, err
	}
	return s.finishLogin(cmd.Tag, a)
}

// finishLogin runs the shared login flow and answers. Every failure
// cause gets the same tagged NO, so a denied country cannot be told from
// a wrong password; only the session id differs between sessions.
func (s *imapSession) finishLogin(tag string, a loginAttempt) (*backend.Session, error) {
	c := s.c
	dial := func(ctx context.Context, o *Options, bc backend.Client, user, pass string) (*backend.Session, error) {
		if o.IMAP == nil {
			return nil, errors.New("proxy: no IMAP backend configured")
		}
		// The backend sees only mailgate's own tags; tag is put on the
		// backend's tagged OK (Session.Reply) for the client.
		return o.IMAP.Login(ctx, bc, tag, user, pass)
	}
	return c.loginAndAnswer(a, dial, loginReplies{
		passed: func(sess *backend.Session) error {
			reply := sess.Reply
			if len(reply) == 0 {
				reply = []byte(tag + " OK Logged in\r\n")
			}
			return c.write(string(reply))
		},
		failed: tag + " NO [AUTHENTICATIONFAILED] Authentication failed",
		// RFC 5530 UNAVAILABLE: temporary; the client may retry later.
		unavailable: tag + " NO [UNAVAILABLE] Service temporarily unavailable",
	})
}

// handleStartTLS runs STARTTLS (RFC 9051 6.2.1). After the handshake all
// protocol state from before it is forgotten and no greeting is sent.
func (s *imapSession) handleStartTLS(cmd imapwire.Command) error {
	c := s.c
	if ok, err := s.noArgs(cmd); !ok {
		return err
	}
	if !c.startTLSOffered() {
		return s.badCounted(cmd.Tag, "STARTTLS not available")
	}
	if err := s.reply("%s OK Begin TLS negotiation now", cmd.Tag); err != nil {
		return err
	}
	if err := c.startTLS(); err != nil {
		return err
	}
	c.clientID = ""
	return nil
}

// ID limits from RFC 2971 3.3: at most 30 field/value pairs, fields up to
// 30 octets, values up to 1024 octets.
const (
	maxIDPairs    = 30
	maxIDField    = 30
	maxIDValueLen = 1024
)

// handleID runs ID (RFC 2971): remember the client's name and version for
// the logs and answer with mailgate's.
func (s *imapSession) handleID(cmd imapwire.Command) error {
	c := s.c
	if len(cmd.Args) != 1 {
		return s.badCounted(cmd.Tag, "ID needs one argument")
	}
	arg := cmd.Args[0]
	var name, version string
	switch {
	case arg.IsNIL():
	case arg.Kind == imapwire.List:
		l := arg.List
		if len(l)%2 != 0 || len(l)/2 > maxIDPairs {
			return s.badCounted(cmd.Tag, "Invalid ID list")
		}
		for i := 0; i < len(l); i += 2 {
			k, v := l[i], l[i+1]
			if k.Kind == imapwire.Atom || k.Kind == imapwire.List || len(k.Value) > maxIDField ||
				v.Kind == imapwire.List || (v.Kind == imapwire.Atom && !v.IsNIL()) || len(v.Value) > maxIDValueLen {
				return s.badCounted(cmd.Tag, "Invalid ID list")
			}
			if v.IsNIL() {
				continue
			}
			switch strings.ToLower(k.Value) {
			case "name":
				name = v.Value
			case "version":
				version = v.Value
			}
		}
	default:
		return s.badCounted(cmd.Tag, "Invalid ID argument")
	}
	id := name
	if version != "" {
		id += "/" + version
	}
	c.clientID = sanitizeLog(id, maxClientIDLog)
	if c.clientID != "" {
		c.log.Debug("client ID", "client_id", c.clientID)
	}
	if err := s.reply(`* ID ("name" "mailgate")`); err != nil {
		return err
	}
	return s.reply("%s OK ID completed", cmd.Tag)
}

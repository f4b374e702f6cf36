package proxy

// The SASL challenge/response loop, the same in every protocol and
// written once (only the framing of a challenge differs, "+ " in IMAP
// and POP3, "334 " in SMTP). It collects a loginAttempt; login.go judges
// it and answers the outcome in the protocol's words.

import (
	"errors"
	"fmt"

	"github.com/mailgate/mailgate/proxy/internal/sasl"
)

// errSASLSteps: a mechanism asked for more rounds than it may; it wraps
// sasl.ErrMalformed so callers answer it as a bad exchange.
var errSASLSteps = fmt.Errorf("%w: too many SASL steps", sasl.ErrMalformed)

// saslExchange runs one SASL exchange for mech. initial is the decoded
// initial response, nil when the client sent none. Each challenge is
// written as challengePrefix plus its base64 (RFC 9051 7.5, RFC 5034 4,
// RFC 4954 4); each response is read as one line of at most maxSASLLine
// octets.
//
// Errors that wrap sasl.ErrUnsupported, sasl.ErrCancelled or
// sasl.ErrMalformed leave the session usable: the caller answers them in
// its protocol. Any other error (read, write, line too long, timeout)
// ends the session.
func (c *conn) saslExchange(mech string, initial []byte, challengePrefix string) (sasl.Credentials, error) {
	srv, err := sasl.NewServer(mech)
	if err != nil {
		return sasl.Credentials{}, err
	}
	resp := initial
	for step := 0; ; step++ {
		challenge, done, err := srv.Next(resp)
		if err != nil {
			return sasl.Credentials{}, err
		}
		if done {
			return srv.Credentials(), nil
		}
		if step >= maxSASLSteps {
			return sasl.Credentials{}, errSASLSteps
		}
		if err := c.writeLine(challengePrefix + sasl.EncodeChallenge(challenge)); err != nil {
			return sasl.Credentials{}, err
		}
		line, err := c.readLine(maxSASLLine)
		if err != nil {
			return sasl.Credentials{}, err
		}
		if resp, err = sasl.DecodeResponse(line); err != nil {
			return sasl.Credentials{}, err
		}
	}
}

// saslReplies are one protocol's answers to a SASL exchange that ended
// without credentials. Each is a whole reply line.
type saslReplies struct {
	// unsupported: a mechanism we do not offer (a counted error).
	unsupported string
	// cancelled: the client sent "*" (RFC 4422 3.5); not counted, the
	// client chose to stop.
	cancelled string
	// badInitial: an initial response that is not base64 or "=" (a
	// counted error).
	badInitial string
	// malformed: a response that is not base64, or a SASL message that
	// does not parse (a counted error).
	malformed string
}

// saslLogin is AUTH/AUTHENTICATE in every protocol: decode the optional
// initial response (initial as sent; "=" is an empty one, RFC 4959 3,
// RFC 5034 4, RFC 4954 4), run the exchange with challengePrefix, and
// answer any ending without credentials with r. ok reports whether a
// login attempt came back; err ends the session.
func (c *conn) saslLogin(mech, initial string, hasInitial bool, challengePrefix string, r saslReplies) (a loginAttempt, ok bool, err error) {
	var ir []byte // nil: no initial response
	if hasInitial {
		if ir, err = sasl.DecodeResponse([]byte(initial)); err != nil {
			if errors.Is(err, sasl.ErrCancelled) {
				return a, false, c.writeLine(r.cancelled)
			}
			return a, false, c.replyCounted(r.badInitial)
		}
	}
	cr, err := c.saslExchange(mech, ir, challengePrefix)
	switch {
	case errors.Is(err, sasl.ErrUnsupported):
		return a, false, c.replyCounted(r.unsupported)
	case errors.Is(err, sasl.ErrCancelled):
		return a, false, c.writeLine(r.cancelled)
	case errors.Is(err, sasl.ErrMalformed):
		c.log.Debug("SASL exchange failed", "mech", mech, "err", err)
		return a, false, c.replyCounted(r.malformed)
	case err != nil:
		return a, false, err
	}
	return loginAttempt{mech: mech, authzid: cr.Authzid, user: cr.Username, pass: cr.Password}, true, nil
}

// replyCounted writes an error reply line and counts a protocol error.
func (c *conn) replyCounted(line string) error {
	if err := c.writeLine(line); err != nil {
		return err
	}
	return c.countError()
}

package proxy

import (
	"errors"

	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/policy"
)

// protocolHandler is one protocol's pre-authentication state machine; see
// the comment at the top of conn.go for the contract.
type protocolHandler interface {
	// serve greets the client and runs commands until a login succeeded
	// (the protocol's success reply already written) or the session must
	// end (the error is the close reason).
	serve(c *conn) (*backend.Session, error)
	// goodbye renders the line sent before closing for reason, or "".
	goodbye(c *conn, reason error) string
}

// handlerFor returns the handler for p, or nil when mailgate does not
// serve p. POP3 and SMTP add their case here.
func handlerFor(p policy.Protocol) protocolHandler {
	switch p {
	case policy.IMAP:
		return imapHandler{}
	case policy.POP3:
		return pop3Handler{}
	case policy.SMTP:
		return smtpHandler{}
	}
	return nil
}

// goodbye is one protocol's last line for a close reason.
type goodbye struct {
	reason error
	line   string
}

// goodbyeReasons are the shared close reasons every protocol words (a
// test checks it). Others close without a line: EOF, a logout already
// answered, an untrusted PROXY header (the peer may not speak the
// protocol at all).
var goodbyeReasons = []error{
	errShutdown, errIdleTimeout, errLoginTimeout, errTooManyErrors,
	errTooManyCommands, errTooManyAttempts, errLineTooLong,
}

// goodbyeFor returns the line in lines for reason, or "".
func goodbyeFor(reason error, lines []goodbye) string {
	for _, g := range lines {
		if errors.Is(reason, g.reason) {
			return g.line
		}
	}
	return ""
}

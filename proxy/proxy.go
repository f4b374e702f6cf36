// Package proxy is mailgate's edge: listeners, PROXY protocol, TLS and
// STARTTLS, the pre-authentication IMAP, POP3 and SMTP submission state
// machines, SASL PLAIN/LOGIN, the login decision, backend login and the
// splice. Connection handling is written once; each protocol file holds
// only its protocol.
//
// proxy imports policy and backend; it receives *tls.Config values and
// never imports tlsconf.
package proxy

import (
	"context"
	"crypto/tls"
	"net/netip"
	"time"

	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/policy"
)

// Authorizer decides a login; *policy.Engine satisfies it.
type Authorizer interface {
	Decide(policy.Request) policy.Decision
}

// IMAPBackend logs a client in to the IMAP server; *backend.IMAP satisfies it.
type IMAPBackend interface {
	Login(ctx context.Context, c backend.Client, tag, user, pass string) (*backend.Session, error)
}

// POP3Backend logs a client in to the POP3 server; *backend.POP3 satisfies it.
type POP3Backend interface {
	Login(ctx context.Context, c backend.Client, user, pass string) (*backend.Session, error)
	Capabilities(ctx context.Context) ([]string, error)
}

// Limits bound every client; the `limits:` config section. Zero values
// mean the documented defaults (see Defaults).
type Limits struct {
	// AuthFailureDelay: every failed login (wrong password, denied
	// country) is answered this long after the attempt began, so neither
	// reply nor timing tells the causes apart.
	AuthFailureDelay time.Duration `yaml:"auth_failure_delay"`
	// PreAuthIdleTimeout bounds the wait for each command before login.
	PreAuthIdleTimeout time.Duration `yaml:"preauth_idle_timeout"`
	// LoginTimeout bounds the whole time from connect to login.
	LoginTimeout time.Duration `yaml:"login_timeout"`
	// IdleTimeout closes a spliced session with no traffic either way.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// TLSHandshakeTimeout bounds each TLS handshake.
	TLSHandshakeTimeout time.Duration `yaml:"tls_handshake_timeout"`
	// MaxLoginAttempts per connection; then the connection is closed.
	MaxLoginAttempts int `yaml:"max_login_attempts"`
	// MaxErrors: protocol errors (bad or unknown commands) before login.
	MaxErrors int `yaml:"max_errors"`
	// MaxCommands before login.
	MaxCommands int `yaml:"max_commands"`
	// GreetingDelay: SMTP only. The 220 greeting is held back this long;
	// a client that sends anything before it is refused (554) and
	// disconnected, since RFC 5321 3.1 clients wait for the greeting
	// and bots that do not are common. Zero means the default (1s, see
	// DefaultGreetingDelay); a negative value turns the check off.
	GreetingDelay time.Duration `yaml:"greeting_delay"`
}

// Listener is one configured listening socket.
type Listener struct {
	Name     string          // e.g. "imaps"; used in logs
	Protocol policy.Protocol // imap, pop3 or smtp
	// TLS is backend.TLSImplicit, TLSStartTLS or TLSNone: the same
	// three words as a backend's TLS.
	TLS       backend.TLSMode
	TLSConfig *tls.Config // required unless TLS is backend.TLSNone
	// ProxyFrom lists networks whose PROXY v1/v2 header is trusted. Empty:
	// nobody; a header from anyone else closes the connection.
	ProxyFrom []netip.Prefix
	// PlaintextFrom lists networks allowed to log in without TLS.
	PlaintextFrom []netip.Prefix
}

// SMTPBackend verifies a submission client's password and opens the
// backend SMTP session (XCLIENT, the client's EHLO replayed); *backend.SMTP
// satisfies it.
type SMTPBackend interface {
	Login(ctx context.Context, c backend.Client, user, pass string) (*backend.Session, error)
	// Extensions lists the backend's EHLO keywords (e.g. "SIZE 10240000",
	// "8BITMIME"), so mailgate advertises only what the backend has.
	Extensions(ctx context.Context) ([]string, error)
}

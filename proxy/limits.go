package proxy

import (
	"errors"
	"fmt"
	"time"

	"github.com/mailgate/mailgate/proxy/internal/sasl"
)

// Credential and SASL line limits: short names for the SASL limits
// (sasl, from internal/authlimit), the one source the backend client
// shares. They are not configurable.
const (
	// maxSASLLine bounds one SASL line: RFC 4954 4 lets SMTP AUTH lines
	// reach 12288 octets; IMAP and POP3 use the same bound.
	maxSASLLine = sasl.MaxLine
	// maxLoginName bounds a login name: a mail address is at most 320
	// octets (RFC 5321 4.5.3.1).
	maxLoginName = sasl.MaxUsername
)

// Default limits. Each says why; the `limits:` table in docs/imap.md
// repeats them for admins.
const (
	// DefaultAuthFailureDelay: long enough to make online guessing slow
	// (a few tries per minute per connection), short enough that a user
	// who mistyped does not give up, and above Dovecot's own 2 s
	// auth_failure_delay (measured up to 2.05 s): a denial must not
	// answer sooner than a wrong password that reached the backend.
	DefaultAuthFailureDelay = 3 * time.Second
	// DefaultPreAuthIdleTimeout: a real client sends its next command
	// within seconds; RFC 9051 5.4 only requires the 30-minute autologout
	// after login, so before login we are stricter (mox uses 30 s).
	DefaultPreAuthIdleTimeout = time.Minute
	// DefaultLoginTimeout bounds connect-to-login, so a slow client cannot
	// hold a pre-auth slot with occasional NOOPs.
	DefaultLoginTimeout = 2 * time.Minute
	// DefaultIdleTimeout: RFC 9051 5.4 requires at least 30 minutes of
	// autologout, and IDLE clients re-issue every 29 minutes (RFC 2177 3).
	DefaultIdleTimeout = 30 * time.Minute
	// DefaultTLSHandshakeTimeout: a handshake is a few round trips.
	DefaultTLSHandshakeTimeout = 10 * time.Second
	// DefaultMaxLoginAttempts per connection, as Dovecot's default
	// (mail clients retry once or twice with a stored password).
	DefaultMaxLoginAttempts = 3
	// DefaultMaxErrors: protocol errors before login; go-smtp closes
	// after 3, a little slack for clients probing capabilities.
	DefaultMaxErrors = 5
	// DefaultMaxCommands before login: a real client needs CAPABILITY,
	// ID, STARTTLS, CAPABILITY again and a few logins.
	DefaultMaxCommands = 25

	// maxAuthFailureDelay keeps a typo from locking a session for long.
	maxAuthFailureDelay = 30 * time.Second
)

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	setDur := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	setInt := func(n *int, def int) {
		if *n == 0 {
			*n = def
		}
	}
	setDur(&l.AuthFailureDelay, DefaultAuthFailureDelay)
	setDur(&l.PreAuthIdleTimeout, DefaultPreAuthIdleTimeout)
	setDur(&l.LoginTimeout, DefaultLoginTimeout)
	setDur(&l.IdleTimeout, DefaultIdleTimeout)
	setDur(&l.TLSHandshakeTimeout, DefaultTLSHandshakeTimeout)
	setInt(&l.MaxLoginAttempts, DefaultMaxLoginAttempts)
	setInt(&l.MaxErrors, DefaultMaxErrors)
	setInt(&l.MaxCommands, DefaultMaxCommands)
	return l
}

// Validate reports every problem in l at once, each with its key path
// (limits.x). Zero means "default" and is valid.
func (l Limits) Validate() error {
	var errs []error
	bad := func(key string, format string, a ...any) {
		errs = append(errs, fmt.Errorf("limits.%s: %s", key, fmt.Sprintf(format, a...)))
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"auth_failure_delay", l.AuthFailureDelay},
		{"preauth_idle_timeout", l.PreAuthIdleTimeout},
		{"login_timeout", l.LoginTimeout},
		{"idle_timeout", l.IdleTimeout},
		{"tls_handshake_timeout", l.TLSHandshakeTimeout},
	} {
		if d.v < 0 {
			bad(d.key, "must not be negative, got %s", d.v)
		}
	}
	for _, n := range []struct {
		key string
		v   int
	}{
		{"max_login_attempts", l.MaxLoginAttempts},
		{"max_errors", l.MaxErrors},
		{"max_commands", l.MaxCommands},
	} {
		if n.v < 0 {
			bad(n.key, "must not be negative, got %d", n.v)
		}
	}
	if l.AuthFailureDelay > maxAuthFailureDelay {
		bad("auth_failure_delay", "%s is more than %s", l.AuthFailureDelay, maxAuthFailureDelay)
	}
	d := l.WithDefaults()
	if d.AuthFailureDelay >= 0 && d.LoginTimeout > 0 && d.AuthFailureDelay >= d.LoginTimeout {
		bad("auth_failure_delay", "%s must be shorter than limits.login_timeout (%s)", d.AuthFailureDelay, d.LoginTimeout)
	}
	if d.PreAuthIdleTimeout > d.LoginTimeout && d.LoginTimeout > 0 {
		bad("preauth_idle_timeout", "%s is longer than limits.login_timeout (%s) and would never apply", d.PreAuthIdleTimeout, d.LoginTimeout)
	}
	return errors.Join(errs...)
}

// Package backend logs in to the real mail servers (Dovecot, Postfix, any
// IMAP/POP3/SMTP server) on behalf of a client mailgate has already
// accepted, passing the client's real address on (IMAP ID, POP3 and SMTP
// XCLIENT), and hands back the authenticated connection for splicing.
//
// backend imports no other mailgate package but internal/authlimit, the
// constants-only source of the credential limits it shares with the
// proxy. Credentials are re-encoded here; raw client bytes never reach a backend before login.
//
// # Implementation notes
//
//   - Every network step has a deadline: ConnectTimeout bounds dial and TLS
//     handshake, Timeout bounds each read and write after that,
//     LoginTimeout the whole login, and a cancelled ctx interrupts any of
//     them (conn.watch).
//   - Only mailgate's own bytes reach a backend before login: its own
//     tags (mg1, mg2, ...), values it chose (ID, XCLIENT) and the
//     re-encoded credentials. Any answer that cannot be the reply awaited
//     (an untagged BAD or BYE, another tag, garbage, EOF) ends the login
//     at once.
//   - Backend lines are read into a bounded buffer (maxLineLen); a longer
//     line is a protocol error, never unbounded growth.
//   - Credentials containing CR, LF or NUL, or longer than the SASL
//     limits (authlimit), are refused before dialing: no server accepts
//     them and they only serve command injection.
//   - Errors wrap ErrAuthFailed (permanent: the backend said no to these
//     credentials) or ErrUnavailable (anything else, temporary). Error text
//     may quote backend replies, truncated, and never contains a password.
//
// RFCs: 9051 and 3501 (IMAP), 2971 (ID), 7888 (LITERAL+/-), 5530 (IMAP
// response codes), 1939 (POP3), 2449 (CAPA), 5034 (POP3 AUTH), 2595 (STLS),
// 3206 (POP3 response codes), 5321 (SMTP), 4954 (SMTP AUTH), 3207
// (STARTTLS), 3461 (xtext), 4616 (SASL PLAIN).
package backend

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/mailgate/mailgate/internal/authlimit"
)

// Errors a login returns, wrapped with detail for the log.
var (
	// ErrAuthFailed: the backend refused the credentials.
	ErrAuthFailed = errors.New("backend: authentication failed")
	// ErrUnavailable: dial, TLS, timeout or protocol failure; temporary.
	ErrUnavailable = errors.New("backend: unavailable")
	// ErrNoService: the server did not take the connection (dial, TLS
	// handshake, greeting). Such errors wrap ErrUnavailable too. Unlike a
	// slow or odd answer to a login, which a client's credentials or
	// source can provoke, this says the server itself is down.
	ErrNoService = errors.New("backend: no service")
)

// Defaults for Options; see Options.Defaults.
const (
	// DefaultConnectTimeout bounds dial plus TLS handshake. A backend on
	// the same host or LAN answers in milliseconds; seconds mean it is down.
	DefaultConnectTimeout = 5 * time.Second
	// DefaultTimeout bounds each read or write during login. Dovecot may
	// delay a failed login by up to 15s (auth_failure_delay is 2s by
	// default, more under penalty), so this stays well above that.
	DefaultTimeout = 30 * time.Second
	// DefaultLoginTimeout bounds a whole backend login, dial to verdict.
	// Dovecot answers a wrong password after its auth_failure_delay (2s)
	// plus its per-address penalty (up to 15s after repeated failures):
	// up to 17s. A shorter bound turns those verdicts into backend
	// errors, which the login's lockout does not count, so a guessing
	// source would get more tries at the backend than lockout.after.
	DefaultLoginTimeout = 20 * time.Second
)

// TLSMode says how a connection gets to TLS. It is one vocabulary for
// both ends of mailgate: the `tls:` key of a listener (proxy.Listener.TLS,
// listeners[].tls) and of a backend (Options.TLS, backends.*.tls) take
// the same three words. It lives here because every package that uses
// it (backend, proxy, cmd) imports backend, and backend imports none of
// them; tlsconf, which builds the *tls.Config, is imported by neither
// proxy nor backend.
type TLSMode string

// The TLS modes.
const (
	TLSNone     TLSMode = "none"     // plaintext (a backend on loopback or a trusted LAN; a listener for plaintext_from)
	TLSImplicit TLSMode = "implicit" // TLS from the first byte (993, 995, 465)
	TLSStartTLS TLSMode = "starttls" // STARTTLS (IMAP, SMTP) or STLS (POP3) before login
)

// Valid reports whether m is one of the three modes; the empty mode,
// which configs use for "the default", is not.
func (m TLSMode) Valid() bool {
	switch m {
	case TLSNone, TLSImplicit, TLSStartTLS:
		return true
	}
	return false
}

// Client describes the end user's connection as mailgate saw it.
type Client struct {
	Addr    netip.AddrPort // real client address (after PROXY protocol)
	Local   netip.AddrPort // mailgate address the client connected to
	Session string         // mailgate session id, for the backend's log
	Helo    string         // SMTP only: the client's EHLO/HELO name
	HeloCmd string         // SMTP only: "EHLO" or "HELO" as the client used
	// TLS is the state of the client's TLS connection to mailgate, nil
	// when it is plaintext: for the PROXY v2 TLVs and Dovecot's
	// "secured" flag.
	TLS *tls.ConnectionState
}

// Options configure one backend server (the `backends.<proto>:` section).
// Zero durations and an empty TLS mean the defaults (see Defaults).
type Options struct {
	Address        string        `yaml:"address"`         // host:port
	TLS            TLSMode       `yaml:"tls"`             // none | implicit | starttls
	ConnectTimeout time.Duration `yaml:"connect_timeout"` // dial and TLS
	Timeout        time.Duration `yaml:"timeout"`         // each login step
	LoginTimeout   time.Duration `yaml:"login_timeout"`   // the whole login
	ForwardClient  bool          `yaml:"forward_client"`  // IMAP ID / XCLIENT
	// ProxyProtocol sends a PROXY header (v1 or v2) with the client's
	// address first on every connection to this backend. It replaces
	// ForwardClient: behind the header the server's peer is the client,
	// from whom it takes no ID or XCLIENT, so none is sent.
	ProxyProtocol ProxyProtocol `yaml:"proxy_protocol"`

	// TLSConfig is built by the caller (tlsconf) when TLS != "none". Nil
	// means system roots and the host part of Address as server name.
	TLSConfig *tls.Config  `yaml:"-"`
	Logger    *slog.Logger `yaml:"-"`
}

// Defaults fills the zero fields with their defaults: TLS "none",
// ConnectTimeout 5s, Timeout 30s, LoginTimeout 20s, a discarding Logger.
func (o *Options) Defaults() {
	if o.TLS == "" {
		o.TLS = TLSNone
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.LoginTimeout == 0 {
		o.LoginTimeout = DefaultLoginTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem with o, each prefixed with path (the
// config key of this section, e.g. "backends.imap"). Zero durations and an
// empty TLS are accepted: they mean the defaults.
func (o *Options) Validate(path string) error {
	var errs []error
	if host, port, err := net.SplitHostPort(o.Address); err != nil {
		errs = append(errs, fmt.Errorf("%s.address: %q is not host:port: %v", path, o.Address, err))
	} else if host == "" {
		errs = append(errs, fmt.Errorf("%s.address: %q has no host", path, o.Address))
	} else if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		errs = append(errs, fmt.Errorf("%s.address: %q has no valid port", path, o.Address))
	}
	if o.TLS != "" && !o.TLS.Valid() {
		errs = append(errs, fmt.Errorf("%s.tls: %q is not one of none, implicit, starttls", path, o.TLS))
	}
	if !o.ProxyProtocol.Valid() {
		errs = append(errs, fmt.Errorf("%s.proxy_protocol: %q is not one of v1, v2", path, o.ProxyProtocol))
	}
	if o.ConnectTimeout < 0 {
		errs = append(errs, fmt.Errorf("%s.connect_timeout: must be positive", path))
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("%s.timeout: must be positive", path))
	}
	if o.LoginTimeout < 0 {
		errs = append(errs, fmt.Errorf("%s.login_timeout: must be positive", path))
	}
	return errors.Join(errs...)
}

// withDefaults returns a copy of o with Defaults applied, so a Login works
// on options nobody called Defaults on.
func (o Options) withDefaults() Options {
	o.Defaults()
	return o
}

// Session is an authenticated backend connection ready to splice.
type Session struct {
	Conn net.Conn
	// Reply is the backend's final login reply, to forward to the client
	// (IMAP: the tagged OK with [CAPABILITY ...], re-tagged with the
	// client's tag; POP3: the +OK line verbatim).
	// Nil for SMTP, where mailgate answers 235 itself.
	Reply []byte
	// Buffered holds backend bytes read past Reply; write them to the
	// client before splicing.
	Buffered []byte
}

// checkCredentials refuses user names and passwords no backend accepts and
// that could only serve to inject a command: CR, LF and NUL. (NUL would
// also split the SASL PLAIN message, RFC 4616 2.)
func checkCredentials(user, pass string) error {
	if user == "" {
		return fmt.Errorf("%w: empty user name", ErrAuthFailed)
	}
	for _, s := range [...]struct{ what, v string }{{"user name", user}, {"password", pass}} {
		for i := 0; i < len(s.v); i++ {
			switch s.v[i] {
			case '\r', '\n', 0:
				return fmt.Errorf("%w: %s contains CR, LF or NUL; not sent", ErrAuthFailed, s.what)
			}
		}
	}
	// The SASL limits, from their one source (internal/authlimit): the
	// proxy accepts nothing longer, and the PLAIN message of both,
	// base64-encoded, fits a SASL line (RFC 4954 4).
	if len(user) > authlimit.MaxUsername {
		return fmt.Errorf("%w: user name longer than %d octets; not sent", ErrAuthFailed, authlimit.MaxUsername)
	}
	if len(pass) > authlimit.MaxPassword {
		return fmt.Errorf("%w: password longer than %d octets; not sent", ErrAuthFailed, authlimit.MaxPassword)
	}
	return nil
}

// Package backend logs in to the real mail servers (Dovecot, Postfix, any
// IMAP/POP3/SMTP server) on behalf of a client mailgate has already
// accepted, passing the client's real address on (IMAP ID, POP3 and SMTP
// XCLIENT), and hands back the authenticated connection for splicing.
//
// backend imports no other mailgate package. Credentials are re-encoded
// here; raw client bytes never reach a backend before login.
package backend

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// Errors a login returns, wrapped with detail for the log.
var (
	// ErrAuthFailed: the backend refused the credentials.
	ErrAuthFailed = errors.New("backend: authentication failed")
	// ErrUnavailable: dial, TLS, timeout or protocol failure; temporary.
	ErrUnavailable = errors.New("backend: unavailable")
)

// Client describes the end user's connection as mailgate saw it.
type Client struct {
	Addr    netip.AddrPort // real client address (after PROXY protocol)
	Local   netip.AddrPort // mailgate address the client connected to
	Session string         // mailgate session id, for the backend's log
	Helo    string         // SMTP only: the client's EHLO/HELO name
	HeloCmd string         // SMTP only: "EHLO" or "HELO" as the client used
}

// Options configure one backend server (the `backends.<proto>:` section).
type Options struct {
	Address        string        `yaml:"address"`         // host:port
	TLS            string        `yaml:"tls"`             // none | implicit | starttls
	ConnectTimeout time.Duration `yaml:"connect_timeout"` // dial and TLS
	Timeout        time.Duration `yaml:"timeout"`         // each login step
	ForwardClient  bool          `yaml:"forward_client"`  // IMAP ID / XCLIENT

	// TLSConfig is built by the caller (tlsconf) when TLS != "none".
	TLSConfig *tls.Config  `yaml:"-"`
	Logger    *slog.Logger `yaml:"-"`
}

// Session is an authenticated backend connection ready to splice.
type Session struct {
	Conn net.Conn
	// Reply is the backend's final login reply, to forward to the client
	// verbatim (IMAP: the tagged OK with [CAPABILITY ...]; POP3: +OK line).
	// Nil for SMTP, where mailgate answers 235 itself.
	Reply []byte
	// Buffered holds backend bytes read past Reply; write them to the
	// client before splicing.
	Buffered []byte
}

// IMAP logs in to an IMAP backend.
type IMAP struct{ Opts Options }

// Login dials, optionally sends ID with the client's address, then logs in
// (AUTHENTICATE PLAIN with SASL-IR when offered, else LOGIN) using tag, the
// client's own tag, so Reply can go to the client as is.
func (b *IMAP) Login(ctx context.Context, c Client, tag, user, pass string) (*Session, error) {
	panic("TODO")
}

// POP3 logs in to a POP3 backend.
type POP3 struct{ Opts Options }

// Login dials, optionally sends XCLIENT, then USER/PASS or AUTH PLAIN.
func (b *POP3) Login(ctx context.Context, c Client, user, pass string) (*Session, error) {
	panic("TODO")
}

// Capabilities returns the backend's CAPA lines (e.g. TOP, UIDL) so the
// proxy can advertise post-login capabilities. Cached by the caller.
func (b *POP3) Capabilities(ctx context.Context) ([]string, error) { panic("TODO") }

package guard

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/netip"
	"time"
)

// EventKind names a guard event; it is the log message, in the same
// upper-case, fail2ban-friendly style as AUTHFAILED and COUNTRYFAILED.
type EventKind string

// The events the guard raises.
const (
	// EventBanned: an address or network is refused until Until.
	EventBanned EventKind = "BANNED"
	// EventLocked: a login is locked for untrusted sources until Until.
	EventLocked EventKind = "LOCKED"
	// EventCompromised: a login succeeded from more countries than
	// compromise.countries within compromise.window.
	EventCompromised EventKind = "COMPROMISED"
)

// Event is something the proxy should log. It never holds a password.
type Event struct {
	Kind EventKind
	// Prefix is the banned address (/32, /128) or network (BANNED).
	Prefix netip.Prefix
	// Login is the locked or compromised login (LOCKED, COMPROMISED).
	Login string
	// Until is when the ban or lockout ends; zero: until an admin
	// clears it.
	Until time.Time
	// Duration is Until minus the time of the event.
	Duration time.Duration
	// Failures is the distinct failures that triggered it.
	Failures int
	// Offence counts bans of this prefix still remembered, this one
	// included (1: first ban).
	Offence int
	// Countries lists the countries of recent successes (COMPROMISED).
	Countries []string
	// Reason is a short human text.
	Reason string
	// Refuse is set on a COMPROMISED event when compromise.deny is on:
	// the login that raised it has already passed the backend, and the
	// proxy should drop that session too rather than splice it.
	Refuse bool
}

// Attrs are the event's log attributes with stable lower-case keys. A
// banned single address is also given as "remote", the key fail2ban
// filters match on AUTHFAILED lines.
func (e Event) Attrs() []slog.Attr {
	var a []slog.Attr
	if e.Prefix.IsValid() {
		if e.Prefix.IsSingleIP() {
			a = append(a, slog.String("remote", e.Prefix.Addr().String()))
		}
		a = append(a, slog.String("prefix", e.Prefix.String()))
	}
	if e.Login != "" {
		a = append(a, loginAttr(e.Login))
	}
	if !e.Until.IsZero() {
		a = append(a, slog.Time("until", e.Until), slog.Duration("duration", e.Duration))
	}
	if e.Failures > 0 {
		a = append(a, slog.Int("failures", e.Failures))
	}
	if e.Offence > 0 {
		a = append(a, slog.Int("offence", e.Offence))
	}
	if len(e.Countries) > 0 {
		a = append(a, slog.Any("countries", e.Countries))
	}
	return append(a, slog.String("reason", e.Reason))
}

// Log writes e at Warn level, with Kind as the message.
func (e Event) Log(ctx context.Context, log *slog.Logger) {
	log.LogAttrs(ctx, slog.LevelWarn, string(e.Kind), e.Attrs()...)
}

// fingerprintHex is the length of a password fingerprint: 32 bits tell
// apart the few thousand passwords of a dictionary attack in one log,
// while being far too short to confirm a guess even for someone who
// holds the secret.
const fingerprintHex = 8

// Fingerprint returns a short HMAC-SHA256 of password keyed with the
// secret from fingerprint_secret_file, for AUTHFAILED lines: one value
// repeated across many logins is password spraying; many values on one
// login is a dictionary attack. It is "" when no secret is configured.
func (g *Guard) Fingerprint(password string) string {
	if len(g.fpSecret) == 0 {
		return ""
	}
	m := hmac.New(sha256.New, g.fpSecret)
	m.Write([]byte(password))
	return hex.EncodeToString(m.Sum(nil))[:fingerprintHex]
}

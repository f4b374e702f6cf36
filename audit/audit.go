// Package audit keeps the history of every login decision in an embedded
// SQLite database that mailgate writes itself (docs/audit.md): who tried
// to log in as which account, from where, with which program, and what
// mailgate decided.
//
// Rows are aggregates: one row per (account, day, address, protocol,
// client ID, mechanism, result) with first seen, last seen and a count,
// so an attack does not turn into one write per attempt. Record never
// blocks: events go through a bounded queue to one writer goroutine that
// writes them in batches; a full queue drops the event and counts it.
// Failed rows per account and distinct unknown accounts per day are
// capped, and a retention period is purged in the background, so the
// database stays bounded under attack.
//
// The driver is modernc.org/sqlite, a translation of SQLite's C source to
// Go: no cgo, so the static binary and the minimal container image stay.
//
// audit imports nothing of mailgate's: events carry plain strings.
package audit

import (
	"net/netip"
	"strings"
	"time"
)

// Results: what mailgate decided for one login attempt.
const (
	ResultPass        = "pass"        // the backend accepted the password and the session was spliced
	ResultFailed      = "failed"      // the backend refused the password
	ResultDenied      = "denied"      // the policy refused the country or network (Cause names the rule)
	ResultGuard       = "guard"       // the brute-force guard refused it (Cause: ban, lockout, limit...)
	ResultInvalid     = "invalid"     // unusable credentials (empty, too long, bad characters)
	ResultUnavailable = "unavailable" // allowed, but the backend could not be asked
)

// Classify maps a logged login decision to a row's result and cause:
// event and reason as the decision line logs them (AUTHPASS, AUTHFAILED,
// AUTHLOCKED, COUNTRYFAILED; "" with the message of an attempt no one
// judged), and rule, the policy rule that decided. The proxy and the
// Dovecot adapter record the same rows for the same lines through it.
func Classify(event, reason, rule string) (result, cause string) {
	switch {
	case event == "AUTHPASS":
		return ResultPass, rule
	case event == "COUNTRYFAILED":
		if rule != "" {
			return ResultDenied, rule + ": " + reason
		}
		return ResultDenied, reason
	case event == "AUTHLOCKED" || event == "AUTHFAILED" && strings.HasPrefix(reason, "guard: "):
		return ResultGuard, strings.TrimPrefix(reason, "guard: ")
	case event == "AUTHFAILED" && reason == "backend refused credentials":
		return ResultFailed, reason
	case event == "AUTHFAILED":
		return ResultInvalid, reason
	}
	return ResultUnavailable, reason
}

// Other is the account or address a row is folded into when a cap is
// reached (docs/audit.md, "Bounds").
const Other = "(other)"

// Event is one login decision as the proxy saw it. Every string is plain
// text; the store bounds and cleans each before writing it.
type Event struct {
	Time     time.Time  // when the decision was made
	Account  string     // login name as given (the store normalizes it)
	Addr     netip.Addr // client address (after a trusted PROXY header)
	Country  string     // country code or geo label ("loopback", "private", ...)
	ASN      string     // autonomous system, when a database gives one
	Org      string     // organisation of the ASN, when known
	Protocol string     // imap, pop3, smtp
	Listener string     // listener name
	Mech     string     // LOGIN, PLAIN, USER, ...
	ClientID string     // IMAP ID name and version
	TLS      string     // TLS version ("TLS 1.3"), "" without TLS
	Cipher   string     // cipher suite name
	SNI      string     // server name the client asked for
	Result   string     // one of the Result constants
	Cause    string     // why: rule, guard reason, backend error class
}

// Normalize returns the account as the policy spells it: ASCII letters in
// lower case, and defaultDomain appended to a name without "@". Only
// ASCII is folded, as in the policy, so distinct Unicode names stay
// distinct.
func Normalize(login, defaultDomain string) string {
	b := []byte(login)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	l := string(b)
	if d := strings.TrimPrefix(defaultDomain, "@"); d != "" && l != "" && !strings.Contains(l, "@") {
		l += "@" + Normalize(d, "")
	}
	return l
}

// Network returns the /24 (IPv4) or /48 (IPv6) that holds a: the unit the
// history groups sources by, and what is stored instead of the address
// with network_only.
func Network(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if !a.IsValid() {
		return netip.Prefix{}
	}
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

// clean bounds s to max octets and replaces every octet outside printable
// ASCII with '?', so nothing a client sent can break a terminal, a
// column of `mailgate audit` or a consumer of its JSON.
func clean(s string, max int) string {
	ok := len(s) <= max
	for i := 0; ok && i < len(s); i++ {
		ok = s[i] >= 0x20 && s[i] < 0x7f
	}
	if ok {
		return s
	}
	b := []byte(s[:min(len(s), max)])
	for i, c := range b {
		if c < 0x20 || c >= 0x7f {
			b[i] = '?'
		}
	}
	return string(b)
}

// Package smtpwire decodes the SMTP commands a submission client may send
// before authentication (RFC 5321, RFC 3207 STARTTLS, RFC 4954 AUTH). It
// is pure: one line in (its CRLF or LF already removed), a typed value or
// a *SyntaxError out; no I/O, no logging.
package smtpwire

import (
	"bytes"
	"strings"
	"unicode/utf8"
)

// Line limits.
const (
	// MaxLine bounds a command line, CRLF included (RFC 5321 4.5.3.1.4).
	// An AUTH command with its initial response and each SASL response
	// line may be longer (RFC 4954 4): they are bounded by the SASL line
	// limit (sasl.MaxLine), which the caller reads them with.
	MaxLine = 512
	// maxVerb: the longest verb we know is STARTTLS (8).
	maxVerb = 8
	// maxDomain: RFC 5321 4.5.3.1.2, a domain is at most 255 octets; an
	// address literal is shorter.
	maxDomain = 255
	// maxMechanism: RFC 4422 3.1, SASL mechanism names are at most 20
	// characters.
	maxMechanism = 20
)

// SyntaxError is a malformed command line; the reply is 501 (arguments)
// or 500 (command), chosen by Code.
type SyntaxError struct {
	Code int    // 500 or 501
	Msg  string // for the log; the client gets a fixed text
}

func (e *SyntaxError) Error() string { return "smtpwire: " + e.Msg }

// Command is one decoded command line.
type Command struct {
	// Name is the verb in upper case.
	Name string
	// Arg is everything after the first space, verbatim.
	Arg string
}

// ParseCommand decodes one line without its line ending: a verb of ASCII
// letters, then optionally one space and arguments. NUL and CR are
// refused anywhere (RFC 5321 2.3.8: CR only as part of CRLF).
func ParseCommand(line []byte) (Command, error) {
	if bytes.ContainsAny(line, "\x00\r\n") {
		return Command{}, &SyntaxError{Code: 500, Msg: "control character in command"}
	}
	verb, rest, hasArg := bytes.Cut(line, []byte(" "))
	if len(verb) == 0 || len(verb) > maxVerb {
		return Command{}, &SyntaxError{Code: 500, Msg: "bad verb"}
	}
	for _, c := range verb {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return Command{}, &SyntaxError{Code: 500, Msg: "bad verb"}
		}
	}
	cmd := Command{Name: strings.ToUpper(string(verb))}
	if hasArg {
		cmd.Arg = string(rest)
	}
	return cmd, nil
}

// ParseHelo checks the argument of EHLO or HELO: one domain or address
// literal (RFC 5321 4.1.1.1). It is not resolved or judged; it is passed
// to the backend (XCLIENT HELO, replayed EHLO), so it must be one word
// of visible characters. Clients send NetBIOS names with underscores
// and bare IP addresses; those are accepted, as Postfix does by default.
func ParseHelo(arg string) (string, error) {
	if arg == "" {
		return "", &SyntaxError{Code: 501, Msg: "missing domain"}
	}
	if len(arg) > maxDomain {
		return "", &SyntaxError{Code: 501, Msg: "domain too long"}
	}
	if !utf8.ValidString(arg) {
		return "", &SyntaxError{Code: 501, Msg: "domain is not UTF-8"}
	}
	for _, r := range arg {
		if r <= ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return "", &SyntaxError{Code: 501, Msg: "invalid character in domain"}
		}
	}
	return arg, nil
}

// Auth is a decoded AUTH command (RFC 4954 4).
type Auth struct {
	// Mechanism in upper case.
	Mechanism string
	// Initial is the initial response as sent (base64, "=" for empty);
	// HasInitial tells "none" from anything sent.
	Initial    string
	HasInitial bool
}

// ParseAuth decodes "mechanism [initial-response]".
func ParseAuth(arg string) (Auth, error) {
	mech, ir, hasIR := strings.Cut(arg, " ")
	if mech == "" || len(mech) > maxMechanism {
		return Auth{}, &SyntaxError{Code: 501, Msg: "bad mechanism"}
	}
	for _, c := range []byte(mech) {
		// RFC 4422 3.1: upper-case letters, digits, hyphen, underscore;
		// we fold case first, as clients send "auth plain".
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return Auth{}, &SyntaxError{Code: 501, Msg: "bad mechanism"}
		}
	}
	a := Auth{Mechanism: strings.ToUpper(mech)}
	if hasIR {
		if ir == "" || strings.Contains(ir, " ") {
			return Auth{}, &SyntaxError{Code: 501, Msg: "bad initial response"}
		}
		a.Initial, a.HasInitial = ir, true
	}
	return a, nil
}

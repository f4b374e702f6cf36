// Package pop3wire decodes the POP3 commands a client may send before
// login (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH). It is
// pure: one line in (its CRLF or LF already removed), a typed Command or
// a *SyntaxError out; no I/O, no logging.
//
// What to do with a command (state checks, replies) is the connection's
// business in package proxy.
package pop3wire

import (
	"bytes"
	"strings"
)

// Line limits.
const (
	// MaxLine bounds an ordinary command line, CRLF included: RFC 2449 4
	// raises RFC 1939's limits to 255 octets per command line.
	// An AUTH command with an initial response and each SASL client
	// response are exempt (RFC 5034 4): they are bounded by the SASL
	// line limit (sasl.MaxLine), which the caller reads them with.
	MaxLine = 255
	// maxKeyword: RFC 1939 3 keywords are three or four characters;
	// RFC 2449 extension keywords are not longer. STLS, CAPA, AUTH,
	// USER, PASS, NOOP, QUIT, APOP: all four.
	maxKeyword = 4
	// maxArgs: no pre-auth command takes more than two arguments (APOP
	// name digest); a few spare cost nothing, many are abuse.
	maxArgs = 8
)

// SyntaxError is a malformed command line; the reply is "-ERR".
type SyntaxError struct{ Msg string }

func (e *SyntaxError) Error() string { return "pop3wire: " + e.Msg }

// Command is one decoded command line.
type Command struct {
	// Name is the keyword in upper case.
	Name string
	// Arg is everything after the single space that follows the keyword,
	// verbatim: PASS takes it whole, since passwords may contain spaces
	// (RFC 1939 7 leaves that to the server; Dovecot does the same).
	Arg string
	// Args is Arg split at single spaces, for commands with word
	// arguments (AUTH mechanism and initial response).
	Args []string
}

// ParseCommand decodes one line without its line ending. A keyword is
// three or four ASCII letters (RFC 1939 3), separated from its arguments
// by one space. NUL and CR are refused anywhere: they have no place in a
// command and serve only to confuse a later parser.
func ParseCommand(line []byte) (Command, error) {
	if bytes.ContainsAny(line, "\x00\r\n") {
		return Command{}, &SyntaxError{Msg: "control character in command"}
	}
	kw, rest, hasArg := bytes.Cut(line, []byte(" "))
	if len(kw) < 3 || len(kw) > maxKeyword {
		return Command{}, &SyntaxError{Msg: "bad keyword"}
	}
	for _, c := range kw {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return Command{}, &SyntaxError{Msg: "bad keyword"}
		}
	}
	cmd := Command{Name: strings.ToUpper(string(kw))}
	if !hasArg {
		return cmd, nil
	}
	if len(rest) == 0 {
		return Command{}, &SyntaxError{Msg: "space without argument"}
	}
	cmd.Arg = string(rest)
	cmd.Args = strings.Split(cmd.Arg, " ")
	// PASS takes the rest of the line as one password (RFC 1939 7), so
	// its spaces are not arguments and not limited.
	if len(cmd.Args) > maxArgs && cmd.Name != "PASS" {
		return Command{}, &SyntaxError{Msg: "too many arguments"}
	}
	return cmd, nil
}

// WordArgs checks that c has between min and max arguments, each
// non-empty (so no double or trailing spaces), for commands whose
// arguments are words rather than free text.
func (c Command) WordArgs(min, max int) error {
	if len(c.Args) < min || len(c.Args) > max {
		return &SyntaxError{Msg: "wrong number of arguments"}
	}
	for _, a := range c.Args {
		if a == "" {
			return &SyntaxError{Msg: "empty argument"}
		}
	}
	return nil
}

package backend

import (
	"bytes"
	"strconv"
	"strings"
)

// Pure IMAP wire helpers: tag check, string encoding, response parsing.
// No I/O here; imap.go drives the connection.

// maxTagLen bounds a tag in a backend response. We send only our own
// short tags (mg1, mg2, ...), so a longer one is never ours.
const maxTagLen = 64

// maxNonSyncLiteral is the largest LITERAL- non-synchronizing literal
// (RFC 7888 5).
const maxNonSyncLiteral = 4096

// validTag reports whether tag is a legal IMAP tag: 1*<any ASTRING-CHAR
// except "+"> (RFC 9051 9), i.e. printable ASCII without atom-specials
// other than "]".
func validTag(tag string) bool {
	if tag == "" || len(tag) > maxTagLen {
		return false
	}
	for i := 0; i < len(tag); i++ {
		switch b := tag[i]; {
		case b <= 0x20 || b >= 0x7f:
			return false
		case strings.IndexByte(`(){%*"\+`, b) >= 0:
			return false
		}
	}
	return true
}

// quotable reports whether s can be sent as an IMAP quoted string. We
// quote only printable ASCII (RFC 9051 9 also allows other CHARs, but
// servers differ on control bytes); anything else goes as a literal.
func quotable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// cmdBuilder assembles one IMAP command whose strings may need literals.
// A synchronizing literal splits the command into chunks: each chunk but
// the last ends with "{n}\r\n" and the next may be sent only after the
// server's "+" continuation (RFC 9051 4.3).
type cmdBuilder struct {
	chunks   [][]byte // complete chunks awaiting send
	cur      []byte   // the chunk being built
	litPlus  bool     // LITERAL+ advertised: {n+} of any size (RFC 7888 4)
	litMinus bool     // LITERAL- advertised: {n+} up to 4096 (RFC 7888 5)
}

// raw appends protocol text (tag, command name, spaces) as is.
func (b *cmdBuilder) raw(s string) { b.cur = append(b.cur, s...) }

// str appends s as a quoted string when possible, else as a literal.
func (b *cmdBuilder) str(s string) {
	if quotable(s) {
		b.cur = append(b.cur, '"')
		for i := 0; i < len(s); i++ {
			if s[i] == '"' || s[i] == '\\' {
				b.cur = append(b.cur, '\\')
			}
			b.cur = append(b.cur, s[i])
		}
		b.cur = append(b.cur, '"')
		return
	}
	b.cur = append(b.cur, '{')
	b.cur = strconv.AppendInt(b.cur, int64(len(s)), 10)
	if b.litPlus || (b.litMinus && len(s) <= maxNonSyncLiteral) {
		b.cur = append(b.cur, "+}\r\n"...)
		b.cur = append(b.cur, s...)
		return
	}
	b.cur = append(b.cur, "}\r\n"...)
	b.chunks = append(b.chunks, b.cur)
	b.cur = append([]byte(nil), s...)
}

// done ends the command with CRLF and returns its chunks.
func (b *cmdBuilder) done() [][]byte {
	b.cur = append(b.cur, "\r\n"...)
	return append(b.chunks, b.cur)
}

// respKind classifies a server response line.
type respKind int

const (
	respBad          respKind = iota // not a response line
	respUntagged                     // "* ..."
	respTagged                       // "<tag> ..."
	respContinuation                 // "+ ..."
)

// imapResp is one parsed response line (RFC 9051 7).
type imapResp struct {
	kind   respKind
	tag    string // tagged only
	status string // "OK", "NO", "BAD", "BYE", "PREAUTH" upper-cased; "" for data
	code   string // response code name, e.g. "CAPABILITY", upper-cased
	args   string // response code arguments, e.g. the capability list
	text   string // the rest: human text, or untagged data after the keyword
	data   string // untagged data keyword upper-cased, e.g. "CAPABILITY"
}

// parseResp parses one response line (CRLF optional). It is strict about
// the shape it relies on and lenient about the human text.
func parseResp(line []byte) (imapResp, bool) {
	s := string(trimCRLF(line))
	var r imapResp
	switch {
	case s == "+" || strings.HasPrefix(s, "+ "):
		r.kind = respContinuation
		r.text = strings.TrimPrefix(strings.TrimPrefix(s, "+"), " ")
		return r, true
	case strings.HasPrefix(s, "* "):
		r.kind = respUntagged
		s = s[2:]
	default:
		sp := strings.IndexByte(s, ' ')
		if sp <= 0 || !validTag(s[:sp]) {
			return r, false
		}
		r.kind = respTagged
		r.tag = s[:sp]
		s = s[sp+1:]
	}
	word, rest, _ := strings.Cut(s, " ")
	if word == "" {
		return r, false
	}
	upper := strings.ToUpper(word)
	switch upper {
	case "OK", "NO", "BAD", "BYE", "PREAUTH":
		if r.kind == respTagged && (upper == "BYE" || upper == "PREAUTH") {
			return r, false
		}
		r.status = upper
	default:
		if r.kind == respTagged {
			return r, false
		}
		r.data = upper
		r.text = rest
		return r, true
	}
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return r, false
		}
		name, args, _ := strings.Cut(rest[1:end], " ")
		r.code = strings.ToUpper(name)
		r.args = args
		rest = strings.TrimPrefix(rest[end+1:], " ")
	}
	r.text = rest
	return r, true
}

// capSet is a set of upper-cased capability names.
type capSet map[string]bool

// parseCaps reads a space-separated capability list.
func parseCaps(list string) capSet {
	caps := capSet{}
	for _, c := range strings.Fields(list) {
		caps[strings.ToUpper(c)] = true
	}
	return caps
}

// literalLen returns n when line ends with a server literal "{n}" before
// its CRLF, so the caller reads n more octets (RFC 9051 4.3).
func literalLen(line []byte) (int, bool) {
	s := trimCRLF(line)
	if len(s) < 3 || s[len(s)-1] != '}' {
		return 0, false
	}
	open := bytes.LastIndexByte(s, '{')
	if open < 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(s[open+1:len(s)-1]), 10, 31)
	if err != nil {
		return 0, false
	}
	return int(n), true
}

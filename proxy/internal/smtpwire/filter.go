package smtpwire

// Post-login command filter (issue #14 finding 1).
//
// After login the client talks to the backend from mailgate's position:
// a backend that trusts mailgate's address for XCLIENT or XFORWARD would
// trust the client too. Filter watches the client's byte stream and
// rewrites the verb of each forbidden command into a word no server
// knows, so the backend answers it with its own 5xx (502 for Postfix) and
// the order of pipelined replies (RFC 2920) stays exact.
//
// Commands are recognised only where the backend reads commands: in a
// mail transaction's DATA content (after the 354 reply until the line
// "."), bytes pass untouched. Whether DATA was accepted is known only
// from the backend's reply, so after a DATA line the filter stops and
// the caller holds the client's further bytes until that reply
// (Resume). Replies counts the backend's final replies so the caller
// can tell the reply to DATA from the replies to the commands
// pipelined before it.
//
// Lines are split at LF, as Postfix does (a CR before it is optional);
// a verb is found as Postfix finds it: after leading white space, the
// run of letters, compared without case. Only that run (at most
// maxFilterVerb letters) is ever held back across reads; the rest of a
// line, however long, passes as it comes, so the filter needs no line
// buffer and allocates nothing per byte.

import (
	"bytes"
	"errors"
)

// Refused verbs after login.
var (
	// SMTPRefusedAfterLogin: XCLIENT and XFORWARD are granted by where
	// the sender stands (Postfix smtpd_authorized_xclient_hosts,
	// smtpd_authorized_xforward_hosts); STARTTLS would end-to-end
	// encrypt the rest of the session past the filter; a second AUTH
	// would log in as someone the policy did not check (RFC 4954 4
	// forbids it anyway); BDAT's chunk follows unasked (RFC 3030 2), so
	// a BDAT the backend refuses without reading its chunk would turn
	// the chunk's octets into commands the filter took for content.
	// CHUNKING is therefore not advertised either.
	SMTPRefusedAfterLogin = []string{"XCLIENT", "XFORWARD", "STARTTLS", "AUTH", "BDAT"}
	// POP3RefusedAfterLogin: Dovecot's pop3-login takes XCLIENT only
	// before login, but nothing a client sends after it needs it.
	POP3RefusedAfterLogin = []string{"XCLIENT"}
)

// maxFilterVerb is the longest verb the filter must recognise
// (XFORWARD, STARTTLS); a longer run of letters is no such verb.
const maxFilterVerb = 8

// RefusedPrefix is put before a refused verb: "XCLIENT" becomes
// "MAILGATE-REFUSED-XCLIENT", which no server implements.
const RefusedPrefix = "MAILGATE-REFUSED-"

// Filter states.
const (
	fLineStart    = iota // start of a command line, or in its leading white space
	fVerb                // collecting the verb's letters into vb
	fRest                // rest of a command line, up to LF
	fDataWait            // after a DATA line: waiting for Resume
	fContentBOL          // DATA content, at the start of a line
	fContentDot          // DATA content, "." at the start of a line
	fContentDotCR        // DATA content, "." and CRs at the start of a line
	fContentMid          // DATA content, inside a line
)

// Filter rewrites refused commands in a client→backend byte stream. The
// zero value is not usable; see NewFilter. A Filter is used by one
// goroutine; Replies by another.
type Filter struct {
	refused []string // upper case
	data    bool     // SMTP: DATA content is passed untouched
	st      int
	vb      [maxFilterVerb]byte // letters of the verb, held back
	vn      int                 // letters in vb
	isData  bool                // the current line's verb is DATA
	sent    uint64              // command lines (and message ends) sent: each gets one reply
	dataAt  uint64              // sent index of the DATA line being waited for

	// OnRefuse, when set, is called with the upper-case verb (one of
	// the refused list, never client bytes) of each rewritten command.
	OnRefuse func(verb string)
}

// NewFilter returns a filter refusing the given upper-case verbs; with
// data set it follows SMTP's DATA (a POP3 or other line protocol
// without a client data phase sets it false).
func NewFilter(refused []string, data bool) *Filter {
	return &Filter{refused: refused, data: data}
}

// Waiting reports whether the filter stopped after a DATA line and, if
// so, the number of the backend's final reply that answers it (1 for the
// first reply after the filter started).
func (f *Filter) Waiting() (reply uint64, ok bool) {
	return f.dataAt, f.st == fDataWait
}

// Resume continues after the backend answered DATA with code: 354 starts
// the content, anything else returns to commands.
func (f *Filter) Resume(code int) {
	if f.st != fDataWait {
		return
	}
	f.dataAt = 0
	if code == 354 {
		f.st = fContentBOL
		return
	}
	f.st = fLineStart
}

// isSpace is white space Postfix skips before a verb (C isspace), LF
// excepted: it ends the line.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// Client appends to out what to forward for the client bytes p and
// returns it with the number of bytes of p consumed. It consumes all of
// p unless a DATA line ends in it: then it stops right after that line
// and Waiting reports true until Resume; the caller forwards out, waits
// for the reply and calls Client again with the rest.
func (f *Filter) Client(out, p []byte) ([]byte, int) {
	from := 0 // p[from:i] is still to be appended unchanged
	i := 0
	for i < len(p) {
		switch f.st {
		case fLineStart:
			c := p[i]
			switch {
			case c == '\n':
				f.sent++ // an empty line gets a 500
				i++
			case isSpace(c):
				i++
			case isLetter(c):
				out = append(out, p[from:i]...)
				f.st, f.vn = fVerb, 0
				from = i
			default:
				f.st = fRest
			}
		case fVerb:
			c := p[i]
			if !isLetter(c) {
				out = f.verbDone(out)
				f.st = fRest
				continue
			}
			if f.vn == maxFilterVerb {
				// Longer than any verb we look for: let it pass.
				out = append(out, f.vb[:f.vn]...)
				f.st = fRest
				continue
			}
			f.vb[f.vn] = c
			f.vn++
			i++
			from = i // held in vb
		case fRest:
			j := indexLF(p[i:])
			if j < 0 {
				i = len(p)
				continue
			}
			i += j + 1
			f.sent++
			if f.isData {
				f.isData = false
				f.st, f.dataAt = fDataWait, f.sent
				out = append(out, p[from:i]...)
				return out, i
			}
			f.st = fLineStart
		case fDataWait:
			// Client was called again without Resume: hold everything.
			out = append(out, p[from:i]...)
			return out, i
		case fContentBOL:
			if p[i] == '.' {
				f.st = fContentDot
				i++
				continue
			}
			f.st = fContentMid
		case fContentDot, fContentDotCR:
			switch p[i] {
			case '\r':
				f.st = fContentDotCR
				i++
			case '\n':
				// End of the message: its reply is the next one.
				f.sent++
				f.st = fLineStart
				i++
			default:
				f.st = fContentMid
			}
		case fContentMid:
			j := indexLF(p[i:])
			if j < 0 {
				i = len(p)
				continue
			}
			i += j + 1
			f.st = fContentBOL
		}
	}
	// In fVerb, from == i: the letters so far wait in vb for the rest of
	// the verb in the next read.
	return append(out, p[from:i]...), i
}

// Flush appends the letters held back at the end of the stream (the
// client closed in the middle of a verb), checked like any verb.
func (f *Filter) Flush(out []byte) []byte {
	if f.st != fVerb {
		return out
	}
	f.st = fRest
	return f.verbDone(out)
}

// verbDone appends the held verb, rewritten if refused, and notes DATA.
func (f *Filter) verbDone(out []byte) []byte {
	v := f.vb[:f.vn]
	for _, r := range f.refused {
		if equalFold(v, r) {
			if f.OnRefuse != nil {
				f.OnRefuse(r)
			}
			out = append(out, RefusedPrefix...)
			return append(out, v...)
		}
	}
	if f.data && equalFold(v, "DATA") {
		f.isData = true
	}
	return append(out, v...)
}

// equalFold compares ASCII letters b with upper-case s.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if b[i]&^0x20 != s[i] {
			return false
		}
	}
	return true
}

func indexLF(p []byte) int { return bytes.IndexByte(p, '\n') }

// ErrBadReply: the backend sent something that is not an SMTP reply
// line; the session ends (fail closed).
var ErrBadReply = errors.New("smtpwire: backend sent a malformed reply line")

// Replies counts the final replies in a backend→client SMTP byte stream
// (RFC 5321 4.2: "ddd-text" continues a reply, "ddd text" or "ddd" ends
// it). It holds at most the three digits of a line across reads.
type Replies struct {
	pos  int // 0-3: digits seen on this line; 4: in the text, up to LF
	code int
	n    uint64 // final replies seen
}

// Feed parses p; final is called with the number (from 1) and code of
// each final reply. Anything that is not a reply line is ErrBadReply.
func (r *Replies) Feed(p []byte, final func(n uint64, code int)) error {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case r.pos == 0:
			if c < '2' || c > '5' {
				return ErrBadReply
			}
			r.code = int(c - '0')
			r.pos = 1
		case r.pos < 3:
			if c < '0' || c > '9' {
				return ErrBadReply
			}
			r.code = r.code*10 + int(c-'0')
			r.pos++
		case r.pos == 3:
			switch c {
			case '-':
				r.pos = 4
				continue
			case ' ', '\r', '\n':
			default:
				return ErrBadReply
			}
			r.n++
			if final != nil {
				final(r.n, r.code)
			}
			r.pos = 4
			if c == '\n' {
				r.pos = 0
			}
		default:
			j := indexLF(p[i:])
			if j < 0 {
				return nil
			}
			i += j
			r.pos = 0
		}
	}
	return nil
}

// Package imapwire decodes the few IMAP commands a client may send before
// login (RFC 9051 section 6.1 and 6.2, RFC 3501, RFC 7888 LITERAL+,
// RFC 2971 ID). It is pure: bytes in, a typed value or a *SyntaxError out;
// no I/O, no logging.
//
// # Implementation notes
//
// The connection reads one physical line at a time. When a line ends in a
// literal marker ({n} or {n+}), TrailingLiteral tells the reader how many
// octets to read next; the reader appends CRLF, the literal octets and the
// next line to one buffer, and ParseCommand decodes that whole buffer at
// once. So the parser never blocks and every size is checked before any
// byte is buffered.
//
// Everything here is stricter than the ABNF where the ABNF allows more than
// a login needs: literal sizes, argument counts and list nesting are
// capped by the named constants below.
package imapwire

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

const (
	// MaxLine is the longest physical command line, CRLF included. RFC
	// 7162 section 4 asks clients to stay within 8192 octets and servers
	// to accept at least that.
	MaxLine = 8192
	// MaxLiteral is the largest literal accepted before login. Only a
	// user name (at most 320 octets, RFC 5321 4.5.3.1) and a password
	// travel in literals here; go-imap uses the same 4096 before login.
	MaxLiteral = 4096
	// MaxCommand bounds a whole command: its lines plus its literals.
	// Two maximal lines or four maximal literals fit; more is abuse.
	MaxCommand = 2 * MaxLine
	// MaxArgs bounds the arguments of one command, nested ones included.
	// The largest pre-auth command is ID with 30 field/value pairs (RFC
	// 2971 section 3.3), i.e. 60 strings.
	MaxArgs = 64
	// MaxDepth bounds list nesting. ID's list is flat; one level.
	MaxDepth = 1
	// maxLiteralDigits keeps literal sizes far from int64 overflow.
	maxLiteralDigits = 10
)

// ErrBadTag means the line does not start with a valid tag; the reply is
// an untagged BAD.
var ErrBadTag = errors.New("imapwire: missing or invalid tag")

// SyntaxError is a malformed command. Tag is set when the tag itself was
// valid, so the reply can be a tagged BAD.
type SyntaxError struct {
	Tag string
	Msg string
}

func (e *SyntaxError) Error() string { return "imapwire: " + e.Msg }

// Kind is the type of one argument.
type Kind int

// The argument kinds. NIL is reported as an Atom "NIL"; RFC 9051 makes it
// a valid astring, so only the command knows what it means.
const (
	Atom    Kind = iota // unquoted atom (ASTRING-CHAR only)
	Quoted              // "quoted string", escapes removed
	Literal             // {n} or {n+} literal
	List                // parenthesized list
)

// Arg is one decoded argument.
type Arg struct {
	Kind  Kind
	Value string // for Atom, Quoted and Literal
	List  []Arg  // for List
}

// IsString reports whether a is an astring (RFC 9051 section 9: atom,
// quoted or literal), the form LOGIN's arguments take.
func (a Arg) IsString() bool { return a.Kind != List }

// IsNIL reports whether a is the atom NIL.
func (a Arg) IsNIL() bool { return a.Kind == Atom && strings.EqualFold(a.Value, "NIL") }

// Command is one decoded client command.
type Command struct {
	Tag  string
	Name string // upper case
	Args []Arg
}

// isAtomChar reports ATOM-CHAR (RFC 9051 section 9): any CHAR except
// atom-specials ( ) { SP CTL % * " \ ].
func isAtomChar(b byte) bool {
	if b <= 0x20 || b >= 0x7f {
		return false
	}
	switch b {
	case '(', ')', '{', '%', '*', '"', '\\', ']':
		return false
	}
	return true
}

// isAstringChar is ATOM-CHAR or "]" (resp-specials).
func isAstringChar(b byte) bool { return isAtomChar(b) || b == ']' }

// isTagChar is ASTRING-CHAR except "+" (RFC 9051 section 9, tag).
func isTagChar(b byte) bool { return isAstringChar(b) && b != '+' }

// ParseTag returns the tag at the start of line, for replying to a command
// that could not be read whole (e.g. its literal was too big).
func ParseTag(line []byte) (string, error) {
	n := 0
	for n < len(line) && isTagChar(line[n]) {
		n++
	}
	if n == 0 || (n < len(line) && line[n] != ' ') {
		return "", ErrBadTag
	}
	return string(line[:n]), nil
}

// TrailingLiteral reports whether line (one physical line without its
// CRLF) ends in a literal marker, "{n}" or "{n+}" (RFC 9051 section 4.3,
// RFC 7888). nonSync is true for "{n+}". A marker whose size has too many
// digits is an error; size limits are the caller's to apply.
func TrailingLiteral(line []byte) (size int64, nonSync, ok bool, err error) {
	if len(line) < 3 || line[len(line)-1] != '}' {
		return 0, false, false, nil
	}
	end := len(line) - 1
	if line[end-1] == '+' {
		nonSync = true
		end--
	}
	start := end
	for start > 0 && line[start-1] >= '0' && line[start-1] <= '9' {
		start--
	}
	if start == end || start == 0 || line[start-1] != '{' {
		return 0, false, false, nil
	}
	if end-start > maxLiteralDigits {
		return 0, false, false, &SyntaxError{Msg: "literal size too large"}
	}
	for _, d := range line[start:end] {
		size = size*10 + int64(d-'0')
	}
	return size, nonSync, true, nil
}

// decoder walks one assembled command.
type decoder struct {
	b    []byte // the whole command: lines joined by CRLF, literals inline
	pos  int    // next unread byte
	args int    // arguments decoded so far, nested ones included
}

func (d *decoder) eof() bool { return d.pos >= len(d.b) }

func (d *decoder) peek() byte { return d.b[d.pos] }

// ParseCommand decodes one whole command: tag, name and arguments. b holds
// the command's lines joined by CRLF with each literal's octets following
// its marker's CRLF, without the final CRLF.
func ParseCommand(b []byte) (Command, error) {
	var cmd Command
	tag, err := ParseTag(b)
	if err != nil {
		return cmd, err
	}
	cmd.Tag = tag
	d := &decoder{b: b, pos: len(tag)}
	fail := func(format string, a ...any) (Command, error) {
		return Command{Tag: tag}, &SyntaxError{Tag: tag, Msg: fmt.Sprintf(format, a...)}
	}
	if d.eof() || d.peek() != ' ' {
		return fail("missing command name")
	}
	d.pos++
	start := d.pos
	for !d.eof() && isAtomChar(d.peek()) {
		d.pos++
	}
	if d.pos == start {
		return fail("missing command name")
	}
	cmd.Name = strings.ToUpper(string(b[start:d.pos]))
	for !d.eof() {
		if d.peek() != ' ' {
			return fail("unexpected character %q", d.peek())
		}
		d.pos++
		a, err := d.arg(0)
		if err != nil {
			return fail("%s", err.Error())
		}
		cmd.Args = append(cmd.Args, a)
	}
	return cmd, nil
}

// arg decodes one argument at nesting depth depth.
func (d *decoder) arg(depth int) (Arg, error) {
	if d.eof() {
		return Arg{}, errors.New("missing argument")
	}
	d.args++
	if d.args > MaxArgs {
		return Arg{}, errors.New("too many arguments")
	}
	switch d.peek() {
	case '"':
		s, err := d.quoted()
		return Arg{Kind: Quoted, Value: s}, err
	case '{':
		s, err := d.literal()
		return Arg{Kind: Literal, Value: s}, err
	case '(':
		if depth >= MaxDepth {
			return Arg{}, errors.New("lists nested too deep")
		}
		return d.list(depth + 1)
	}
	start := d.pos
	for !d.eof() && isAstringChar(d.peek()) {
		d.pos++
	}
	if d.pos == start {
		return Arg{}, fmt.Errorf("unexpected character %q", d.peek())
	}
	return Arg{Kind: Atom, Value: string(d.b[start:d.pos])}, nil
}

// list decodes "(" [arg *(SP arg)] ")".
func (d *decoder) list(depth int) (Arg, error) {
	d.pos++ // "("
	l := Arg{Kind: List, List: []Arg{}}
	for {
		if d.eof() {
			return Arg{}, errors.New("unterminated list")
		}
		if d.peek() == ')' {
			d.pos++
			return l, nil
		}
		if len(l.List) > 0 {
			if d.peek() != ' ' {
				return Arg{}, errors.New("missing space in list")
			}
			d.pos++
		}
		a, err := d.arg(depth)
		if err != nil {
			return Arg{}, err
		}
		l.List = append(l.List, a)
	}
}

// quoted decodes a quoted string (RFC 9051 section 9, quoted): only \" and
// \\ may be escaped; CR, LF and NUL never appear; 8-bit octets must be
// UTF-8 (RFC 9051 section 4.3, UTF8-2/3/4 in QUOTED-CHAR).
func (d *decoder) quoted() (string, error) {
	d.pos++ // opening quote
	var sb strings.Builder
	for {
		if d.eof() {
			return "", errors.New("unterminated quoted string")
		}
		c := d.peek()
		d.pos++
		switch c {
		case '"':
			s := sb.String()
			if !utf8.ValidString(s) {
				return "", errors.New("quoted string is not UTF-8")
			}
			return s, nil
		case '\\':
			if d.eof() || (d.peek() != '"' && d.peek() != '\\') {
				return "", errors.New("invalid escape in quoted string")
			}
			sb.WriteByte(d.peek())
			d.pos++
		case '\r', '\n', 0:
			return "", errors.New("control character in quoted string")
		default:
			sb.WriteByte(c)
		}
	}
}

// literal decodes "{" number ["+"] "}" CRLF octets (RFC 9051 section 4.3,
// RFC 7888). Literal octets may be anything but NUL (CHAR8).
func (d *decoder) literal() (string, error) {
	d.pos++ // "{"
	start := d.pos
	for !d.eof() && d.peek() >= '0' && d.peek() <= '9' {
		d.pos++
	}
	digits := d.b[start:d.pos]
	if len(digits) == 0 || len(digits) > maxLiteralDigits {
		return "", errors.New("invalid literal size")
	}
	var n int64
	for _, c := range digits {
		n = n*10 + int64(c-'0')
	}
	if !d.eof() && d.peek() == '+' {
		d.pos++
	}
	if d.eof() || d.peek() != '}' {
		return "", errors.New("invalid literal marker")
	}
	d.pos++
	if len(d.b)-d.pos < 2 || d.b[d.pos] != '\r' || d.b[d.pos+1] != '\n' {
		return "", errors.New("literal marker not at end of line")
	}
	d.pos += 2
	if n > MaxLiteral {
		return "", errors.New("literal too big")
	}
	if int64(len(d.b)-d.pos) < n {
		return "", errors.New("literal shorter than announced")
	}
	v := d.b[d.pos : d.pos+int(n)]
	for _, c := range v {
		if c == 0 {
			return "", errors.New("NUL in literal")
		}
	}
	d.pos += int(n)
	return string(v), nil
}

// Quote renders s as an IMAP quoted string when it can be one, else as a
// synchronizing-free literal ({n+}); used by tests and by the ID reply.
func Quote(s string) string {
	if strings.ContainsAny(s, "\r\n\x00") || !utf8.ValidString(s) {
		return fmt.Sprintf("{%d+}\r\n%s", len(s), s)
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

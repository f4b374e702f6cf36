// Package sasl is the server side of the two SASL mechanisms mailgate
// accepts from clients, PLAIN (RFC 4616) and LOGIN (the de-facto
// "draft-murchison-sasl-login"), plus the base64 framing shared by IMAP
// AUTHENTICATE (RFC 9051 6.2.2), POP3 AUTH (RFC 5034) and SMTP AUTH
// (RFC 4954).
//
// It is pure: no I/O, no logging. It never returns a credential that
// could smuggle a command to a backend: NUL, CR and LF are refused in
// user names and passwords, and lengths are bounded.
//
// The shape of Server follows github.com/emersion/go-sasl; the LOGIN
// server there was removed upstream, so both mechanisms are written here,
// small and fuzzed. The credential and SASL line limits are re-exported
// here from internal/authlimit, their one source.
package sasl

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/mailgate/mailgate/internal/authlimit"
)

// Errors. Each rejection wraps one of them; callers map them to replies.
var (
	// ErrCancelled: the client sent "*" (RFC 4954 4, RFC 5034 4, RFC 9051
	// 6.2.2) to abort the exchange.
	ErrCancelled = errors.New("sasl: authentication cancelled")
	// ErrMalformed: bad base64, a bad message layout, a forbidden byte, an
	// over-long field, or a response after the exchange ended.
	ErrMalformed = errors.New("sasl: malformed response")
	// ErrUnsupported: a mechanism other than PLAIN and LOGIN.
	ErrUnsupported = errors.New("sasl: unsupported mechanism")
)

// Field limits: the SASL limits, from their one source
// (internal/authlimit), which the proxy's other login commands and the
// backend client share.
const (
	// MaxUsername bounds the user name and the PLAIN authzid, octets.
	MaxUsername = authlimit.MaxUsername
	// MaxPassword bounds the password, octets.
	MaxPassword = authlimit.MaxPassword
	// MaxLine bounds one SASL line (command with initial response, or
	// client response), CRLF included.
	MaxLine = authlimit.MaxSASLLine
)

// Credentials is what a finished exchange yields.
type Credentials struct {
	// Authzid is the PLAIN authorization identity; empty, or equal to
	// Username (acting as another user is not supported).
	Authzid string
	// Username is the authentication identity.
	Username string
	// Password is the client's password; never log it.
	Password string
}

// Server runs one SASL exchange. Next is called first with the initial
// response, or nil when the client sent none; then with each decoded
// client response. It returns the next challenge (raw, not base64), or
// done with Credentials set. A nil resp means "no response"; an empty
// non-nil resp is an empty response. Any error ends the exchange.
type Server interface {
	Next(resp []byte) (challenge []byte, done bool, err error)
	Credentials() Credentials
}

// NewServer returns a server for mech, "PLAIN" or "LOGIN" in any case.
func NewServer(mech string) (Server, error) {
	switch strings.ToUpper(mech) {
	case "PLAIN":
		return &plainServer{}, nil
	case "LOGIN":
		return &loginServer{}, nil
	}
	return nil, ErrUnsupported
}

// Mechanisms lists what NewServer accepts, in the order to advertise.
func Mechanisms() []string { return []string{"PLAIN", "LOGIN"} }

// plainServer implements RFC 4616: one message
// "[authzid] NUL authcid NUL passwd".
type plainServer struct {
	step  int // 0: nothing seen; 1: empty challenge sent; 2: done
	creds Credentials
}

func (s *plainServer) Next(resp []byte) ([]byte, bool, error) {
	switch {
	case s.step == 0 && resp == nil:
		// No initial response: ask for the message with an empty
		// challenge (RFC 4616 2, RFC 4422 3.3).
		s.step = 1
		return []byte{}, false, nil
	case s.step >= 2:
		return nil, false, fmt.Errorf("%w: exchange already finished", ErrMalformed)
	}
	s.step = 2
	c, err := parsePlain(resp)
	if err != nil {
		return nil, false, err
	}
	s.creds = c
	return nil, true, nil
}

func (s *plainServer) Credentials() Credentials { return s.creds }

// parsePlain splits and checks one PLAIN message.
func parsePlain(msg []byte) (Credentials, error) {
	f := bytes.Split(msg, []byte{0})
	if len(f) != 3 {
		return Credentials{}, fmt.Errorf("%w: PLAIN needs exactly two NULs", ErrMalformed)
	}
	// RFC 4616 2: all three fields are UTF-8.
	for _, b := range f {
		if !utf8.Valid(b) {
			return Credentials{}, fmt.Errorf("%w: PLAIN field is not UTF-8", ErrMalformed)
		}
	}
	c := Credentials{Authzid: string(f[0]), Username: string(f[1]), Password: string(f[2])}
	if err := checkUsername(c.Username); err != nil {
		return Credentials{}, err
	}
	if err := checkPassword(c.Password); err != nil {
		return Credentials{}, err
	}
	if c.Authzid != "" && c.Authzid != c.Username {
		return Credentials{}, fmt.Errorf("%w: authorization identity differs from user", ErrMalformed)
	}
	return c, nil
}

// loginServer implements LOGIN: the challenges "Username:" and
// "Password:", each answered with the bare value. An initial response is
// the user name (what Outlook and Thunderbird send with AUTH LOGIN <b64>).
type loginServer struct {
	step  int // 0: start; 1: want user name; 2: want password; 3: done
	creds Credentials
}

var (
	challengeUsername = []byte("Username:")
	challengePassword = []byte("Password:")
)

func (s *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch s.step {
	case 0:
		if resp == nil {
			s.step = 1
			return challengeUsername, false, nil
		}
		fallthrough
	case 1:
		s.step = 3 // any error ends the exchange
		if err := checkUsername(string(resp)); err != nil {
			return nil, false, err
		}
		if !utf8.Valid(resp) {
			return nil, false, fmt.Errorf("%w: user name is not UTF-8", ErrMalformed)
		}
		s.creds.Username = string(resp)
		s.step = 2
		return challengePassword, false, nil
	case 2:
		s.step = 3
		// Passwords are not required to be UTF-8 here: LOGIN predates
		// SASLprep and old clients send their local charset; the backend
		// receives the octets unchanged.
		if err := checkPassword(string(resp)); err != nil {
			return nil, false, err
		}
		s.creds.Password = string(resp)
		return nil, true, nil
	}
	return nil, false, fmt.Errorf("%w: exchange already finished", ErrMalformed)
}

func (s *loginServer) Credentials() Credentials { return s.creds }

// forbidden are the bytes that end a line or a C string in some backend
// protocol; inside a credential they serve only command injection.
const forbidden = "\x00\r\n"

func checkUsername(u string) error {
	switch {
	case u == "":
		return fmt.Errorf("%w: empty user name", ErrMalformed)
	case len(u) > MaxUsername:
		return fmt.Errorf("%w: user name longer than %d octets", ErrMalformed, MaxUsername)
	case strings.ContainsAny(u, forbidden):
		return fmt.Errorf("%w: control character in user name", ErrMalformed)
	}
	return nil
}

func checkPassword(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty password", ErrMalformed)
	case len(p) > MaxPassword:
		return fmt.Errorf("%w: password longer than %d octets", ErrMalformed, MaxPassword)
	case strings.ContainsAny(p, forbidden):
		return fmt.Errorf("%w: control character in password", ErrMalformed)
	}
	return nil
}

// DecodeResponse decodes one client response line (without its line
// ending): "*" cancels (ErrCancelled); "=" and the empty line are an
// empty response (RFC 4954 4 uses "=" for an empty initial response); all
// else must be standard base64 with padding, nothing else on the line.
// The result is never nil on success.
func DecodeResponse(line []byte) ([]byte, error) {
	switch string(line) {
	case "*":
		return nil, ErrCancelled
	case "=", "":
		return []byte{}, nil
	}
	// encoding/base64 skips CR and LF even in Strict mode; refuse them
	// (and any other stray byte) before decoding.
	for _, c := range line {
		if !isBase64Char(c) {
			return nil, fmt.Errorf("%w: invalid base64 character", ErrMalformed)
		}
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(line)))
	n, err := base64.StdEncoding.Strict().Decode(out, line)
	if err != nil {
		return nil, fmt.Errorf("%w: invalid base64", ErrMalformed)
	}
	return out[:n], nil
}

func isBase64Char(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '+' || c == '/' || c == '='
}

// EncodeChallenge encodes a challenge for the wire: "" for an empty one
// (sent as "+ " in IMAP and POP3, "334 " in SMTP), else base64.
func EncodeChallenge(ch []byte) string {
	if len(ch) == 0 {
		return ""
	}
	return base64.StdEncoding.EncodeToString(ch)
}

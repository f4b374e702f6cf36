package backend

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// IMAP logs in to an IMAP backend.
type IMAP struct {
	Opts Options

	// forceLogin makes Login use LOGIN even when AUTHENTICATE PLAIN is
	// offered; tests use it to exercise the string encoder on a server
	// that offers SASL-IR.
	forceLogin bool
}

// maxIDValue is the longest ID field value (RFC 2971 3.3: 1024 octets).
const maxIDValue = 1024

// maxRespLen bounds one IMAP response including its literals; the
// responses before login (greeting, CAPABILITY, ID) are small.
const maxRespLen = maxLineLen

// Login dials, optionally sends ID with the client's address, then logs in
// (AUTHENTICATE PLAIN with SASL-IR when offered, else LOGIN). Every
// command carries mailgate's own tag; tag, the client's, never reaches the
// backend: Reply is the backend's untagged lines and its final tagged OK
// re-tagged with tag (response code and text kept), ready for the client.
//
// Order (RFC 9051 6.2.1, RFC 2971 3.1): greeting, STARTTLS when
// configured, CAPABILITY unless the greeting carried it, ID when
// ForwardClient (Dovecot takes the client address from it only before
// login and only from login_trusted_networks), then the login itself.
func (b *IMAP) Login(ctx context.Context, c Client, tag, user, pass string) (*Session, error) {
	if err := checkCredentials(user, pass); err != nil {
		return nil, err
	}
	o := b.Opts.withDefaults()
	log := o.Logger.With("backend", "imap", "cid", c.Session)
	cn, err := dial(ctx, o, "imap", log, &c)
	if err != nil {
		return nil, err
	}
	s := &imapSession{conn: cn}
	reply, err := s.login(c, tag, user, pass, b.forceLogin)
	if err != nil {
		cn.close()
		return nil, err
	}
	nc, rest := cn.release()
	return &Session{Conn: nc, Reply: reply, Buffered: rest}, nil
}

// imapSession is the state of one IMAP backend login.
type imapSession struct {
	*conn
	caps capSet // nil until known; reset by STARTTLS (RFC 9051 6.2.1)
	seq  int    // numbers our own tags mg1, mg2, ...
}

// login runs the steps after dial and returns the Reply for the client.
func (s *imapSession) login(c Client, tag, user, pass string, forceLogin bool) ([]byte, error) {
	if err := s.greeting(); err != nil {
		return nil, noService(err)
	}
	if s.opts.TLS == TLSStartTLS {
		if _, err := s.simple("STARTTLS"); err != nil {
			return nil, err
		}
		if err := s.handshake(s.ctx); err != nil {
			return nil, noService(err)
		}
		s.caps = nil
	}
	if s.caps == nil {
		untagged, err := s.simple("CAPABILITY")
		if err != nil {
			return nil, err
		}
		for _, r := range untagged {
			if r.data == "CAPABILITY" {
				s.caps = parseCaps(r.text)
			}
		}
		if s.caps == nil {
			return nil, s.unavailable("no CAPABILITY response")
		}
	}
	var id idCmd
	if s.opts.ForwardClient && s.opts.ProxyProtocol == ProxyNone {
		id = s.buildID(c)
	}
	return s.authenticate(tag, user, pass, forceLogin, id)
}

// greeting reads the server greeting: only "* OK" lets us go on; PREAUTH
// would hand us someone's session, BYE means the server refuses us.
func (s *imapSession) greeting() error {
	line, err := s.readResp()
	if err != nil {
		return err
	}
	r, ok := parseResp(line)
	if !ok || r.kind != respUntagged {
		return s.unavailable("bad greeting " + quote(line))
	}
	switch r.status {
	case "OK":
		if r.code == "CAPABILITY" {
			s.caps = parseCaps(r.args)
		}
		return nil
	case "BYE", "PREAUTH":
		return s.unavailable("greeting " + quote(line))
	}
	return s.unavailable("bad greeting " + quote(line))
}

// nextTag returns our next own tag.
func (s *imapSession) nextTag() string {
	s.seq++
	return "mg" + strconv.Itoa(s.seq)
}

// simple sends "<own tag> cmd" and requires a tagged OK, returning the
// untagged responses before it.
func (s *imapSession) simple(cmd string) ([]imapResp, error) {
	tag := s.nextTag()
	if err := s.write([]byte(tag + " " + cmd + "\r\n")); err != nil {
		return nil, err
	}
	untagged, tagged, _, _, err := s.result(tag)
	if err != nil {
		return nil, err
	}
	if tagged.status != "OK" {
		return nil, s.unavailable(cmd + " refused: " + tagged.status + " " + tagged.text)
	}
	return untagged, nil
}

// idCmd is an ID command to send before the login: its tag ("": none)
// and its line with CRLF.
type idCmd struct {
	tag  string
	line []byte
}

// buildID passes the client's address on with ID (RFC 2971). Dovecot reads
// x-originating-ip/-port (the client), x-connected-ip/-port (the address
// the client reached) and x-session-id. A server that refuses ID still
// gets the login: the policy decision has already been made by us.
//
// It only builds the command: authenticate sends it in the same write as
// a one-line login, which follows without waiting for the ID reply (one
// round trip and one write less per login, RFC 9051 5.5 allows it), and
// idResult reads the reply before the login's.
func (s *imapSession) buildID(c Client) idCmd {
	if !s.caps["ID"] {
		s.log.Warn("imap backend does not offer ID; client address not forwarded")
		return idCmd{}
	}
	tag := s.nextTag()
	b := cmdBuilder{}
	b.raw(tag + " ID (")
	n := 0
	field := func(k, v string) {
		if v == "" || len(v) > maxIDValue || !quotable(v) {
			return
		}
		if n > 0 {
			b.raw(" ")
		}
		b.str(k)
		b.raw(" ")
		b.str(v)
		n++
	}
	if c.Addr.IsValid() {
		field("x-originating-ip", c.Addr.Addr().Unmap().String())
		field("x-originating-port", strconv.Itoa(int(c.Addr.Port())))
	}
	if c.Local.IsValid() {
		field("x-connected-ip", c.Local.Addr().Unmap().String())
		field("x-connected-port", strconv.Itoa(int(c.Local.Port())))
	}
	field("x-session-id", c.Session)
	if n == 0 {
		return idCmd{}
	}
	b.raw(")")
	// All quoted: one chunk.
	return idCmd{tag: tag, line: bytes.Join(b.done(), nil)}
}

// idResult reads the reply to the ID command sent as tag ("": none).
// A refusal costs the forwarded address, not the login.
func (s *imapSession) idResult(tag string) error {
	if tag == "" {
		return nil
	}
	_, tagged, _, _, err := s.result(tag)
	if err != nil {
		return err
	}
	if tagged.status != "OK" {
		s.log.Warn("imap backend refused ID; client address not forwarded", "reply", tagged.status+" "+tagged.text)
	}
	return nil
}

// authenticate sends the login command with our own tag and returns the
// untagged reply lines verbatim and the tagged OK re-tagged with
// clientTag.
func (s *imapSession) authenticate(clientTag, user, pass string, forceLogin bool, id idCmd) ([]byte, error) {
	tag := s.nextTag()
	plain := !forceLogin && s.caps["AUTH=PLAIN"] && (s.caps["SASL-IR"] || s.caps["LOGINDISABLED"])
	var chunks [][]byte
	switch {
	case plain && s.caps["SASL-IR"]:
		// RFC 4959: the initial response on the command line.
		chunks = [][]byte{[]byte(tag + " AUTHENTICATE PLAIN " + saslPlain(user, pass) + "\r\n")}
	case plain:
		// LOGIN is disabled and there is no SASL-IR: wait for "+".
		chunks = [][]byte{[]byte(tag + " AUTHENTICATE PLAIN\r\n"), []byte(saslPlain(user, pass) + "\r\n")}
	case s.caps["LOGINDISABLED"]:
		return nil, s.unavailable("LOGINDISABLED and no AUTH=PLAIN offered")
	default:
		b := cmdBuilder{litPlus: s.caps["LITERAL+"], litMinus: s.caps["LITERAL-"]}
		b.raw(tag + " LOGIN ")
		b.str(user)
		b.raw(" ")
		b.str(pass)
		chunks = b.done()
	}
	// A login in several chunks waits for continuations, which must not
	// be confused with the ID reply: send ID and read its reply first. A
	// one-chunk login goes out behind the ID command in the same write.
	first, shown := chunks[0], tag+" login"
	if id.tag != "" && len(chunks) > 1 {
		if err := s.write(id.line); err != nil {
			return nil, err
		}
		if err := s.idResult(id.tag); err != nil {
			return nil, err
		}
		id = idCmd{}
	}
	if id.tag != "" {
		s.trace("send", id.line)
		first = append(slices.Clip(id.line), first...)
		shown = "(with the ID above) " + shown
	}
	if err := s.writeSecret(first, shown); err != nil {
		return nil, err
	}
	if err := s.idResult(id.tag); err != nil {
		return nil, err
	}
	for _, chunk := range chunks[1:] {
		// Wait for the continuation; a tagged reply instead ends it, and
		// so does anything else.
		line, err := s.readResp()
		if err != nil {
			return nil, err
		}
		r, ok := parseResp(line)
		if !ok {
			return nil, s.unavailable("bad response " + quote(line))
		}
		if r.kind == respTagged && r.tag == tag {
			return nil, s.loginFailed(r)
		}
		if r.kind != respContinuation {
			return nil, s.unavailable("expected continuation, got " + quote(line))
		}
		if err := s.writeSecret(chunk, "login continued"); err != nil {
			return nil, err
		}
	}
	_, tagged, raw, at, err := s.result(tag)
	if err != nil {
		return nil, err
	}
	if tagged.status != "OK" {
		return nil, s.loginFailed(tagged)
	}
	// raw[at:] is "<tag> OK ...": the client's tag replaces ours.
	reply := make([]byte, 0, len(raw)-len(tag)+len(clientTag))
	reply = append(reply, raw[:at]...)
	reply = append(reply, clientTag...)
	return append(reply, raw[at+len(tag):]...), nil
}

// loginFailed classifies a tagged NO or BAD to the login (RFC 5530):
// codes saying the server cannot serve now are temporary, any other NO is
// the credentials; BAD means we and the server disagree on syntax.
func (s *imapSession) loginFailed(r imapResp) error {
	detail := quote([]byte(r.status + " " + bracket(r.code) + r.text))
	if r.status == "NO" {
		switch r.code {
		case "UNAVAILABLE", "SERVERBUG", "INUSE", "LIMIT", "PRIVACYREQUIRED":
			// The server cannot serve now, or needs TLS we were not
			// configured for: not the user's credentials.
		default:
			return fmt.Errorf("%w: imap %s: %s", ErrAuthFailed, s.opts.Address, detail)
		}
	}
	return s.unavailable("login answered " + detail)
}

// bracket renders a response code for error text.
func bracket(code string) string {
	if code == "" {
		return ""
	}
	return "[" + code + "] "
}

// result reads responses up to the tagged one for tag. It returns the
// parsed untagged responses, the tagged one, all lines verbatim and the
// offset of the tagged line in them. Anything that cannot come before the
// reply awaited ends it with an error at once: an untagged BAD (the
// server did not understand what we sent, so no tagged reply may come) or
// BYE, a continuation request, another tag, a line that is no response.
func (s *imapSession) result(tag string) ([]imapResp, imapResp, []byte, int, error) {
	var untagged []imapResp
	var raw []byte
	for range maxReplyLines {
		line, err := s.readResp()
		if err != nil {
			return nil, imapResp{}, nil, 0, err
		}
		at := len(raw)
		raw = append(raw, line...)
		r, ok := parseResp(line)
		switch {
		case !ok:
			return nil, imapResp{}, nil, 0, s.unavailable("bad response " + quote(line))
		case r.kind == respTagged && r.tag == tag:
			return untagged, r, raw, at, nil
		case r.kind == respTagged:
			return nil, imapResp{}, nil, 0, s.unavailable("response for unknown tag " + quote(line))
		case r.kind == respContinuation:
			return nil, imapResp{}, nil, 0, s.unavailable("unexpected continuation " + quote(line))
		case r.status == "BYE" || r.status == "BAD":
			return nil, imapResp{}, nil, 0, s.unavailable("server said " + quote(line))
		}
		untagged = append(untagged, r)
	}
	return nil, imapResp{}, nil, 0, s.unavailable("too many untagged responses")
}

// readResp reads one response: a line plus, when it ends in a literal
// "{n}", the n octets and the rest of the response, within maxRespLen.
// The result is a fresh slice.
func (s *imapSession) readResp() ([]byte, error) {
	var resp []byte
	for {
		line, err := s.readLine()
		if err != nil {
			return nil, err
		}
		resp = append(resp, line...)
		n, lit := literalLen(line)
		if !lit {
			return resp, nil
		}
		if len(resp)+n > maxRespLen {
			return nil, s.unavailable("response too long")
		}
		s.deadline()
		start := len(resp)
		resp = append(resp, make([]byte, n)...)
		if _, err := io.ReadFull(s.br, resp[start:]); err != nil {
			return nil, s.ioErr("read", err)
		}
	}
}

// saslPlain is the base64 SASL PLAIN message with an empty authorization
// identity (RFC 4616 2).
func saslPlain(user, pass string) string {
	msg := make([]byte, 0, 2+len(user)+len(pass))
	msg = append(msg, 0)
	msg = append(msg, user...)
	msg = append(msg, 0)
	msg = append(msg, pass...)
	return base64.StdEncoding.EncodeToString(msg)
}

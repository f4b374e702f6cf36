package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// POP3 logs in to a POP3 backend.
type POP3 struct {
	Opts Options

	caps     servedList  // CAPA lines for Capabilities
	login    greetMemo   // CAPA of the last login connection that asked, by greeting (APOP timestamp removed)
	warnedXC atomic.Bool // "no XCLIENT" has been logged once
}

// capaRefresh is how long Capabilities serves its cached CAPA lines
// before asking the backend again. The backend's capabilities change only
// with its configuration.
const capaRefresh = 10 * time.Minute

// maxPOP3Line is the longest command line we send when we can choose:
// 255 octets (RFC 2449 4); RFC 5034 4 says an AUTH initial response that
// would exceed it is sent after the "+" continuation instead.
const maxPOP3Line = 255

// Login dials, optionally sends XCLIENT, then USER/PASS or AUTH PLAIN.
//
// Order: greeting, STLS when configured (RFC 2595 4), XCLIENT when
// ForwardClient and the greeting offers it (Dovecot shows "[XCLIENT]"
// only to login_trusted_networks), CAPA (RFC 2449), then AUTH PLAIN (RFC
// 5034) when SASL PLAIN is listed, else USER/PASS (RFC 1939 7).
func (b *POP3) Login(ctx context.Context, c Client, user, pass string) (*Session, error) {
	if err := checkCredentials(user, pass); err != nil {
		return nil, err
	}
	o := b.Opts.withDefaults()
	log := o.Logger.With("backend", "pop3", "cid", c.Session)
	cn, err := dial(ctx, o, "pop3", log, &c)
	if err != nil {
		return nil, err
	}
	s := &pop3Session{conn: cn}
	reply, err := s.login(b, c, user, pass)
	if err != nil {
		cn.close()
		return nil, err
	}
	nc, rest := cn.release()
	return &Session{Conn: nc, Reply: reply, Buffered: rest}, nil
}

// Capabilities returns the backend's CAPA lines (e.g. TOP, UIDL) so the
// proxy can advertise post-login capabilities. The lines are those
// offered before login (Dovecot's include STLS, USER and SASL, which the
// proxy replaces with its own). They are cached for 10 minutes; when the
// backend cannot be asked, the last good lines are returned without error.
func (b *POP3) Capabilities(ctx context.Context) ([]string, error) {
	return b.caps.get(ctx, capaRefresh, b.fetchCapa, func(err error) {
		b.Opts.withDefaults().Logger.Warn("pop3 backend CAPA failed; serving cached capabilities", "err", err)
	})
}

// fetchCapa connects, asks CAPA and says QUIT.
func (b *POP3) fetchCapa(ctx context.Context) ([]string, error) {
	o := b.Opts.withDefaults()
	cn, err := dial(ctx, o, "pop3", o.Logger.With("backend", "pop3"), nil)
	if err != nil {
		return nil, err
	}
	defer cn.close()
	s := &pop3Session{conn: cn}
	if _, err := s.greeting(); err != nil {
		return nil, err
	}
	if err := s.stls(); err != nil {
		return nil, err
	}
	caps, err := s.capa()
	if err != nil {
		return nil, err
	}
	if caps == nil {
		return nil, s.unavailable("CAPA not supported")
	}
	if err := s.write([]byte("QUIT\r\n")); err == nil {
		_, _ = s.readLine() // "+OK"; the answer does not matter
	}
	return caps, nil
}

// pop3Session is the state of one POP3 backend login.
type pop3Session struct {
	*conn
}

func (s *pop3Session) login(b *POP3, c Client, user, pass string) ([]byte, error) {
	greet, err := s.greeting()
	if err != nil {
		return nil, noService(err)
	}
	if err := s.stls(); err != nil {
		return nil, noService(err)
	}
	// XCLIENT goes out on its own and its reply is read before the login
	// command, even when the server pipelines: Dovecot writes "+OK
	// Updated" and, after the auth round trip, the login reply as two
	// small segments without TCP_NODELAY, so when both commands arrive
	// together the second waits, under Nagle's algorithm, for an ACK our
	// side delays by 40 ms: in 4 logins of 10 against a Dovecot in
	// high-performance mode, in every one against Debian's default
	// (docs/BENCHMARKS.md, "The POP3 login stall"). Reading the reply
	// first lets the login command carry that ACK.
	if s.opts.ForwardClient && s.opts.ProxyProtocol == ProxyNone {
		if err := s.xclient(s.xclientLine(b, c, greet)); err != nil {
			b.login.forget()
			return nil, err
		}
	}
	key := capaGreeting(greet)
	caps := b.login.known(key, capaRefresh)
	if caps == nil {
		// Nothing remembered for this greeting: ask, as every login did.
		if caps, err = s.capa(); err != nil {
			b.login.forget()
			return nil, err
		}
		if caps == nil {
			caps = []string{} // CAPA unknown to the server: USER/PASS
		}
		b.login.remember(key, caps)
		reply, err := s.auth(caps, user, pass)
		if err != nil && !errors.Is(err, ErrAuthFailed) {
			b.login.forget()
		}
		return reply, err
	}
	// The same greeting as a moment ago: log in as that CAPA said.
	reply, err := s.auth(caps, user, pass)
	switch {
	case err == nil:
		return reply, nil
	case !errors.Is(err, ErrAuthFailed):
		b.login.forget()
		return nil, err
	}
	// Refused: check that the login was the one the server offers now,
	// so a changed backend never turns a good password into a failure.
	// The connection is still in the AUTHORIZATION state (RFC 1939 7).
	fresh, cerr := s.capa()
	if cerr != nil {
		b.login.forget()
		return nil, cerr
	}
	if fresh == nil {
		fresh = []string{}
	}
	if slices.Equal(fresh, caps) {
		return nil, err
	}
	s.log.Info("pop3 backend capabilities changed; logging in as the new CAPA says")
	b.login.remember(key, fresh)
	reply, err = s.auth(fresh, user, pass)
	if err != nil && !errors.Is(err, ErrAuthFailed) {
		b.login.forget()
	}
	return reply, err
}

// auth logs in with AUTH PLAIN when caps list it, else USER/PASS.
func (s *pop3Session) auth(caps []string, user, pass string) ([]byte, error) {
	if hasSASL(caps, "PLAIN") {
		return s.authPlain(user, pass)
	}
	return s.userPass(user, pass)
}

// capaGreeting is the part of a greeting that says which server answers:
// without the line end and without an APOP timestamp ("<...>", RFC 1939
// 7), which is new on every connection.
func capaGreeting(greet []byte) string {
	g := trimCRLF(greet)
	if i := bytes.LastIndexByte(g, '<'); i >= 0 {
		if j := bytes.IndexByte(g[i:], '>'); j >= 0 {
			return string(g[:i]) + string(g[i+j+1:])
		}
	}
	return string(g)
}

// greeting requires "+OK" (RFC 1939 4) and returns the line.
func (s *pop3Session) greeting() ([]byte, error) {
	line, err := s.readLine()
	if err != nil {
		return nil, err
	}
	if ok, _ := pop3Status(line); !ok {
		return nil, s.unavailable("greeting " + quote(line))
	}
	return bytes.Clone(line), nil
}

// stls upgrades to TLS when configured (RFC 2595 4).
func (s *pop3Session) stls() error {
	if s.opts.TLS != TLSStartTLS {
		return nil
	}
	line, err := s.cmd("STLS")
	if err != nil {
		return err
	}
	if ok, _ := pop3Status(line); !ok {
		return s.unavailable("STLS refused: " + quote(line))
	}
	return s.handshake(s.ctx)
}

// xclientLine is the XCLIENT command (without CRLF) that passes the
// client's address on with Dovecot's XCLIENT, "" for none. Without
// "[XCLIENT]" in the greeting Dovecot would refuse it (we are not in its
// login_trusted_networks): log once and log in without it, as a refusal
// does, since our policy decision is already made.
func (s *pop3Session) xclientLine(b *POP3, c Client, greet []byte) string {
	if !bytes.Contains(bytes.ToUpper(greet), []byte("[XCLIENT]")) {
		if !b.warnedXC.Swap(true) {
			s.log.Warn("pop3 backend does not offer XCLIENT (is mailgate in Dovecot's login_trusted_networks?); client address not forwarded")
		}
		return ""
	}
	var args []string
	if c.Addr.IsValid() {
		args = append(args, "ADDR="+c.Addr.Addr().Unmap().String(), "PORT="+strconv.Itoa(int(c.Addr.Port())))
	}
	if safeAtom(c.Session) {
		args = append(args, "SESSION="+c.Session)
	}
	if len(args) == 0 {
		return ""
	}
	return "XCLIENT " + strings.Join(args, " ")
}

// xclient sends the XCLIENT line ("": none) and reads its reply.
func (s *pop3Session) xclient(line string) error {
	if line == "" {
		return nil
	}
	if err := s.write([]byte(line + "\r\n")); err != nil {
		return err
	}
	return s.xclientReply()
}

// xclientReply reads the reply to XCLIENT. A refusal costs the
// forwarded address, not the login.
func (s *pop3Session) xclientReply() error {
	line, err := s.readLine()
	if err != nil {
		return err
	}
	switch ok, isErr := pop3Status(line); {
	case isErr:
		s.log.Warn("pop3 backend refused XCLIENT; client address not forwarded", "reply", quote(line))
	case !ok:
		return s.unavailable("unexpected XCLIENT reply " + quote(line))
	}
	return nil
}

// capa asks CAPA (RFC 2449 5) and returns the capability lines, or nil
// when the server does not know CAPA.
func (s *pop3Session) capa() ([]string, error) {
	line, err := s.cmd("CAPA")
	if err != nil {
		return nil, err
	}
	switch ok, isErr := pop3Status(line); {
	case isErr:
		return nil, nil
	case !ok:
		return nil, s.unavailable("unexpected CAPA reply " + quote(line))
	}
	caps := []string{}
	for range maxReplyLines {
		line, err := s.readLine()
		if err != nil {
			return nil, err
		}
		l := string(trimCRLF(line))
		if l == "." {
			return caps, nil
		}
		// Byte-stuffing (RFC 1939 3) never applies to capability names.
		caps = append(caps, l)
	}
	return nil, s.unavailable("CAPA reply too long")
}

// hasSASL reports whether the CAPA "SASL" line lists mech.
func hasSASL(caps []string, mech string) bool {
	for _, c := range caps {
		f := strings.Fields(strings.ToUpper(c))
		if len(f) > 0 && f[0] == "SASL" {
			for _, m := range f[1:] {
				if m == mech {
					return true
				}
			}
		}
	}
	return false
}

// authPlain logs in with AUTH PLAIN (RFC 5034), with the initial response
// on the command line when that fits 255 octets.
func (s *pop3Session) authPlain(user, pass string) ([]byte, error) {
	ir := saslPlain(user, pass)
	var line []byte
	var err error
	if len("AUTH PLAIN ")+len(ir)+2 <= maxPOP3Line {
		line, err = s.cmdSecret("AUTH PLAIN "+ir, "AUTH PLAIN")
	} else {
		line, err = s.cmd("AUTH PLAIN")
		if err == nil {
			if !bytes.HasPrefix(line, []byte("+")) || bytes.HasPrefix(line, []byte("+OK")) {
				return nil, s.loginFailed(line)
			}
			line, err = s.cmdSecret(ir, "AUTH PLAIN response")
		}
	}
	if err != nil {
		return nil, err
	}
	return s.final(line)
}

// userPass logs in with USER and PASS (RFC 1939 7). USER takes one
// argument and servers split at spaces, so a name with a space cannot be
// sent this way; PASS takes the rest of the line (RFC 1939 7, "PASS").
func (s *pop3Session) userPass(user, pass string) ([]byte, error) {
	if strings.ContainsAny(user, " \t") {
		return nil, fmt.Errorf("%w: pop3 %s: user name with a space needs SASL PLAIN, which the backend does not offer", ErrAuthFailed, s.opts.Address)
	}
	line, err := s.cmd("USER " + user)
	if err != nil {
		return nil, err
	}
	if ok, _ := pop3Status(line); !ok {
		return nil, s.loginFailed(line)
	}
	line, err = s.cmdSecret("PASS "+pass, "PASS")
	if err != nil {
		return nil, err
	}
	return s.final(line)
}

// final turns the reply to the last login command into Reply or an error.
func (s *pop3Session) final(line []byte) ([]byte, error) {
	if ok, _ := pop3Status(line); !ok {
		return nil, s.loginFailed(line)
	}
	return bytes.Clone(line), nil
}

// loginFailed classifies a refused login: -ERR [SYS/TEMP], [SYS/PERM]
// (RFC 3206 4: the server's problem, not the user's) and [IN-USE] (RFC
// 2449 8.1.1) are unavailable, any other -ERR is the credentials;
// anything but -ERR is a protocol error.
func (s *pop3Session) loginFailed(line []byte) error {
	ok, isErr := pop3Status(line)
	if ok || !isErr {
		return s.unavailable("unexpected login reply " + quote(line))
	}
	up := bytes.ToUpper(line)
	if bytes.HasPrefix(up, []byte("-ERR [SYS/")) || bytes.HasPrefix(up, []byte("-ERR [IN-USE]")) {
		return s.unavailable("login answered " + quote(line))
	}
	return fmt.Errorf("%w: pop3 %s: %s", ErrAuthFailed, s.opts.Address, quote(line))
}

// cmd sends one command line and reads the one-line reply.
func (s *pop3Session) cmd(line string) ([]byte, error) {
	if err := s.write([]byte(line + "\r\n")); err != nil {
		return nil, err
	}
	return s.readLine()
}

// cmdSecret is cmd for a line with credentials; the trace shows shown.
func (s *pop3Session) cmdSecret(line, shown string) ([]byte, error) {
	if err := s.writeSecret([]byte(line+"\r\n"), shown); err != nil {
		return nil, err
	}
	return s.readLine()
}

// pop3Status reports whether line is "+OK" or "-ERR" (RFC 1939 3),
// followed by the end of line or a space.
func pop3Status(line []byte) (ok, isErr bool) {
	l := trimCRLF(line)
	is := func(p string) bool {
		return len(l) >= len(p) && strings.EqualFold(string(l[:len(p)]), p) && (len(l) == len(p) || l[len(p)] == ' ')
	}
	return is("+OK"), is("-ERR")
}

// safeAtom reports whether s is non-empty, at most 128 octets and made of
// letters, digits and "._-:", safe as a bare XCLIENT value or ID field.
func safeAtom(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '.' || b == '_' || b == '-' || b == ':') {
			return false
		}
	}
	return true
}

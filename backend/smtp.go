package backend

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SMTP verification modes, SMTP.Verify.
const (
	// VerifyIMAP checks the password with an IMAP login to SMTP.VerifyIMAP
	// and then opens a session on a backend port that trusts mailgate
	// (Postfix port 25 or a private port with XCLIENT).
	VerifyIMAP = "imap"
	// VerifySMTPAuth relays the password with AUTH PLAIN to a backend that
	// offers AUTH (Postfix submission with Dovecot SASL).
	VerifySMTPAuth = "smtp-auth"
)

// DefaultVerifyCacheTTL is the default for SMTP.CacheTTL.
const DefaultVerifyCacheTTL = 60 * time.Second

// ehloRefresh is how long Extensions serves cached EHLO keywords.
const ehloRefresh = 5 * time.Minute

// SMTP verifies a submission client's password and opens the backend
// SMTP session (the `backends.smtp:` section).
type SMTP struct {
	Opts Options `yaml:",inline"`
	// Verify is VerifyIMAP ("imap", the default when empty),
	// VerifySMTPAuth ("smtp-auth") or VerifyDovecotAuth ("dovecot-auth").
	Verify string `yaml:"verify"`
	// DovecotAuth is Dovecot's auth socket for dovecot-auth mode: an
	// absolute path (unix_listener) or host:port (inet_listener).
	DovecotAuth string `yaml:"dovecot_auth"`
	// XCLIENT passes the client's address, EHLO name and (in imap mode)
	// login to Postfix (XCLIENT_README). When set and the backend does
	// not offer XCLIENT to us, logins fail: the backend would otherwise
	// see every message as mailgate's own.
	XCLIENT bool `yaml:"xclient"`
	// Hostname is mailgate's own EHLO name; "localhost" when empty.
	Hostname string `yaml:"-"`
	// VerifyIMAP logs in to check passwords in imap mode.
	VerifyIMAP *IMAP `yaml:"-"`
	// CacheTTL keeps successful imap- and dovecot-auth-mode verifications this long; 0
	// disables the cache. A password change (or a locked account) takes
	// effect at the latest CacheTTL after the last successful login.
	CacheTTL time.Duration `yaml:"verify_cache_ttl"`

	initOnce sync.Once
	cache    *verifyCache

	exts  servedList // EHLO keywords for Extensions
	login greetMemo  // EHLO keywords logins may use in place of their own EHLO, by 220 greeting
}

// Validate reports every problem of the section, each prefixed with path
// (e.g. "backends.smtp").
func (b *SMTP) Validate(path string) error {
	errs := []error{b.Opts.Validate(path), b.ValidateMode(path)}
	if (b.Verify == "" || b.Verify == VerifyIMAP) && b.VerifyIMAP == nil {
		errs = append(errs, fmt.Errorf("%s.verify: imap mode needs an IMAP backend", path))
	}
	if b.CacheTTL < 0 {
		errs = append(errs, fmt.Errorf("%s.verify_cache_ttl: must not be negative", path))
	}
	return errors.Join(errs...)
}

// ValidateMode checks the keys that choose how a password is checked and
// how the client's address reaches the backend (verify, dovecot_auth,
// xclient, proxy_protocol), and that they fit together.
func (b *SMTP) ValidateMode(path string) error {
	var errs []error
	switch b.Verify {
	case "", VerifyIMAP, VerifySMTPAuth:
		if b.DovecotAuth != "" {
			errs = append(errs, fmt.Errorf("%s.dovecot_auth: set, but verify is not dovecot-auth", path))
		}
	case VerifyDovecotAuth:
		if b.DovecotAuth == "" {
			errs = append(errs, fmt.Errorf("%s.dovecot_auth: verify: dovecot-auth needs the auth socket (a path or host:port)", path))
		} else if _, _, err := DovecotAuthNetwork(b.DovecotAuth); err != nil {
			errs = append(errs, fmt.Errorf("%s.dovecot_auth: %v", path, err))
		}
	default:
		errs = append(errs, fmt.Errorf("%s.verify: %q is not one of imap, smtp-auth, dovecot-auth", path, b.Verify))
	}
	if b.Opts.ProxyProtocol != ProxyNone {
		// Behind a PROXY header Postfix's peer is the client, so XCLIENT
		// (granted by smtpd_authorized_xclient_hosts) is refused, and
		// without XCLIENT LOGIN= only the user's own AUTH can make the
		// session an authenticated one.
		if b.XCLIENT {
			errs = append(errs, fmt.Errorf("%s.proxy_protocol: xclient is set too; the backend would see the client, not mailgate, send XCLIENT (set xclient: false)", path))
		}
		if b.Verify != VerifySMTPAuth {
			errs = append(errs, fmt.Errorf("%s.proxy_protocol: needs verify: smtp-auth; without XCLIENT the backend learns the login only from the user's own AUTH", path))
		}
	}
	return errors.Join(errs...)
}

func (b *SMTP) init() {
	b.initOnce.Do(func() { b.cache = newVerifyCache(b.CacheTTL) })
}

func (b *SMTP) hostname() string {
	if b.Hostname == "" {
		return "localhost"
	}
	return b.Hostname
}

// Login verifies the password, then opens the backend session ready for
// the client's MAIL FROM, and returns it (Reply nil; the proxy answers
// 235 itself).
//
// imap mode: IMAP login and logout (cached), then greeting, EHLO, STARTTLS
// and EHLO when configured, XCLIENT when configured (a new 220 greeting),
// and the client's own EHLO/HELO replayed. mailgate's own EHLO is left
// out when neither STARTTLS nor XCLIENT follows it, and before XCLIENT
// when the server's keywords are known (see prepare).
// dovecot-auth mode: as imap mode, the password checked on Dovecot's
// auth socket instead of with an IMAP login.
// smtp-auth mode: the same up to XCLIENT (without LOGIN=), then the
// client's EHLO name and AUTH PLAIN (RFC 4954); 235 means ready.
// Either way the last EHLO the backend sees carries the client's name.
func (b *SMTP) Login(ctx context.Context, c Client, user, pass string) (*Session, error) {
	b.init()
	if err := checkCredentials(user, pass); err != nil {
		return nil, err
	}
	if !validHelo(c.Helo) {
		return nil, fmt.Errorf("%w: smtp: client EHLO name %q cannot be replayed", ErrUnavailable, c.Helo)
	}
	o := b.Opts.withDefaults()
	log := o.Logger.With("backend", "smtp", "cid", c.Session)
	authMode := b.Verify == VerifySMTPAuth
	if !authMode {
		if err := b.verify(ctx, c, user, pass); err != nil {
			return nil, err
		}
	}
	cn, err := dial(ctx, o, "smtp", log, &c)
	if err != nil {
		return nil, err
	}
	s := &smtpSession{conn: cn}
	if err := s.open(b, c, user, pass, authMode); err != nil {
		cn.close()
		return nil, err
	}
	nc, rest := cn.release()
	return &Session{Conn: nc, Buffered: rest}, nil
}

// verify checks user and pass with an IMAP login, or on Dovecot's auth
// socket in dovecot-auth mode, unless the cache knows them. The IMAP
// session is logged out at once.
func (b *SMTP) verify(ctx context.Context, c Client, user, pass string) error {
	if b.cache.ok(user, pass) {
		return nil
	}
	if b.Verify == VerifyDovecotAuth {
		if err := dovecotAuth(ctx, b.Opts.withDefaults(), b.DovecotAuth, "smtp", c, user, pass); err != nil {
			return err
		}
		b.cache.add(user, pass)
		return nil
	}
	if b.VerifyIMAP == nil {
		return fmt.Errorf("%w: smtp: imap verification without an IMAP backend", ErrUnavailable)
	}
	if err := b.VerifyIMAP.Verify(ctx, c, user, pass); err != nil {
		return err
	}
	b.cache.add(user, pass)
	return nil
}

// Extensions lists the backend's EHLO keywords (e.g. "SIZE 10240000",
// "8BITMIME"), upper-cased, with parameters, as offered to mailgate after
// STARTTLS when configured. They are cached for 5 minutes; when the
// backend cannot be asked, the last good list is returned without error.
func (b *SMTP) Extensions(ctx context.Context) ([]string, error) {
	return b.exts.get(ctx, ehloRefresh, func(ctx context.Context) ([]string, error) {
		exts, greet, err := b.fetchExtensions(ctx)
		if err == nil {
			b.login.remember(greet, exts)
		}
		return exts, err
	}, func(err error) {
		b.Opts.withDefaults().Logger.Warn("smtp backend EHLO failed; serving cached extensions", "err", err)
	})
}

// rememberExtensions keeps the keywords a backend connection greeted
// with greet was offered, for Extensions and for the next logins.
func (b *SMTP) rememberExtensions(greet string, exts []string) {
	b.exts.set(exts)
	b.login.remember(greet, exts)
}

func (b *SMTP) fetchExtensions(ctx context.Context) ([]string, string, error) {
	o := b.Opts.withDefaults()
	cn, err := dial(ctx, o, "smtp", o.Logger.With("backend", "smtp"), nil)
	if err != nil {
		return nil, "", err
	}
	defer cn.close()
	s := &smtpSession{conn: cn}
	greet, err := s.greeting()
	if err != nil {
		return nil, "", err
	}
	exts, err := s.ehloTLS(b.hostname())
	if err != nil {
		return nil, "", err
	}
	if err := s.write([]byte("QUIT\r\n")); err == nil {
		_, _ = s.reply() // "221"; the answer does not matter
	}
	return exts, greet, nil
}

// smtpSession is the state of one SMTP backend session being opened.
type smtpSession struct {
	*conn
}

// open runs everything after dial; see SMTP.Login.
func (s *smtpSession) open(b *SMTP, c Client, user, pass string, authMode bool) error {
	err := s.session(b, c, user, pass, authMode)
	if err != nil && !errors.Is(err, ErrAuthFailed) {
		// A backend error: the next login asks EHLO before XCLIENT again
		// (Extensions still serves the last good list to clients).
		b.login.forget()
	}
	return err
}

// session is open's work: prepare, the client's EHLO (or HELO)
// replayed, and AUTH in smtp-auth mode.
func (s *smtpSession) session(b *SMTP, c Client, user, pass string, authMode bool) error {
	if err := s.prepare(b, c, user, authMode); err != nil {
		return err
	}
	heloCmd := "EHLO"
	if !authMode && strings.EqualFold(c.HeloCmd, "HELO") {
		// The client said HELO: replay that (a HELO session has no
		// extensions, RFC 5321 4.1.1.1). AUTH needs EHLO (RFC 4954 4).
		heloCmd = "HELO"
	}
	r, err := s.cmd(heloCmd + " " + c.Helo)
	if err != nil {
		return err
	}
	if r.code != 250 {
		return s.replyErr(heloCmd+" (client name)", r)
	}
	if authMode {
		return s.auth(ehloKeywords(r), user, pass)
	}
	return nil
}

// prepare reads the greeting, says EHLO (with STARTTLS when configured)
// and sends XCLIENT when configured. Without XCLIENT and STARTTLS it
// says no EHLO of its own.
//
// With XCLIENT and no STARTTLS, mailgate's own EHLO only tells which
// XCLIENT attributes the server takes, and XCLIENT starts the session
// over (a new 220, then the client's EHLO). When the keywords of a
// connection with the same greeting are known from a moment ago, that
// EHLO is left out: one round trip and one command of the server's less
// per login. Should XCLIENT then be refused, the server may have
// changed: mailgate says EHLO, learns what it offers now and sends
// XCLIENT again as that says, so remembered keywords never make a login
// fail that a fresh EHLO would let through.
func (s *smtpSession) prepare(b *SMTP, c Client, user string, authMode bool) error {
	greet, err := s.greeting()
	if err != nil {
		return err
	}
	if !b.XCLIENT && s.opts.TLS != TLSStartTLS {
		// Without XCLIENT and STARTTLS an EHLO of our own tells nothing:
		// the client's EHLO, replayed next, is the one whose keywords
		// count (AUTH).
		return nil
	}
	if b.XCLIENT && s.opts.TLS != TLSStartTLS {
		if exts := b.login.known(greet, ehloRefresh); exts != nil {
			if err := s.xclient(c, exts, user, !authMode); err == nil {
				return nil
			}
			s.log.Info("smtp backend refused XCLIENT sent as its EHLO said a moment ago; asking EHLO again")
		}
	}
	exts, err := s.ehloTLS(b.hostname())
	if err != nil {
		return err
	}
	if s.opts.TLS != TLSStartTLS {
		b.rememberExtensions(greet, exts)
	}
	if b.XCLIENT {
		return s.xclient(c, exts, user, !authMode)
	}
	return nil
}

// greeting requires the 220 greeting (RFC 5321 4.3.1); 421 or 554 mean
// the server will not talk to us. It returns the greeting's text.
func (s *smtpSession) greeting() (string, error) {
	r, err := s.reply()
	if err != nil {
		return "", err
	}
	if r.code != 220 {
		return "", s.replyErr("greeting", r)
	}
	return strings.Join(r.lines, "\n"), nil
}

// ehloTLS says EHLO and, when configured, STARTTLS and EHLO again (RFC
// 3207 4.2: forget what was learned before TLS). It returns the keywords.
func (s *smtpSession) ehloTLS(name string) ([]string, error) {
	exts, err := s.ehlo(name)
	if err != nil {
		return nil, err
	}
	if s.opts.TLS != TLSStartTLS {
		return exts, nil
	}
	if _, ok := extParams(exts, "STARTTLS"); !ok {
		return nil, s.unavailable("STARTTLS configured but not offered")
	}
	r, err := s.cmd("STARTTLS")
	if err != nil {
		return nil, err
	}
	if r.code != 220 {
		return nil, s.replyErr("STARTTLS", r)
	}
	if err := s.handshake(s.ctx); err != nil {
		return nil, err
	}
	return s.ehlo(name)
}

func (s *smtpSession) ehlo(name string) ([]string, error) {
	r, err := s.cmd("EHLO " + name)
	if err != nil {
		return nil, err
	}
	if r.code != 250 {
		return nil, s.replyErr("EHLO", r)
	}
	return ehloKeywords(r), nil
}

// xclient sends Postfix XCLIENT with the attributes the server lists;
// values are xtext (XCLIENT_README). Postfix answers with a new 220
// greeting; the caller then says EHLO again.
func (s *smtpSession) xclient(c Client, exts []string, user string, login bool) error {
	attrs, ok := extParams(exts, "XCLIENT")
	if !ok {
		return s.unavailable("xclient configured but the backend does not offer XCLIENT to us (smtpd_authorized_xclient_hosts)")
	}
	var args []string
	add := func(name, value string) {
		if slices.Contains(attrs, name) {
			args = append(args, name+"="+xtext(value))
		}
	}
	if c.Addr.IsValid() {
		a := c.Addr.Addr().Unmap()
		ip := a.String()
		if a.Is6() {
			ip = "IPV6:" + ip
		}
		add("ADDR", ip)
		add("PORT", strconv.Itoa(int(c.Addr.Port())))
		// No reverse DNS here: the name is unknown, not absent.
		add("NAME", "[UNAVAILABLE]")
	}
	if c.Local.IsValid() {
		a := c.Local.Addr().Unmap()
		ip := a.String()
		if a.Is6() {
			ip = "IPV6:" + ip
		}
		add("DESTADDR", ip)
		add("DESTPORT", strconv.Itoa(int(c.Local.Port())))
	}
	add("HELO", c.Helo)
	if strings.EqualFold(c.HeloCmd, "HELO") {
		add("PROTO", "SMTP")
	} else {
		add("PROTO", "ESMTP")
	}
	if login {
		add("LOGIN", user)
	}
	if len(args) == 0 {
		return s.unavailable("XCLIENT offers none of the attributes we send")
	}
	r, err := s.cmd("XCLIENT " + strings.Join(args, " "))
	if err != nil {
		return err
	}
	if r.code != 220 {
		return s.replyErr("XCLIENT", r)
	}
	return nil
}

// auth relays the credentials with AUTH PLAIN and an initial response
// (RFC 4954 4). 535 is a wrong password; other refusals are ours or the
// backend's configuration, so temporary.
func (s *smtpSession) auth(exts []string, user, pass string) error {
	mechs, ok := extParams(exts, "AUTH")
	if !ok || !slices.Contains(mechs, "PLAIN") {
		return s.unavailable("backend does not offer AUTH PLAIN")
	}
	if err := s.writeSecret([]byte("AUTH PLAIN "+saslPlain(user, pass)+"\r\n"), "AUTH PLAIN"); err != nil {
		return err
	}
	r, err := s.reply()
	if err != nil {
		return err
	}
	switch {
	case r.code == 235:
		return nil
	case r.code == 535:
		return fmt.Errorf("%w: smtp %s: %d %s", ErrAuthFailed, s.opts.Address, r.code, quote([]byte(strings.Join(r.lines, " "))))
	}
	return s.replyErr("AUTH", r)
}

// cmd sends one command line and reads the reply.
func (s *smtpSession) cmd(line string) (smtpReply, error) {
	if err := s.write([]byte(line + "\r\n")); err != nil {
		return smtpReply{}, err
	}
	return s.reply()
}

// reply reads one complete reply, checking every line has the same code.
func (s *smtpSession) reply() (smtpReply, error) {
	var r smtpReply
	for range maxReplyLines {
		line, err := s.readLine()
		if err != nil {
			return r, err
		}
		code, more, text, ok := parseReplyLine(line)
		if !ok || (r.code != 0 && code != r.code) {
			return r, s.unavailable("bad reply line " + quote(line))
		}
		r.code = code
		r.lines = append(r.lines, text)
		if !more {
			return r, nil
		}
	}
	return r, s.unavailable("reply has too many lines")
}

// replyErr describes an unexpected reply: always ErrUnavailable, since a
// password problem shows only as 535 to AUTH.
func (s *smtpSession) replyErr(step string, r smtpReply) error {
	return s.unavailable(fmt.Sprintf("%s answered %d %s", step, r.code, quote([]byte(strings.Join(r.lines, " ")))))
}

// Package demo runs the in-memory backends behind `mailgate demo`: an IMAP
// server (go-imap's imapmemserver) and an SMTP server (go-smtp) on loopback
// ephemeral ports, with two users whose INBOX starts with a welcome
// message. Mail the SMTP server accepts for a user is appended to that
// user's INBOX, so a message sent through mailgate's submission listener
// can be read back through its IMAP listener.
//
// The SMTP server trusts its loopback clients: it offers no AUTH (mailgate
// verifies passwords against IMAP first) and does not implement XCLIENT,
// so mailgate must use `xclient: false` for it. Nothing here is meant for
// real mail.
package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/mail"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-smtp"
)

// Limits of the demo SMTP server.
const (
	// maxMessageBytes caps one message; the whole message is kept in memory.
	maxMessageBytes = 32 << 20
	// maxRecipients caps RCPT TO per message, as Postfix's default
	// smtpd_recipient_limit (1000) does, but smaller: only demo users exist.
	maxRecipients = 100
	// ioTimeout bounds each SMTP read and write, so a stuck client cannot
	// hold a goroutine forever (RFC 5321 4.5.3.2 suggests minutes).
	ioTimeout = 5 * time.Minute
)

// ErrUnknownUser is returned (wrapped) for a recipient that is not a demo
// user.
var ErrUnknownUser = errors.New("demo: unknown user")

// demoUsers are the fixed demo accounts: login name → password.
var demoUsers = map[string]string{
	"alice@example.test": "alicepass",
	"bob@example.test":   "bobpass",
}

// Backends are the running demo servers.
type Backends struct {
	// IMAPAddr is the IMAP server's host:port (plain IMAP, no TLS).
	IMAPAddr string
	// SMTPAddr is the SMTP server's host:port (plain SMTP, no TLS, no AUTH).
	SMTPAddr string
	// Users maps each login name to its password.
	Users map[string]string

	log      *slog.Logger
	imapSrv  *imapserver.Server
	smtpSrv  *smtp.Server
	imapLn   net.Listener
	smtpLn   net.Listener
	mailbox  map[string]*imapmemserver.User // by login name, for delivery
	wg       sync.WaitGroup                 // the two Serve loops
	stopCtx  context.CancelFunc             // ends the context watcher
	closing  atomic.Bool                    // Close has begun: Serve errors are expected
	closeErr error
	once     sync.Once
}

// Start starts both servers on 127.0.0.1 ephemeral ports. They stop when
// ctx is cancelled or Close is called.
func Start(ctx context.Context, log *slog.Logger) (*Backends, error) {
	return start(ctx, log, maxMessageBytes)
}

// start is Start with the message size limit as a parameter, so tests
// can exercise the limit without pushing 32 MB through the race detector.
func start(ctx context.Context, log *slog.Logger, maxBytes int64) (*Backends, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Backends{
		Users:   make(map[string]string, len(demoUsers)),
		log:     log,
		mailbox: make(map[string]*imapmemserver.User, len(demoUsers)),
	}
	mem := imapmemserver.New()
	for name, pass := range demoUsers {
		b.Users[name] = pass
		u := imapmemserver.NewUser(name, pass)
		if err := u.Create("INBOX", nil); err != nil {
			return nil, fmt.Errorf("demo: create INBOX for %s: %w", name, err)
		}
		if err := appendMessage(u, welcome(name)); err != nil {
			return nil, fmt.Errorf("demo: welcome message for %s: %w", name, err)
		}
		mem.AddUser(u)
		b.mailbox[name] = u
	}

	var err error
	if b.imapLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("demo: imap listener: %w", err)
	}
	if b.smtpLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		b.imapLn.Close()
		return nil, fmt.Errorf("demo: smtp listener: %w", err)
	}
	b.IMAPAddr = b.imapLn.Addr().String()
	b.SMTPAddr = b.smtpLn.Addr().String()

	b.imapSrv = imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		// imapserver has no ID command, so ID is not advertised: mailgate
		// must not forward the client address to this backend.
		Caps:   imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}, imap.CapIdle: {}},
		Logger: printfLogger{log.With("server", "imap")},
		// mailgate terminates TLS; the hop to us is loopback.
		InsecureAuth: true,
	})

	b.smtpSrv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &smtpSession{b: b}, nil
	}))
	b.smtpSrv.Domain = "demo-backend.example.test"
	b.smtpSrv.MaxMessageBytes = maxBytes
	b.smtpSrv.MaxRecipients = maxRecipients
	b.smtpSrv.ReadTimeout = ioTimeout
	b.smtpSrv.WriteTimeout = ioTimeout
	b.smtpSrv.EnableSMTPUTF8 = true
	b.smtpSrv.ErrorLog = printfLogger{log.With("server", "smtp")}

	b.wg.Add(2)
	go func() {
		defer b.wg.Done()
		if err := b.imapSrv.Serve(b.imapLn); err != nil && !b.closing.Load() {
			log.Error("demo imap server stopped", "err", err)
		}
	}()
	go func() {
		defer b.wg.Done()
		if err := b.smtpSrv.Serve(b.smtpLn); err != nil && !errors.Is(err, smtp.ErrServerClosed) && !b.closing.Load() {
			log.Error("demo smtp server stopped", "err", err)
		}
	}()
	wctx, cancel := context.WithCancel(ctx)
	b.stopCtx = cancel
	go func() {
		<-wctx.Done()
		b.Close()
	}()
	log.Info("demo backends started", "imap", b.IMAPAddr, "smtp", b.SMTPAddr)
	return b, nil
}

// Close stops both servers and their connections. It is safe to call more
// than once.
func (b *Backends) Close() error {
	b.once.Do(func() {
		b.closing.Store(true)
		b.stopCtx()
		b.closeErr = errors.Join(b.imapSrv.Close(), b.smtpSrv.Close())
		// A server closed before its Serve loop registered the listener
		// never closes it (imapserver returns at once), so close both
		// here; the second close of a listener is harmless.
		b.imapLn.Close()
		b.smtpLn.Close()
		b.wg.Wait()
	})
	return b.closeErr
}

// deliver appends msg to the INBOX of each recipient.
func (b *Backends) deliver(rcpts []string, msg []byte) error {
	for _, r := range rcpts {
		u := b.mailbox[r]
		if u == nil {
			return fmt.Errorf("%w: %s", ErrUnknownUser, r)
		}
		if err := appendMessage(u, msg); err != nil {
			return fmt.Errorf("demo: append for %s: %w", r, err)
		}
	}
	return nil
}

// userFor maps an address to its demo account (case-insensitive domain
// and local part: these are demo addresses only).
func (b *Backends) userFor(addr string) (string, bool) {
	a := strings.ToLower(strings.TrimSpace(addr))
	_, ok := b.mailbox[a]
	return a, ok
}

// smtpSession is one SMTP transaction; go-smtp calls it per command.
type smtpSession struct {
	b     *Backends
	from  string
	rcpts []string
}

func (s *smtpSession) Reset()        { s.from, s.rcpts = "", nil }
func (s *smtpSession) Logout() error { return nil }

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	u, ok := s.b.userFor(to)
	if !ok {
		// RFC 5321 4.2.2: 550 mailbox unavailable.
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such demo user"}
	}
	s.rcpts = append(s.rcpts, u)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	// go-smtp enforces MaxMessageBytes while we read.
	msg, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if err := s.b.deliver(s.rcpts, msg); err != nil {
		s.b.log.Error("demo delivery failed", "err", err)
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "delivery failed"}
	}
	s.b.log.Info("demo message delivered", "from", s.from, "rcpts", len(s.rcpts), "bytes", len(msg))
	return nil
}

// appendMessage stores msg in u's INBOX.
func appendMessage(u *imapmemserver.User, msg []byte) error {
	_, err := u.Append("INBOX", literal{bytes.NewReader(msg)}, &imap.AppendOptions{Time: time.Now()})
	return err
}

// literal adapts a bytes.Reader to imap.LiteralReader.
type literal struct{ *bytes.Reader }

func (l literal) Size() int64 { return l.Reader.Size() }

// welcome is the first message in each demo INBOX.
func welcome(user string) []byte {
	to := (&mail.Address{Address: user}).String()
	return []byte("From: mailgate demo <postmaster@example.test>\r\n" +
		"To: " + to + "\r\n" +
		"Subject: Welcome to the mailgate demo\r\n" +
		"Date: " + time.Now().UTC().Format(time.RFC1123Z) + "\r\n" +
		"Message-ID: <welcome." + strings.ReplaceAll(user, "@", ".") + "@example.test>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"\r\n" +
		"This INBOX lives in memory behind mailgate. Mail sent through\r\n" +
		"mailgate's submission listener to a demo user lands here.\r\n")
}

// printfLogger adapts slog to the Printf-style loggers of go-imap/go-smtp.
// Those report per-connection trouble (e.g. a client that hung up, as
// mailgate does after checking a password over IMAP) at Debug; a
// recovered panic is an Error.
type printfLogger struct{ l *slog.Logger }

func (p printfLogger) Printf(format string, v ...any) { p.log(fmt.Sprintf(format, v...)) }

func (p printfLogger) Println(v ...any) { p.log(fmt.Sprintln(v...)) }

func (p printfLogger) log(msg string) {
	msg = strings.TrimSpace(msg)
	if strings.Contains(msg, "panic") {
		p.l.Error(msg)
		return
	}
	p.l.Debug(msg)
}

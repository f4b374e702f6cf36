package backend

// Password checks without a session to splice: SMTP's imap and
// dovecot-auth verify modes, and the nginx auth_http adapter
// (adapter/nginx), which answers nginx whether a password is right and
// lets nginx open the session itself.

import (
	"context"
	"time"
)

// Verify checks user and pass with an IMAP login, as mailgate logs in
// for a client (ID with the client's address when ForwardClient), and
// logs out at once. It returns nil, ErrAuthFailed or ErrUnavailable
// (wrapped).
func (b *IMAP) Verify(ctx context.Context, c Client, user, pass string) error {
	sess, err := b.Login(ctx, c, "mgv", user, pass)
	if err != nil {
		return err
	}
	// LOGOUT is a courtesy (RFC 9051 6.1.3); the answer does not matter.
	_ = sess.Conn.SetDeadline(time.Now().Add(time.Second))
	_, _ = sess.Conn.Write([]byte("mgz LOGOUT\r\n"))
	_ = sess.Conn.Close()
	return nil
}

// VerifyDovecotAuthSocket checks user and pass on Dovecot's auth socket
// at addr (an absolute path or host:port, as backends.smtp.dovecot_auth),
// with o's timeouts and logger, for a login to service: "imap", "pop3" or
// "smtp", the service Dovecot's passdb and its per-protocol settings see
// (anything else is refused, unsent). It returns nil, ErrAuthFailed or
// ErrUnavailable (wrapped).
func VerifyDovecotAuthSocket(ctx context.Context, o Options, addr, service string, c Client, user, pass string) error {
	if err := checkCredentials(user, pass); err != nil {
		return err
	}
	return dovecotAuth(ctx, o.withDefaults(), addr, service, c, user, pass)
}

package backend

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"
)

// maxLineLen bounds one backend reply line. IMAP servers keep response
// lines far below this (RFC 7162 4 recommends clients accept 8 KiB
// command lines; Dovecot's capability lines are under 1 KiB); SMTP reply
// lines are 512 octets (RFC 5321 4.5.3.1.5); POP3 512 (RFC 2449 4). A
// longer line is garbage, not something to buffer.
const maxLineLen = 64 << 10

// maxReplyLines bounds the lines of one multi-line reply (SMTP EHLO, POP3
// CAPA) and the untagged lines before an IMAP tagged reply, so a backend
// that talks forever cannot hold a login open past its byte limit.
const maxReplyLines = 256

// errLineTooLong: the backend sent a line longer than maxLineLen.
var errLineTooLong = errors.New("backend: line too long")

// conn is one backend connection during login: the socket, its bounded
// reader and the options that set its deadlines.
type conn struct {
	nc      net.Conn        // the socket, or the TLS connection over it
	br      *bufio.Reader   // reads nc; may hold bytes past the last line
	opts    Options         // with defaults applied
	proto   string          // "imap", "pop3", "smtp": for error text
	log     *slog.Logger    // per-login logger
	ctx     context.Context // cancels every step; ends at LoginTimeout
	cancel  func()          // releases ctx's LoginTimeout timer
	stop    func() bool     // stops the ctx watcher
	scratch []byte          // reused by readLine for long lines
}

// errLoginTimeout is the cause of a login's ctx ending at LoginTimeout.
var errLoginTimeout = errors.New("login_timeout reached")

// dial connects to o.Address within ConnectTimeout, sends the PROXY
// header announcing client when o.ProxyProtocol is set (client nil: a
// connection of mailgate's own), and does the TLS handshake for implicit
// TLS. The returned conn interrupts any blocked
// read or write when ctx is cancelled or LoginTimeout has passed, until
// release or close. Failures wrap ErrNoService.
func dial(ctx context.Context, o Options, proto string, log *slog.Logger, client *Client) (*conn, error) {
	lctx, lcancel := context.WithTimeoutCause(ctx, o.LoginTimeout, errLoginTimeout)
	dctx, cancel := context.WithTimeout(lctx, o.ConnectTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(dctx, "tcp", o.Address)
	if err != nil {
		lcancel()
		return nil, fmt.Errorf("%w: %w: %s %s: dial: %v", ErrUnavailable, ErrNoService, proto, o.Address, err)
	}
	c := newConn(lctx, nc, o, proto, log)
	c.cancel = lcancel
	if o.ProxyProtocol != ProxyNone {
		// Before any TLS: the header is for the server's TCP layer.
		hdr, err := proxyHeader(o.ProxyProtocol, client)
		if err == nil {
			c.trace("send", []byte(fmt.Sprintf("PROXY header %s, %d octets", o.ProxyProtocol, len(hdr))))
			c.deadline()
			_, err = c.nc.Write(hdr)
		}
		if err != nil {
			c.close()
			return nil, fmt.Errorf("%w: %w: %s %s: proxy header: %v", ErrUnavailable, ErrNoService, proto, o.Address, err)
		}
	}
	if o.TLS == TLSImplicit {
		if err := c.handshake(dctx); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}

// newConn wraps an established connection.
func newConn(ctx context.Context, nc net.Conn, o Options, proto string, log *slog.Logger) *conn {
	c := &conn{nc: nc, br: bufio.NewReaderSize(nc, 4096), opts: o, proto: proto, log: log, ctx: ctx, cancel: func() {}}
	c.stop = context.AfterFunc(ctx, func() {
		// Cancelling ctx does not unblock a Read; an expired deadline does.
		// nc is the socket under any later TLS layer, so this reaches it.
		_ = nc.SetDeadline(time.Unix(1, 0))
	})
	return c
}

// tlsConfig returns the configured client TLS config, with the host of
// Address as ServerName when none is set.
func (c *conn) tlsConfig() *tls.Config {
	var cfg *tls.Config
	if c.opts.TLSConfig != nil {
		cfg = c.opts.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(c.opts.Address); err == nil {
			cfg.ServerName = host
		}
	}
	return cfg
}

// handshake upgrades the connection to TLS. Bytes the backend sent before
// the handshake (after a STARTTLS reply) would be plaintext an attacker
// could have injected (CVE-2011-0411 style), so they fail the upgrade.
func (c *conn) handshake(ctx context.Context) error {
	if c.br.Buffered() > 0 {
		return c.unavailable("plaintext data after STARTTLS reply")
	}
	tc := tls.Client(c.nc, c.tlsConfig())
	hctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return fmt.Errorf("%w: %w: %s %s: tls handshake: %v", ErrUnavailable, ErrNoService, c.proto, c.opts.Address, err)
	}
	c.nc = tc
	c.br.Reset(tc)
	return nil
}

// deadline arms the read/write deadline for one login step.
func (c *conn) deadline() {
	_ = c.nc.SetDeadline(time.Now().Add(c.opts.Timeout))
	if c.ctx.Err() != nil {
		// The watcher may have run before us; keep its expired deadline.
		_ = c.nc.SetDeadline(time.Unix(1, 0))
	}
}

// LevelTrace is the slog level of backend login transcripts, below
// Debug. Credentials are replaced by "<redacted>" before logging.
const LevelTrace = slog.LevelDebug - 4

// trace logs one transcript line at LevelTrace.
func (c *conn) trace(dir string, line []byte) {
	if c.log.Enabled(c.ctx, LevelTrace) {
		c.log.Log(c.ctx, LevelTrace, "backend "+c.proto, "dir", dir, "line", quote(line))
	}
}

// write sends b within Timeout.
func (c *conn) write(b []byte) error { return c.writeShown(b, b) }

// writeSecret sends b, which holds credentials, and traces shown instead.
func (c *conn) writeSecret(b []byte, shown string) error {
	return c.writeShown(b, []byte(shown+" <redacted>"))
}

func (c *conn) writeShown(b, shown []byte) error {
	c.trace("send", shown)
	c.deadline()
	if _, err := c.nc.Write(b); err != nil {
		return c.ioErr("write", err)
	}
	return nil
}

// readLine returns the next line including its CRLF (or bare LF), within
// Timeout. The slice is valid until the next call.
func (c *conn) readLine() ([]byte, error) {
	c.deadline()
	line, err := c.br.ReadSlice('\n')
	if err == nil {
		c.trace("recv", line)
		return line, nil
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		return nil, c.ioErr("read", err)
	}
	c.scratch = append(c.scratch[:0], line...)
	for {
		line, err = c.br.ReadSlice('\n')
		if len(c.scratch)+len(line) > maxLineLen {
			return nil, c.unavailable(errLineTooLong.Error())
		}
		c.scratch = append(c.scratch, line...)
		if err == nil {
			c.trace("recv", c.scratch)
			return c.scratch, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, c.ioErr("read", err)
		}
	}
}

// ioErr classifies a network error: always ErrUnavailable, saying whether
// it was the timeout, a cancelled ctx or the backend closing.
func (c *conn) ioErr(op string, err error) error {
	switch {
	case c.ctx.Err() != nil:
		return fmt.Errorf("%w: %s %s: %s: %v", ErrUnavailable, c.proto, c.opts.Address, op, context.Cause(c.ctx))
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w: %s %s: %s: timeout after %v", ErrUnavailable, c.proto, c.opts.Address, op, c.opts.Timeout)
	default:
		return fmt.Errorf("%w: %s %s: %s: %v", ErrUnavailable, c.proto, c.opts.Address, op, err)
	}
}

// unavailable is a protocol failure: ErrUnavailable with detail.
func (c *conn) unavailable(detail string) error {
	return fmt.Errorf("%w: %s %s: %s", ErrUnavailable, c.proto, c.opts.Address, detail)
}

// noService marks err, a failure before or at the greeting, as the
// server not taking connections (ErrNoService).
func noService(err error) error {
	if err == nil || errors.Is(err, ErrAuthFailed) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrNoService, err)
}

// release hands the connection over: no more ctx watching, no deadline
// (the proxy sets its own during the splice). It returns any bytes read
// past the last line.
func (c *conn) release() (net.Conn, []byte) {
	c.stop()
	c.cancel()
	_ = c.nc.SetDeadline(time.Time{})
	var rest []byte
	if n := c.br.Buffered(); n > 0 {
		b, _ := c.br.Peek(n)
		rest = bytes.Clone(b)
	}
	return c.nc, rest
}

// close ends a failed login.
func (c *conn) close() {
	c.stop()
	c.cancel()
	if err := c.nc.Close(); err != nil {
		c.log.Debug("closing backend connection", "err", err)
	}
}

// quote shows a backend line in an error or log: without CRLF, at most
// 200 octets, %q-escaped so control bytes cannot forge log lines.
func quote(line []byte) string {
	line = bytes.TrimRight(line, "\r\n")
	const max = 200
	if len(line) > max {
		return fmt.Sprintf("%q...", line[:max])
	}
	return fmt.Sprintf("%q", line)
}

// trimCRLF drops the line ending: CRLF or a bare LF.
func trimCRLF(line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r"))
}

package proxy

// Connection machinery shared by every protocol.
//
// # How a protocol plugs in (read this before writing pop3.go or smtp.go)
//
// A session is one *conn and one goroutine (conn.serve). The shared code
// does, in order: PROXY header (only from Listener.ProxyFrom), implicit TLS
// (Listener.TLS == "implicit"), then hands the connection to the
// protocol's protocolHandler.serve, then splices. A protocol provides:
//
//   - a protocolHandler (see protocols.go; add one case to handlerFor):
//     serve(c) runs greeting and the pre-auth command loop and returns the
//     *backend.Session once a login succeeded, after writing the
//     protocol's success reply (IMAP: Session.Reply; POP3: the +OK; SMTP:
//     235). goodbye(c, reason) renders the line sent before closing for a
//     close reason: goodbyeFor over a []goodbye that words every reason
//     in goodbyeReasons (protocols.go; a test checks each protocol).
//   - its command loop, built from these conn methods:
//     c.readLine(max) reads one bounded line (deadlines, shutdown and the
//     untrusted-PROXY check included), c.readCommandLine() one counted
//     POP3/SMTP command line; c.startTLSOffered() says whether STARTTLS
//     may be used now; c.writeLine/c.write send replies;
//     c.countCommand() and c.countError() enforce MaxCommands/MaxErrors;
//     c.loginAllowed() says whether credentials may be sent now (TLS or
//     PlaintextFrom); c.startTLS() upgrades after the protocol's "go
//     ahead" reply and drops pipelined bytes; c.attemptsLeft() says
//     whether another try is allowed.
//   - its logins, through two steps written once: authflow.go's
//     c.saslLogin decodes an initial response and runs a SASL
//     PLAIN/LOGIN exchange (c.saslExchange) with the protocol's challenge
//     prefix, answering cancel and malformed input in the protocol's
//     words; login.go's c.loginAndAnswer judges the attempt (validation,
//     guard, policy, backend login), records it once (log line, metric,
//     guard, failure delay) and answers in the protocol's words.
//
// A goodbye is written for any error serve returns; return "" from
// goodbye for reasons that need none (EOF, logout already answered).
//
// Everything after serve returns (splice, idle timeout, half-close, the
// "session closed" line, registry, panics) is shared and protocol-blind.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/internal/logfield"
	"github.com/mailgate/mailgate/proxy/internal/proxyproto"
)

// Listener.TLS values, short names for the backend.TLSMode constants.
const (
	tlsImplicit = backend.TLSImplicit
	tlsStartTLS = backend.TLSStartTLS
	tlsNone     = backend.TLSNone
)

const (
	// readBufferSize is each connection's read buffer. It must hold the
	// longest line any protocol accepts (SASL responses, 12288 octets,
	// RFC 4954 4) and a whole PROXY v2 header (536 octets).
	readBufferSize = 16 << 10
	// proxyHeaderTimeout bounds the wait for a PROXY header from a
	// trusted balancer, which sends it with the first packet.
	proxyHeaderTimeout = 5 * time.Second
	// maxClientIDLog bounds the client's ID string in logs.
	maxClientIDLog = 64
)

// readers holds the line readers between sessions: each is 16 KiB and a
// TLS session would otherwise allocate two per login (before and after
// the handshake), the larger part of a login's garbage.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}

func getReader(r io.Reader) *bufio.Reader {
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

// dropReader returns c.br to the pool. Only the session's goroutine
// reads c.br, and no slice of its buffer may be kept past this call.
func (c *conn) dropReader() {
	if c.br == nil {
		return
	}
	c.br.Reset(nil) // forget the connection
	readers.Put(c.br)
	c.br = nil
}

// Close reasons. A protocol's goodbye maps them to its own words.
var (
	errShutdown        = errors.New("server shutting down")
	errIdleTimeout     = errors.New("idle timeout")
	errLoginTimeout    = errors.New("login timeout")
	errTooManyErrors   = errors.New("too many errors")
	errTooManyCommands = errors.New("too many commands")
	errTooManyAttempts = errors.New("too many login attempts")
	errLineTooLong     = errors.New("line too long")
	errUntrustedProxy  = errors.New("PROXY header from untrusted peer")
	errLogout          = errors.New("client logged out")
)

// connState is where a session is; only the session goroutine writes it,
// Shutdown reads it.
type connState int32

const (
	stateSetup   connState = iota // PROXY header, implicit TLS
	statePreAuth                  // protocol command loop before login
	stateSpliced                  // copying bytes to and from the backend
)

// conn is one client connection. Fields below mu are written only by the
// session goroutine unless noted.
type conn struct {
	srv  *Server  // owner: registry, closing flag, current options
	lim  Limits   // limits at connect time (with defaults)
	ln   Listener // the listener this connection came in on
	cid  string   // opaque session id, in logs and failure replies
	log  *slog.Logger
	ctx  context.Context    // cancelled at shutdown or when the session ends
	stop context.CancelFunc // cancels ctx

	raw   *countingConn // accepted socket, counting wire bytes each way
	nc    net.Conn      // current transport: raw, or *tls.Conn over it
	br    *bufio.Reader // buffered reader on nc; replaced after TLS
	tls   bool          // TLS is active on nc
	state atomic.Int32  // connState; read by Shutdown

	remote netip.AddrPort // client address, after a trusted PROXY header
	local  netip.AddrPort // address the client connected to

	start         time.Time // connect time
	loginDeadline time.Time // start + LoginTimeout
	firstRead     bool      // the first client line is still to come

	commands int    // commands before login
	errs     int    // protocol errors before login
	attempts int    // login attempts
	user     string // last login name tried (sanitized), for logs
	clientID string // sanitized client ID (IMAP ID name/version), for logs
	mech     string // mechanism of the last login attempt, for logs

	backendConn atomic.Pointer[net.Conn] // spliced backend; closed by forceClose
	live        atomic.Pointer[liveInfo] // set when the login succeeded (live.go)

	guard *guard.Guard // brute-force guard at connect time; nil: none
	gconn *guard.Conn  // this connection's place in the guard's counts
	// attempt: the login attempt in progress, finished by endLogin
	// (login.go); finish ends one a panic left as Abandoned.
	attempt *guard.Attempt
	// guardDone: the accept loop already admitted the connection.
	guardDone bool
}

// newConn sets up a conn for an accepted socket.
func newConn(s *Server, nc net.Conn, l Listener, remote netip.AddrPort) *conn {
	o := s.options()
	ctx, stop := context.WithCancel(s.baseCtx)
	c := &conn{
		srv:       s,
		lim:       o.Limits,
		ln:        l,
		cid:       newSessionID(),
		ctx:       ctx,
		stop:      stop,
		raw:       &countingConn{Conn: nc},
		start:     time.Now(),
		firstRead: true,
		guard:     o.Guard,
	}
	c.loginDeadline = c.start.Add(c.lim.LoginTimeout)
	c.nc = c.raw
	c.br = getReader(c.nc)
	c.remote = remote
	if !c.remote.IsValid() {
		c.remote = addrPortOf(nc.RemoteAddr())
	}
	c.local = addrPortOf(nc.LocalAddr())
	c.setLogger(o.Logger)
	o.Metrics.connOpened(l)
	return c
}

// setLogger (re)builds the session logger from the current remote address.
func (c *conn) setLogger(base *slog.Logger) {
	c.log = base.With("cid", c.cid, "proto", string(c.ln.Protocol), "listener", c.ln.Name, "remote", c.remote.Addr().String())
}

// addrPortOf converts a net.Addr; unknown kinds give the zero value.
func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if a != nil {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	}
	return netip.AddrPort{}
}

// newSessionID returns 12 random lower-case base32 characters
// (logfield.NewID; the nginx adapter's ids are the same).
func newSessionID() string { return logfield.NewID() }

// serve runs the session to its end. It is the only exit path: deferred
// close, unregister and the "session closed" line.
func (c *conn) serve() {
	var sess *backend.Session
	reason := c.recovering(func() (r string) {
		sess, r = c.run()
		return r
	})
	if sess == nil {
		c.finish(reason)
		return
	}
	// The splice runs on a fresh goroutine: this one's stack grew during
	// the TLS handshake and the login and would keep that size for the
	// whole session, which for an idle IMAP client is days. A new
	// goroutine starts small; this one ends, so a spliced session is
	// still two goroutines (docs/BENCHMARKS.md, "Memory per idle session").
	go func() {
		c.finish(c.recovering(func() string { return c.spliceCounted(sess) }))
	}()
}

// recovering runs f and returns its close reason, or "internal error"
// when f panics: a bug in one session must not take the process down.
func (c *conn) recovering(f func() string) (reason string) {
	defer func() {
		if r := recover(); r != nil {
			c.srv.panics.Add(1)
			c.metrics().panicked()
			reason = "internal error"
			c.log.Error("panic in session", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	return f()
}

// Lingering close: a client that pipelined more than mailgate read (a
// line over the limit, commands after a fatal one) still has input
// queued when the session ends. Closing a TCP socket with unread input
// sends a reset, and a reset makes the client's kernel discard the
// goodbye it has not read yet. So, like net/http's closeWriteAndWait, the
// write side is shut down first (the goodbye and a FIN are on their way)
// and the input is read and discarded until the client closes, for a
// short bounded time and amount.
const (
	// lingerTimeout bounds the wait for the client to close: a client
	// reads the goodbye and closes within a round trip or two.
	lingerTimeout = 2 * time.Second
	// lingerMaxBytes bounds what is read and discarded: more than any
	// client pipelines by mistake; beyond it the reset is its own doing.
	lingerMaxBytes = 256 << 10
	// lingerProbe is how long finish looks for unread input in the
	// socket when its reader holds none.
	lingerProbe = time.Millisecond
)

// lingerClose shuts down the write side and drains the input when the
// client sent more than was read; see lingerTimeout.
func (c *conn) lingerClose(reason string) {
	// Only sessions that ran their protocol: a connection refused before
	// (guard, PROXY header, TLS handshake) got no goodbye to protect and
	// must stay cheap to refuse.
	if reason == "client closed" || connState(c.state.Load()) != statePreAuth {
		return
	}
	unread := c.br != nil && c.br.Buffered() > 0
	if !unread {
		var b [1]byte
		c.raw.SetReadDeadline(time.Now().Add(lingerProbe))
		n, _ := c.raw.Read(b[:])
		unread = n > 0
	}
	if !unread || c.raw.CloseWrite() != nil {
		return
	}
	c.raw.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.CopyN(io.Discard, c.raw, lingerMaxBytes)
}

// finish releases everything the session holds and logs its end.
func (c *conn) finish(reason string) {
	c.lingerClose(reason)
	c.dropReader()
	c.stop()
	c.raw.Close()
	if bc := c.backendConn.Load(); bc != nil {
		(*bc).Close()
	}
	c.attempt.Finish(guard.Abandoned, "")
	c.guardClose()
	c.srv.unregister(c)
	c.log.Info("session closed", "user", c.user, "client_id", c.clientID, "duration", time.Since(c.start).Round(time.Millisecond),
		"bytes_in", c.raw.in.Load(), "bytes_out", c.raw.out.Load(), "reason", reason)
}

// run does the work of serve up to the login and returns the backend
// session to splice, or nil and the close reason.
func (c *conn) run() (*backend.Session, string) {
	c.log.Debug("connected", "local", c.local.String())
	if err := c.acceptProxyHeader(); err != nil {
		c.log.Warn("PROXY header refused; closing", "err", err)
		return nil, "bad PROXY header"
	}
	if err := c.guardAccept(); err != nil {
		return nil, "refused by guard"
	}
	if c.ln.TLS == tlsImplicit {
		if err := c.checkUntrustedProxyTLS(); err != nil {
			c.log.Warn("closing", "err", err)
			return nil, err.Error()
		}
		if err := c.handshake(); err != nil {
			c.log.Info("TLS handshake failed", "err", err)
			return nil, "TLS handshake failed"
		}
	}
	h := handlerFor(c.ln.Protocol)
	c.state.Store(int32(statePreAuth))
	sess, err := h.serve(c)
	if err != nil {
		// Best effort: the goodbye may not reach a client that left.
		if bye := h.goodbye(c, err); bye != "" {
			c.writeLine(bye)
		}
		if errors.Is(err, errUntrustedProxy) {
			c.log.Warn("closing", "err", err)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
			return nil, "client closed"
		}
		return nil, err.Error()
	}
	return sess, ""
}

// acceptProxyHeader reads a PROXY header when the peer is trusted. A LOCAL
// or UNKNOWN header keeps the socket's addresses.
func (c *conn) acceptProxyHeader() error {
	if !inPrefixes(c.remote.Addr(), c.ln.ProxyFrom) {
		return nil
	}
	c.raw.SetReadDeadline(time.Now().Add(min(proxyHeaderTimeout, c.lim.LoginTimeout)))
	if c.srv.closing.Load() {
		return errShutdown
	}
	h, err := proxyproto.Read(c.br)
	if err != nil {
		return err
	}
	if !h.Local && h.Src.IsValid() {
		c.remote = netip.AddrPortFrom(h.Src.Addr().Unmap(), h.Src.Port())
		c.local = netip.AddrPortFrom(h.Dst.Addr().Unmap(), h.Dst.Port())
		c.setLogger(c.srv.options().Logger)
	}
	c.log.Debug("PROXY header accepted", "version", h.Version, "local", h.Local)
	return nil
}

// checkUntrustedProxyTLS: on an implicit-TLS port the client speaks first,
// so a PROXY header from an untrusted peer can be seen before the
// handshake and gets a clear log line instead of a TLS error.
func (c *conn) checkUntrustedProxyTLS() error {
	if inPrefixes(c.remote.Addr(), c.ln.ProxyFrom) {
		return nil // header already consumed
	}
	c.raw.SetReadDeadline(time.Now().Add(c.lim.TLSHandshakeTimeout))
	first, err := c.br.Peek(1)
	if err != nil || first[0] == 0x16 { // TLS handshake record
		return nil // the handshake reports the error
	}
	p, _ := c.br.Peek(min(c.br.Buffered(), 12))
	if proxyproto.LooksLikeHeader(p) {
		return errUntrustedProxy
	}
	return nil
}

// handshake runs a server TLS handshake on the raw socket, bounded by
// TLSHandshakeTimeout. Bytes already buffered (the ClientHello, read by
// a peek) are copied out and fed to the handshake first, so the pre-TLS
// reader goes back to the pool now rather than live under the tls.Conn.
func (c *conn) handshake() error {
	var pending []byte
	if n := c.br.Buffered(); n > 0 {
		p, _ := c.br.Peek(n)
		pending = bytes.Clone(p)
	}
	c.dropReader()
	tc := tls.Server(&bufferedConn{Conn: c.raw, pending: pending}, c.ln.TLSConfig)
	ctx, cancel := context.WithTimeout(c.ctx, c.lim.TLSHandshakeTimeout)
	defer cancel()
	c.raw.SetDeadline(time.Now().Add(c.lim.TLSHandshakeTimeout))
	if err := tc.HandshakeContext(ctx); err != nil {
		c.srv.options().Metrics.tlsFailed(c.ln)
		return err
	}
	c.raw.SetDeadline(time.Time{})
	c.nc = tc
	c.br = getReader(tc)
	c.tls = true
	st := tc.ConnectionState()
	c.log.Debug("TLS established", "version", tls.VersionName(st.Version), "sni", st.ServerName)
	return nil
}

// startTLS upgrades after the protocol's "begin TLS" reply. Bytes the
// client sent after the STARTTLS command are dropped, never parsed:
// they were written before encryption and may be an injection (RFC 9051
// 6.2.1, RFC 3207 6, CVE-2011-0411).
func (c *conn) startTLS() error {
	if n := c.br.Buffered(); n > 0 {
		c.br.Discard(n)
		c.log.Warn("discarded bytes pipelined after STARTTLS", "bytes", n)
	}
	if err := c.handshake(); err != nil {
		c.log.Info("STARTTLS handshake failed", "err", err)
		return fmt.Errorf("proxy: STARTTLS handshake: %w", err)
	}
	return nil
}

// inPrefixes reports whether a is in any of ps.
func inPrefixes(a netip.Addr, ps []netip.Prefix) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// loginAllowed reports whether credentials may be sent now: over TLS, or
// from a PlaintextFrom network.
func (c *conn) loginAllowed() bool {
	return c.tls || inPrefixes(c.remote.Addr(), c.ln.PlaintextFrom)
}

// startTLSOffered reports whether the protocol's STARTTLS (IMAP
// STARTTLS, POP3 STLS, SMTP STARTTLS) may be used now: on a starttls
// listener, once.
func (c *conn) startTLSOffered() bool { return c.ln.TLS == tlsStartTLS && !c.tls }

// readCommandLine reads one command line of a line protocol (POP3, SMTP)
// and counts it against MaxCommands. It reads up to maxSASLLine, as AUTH
// may carry a long initial response (RFC 5034 4, RFC 4954 4); the caller
// checks its shorter limit for other commands once it knows the verb.
// Longer than maxSASLLine is errLineTooLong, which ends the session.
func (c *conn) readCommandLine() ([]byte, error) {
	line, err := c.readLine(maxSASLLine)
	if err != nil {
		return nil, err
	}
	return line, c.countCommand()
}

// readDeadline is the earlier of the idle and the login deadline.
func (c *conn) readDeadline() time.Time {
	d := time.Now().Add(c.lim.PreAuthIdleTimeout)
	if c.loginDeadline.Before(d) {
		return c.loginDeadline
	}
	return d
}

// interrupt makes a session that is still logging in notice shutdown:
// its blocked read returns at once and reports errShutdown. Spliced
// sessions are left to drain. Safe from any goroutine.
func (c *conn) interrupt() {
	if connState(c.state.Load()) != stateSpliced {
		c.raw.SetReadDeadline(time.Now())
	}
}

// forceClose closes both sockets; the session goroutine then ends. Safe
// from any goroutine.
func (c *conn) forceClose() {
	c.raw.Close()
	if bc := c.backendConn.Load(); bc != nil {
		(*bc).Close()
	}
}

// readErr classifies a read error: timeouts become errShutdown,
// errLoginTimeout or errIdleTimeout.
func (c *conn) readErr(err error) error {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return err
	}
	switch {
	case c.srv.closing.Load():
		return errShutdown
	case !time.Now().Before(c.loginDeadline):
		return errLoginTimeout
	}
	return errIdleTimeout
}

// readLine reads one line of at most max octets, terminator included,
// and returns it without CRLF or LF. Before login every protocol accepts a
// bare LF: what we parse is never forwarded; the backend gets commands we
// re-encode. A longer line is errLineTooLong; the buffer never grows.
func (c *conn) readLine(max int) ([]byte, error) {
	c.nc.SetReadDeadline(c.readDeadline())
	if c.srv.closing.Load() {
		return nil, errShutdown
	}
	line, err := c.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(line) > max {
		return nil, errLineTooLong
	}
	if err != nil {
		return nil, c.readErr(err)
	}
	if c.firstRead {
		c.firstRead = false
		// Server-speaks-first protocols cannot peek before the greeting,
		// so an untrusted PROXY header shows up as the first line.
		if !inPrefixes(c.remote.Addr(), c.ln.ProxyFrom) && proxyproto.LooksLikeHeader(line) {
			return nil, errUntrustedProxy
		}
	}
	line = bytes.TrimSuffix(line[:len(line)-1], []byte{'\r'})
	return line, nil
}

// readFull reads exactly len(p) octets (an IMAP literal) under the same
// deadlines as readLine.
func (c *conn) readFull(p []byte) error {
	c.nc.SetReadDeadline(c.readDeadline())
	if c.srv.closing.Load() {
		return errShutdown
	}
	if _, err := io.ReadFull(c.br, p); err != nil {
		return c.readErr(err)
	}
	return nil
}

// write sends s, bounded by the pre-auth idle timeout so a client that
// does not read cannot hold us.
func (c *conn) write(s string) error {
	c.nc.SetWriteDeadline(time.Now().Add(c.lim.PreAuthIdleTimeout))
	_, err := io.WriteString(c.nc, s)
	return err
}

// writeLine sends s followed by CRLF.
func (c *conn) writeLine(s string) error { return c.write(s + "\r\n") }

// countCommand counts a command before login; over MaxCommands the
// session ends.
func (c *conn) countCommand() error {
	c.commands++
	if c.commands > c.lim.MaxCommands {
		return errTooManyCommands
	}
	return nil
}

// countError counts a protocol error; the caller sends its error reply
// first, and on errTooManyErrors the goodbye follows.
func (c *conn) countError() error {
	c.errs++
	if c.errs >= c.lim.MaxErrors {
		return errTooManyErrors
	}
	return nil
}

// attemptsLeft reports whether another login attempt is allowed.
func (c *conn) attemptsLeft() bool { return c.attempts < c.lim.MaxLoginAttempts }

// sanitizeLog makes client text safe and short for a log field
// (logfield.Clean; the nginx adapter logs the same way).
func sanitizeLog(s string, max int) string { return logfield.Clean(s, max) }

// countingConn counts wire bytes each way for the "session closed" line.
type countingConn struct {
	net.Conn
	in, out atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

// CloseWrite half-closes when the socket supports it.
func (c *countingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// bufferedConn reads through a bufio.Reader that may already hold bytes
// (a ClientHello that arrived with the PROXY header). Once those bytes
// are read it drops the reader, so a TLS session does not keep the
// pre-TLS buffer alive for its whole life.
type bufferedConn struct {
	net.Conn
	pending []byte // read before the socket; nil once drained
}

func (b *bufferedConn) Read(p []byte) (int, error) {
	if len(b.pending) > 0 {
		n := copy(p, b.pending)
		if b.pending = b.pending[n:]; len(b.pending) == 0 {
			b.pending = nil
		}
		return n, nil
	}
	return b.Conn.Read(p)
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxLine bounds one server line. RFC 9051 sets no limit on response
// lines, but greetings, capability lists and status responses of real
// servers stay far below 64 KiB; a longer line means a broken peer.
const maxLine = 64 << 10

// Error kinds, the keys of the per-run error counts.
const (
	kindDial     = "dial"     // TCP connect failed
	kindTLS      = "tls"      // handshake failed
	kindTimeout  = "timeout"  // a step ran past its deadline
	kindEOF      = "eof"      // the server closed the connection
	kindRejected = "rejected" // the server answered NO/-ERR/5xx to the login
	kindProtocol = "protocol" // an answer the client did not expect
)

// stepError is a failed session step with its kind.
type stepError struct {
	kind string
	err  error
}

func (e *stepError) Error() string { return e.kind + ": " + e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// errKind classifies err for the error table.
func errKind(err error) string {
	var se *stepError
	if errors.As(err, &se) && se.kind != "" {
		if se.kind == kindDial || se.kind == kindTLS {
			return se.kind
		}
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return kindTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return kindEOF
	case errors.As(err, &se):
		return se.kind
	}
	return kindProtocol
}

// target is where sessions go.
type target struct {
	addr  string        // host:port, loopback
	local net.IP        // source address to bind, nil for any
	tls   bool          // implicit TLS
	user  string        // login
	pass  string        // password
	step  time.Duration // deadline of each network step
	// curves limits the client's key exchanges (nil: Go's default,
	// which offers X25519MLKEM768 first). Servers on OpenSSL 3.0 pick
	// X25519; mailgate (Go) picks the hybrid, which costs both ends more.
	curves []tls.CurveID
	// resume, when set, keeps each worker's TLS session (a TLS 1.3
	// session ticket) and offers it on that worker's next connection, as
	// Thunderbird and Apple Mail do; nil: every handshake is a full one.
	resume *resumption
}

// conn is one client session: the TLS connection and its line reader.
type conn struct {
	nc  net.Conn
	r   *bufio.Reader
	tag int // IMAP command counter
}

// dial connects and, for implicit TLS, completes the handshake.
func dial(ctx context.Context, t target) (*conn, error) {
	d := net.Dialer{Timeout: t.step}
	if t.local != nil {
		d.LocalAddr = &net.TCPAddr{IP: t.local}
	}
	nc, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, &stepError{kindDial, err}
	}
	if t.tls {
		// Benchmarks run against self-signed loopback servers only;
		// verification is not what is measured.
		cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "mail.example.test", CurvePreferences: t.curves} //nolint:gosec
		if t.resume != nil {
			cfg.ClientSessionCache = t.resume.cache(workerID(ctx))
		}
		tc := tls.Client(nc, cfg)
		hctx, cancel := context.WithTimeout(ctx, t.step)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			nc.Close()
			return nil, &stepError{kindTLS, err}
		}
		if t.resume != nil {
			t.resume.count(tc.ConnectionState().DidResume)
		}
		nc = tc
	}
	return newConn(nc), nil
}

// resumption holds one TLS session per worker of a run, as a client
// holds one per account: a worker offers the ticket of its own last
// connection. Go's client caches by server name, which every target
// shares here, so each worker has a cache of its own with one entry.
type resumption struct {
	mu      sync.Mutex
	caches  map[int]tls.ClientSessionCache
	resumed atomic.Int64 // handshakes that resumed a session
	full    atomic.Int64 // handshakes that did not
}

func newResumption() *resumption { return &resumption{caches: map[int]tls.ClientSessionCache{}} }

func (r *resumption) cache(worker int) tls.ClientSessionCache {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.caches[worker]
	if c == nil {
		c = tls.NewLRUClientSessionCache(1)
		r.caches[worker] = c
	}
	return c
}

func (r *resumption) count(resumed bool) {
	if resumed {
		r.resumed.Add(1)
	} else {
		r.full.Add(1)
	}
}

// share is the fraction of handshakes that resumed, 0 without any.
func (r *resumption) share() float64 {
	res, full := r.resumed.Load(), r.full.Load()
	if res+full == 0 {
		return 0
	}
	return float64(res) / float64(res+full)
}

func newConn(nc net.Conn) *conn { return &conn{nc: nc, r: bufio.NewReaderSize(nc, 4096)} }

func (c *conn) Close() error { return c.nc.Close() }

// deadline arms the deadline for the next step.
func (c *conn) deadline(d time.Duration) { _ = c.nc.SetDeadline(time.Now().Add(d)) }

// line reads one CRLF-terminated line (without CRLF), at most maxLine bytes.
func (c *conn) line() (string, error) {
	var buf []byte
	for {
		frag, err := c.r.ReadSlice('\n')
		buf = append(buf, frag...)
		if len(buf) > maxLine {
			return "", &stepError{kindProtocol, fmt.Errorf("line longer than %d bytes", maxLine)}
		}
		if err == nil {
			return strings.TrimRight(string(buf), "\r\n"), nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return "", err
		}
	}
}

func (c *conn) send(s string) error {
	_, err := io.WriteString(c.nc, s)
	return err
}

// --- IMAP ---

// imapQuote renders s as an IMAP quoted string (RFC 9051 4.3); the
// benchmark's own logins never contain CR, LF or NUL.
func imapQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// imapCmd sends a tagged command and reads up to its tagged answer,
// returning the untagged lines and the tagged status line.
func (c *conn) imapCmd(cmd string) (untagged []string, status string, err error) {
	c.tag++
	tag := "b" + strconv.Itoa(c.tag)
	if err := c.send(tag + " " + cmd + "\r\n"); err != nil {
		return nil, "", err
	}
	return c.imapWait(tag)
}

// imapWait reads lines until the one tagged tag. Lines with a literal
// are not expected here (FETCH bodies are read by fetchBody).
func (c *conn) imapWait(tag string) ([]string, string, error) {
	var untagged []string
	for range 10000 {
		l, err := c.line()
		if err != nil {
			return untagged, "", err
		}
		if rest, ok := strings.CutPrefix(l, tag+" "); ok {
			if !strings.HasPrefix(rest, "OK") {
				return untagged, rest, &stepError{kindRejected, fmt.Errorf("%.200s", rest)}
			}
			return untagged, rest, nil
		}
		untagged = append(untagged, l)
	}
	return untagged, "", &stepError{kindProtocol, errors.New("too many untagged lines")}
}

func (c *conn) imapGreeting() error {
	l, err := c.line()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(l, "* OK") {
		return &stepError{kindProtocol, fmt.Errorf("greeting %.200q", l)}
	}
	return nil
}

func (c *conn) imapLogin(t target) error {
	if err := c.imapGreeting(); err != nil {
		return err
	}
	_, _, err := c.imapCmd("LOGIN " + imapQuote(t.user) + " " + imapQuote(t.pass))
	return err
}

// --- POP3 ---

func (c *conn) pop3(cmd string) error {
	if cmd != "" {
		if err := c.send(cmd + "\r\n"); err != nil {
			return err
		}
	}
	l, err := c.line()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(l, "+OK") {
		return &stepError{kindRejected, fmt.Errorf("%.200s", l)}
	}
	return nil
}

// --- SMTP ---

// smtpReply reads one (possibly multi-line) reply and checks its code.
func (c *conn) smtpReply(want byte) error {
	for range 1000 {
		l, err := c.line()
		if err != nil {
			return err
		}
		if len(l) < 3 {
			return &stepError{kindProtocol, fmt.Errorf("reply %.200q", l)}
		}
		if len(l) > 3 && l[3] == '-' {
			continue
		}
		if l[0] != want {
			return &stepError{kindRejected, fmt.Errorf("%.200s", l)}
		}
		return nil
	}
	return &stepError{kindProtocol, errors.New("reply with too many lines")}
}

func (c *conn) smtp(cmd string, want byte) error {
	if err := c.send(cmd + "\r\n"); err != nil {
		return err
	}
	return c.smtpReply(want)
}

// loginOnce runs one whole session: connect, TLS, greeting, login,
// logout.
func loginOnce(ctx context.Context, proto string, t target) error {
	c, err := dial(ctx, t)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.loginLogout(proto, t)
}

// loginLogout runs greeting, login and logout on a connected session.
func (c *conn) loginLogout(proto string, t target) error {
	c.deadline(t.step)
	var err error
	switch proto {
	case "imap":
		if err := c.imapLogin(t); err != nil {
			return err
		}
		_, _, err = c.imapCmd("LOGOUT")
		return err
	case "pop3":
		for _, cmd := range []string{"", "USER " + t.user, "PASS " + t.pass, "QUIT"} {
			if err := c.pop3(cmd); err != nil {
				return err
			}
		}
		return nil
	case "smtp":
		if err := c.smtpReply('2'); err != nil {
			return err
		}
		if err := c.smtp("EHLO bench.example.test", '2'); err != nil {
			return err
		}
		plain := base64.StdEncoding.EncodeToString([]byte("\x00" + t.user + "\x00" + t.pass))
		if err := c.smtp("AUTH PLAIN "+plain, '2'); err != nil {
			return err
		}
		return c.smtp("QUIT", '2')
	}
	return fmt.Errorf("unknown protocol %q", proto)
}

// refusedOnce connects and expects the server to close the connection
// without a TLS handshake or greeting: a source refused at accept.
// It returns nil only for that outcome.
func refusedOnce(ctx context.Context, t target) error {
	d := net.Dialer{Timeout: t.step}
	if t.local != nil {
		d.LocalAddr = &net.TCPAddr{IP: t.local}
	}
	nc, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return &stepError{kindDial, err}
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(t.step))
	var b [1]byte
	n, err := nc.Read(b[:])
	if n > 0 {
		return &stepError{kindProtocol, errors.New("server sent data; not refused at accept")}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	return err
}

// message builds a deterministic RFC 5322 message of about size bytes
// with CRLF lines of 78 characters, the shape of a base64 attachment.
func message(size int) []byte {
	var b bytes.Buffer
	b.Grow(size + 200)
	b.WriteString("From: bench@example.test\r\nTo: alice@example.test\r\nSubject: mailgate-bench\r\nMessage-ID: <bench@example.test>\r\n\r\n")
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	line := make([]byte, 78)
	for i := 0; b.Len() < size; i++ {
		for j := range line {
			line[j] = alphabet[(i*7+j*13)%len(alphabet)]
		}
		b.Write(line)
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// parseLiteral returns n from a line ending in "{n}".
func parseLiteral(l string) (int64, bool) {
	if !strings.HasSuffix(l, "}") {
		return 0, false
	}
	i := strings.LastIndexByte(l, '{')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(l[i+1:len(l)-1], "+"), 10, 64)
	return n, err == nil && n >= 0
}

// warnf prints a warning line on stderr.
func warnf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "mailgate-bench: "+format+"\n", args...)
}

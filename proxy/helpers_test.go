package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/geo"
	"github.com/mailgate/mailgate/policy"
)

// totalPanics counts recovered session panics across every test server;
// TestMain fails the package if any happened.
var totalPanics atomic.Int64

func TestMain(m *testing.M) {
	code := m.Run()
	if n := totalPanics.Load(); n > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d session panic(s) recovered during tests\n", n)
		code = 1
	}
	os.Exit(code)
}

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeAuth allows everyone except users in deny; it records requests.
type fakeAuth struct {
	mu   sync.Mutex
	deny map[string]bool
	reqs []policy.Request
}

func (f *fakeAuth) Decide(r policy.Request) policy.Decision {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, r)
	if f.deny[r.Login] {
		return policy.Decision{Allow: false, Rule: "test:1", Reason: "country RU not allowed",
			Location: geo.Location{Country: "RU", Name: "Russia"}}
	}
	return policy.Decision{Allow: true, Rule: "test:2", Reason: "allowed",
		Location: geo.Location{Label: "loopback", Name: "Loopback"}}
}

func (f *fakeAuth) requests() []policy.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]policy.Request(nil), f.reqs...)
}

// fakeIMAP is an in-process IMAP backend: the users map holds passwords;
// a logged-in session is a loopback TCP pair whose far end echoes every
// line as "* ECHO <line>" and records it.
type fakeIMAP struct {
	t           testing.TB
	users       map[string]string
	unavailable bool   // every login fails with ErrUnavailable
	slow        bool   // every login waits for ctx to end (a hung backend)
	fail        error  // every login fails with this error
	buffered    string // Session.Buffered to hand back

	mu     sync.Mutex
	logins []string       // "user\x00pass" per successful login
	lines  chan string    // lines the backend received after login
	peers  []net.Conn     // backend-side sockets
	script func(net.Conn) // optional replacement for the echo server
}

func newFakeIMAP(t testing.TB) *fakeIMAP {
	return &fakeIMAP{t: t, users: map[string]string{"alice": "secret"}, lines: make(chan string, 100)}
}

func (f *fakeIMAP) Login(ctx context.Context, c backend.Client, tag, user, pass string) (*backend.Session, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	if f.unavailable {
		return nil, fmt.Errorf("%w: %w: dial 127.0.0.1:1: connection refused", backend.ErrUnavailable, backend.ErrNoService)
	}
	if f.slow {
		<-ctx.Done()
		return nil, fmt.Errorf("%w: %w", backend.ErrUnavailable, ctx.Err())
	}
	if p, ok := f.users[user]; !ok || p != pass {
		return nil, fmt.Errorf("%w: NO [AUTHENTICATIONFAILED]", backend.ErrAuthFailed)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, err
	}
	server, err := ln.Accept()
	if err != nil {
		client.Close()
		return nil, err
	}
	f.mu.Lock()
	f.logins = append(f.logins, user+"\x00"+pass)
	f.peers = append(f.peers, server)
	script := f.script
	f.mu.Unlock()
	if script != nil {
		go script(server)
	} else {
		go f.echo(server)
	}
	return &backend.Session{
		Conn:     client,
		Reply:    []byte(tag + " OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"),
		Buffered: []byte(f.buffered),
	}, nil
}

// echo answers each line until EOF or "LOGOUT".
func (f *fakeIMAP) echo(nc net.Conn) {
	defer nc.Close()
	br := bufio.NewReader(nc)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		f.lines <- line
		if _, err := io.WriteString(nc, "* ECHO "+line+"\r\n"); err != nil {
			return
		}
		if strings.HasSuffix(line, " LOGOUT") {
			io.WriteString(nc, "* BYE bye\r\n")
			return
		}
	}
}

func (f *fakeIMAP) loginList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.logins...)
}

// testEnv is the one test fixture for every protocol: a running Server
// with one listener on 127.0.0.1 and in-process fakes for all three
// backends (fakeIMAP here, fakePOP3 and fakeSMTP in pop3_helpers_test.go)
// and for the policy (fakeAuth, which denies bob).
type testEnv struct {
	t     testing.TB
	srv   *Server
	auth  *fakeAuth
	imap  *fakeIMAP
	pop3  fakePOP3
	smtp  fakeSMTP
	logs  *syncBuffer
	addr  string
	lst   Listener
	errCh chan error
}

// fastLimits keeps tests quick without timed assertions.
func fastLimits() Limits {
	return Limits{AuthFailureDelay: time.Millisecond, PreAuthIdleTimeout: 5 * time.Second,
		LoginTimeout: 10 * time.Second, IdleTimeout: 10 * time.Second, TLSHandshakeTimeout: 5 * time.Second}
}

// startServer runs a Server with one listener on 127.0.0.1. An empty
// l.Protocol means IMAP; an empty l.TLS means "none" with plaintext
// logins allowed from loopback. t may be a *testing.F (fuzz targets).
func startServer(t testing.TB, l Listener, lim Limits) *testEnv {
	t.Helper()
	e := &testEnv{
		t:    t,
		auth: &fakeAuth{deny: map[string]bool{"bob": true}},
		imap: newFakeIMAP(t),
		pop3: fakePOP3{newFakeLineBackend("+OK Logged in, 2 messages\r\n", "+OK echo ",
			[]string{"TOP", "UIDL", "RESP-CODES", "STLS", "SASL PLAIN", "USER", "IMPLEMENTATION Dovecot", "EXPIRE NEVER", "UTF8", "LANG", "bad\x01line", ".dot", "TOP\r\n.\r\n+OK"})},
		smtp: fakeSMTP{newFakeLineBackend("", "250 echo ",
			[]string{"PIPELINING", "SIZE 10240000", "VRFY", "ETRN", "STARTTLS", "AUTH PLAIN LOGIN", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING", "XCLIENT NAME ADDR"})},
		logs:  &syncBuffer{},
		errCh: make(chan error, 1),
	}
	if l.Name == "" {
		l.Name = "test"
	}
	if l.Protocol == "" {
		l.Protocol = policy.IMAP
	}
	if l.TLS == "" {
		l.TLS = tlsNone
		l.PlaintextFrom = append(l.PlaintextFrom, netip.MustParsePrefix("127.0.0.0/8"))
	}
	if l.TLS != tlsNone && l.TLSConfig == nil {
		l.TLSConfig = serverTLSConfig(t)
	}
	e.lst = l
	e.srv = NewServer(Options{
		Logger:     slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Hostname:   "mx.test",
		Authorizer: e.auth,
		IMAP:       e.imap,
		POP3:       e.pop3,
		SMTP:       e.smtp,
		Limits:     lim,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	go func() { e.errCh <- e.srv.Serve(ln, l) }()
	t.Cleanup(func() {
		e.srv.Close()
		e.pop3.close()
		e.smtp.close()
		if err := <-e.errCh; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		for deadline := time.Now().Add(10 * time.Second); e.srv.Sessions() > 0; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("%d sessions still open", e.srv.Sessions())
				break
			}
		}
		totalPanics.Add(e.srv.Panics())
		if t.Failed() {
			t.Logf("server log:\n%s", e.logs.String())
		}
	})
	return e
}

// client is the test's side of one connection.
type client struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func (e *testEnv) dial() *client {
	e.t.Helper()
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { nc.Close() })
	return &client{t: e.t, nc: nc, br: bufio.NewReader(nc)}
}

// greetings are the first line of each protocol's greeting, as the
// fixture's listener sends it.
var greetings = map[policy.Protocol]string{
	policy.IMAP: "* OK [CAPABILITY ",
	policy.POP3: "+OK mx.test mailgate POP3 ready",
	policy.SMTP: "220 mx.test ESMTP",
}

// dialGreeted connects and reads the listener's protocol greeting.
func (e *testEnv) dialGreeted() *client {
	e.t.Helper()
	c := e.dial()
	c.expect(greetings[e.lst.Protocol])
	return c
}

func (c *client) send(s string) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("send %q: %v", s, err)
	}
}

// line reads one line without CRLF.
func (c *client) line() string {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	s, err := c.br.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, s)
	}
	return strings.TrimSuffix(s, "\r\n")
}

// expect reads one line and checks its prefix; it returns the line.
func (c *client) expect(prefix string) string {
	c.t.Helper()
	s := c.line()
	if !strings.HasPrefix(s, prefix) {
		c.t.Fatalf("got %q, want prefix %q", s, prefix)
	}
	return s
}

// expectClosed checks the server closed the connection.
func (c *client) expectClosed() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	s, err := c.br.ReadString('\n')
	if err == nil {
		c.t.Fatalf("got %q, want the connection closed", s)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("connection still open")
	}
}

// startTLS upgrades the client side after "OK Begin TLS".
func (c *client) startTLS() {
	c.t.Helper()
	if c.br.Buffered() > 0 {
		c.t.Fatalf("server sent %d bytes after the STARTTLS OK", c.br.Buffered())
	}
	tc := tls.Client(c.nc, &tls.Config{InsecureSkipVerify: true})
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	tc.SetDeadline(time.Time{})
	c.nc = tc
	c.br = bufio.NewReader(tc)
}

var (
	certOnce sync.Once
	testCert tls.Certificate
)

// serverTLSConfig returns a config with a self-signed certificate.
func serverTLSConfig(t testing.TB) *tls.Config {
	certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "mx.test"},
			DNSNames:     []string{"mx.test"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		testCert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	})
	return &tls.Config{Certificates: []tls.Certificate{testCert}, MinVersion: tls.VersionTLS12}
}

// checkNoLeak fails if goroutines started by a test outlive it.
func checkNoLeak(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("goroutines: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

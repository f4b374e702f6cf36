package proxy

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/proxy/internal/imapwire"
)

// memConn is a net.Conn whose reads come from a fixed input followed by
// EOF and whose writes are collected: a whole session runs without
// sockets or timers, so fuzzing is fast and deterministic.
type memConn struct {
	mu     sync.Mutex
	in     *bytes.Reader
	out    bytes.Buffer
	closed bool
}

func (m *memConn) Read(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, net.ErrClosed
	}
	return m.in.Read(p)
}

func (m *memConn) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, net.ErrClosed
	}
	return m.out.Write(p)
}

func (m *memConn) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

func (m *memConn) output() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.out.Bytes())
}

func (m *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 143} }
func (m *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 40000} }
func (m *memConn) SetDeadline(time.Time) error      { return nil }
func (m *memConn) SetReadDeadline(time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(time.Time) error { return nil }

// memBackend accepts alice/secret with an in-memory backend connection
// and refuses everyone else.
type memBackend struct{}

func (memBackend) Login(ctx context.Context, c backend.Client, tag, user, pass string) (*backend.Session, error) {
	if user != "alice" || pass != "secret" {
		return nil, backend.ErrAuthFailed
	}
	return &backend.Session{Conn: &memConn{in: bytes.NewReader([]byte("* backend data\r\n"))}, Reply: []byte(tag + " OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n")}, nil
}

// runMemSession runs one whole session over input and returns what the
// client was sent.
func runMemSession(t *testing.T, s *Server, l Listener, input []byte) []byte {
	mc := &memConn{in: bytes.NewReader(input)}
	c := s.register(mc, l, netip.AddrPort{})
	done := make(chan struct{})
	go func() { c.serve(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("session did not end on input %q", input)
	}
	return mc.output()
}

func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"a CAPABILITY\r\nb NOOP\r\nc LOGOUT\r\n",
		"a LOGIN alice secret\r\nb SELECT INBOX\r\n",
		"a LOGIN {5}\r\nalice {6+}\r\nsecret\r\n",
		"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n",
		"a AUTHENTICATE LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\n",
		"a AUTHENTICATE PLAIN\r\n*\r\nb LOGIN bob x\r\n",
		"a STARTTLS\r\nb LOGIN alice secret\r\n",
		`a ID ("name" "Thunderbird" "version" "115")` + "\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\na NOOP\r\n",
		"a LOGIN {99999}\r\nb LOGIN {99999+}\r\n",
		"a LOGIN {5}\r\nalice {6}\r\nsecret\r\nb LOGIN alice {6+}\r\nsecret\r\n",
	} {
		f.Add([]byte(s))
	}
	auth := &fakeAuth{deny: map[string]bool{"bob": true}}
	const maxAttempts = 3
	s := NewServer(Options{
		Logger:     slog.New(slog.DiscardHandler),
		Authorizer: auth,
		IMAP:       memBackend{},
		Limits:     Limits{AuthFailureDelay: time.Nanosecond, MaxLoginAttempts: maxAttempts, MaxCommands: 20, MaxErrors: 5},
	})
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	listeners := []Listener{
		{Name: "fuzz", Protocol: policy.IMAP, TLS: tlsStartTLS, TLSConfig: serverTLSConfig(nil), PlaintextFrom: loopback},
		// The peer is trusted: the input must start with a PROXY header.
		{Name: "fuzz-proxied", Protocol: policy.IMAP, TLS: tlsNone, ProxyFrom: loopback, PlaintextFrom: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}},
		// LOGINDISABLED until a TLS handshake, which fuzz bytes never
		// complete: no login may be decided here.
		{Name: "fuzz-logindisabled", Protocol: policy.IMAP, TLS: tlsStartTLS, TLSConfig: serverTLSConfig(nil)},
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		for _, l := range listeners {
			checkSession(t, s, l, auth, maxAttempts, input)
		}
	})
}

// checkSession runs one session and checks FuzzSession's invariants.
func checkSession(t *testing.T, s *Server, l Listener, auth *fakeAuth, maxAttempts int, input []byte) {
	before := len(auth.requests())
	out := runMemSession(t, s, l, input)
	if n := s.Panics(); n > 0 {
		totalPanics.Add(n)
		t.Fatalf("session panicked on %q", input)
	}
	n := len(auth.requests()) - before
	if n > maxAttempts {
		t.Fatalf("%d login decisions, limit %d", n, maxAttempts)
	}
	if len(l.PlaintextFrom) == 0 && n > 0 {
		t.Fatalf("%d login decisions without TLS under LOGINDISABLED", n)
	}
	// Nothing may follow the STARTTLS go-ahead in clear text: the
	// handshake fails on fuzz bytes and any pipelined command is
	// never executed.
	if i := bytes.Index(out, []byte(" OK Begin TLS negotiation now\r\n")); i >= 0 {
		if rest := out[i+len(" OK Begin TLS negotiation now\r\n"):]; len(rest) > 0 {
			t.Fatalf("sent %q after STARTTLS", rest)
		}
	}
	for _, line := range strings.SplitAfter(string(out), "\r\n") {
		if len(line) > imapwire.MaxLine+200 {
			t.Fatalf("reply line of %d bytes", len(line))
		}
	}
}

func TestFuzzSessionInvariantsHold(t *testing.T) {
	// The same session runner on a few fixed inputs, checking replies.
	s := NewServer(Options{Authorizer: &fakeAuth{}, IMAP: memBackend{}, Limits: Limits{AuthFailureDelay: time.Nanosecond}})
	l := Listener{Name: "mem", Protocol: policy.IMAP, TLS: tlsNone, PlaintextFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	out := string(runMemSession(t, s, l, []byte("a LOGIN alice secret\r\nb NOOP\r\n")))
	if !strings.Contains(out, "\r\na OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n") {
		t.Errorf("spliced output %q", out)
	}
	out = string(runMemSession(t, s, l, []byte("a LOGIN alice wrong\r\n")))
	if !strings.Contains(out, "a NO [AUTHENTICATIONFAILED]") {
		t.Errorf("failed login output %q", out)
	}
	if s.Panics() != 0 {
		t.Error("panic")
	}
}

// TestSessionRecoversPanics checks the recover path: a backend that
// panics ends only its own session, which is counted and logged.
func TestSessionRecoversPanics(t *testing.T) {
	logs := &syncBuffer{}
	s := NewServer(Options{Logger: slog.New(slog.NewTextHandler(logs, nil)), Authorizer: &fakeAuth{}, IMAP: panicBackend{},
		Limits: Limits{AuthFailureDelay: time.Nanosecond}})
	l := Listener{Name: "mem", Protocol: policy.IMAP, TLS: tlsNone, PlaintextFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	runMemSession(t, s, l, []byte("a LOGIN alice secret\r\n"))
	if s.Panics() != 1 {
		t.Fatalf("Panics() = %d, want 1", s.Panics())
	}
	if !strings.Contains(logs.String(), "panic in session") || !strings.Contains(logs.String(), "reason=\"internal error\"") {
		t.Errorf("panic not logged:\n%s", logs)
	}
	if s.Sessions() != 0 {
		t.Errorf("session still registered")
	}
}

type panicBackend struct{}

func (panicBackend) Login(context.Context, backend.Client, string, string, string) (*backend.Session, error) {
	panic("test panic")
}

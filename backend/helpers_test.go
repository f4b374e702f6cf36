package backend

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeServer is an in-process backend on loopback: handle runs for every
// accepted connection in its own goroutine.
type fakeServer struct {
	ln       net.Listener
	accepted atomic.Int32 // connections accepted so far
	wg       sync.WaitGroup
}

func newFakeServer(t testing.TB, handle func(fc *fakeConn)) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
				handle(&fakeConn{t: t, Conn: nc, br: bufio.NewReader(nc)})
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

// fakeConn is the server side of one connection.
type fakeConn struct {
	t testing.TB
	net.Conn
	br *bufio.Reader
}

// send writes each line with CRLF appended.
func (c *fakeConn) send(lines ...string) {
	for _, l := range lines {
		if _, err := io.WriteString(c.Conn, l+"\r\n"); err != nil {
			return
		}
	}
}

// line reads one line without its CRLF; ok false at EOF or error.
func (c *fakeConn) line() (string, bool) {
	l, err := c.br.ReadString('\n')
	if err != nil {
		return "", false
	}
	return strings.TrimSuffix(strings.TrimSuffix(l, "\n"), "\r"), true
}

// upgrade runs the server side of a TLS handshake.
func (c *fakeConn) upgrade(cfg *tls.Config) bool {
	tc := tls.Server(c.Conn, cfg)
	if err := tc.Handshake(); err != nil {
		return false
	}
	c.Conn = tc
	c.br = bufio.NewReader(tc)
	return true
}

// recorder collects what a fake server received, for assertions.
type recorder struct {
	mu    sync.Mutex
	items []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.items = append(r.items, s)
	r.mu.Unlock()
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.items...)
}

// testTLS returns a server config with a fresh self-signed certificate
// for 127.0.0.1 and a client config trusting it.
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "backend.test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	client = &tls.Config{RootCAs: pool}
	return server, client
}

// testLogger routes backend logs to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// testOpts are options for a fake at addr with short timeouts.
func testOpts(t *testing.T, addr string) Options {
	return Options{Address: addr, ConnectTimeout: 2 * time.Second, Timeout: 2 * time.Second, Logger: testLogger(t)}
}

// testClient is a client seen from a foreign address.
var testClient = Client{
	Addr:    netip.MustParseAddrPort("81.2.69.142:40001"),
	Local:   netip.MustParseAddrPort("192.0.2.10:993"),
	Session: "s-1234",
	Helo:    "client.example",
	HeloCmd: "EHLO",
}

// wantErr fails unless err wraps want.
func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want %v", err, want)
	}
}

// withTimeout returns a context for one test step.
func withTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// imapArgs decodes IMAP command arguments the way a server does: atoms,
// quoted strings with \" and \\ escapes, literals {n}, {n+} (for sync
// literals, cont is called before the octets are read) and parenthesized
// lists, flattened. It reads one whole command from br.
func imapArgs(br *bufio.Reader, cont func()) ([]string, error) {
	var args []string
	line, err := readCRLF(br)
	if err != nil {
		return nil, err
	}
	for {
		line = strings.TrimLeft(line, " ()")
		if line == "" {
			return args, nil
		}
		switch {
		case line[0] == '"':
			var sb strings.Builder
			i := 1
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' {
					i++
					if i >= len(line) || (line[i] != '"' && line[i] != '\\') {
						return nil, errors.New("bad escape")
					}
				}
				sb.WriteByte(line[i])
			}
			if i >= len(line) {
				return nil, errors.New("unterminated quoted string")
			}
			args = append(args, sb.String())
			line = line[i+1:]
			if line != "" && line[0] != ' ' && line[0] != ')' {
				return nil, errors.New("junk after quoted string")
			}
		case line[0] == '{':
			end := strings.IndexByte(line, '}')
			if end != len(line)-1 {
				return nil, errors.New("literal not at end of line")
			}
			spec := line[1:end]
			sync := !strings.HasSuffix(spec, "+")
			n, err := strconv.Atoi(strings.TrimSuffix(spec, "+"))
			if err != nil || n < 0 {
				return nil, errors.New("bad literal length")
			}
			if sync {
				cont()
			}
			buf := make([]byte, n)
			if _, err := io.ReadFull(br, buf); err != nil {
				return nil, err
			}
			args = append(args, string(buf))
			if line, err = readCRLF(br); err != nil {
				return nil, err
			}
		default:
			end := strings.IndexAny(line, " ()")
			if end < 0 {
				end = len(line)
			}
			args = append(args, line[:end])
			line = line[end:]
		}
	}
}

// readCRLF reads a line that must end in CRLF, and returns it without.
func readCRLF(br *bufio.Reader) (string, error) {
	l, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.HasSuffix(l, "\r\n") {
		return "", errors.New("line without CRLF")
	}
	return l[:len(l)-2], nil
}

package proxy

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// fuzzSession writes in to a fresh connection, half-closes, and returns
// everything the server sent until it closed. The server must close on
// its own once input ends: a hang fails the test.
func fuzzSession(t *testing.T, addr string, in []byte) []byte {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		nc.Write(in)
		nc.(*net.TCPConn).CloseWrite()
	}()
	out, err := io.ReadAll(nc)
	if err != nil && !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("reading server output: %v (got %q)", err, out)
	}
	return out
}

// FuzzPOP3Session runs arbitrary client input through a whole POP3
// session with a fake backend. Invariants: no panic; the session ends
// when the input does; every reply line is a POP3 status, a SASL
// challenge, a multi-line item or an echo from the backend; credentials
// reaching the backend carry no line breaks.
func FuzzPOP3Session(f *testing.F) {
	for _, s := range []string{
		"CAPA\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nQUIT\r\n",
		"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nLIST\r\n",
		"AUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nUIDL\r\n",
		"AUTH PLAIN\r\n*\r\nUSER bob\r\nPASS secret\r\n",
		"STLS\r\nUSER alice\r\n",
		"USER alice\nPASS wrong\nUSER alice\nPASS secret\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
		"AUTH\r\nAPOP a b\r\nRETR 1\r\n",
	} {
		f.Add([]byte(s))
	}
	lim := fastLimits()
	lim.PreAuthIdleTimeout = 5 * time.Second
	// One server for all inputs; sessions are independent.
	e := startServer(f, Listener{Protocol: pop3Proto, TLS: tlsStartTLS, PlaintextFrom: loopbackPrefixes()}, lim)
	f.Fuzz(func(t *testing.T, in []byte) {
		out := fuzzSession(t, e.addr, in)
		if !bytes.HasPrefix(out, []byte("+OK mx.test mailgate POP3 ready\r\n")) {
			t.Fatalf("no greeting: %q", out)
		}
		// Every line we send ends in CRLF; a bare LF would let a reply
		// be read differently by different clients.
		if n := len(out); n > 0 && (bytes.Count(out, []byte("\n")) != bytes.Count(out, []byte("\r\n")) || out[n-1] != '\n') {
			t.Fatalf("reply stream with bare LF or partial line: %q", out)
		}
		for _, lg := range e.pop3.loginList() {
			if strings.ContainsAny(lg[strings.IndexByte(lg, 0)+1:], "\r\n\x00") || strings.ContainsAny(lg[:strings.IndexByte(lg, 0)], "\r\n") {
				t.Fatalf("backend login %q", lg)
			}
		}
		if n := e.srv.Panics(); n > 0 {
			t.Fatalf("%d panics", n)
		}
	})
}

// BenchmarkPOP3Login measures one whole session over loopback: connect,
// greeting, USER/PASS, decision, fake backend login, one spliced command,
// close. AuthFailureDelay does not apply (the login succeeds).
func BenchmarkPOP3Login(b *testing.B) {
	e := startServer(b, Listener{Protocol: pop3Proto}, fastLimits())
	in := []byte("USER alice\r\nPASS secret\r\nQUIT\r\n")
	b.ReportAllocs()
	for b.Loop() {
		out := benchSession(b, e.addr, in)
		if !bytes.Contains(out, []byte("+OK echo QUIT")) {
			b.Fatalf("session output %q", out)
		}
	}
}

// benchSession is fuzzSession for benchmarks.
func benchSession(b *testing.B, addr string, in []byte) []byte {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := nc.Write(in); err != nil {
		b.Fatal(err)
	}
	out, err := io.ReadAll(nc)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

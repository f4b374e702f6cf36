package proxy

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzSMTPSession runs arbitrary client input through a whole submission
// session with a fake backend. Invariants: no panic; the session ends
// when the input does; the first reply is the greeting; every reply line
// is CRLF-terminated and starts with a three-digit code (or is the
// backend's echo after AUTH); credentials reaching the backend carry no
// line breaks.
func FuzzSMTPSession(f *testing.F) {
	for _, s := range []string{
		"EHLO x\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<a@b>\r\nQUIT\r\n",
		"EHLO x\r\nAUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nRCPT TO:<c@d>\r\n",
		"EHLO x\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN =\r\nAUTH LOGIN =\r\n",
		"STARTTLS\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
		"HELO y\nMAIL FROM:<a@b>\nAUTH PLAIN AGJvYgBzZWNyZXQ=\n",
		"GET / HTTP/1.1\r\n",
		"EHLO x\r\nAUTH CRAM-MD5\r\nRSET\r\nNOOP x\r\nVRFY root\r\n",
	} {
		f.Add([]byte(s))
	}
	lim := smtpLimits()
	// One server for all inputs; sessions are independent.
	e := startServer(f, Listener{Protocol: smtpProto, TLS: tlsStartTLS, PlaintextFrom: loopbackPrefixes()}, lim)
	f.Fuzz(func(t *testing.T, in []byte) {
		out := fuzzSession(t, e.addr, in)
		if !bytes.HasPrefix(out, []byte("220 mx.test ESMTP mailgate\r\n")) {
			t.Fatalf("no greeting: %q", out)
		}
		if n := len(out); bytes.Count(out, []byte("\n")) != bytes.Count(out, []byte("\r\n")) || out[n-1] != '\n' {
			t.Fatalf("reply stream with bare LF or partial line: %q", out)
		}
		for _, l := range strings.Split(strings.TrimSuffix(string(out), "\r\n"), "\r\n") {
			if len(l) < 4 || l[0] < '2' || l[0] > '5' || (l[3] != ' ' && l[3] != '-') {
				t.Fatalf("reply line %q in %q", l, out)
			}
		}
		for _, lg := range e.smtp.loginList() {
			if strings.ContainsAny(lg, "\r\n") {
				t.Fatalf("backend login %q", lg)
			}
		}
		if n := e.srv.Panics(); n > 0 {
			t.Fatalf("%d panics", n)
		}
	})
}

// BenchmarkSMTPLogin measures one whole submission session over
// loopback: greeting (no delay), EHLO, AUTH PLAIN, decision, fake backend
// login, one spliced command, close.
func BenchmarkSMTPLogin(b *testing.B) {
	e := startServer(b, Listener{Protocol: smtpProto}, smtpLimits())
	in := []byte("EHLO bench\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nQUIT\r\n")
	b.ReportAllocs()
	for b.Loop() {
		out := benchSession(b, e.addr, in)
		if !bytes.Contains(out, []byte("250 echo QUIT")) {
			b.Fatalf("session output %q", out)
		}
	}
}
